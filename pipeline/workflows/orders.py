"""The order log and the data folders: backfill the log from a file, merge it into training data.

- :func:`load_orders` (``basketcast orders load FILE --log URL``): every order of a data folder
  (``basketcast ingest``/``generate`` output), a Kaggle-layout folder (ingested on the fly) or a
  Parquet file of order lines is appended to the order log, in (user, order number) order. The
  client order id is the source's ``order_id``, so loading the same file twice records nothing
  new (the second run counts duplicates).
- :func:`merge_order_log` (``basketcast orders merge`` and ``basketcast train --orders-from``):
  the data folder's orders plus the log's, as one canonical dataset, so tomorrow's model learns
  from today's orders. The posted orders become rows by ``basketcast.pipeline.data.posted.posted_tables``
  (Instacart's rules, the same call ``basketcast.serving.online`` makes for the fresh rows), after each
  user's last order with products; besides:

  * a posted user's Kaggle ``test`` order, if any, is dropped: what happened next is now known;
    the pipeline's label windows count back from each user's last order whatever its eval set;
  * products missing from the catalogue are added as ``unknown product <id>`` in the reserved
    aisle and department, as ingest does;
  * merged orders get new order ids above the data's largest.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.posted import OrderRecord, posted_tables
from basketcast.pipeline.data.repairs import with_unknown_products, with_unknown_row
from basketcast.pipeline.data.storage import Dataset, read_dataset, read_manifest, write_dataset
from basketcast.pipeline.errors import DataError
from basketcast.pipeline.progress import bar
from basketcast.serving.stores import open_order_log, redact_url

LOAD_BATCH = 5_000  # orders per transaction of a backfill
# A Parquet file of order lines: one row per (order, product).
LINE_COLUMNS = (S.ORDER, S.USER, S.ORDER_NUMBER, S.DOW, S.HOUR, S.DAYS_PRIOR, S.PRODUCT, S.CART_POS)


@dataclass(frozen=True)
class LoadSummary:
    """What ``load_orders`` recorded."""

    source: str
    log: str
    orders: int
    created: int
    duplicates: int
    users: int


def _lines_of(source: Path) -> pl.DataFrame:
    """Order lines (LINE_COLUMNS) of a data folder, a Kaggle folder or a Parquet file."""
    source = Path(source)
    if source.is_file():
        if source.suffix != ".parquet":
            raise DataError(f"{source}: expected a .parquet file of order lines, a data folder or a Kaggle folder")
        frame = pl.read_parquet(source)
        missing = [c for c in LINE_COLUMNS if c not in frame.columns]
        if missing:
            raise DataError(f"{source}: missing column(s) {', '.join(missing)} (needs {', '.join(LINE_COLUMNS)})")
        return frame.select(LINE_COLUMNS)
    if (source / "manifest.json").is_file():
        data = read_dataset(source)
    else:
        import tempfile

        from basketcast.pipeline.data.ingest import ingest

        with tempfile.TemporaryDirectory(prefix="basketcast-orders-") as tmp:
            ingest(source, Path(tmp) / "data")
            data = read_dataset(Path(tmp) / "data")
    return data.orders.join(data.order_products.drop(S.EVAL_SET), on=S.ORDER, how="inner").select(LINE_COLUMNS)


def _records(lines: pl.DataFrame) -> Iterator[OrderRecord]:
    """One OrderRecord per order, in (user, order number) order, products in cart order."""
    orders = (
        lines.sort(S.USER, S.ORDER_NUMBER, S.CART_POS, S.PRODUCT)
        .group_by(S.ORDER, maintain_order=True)
        .agg(
            pl.col(S.USER).first(),
            pl.col(S.DOW).first(),
            pl.col(S.HOUR).first(),
            pl.col(S.DAYS_PRIOR).first(),
            pl.col(S.PRODUCT),
        )
    )
    for row in orders.iter_rows(named=True):
        days = row[S.DAYS_PRIOR]
        yield OrderRecord(
            order_id=str(row[S.ORDER]),
            user_id=int(row[S.USER]),
            products=tuple(int(p) for p in row[S.PRODUCT]),
            dow=int(row[S.DOW]),
            hour=int(row[S.HOUR]),
            days_since_prior=None if days is None else float(days),
        )


def load_orders(source: Path, log_url: str) -> LoadSummary:
    """Append every order of ``source`` to the order log at ``log_url`` (idempotent by order id)."""
    lines = _lines_of(source)
    n_orders = int(lines[S.ORDER].n_unique())
    log = open_order_log(log_url)
    created = duplicates = 0
    try:
        batch: list[OrderRecord] = []
        with bar(n_orders, "orders → log") as advance:
            for record in _records(lines):
                batch.append(record)
                if len(batch) == LOAD_BATCH:
                    c, d = log.append_many(batch)
                    created, duplicates = created + c, duplicates + d
                    advance(len(batch), f"{created:,} new, {duplicates:,} already recorded")
                    batch = []
            if batch:
                c, d = log.append_many(batch)
                created, duplicates = created + c, duplicates + d
                advance(len(batch), f"{created:,} new, {duplicates:,} already recorded")
    finally:
        log.close()
    return LoadSummary(
        source=str(source),
        log=redact_url(log_url),
        orders=n_orders,
        created=created,
        duplicates=duplicates,
        users=int(lines[S.USER].n_unique()),
    )


def posted_orders(log_url: str) -> list[OrderRecord]:
    """Every order of the log, in arrival order."""
    log = open_order_log(log_url)
    try:
        return [record for batch in log.scan() for record in batch]
    finally:
        log.close()


def merge_order_log(data: Dataset, posted: list[OrderRecord]) -> Dataset:
    """``data`` with the ``posted`` orders appended (the rules are in the module doc)."""
    if not posted:
        return data
    labelled = data.orders.filter(pl.col(S.EVAL_SET) != S.TEST)
    last = dict(labelled.group_by(S.USER).agg(pl.col(S.ORDER_NUMBER).max()).iter_rows())
    bought: dict[int, set[int]] = {}
    posted_users = pl.Series(S.USER, sorted({r.user_id for r in posted}), pl.UInt32)
    history = (
        data.order_products.join(data.orders.select(S.ORDER, S.USER), on=S.ORDER)
        .filter(pl.col(S.USER).is_in(posted_users.implode()))
        .group_by(S.USER)
        .agg(pl.col(S.PRODUCT).unique())
    )
    for user, products in history.iter_rows():
        bought[int(user)] = set(products)
    next_id = int(data.orders[S.ORDER].max() or 0) + 1  # type: ignore[arg-type]
    new_orders, new_lines = posted_tables(posted, {int(u): int(n) for u, n in last.items()}, bought, next_id)
    # A posted user's Kaggle test order (no products) is superseded by what they did order.
    kept = data.orders.filter(~((pl.col(S.EVAL_SET) == S.TEST) & pl.col(S.USER).is_in(posted_users.implode())))
    products, aisles, departments = _with_unknown_products(data, new_lines)
    return Dataset(
        orders=pl.concat([kept, new_orders]),
        order_products=pl.concat([data.order_products, new_lines]),
        products=products,
        aisles=aisles,
        departments=departments,
    )


def _with_unknown_products(data: Dataset, lines: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The catalogue tables with posted products it lacks added as ingest adds them."""
    unknown = lines.select(S.PRODUCT).unique().join(data.products.select(S.PRODUCT), on=S.PRODUCT, how="anti")
    if unknown.height == 0:
        return data.products, data.aisles, data.departments
    return (
        with_unknown_products(data.products, unknown[S.PRODUCT]),
        with_unknown_row(data.aisles, S.AISLE),
        with_unknown_row(data.departments, S.DEPARTMENT),
    )


def merge_into_folder(data_dir: Path, log_url: str, out: Path, *, force: bool = False) -> tuple[int, Path]:
    """Publish ``data_dir`` + the log's orders as the data folder ``out``; (orders merged, out)."""
    posted = posted_orders(log_url)
    manifest = read_manifest(data_dir)
    merged = merge_order_log(read_dataset(data_dir), posted)
    write_dataset(
        out,
        merged,
        source=f"{manifest.source} + {len(posted):,} posted orders from {redact_url(log_url)}",
        warnings=manifest.warnings,
        force=force,
        inputs=[data_dir],
    )
    return len(posted), out
