"""``basketcast predict``: top-k per order of an eval set and a Kaggle submission of F1-optimal baskets."""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl

from basketcast.features import cutoffs as C
from basketcast.features.history import order_lines
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.publish import (
    Kind,
    check_output,
    parquet_with_columns,
    publish_bytes,
    publishing_file,
    text_starting_with,
)
from basketcast.pipeline.data.storage import read_dataset, read_manifest
from basketcast.pipeline.errors import DataError
from basketcast.pipeline.model.basket import choose_baskets
from basketcast.pipeline.model.windows import build_window, rows_of
from basketcast.pipeline.ranking import top_k
from basketcast.pipeline.workflows.run_folder import load_run

log = logging.getLogger(__name__)
SUBMISSION_PRODUCTS = "products"  # the Kaggle submission's second column
PREDICTION_COLUMNS = (S.ORDER, S.USER, S.PRODUCT, S.SCORE, S.RANK)
PREDICTIONS = Kind("predictions file (Parquet)", folder=False, recognise=parquet_with_columns(PREDICTION_COLUMNS))
SUBMISSION = Kind(
    "Kaggle submission (CSV)", folder=False, recognise=text_starting_with(f"{S.ORDER},{SUBMISSION_PRODUCTS}\n")
)


def predict(
    data_dir: Path,
    run_dir: Path,
    *,
    eval_set: str,
    k: int,
    out: Path,
    submission: Path | None = None,
    force: bool = False,
) -> pl.DataFrame:
    """Top-k products for every order of ``eval_set``; optional Kaggle submission of F1-optimal baskets.

    Writes ``out`` (Parquet: order_id, user_id, product_id, score, rank; k rows per order) and,
    with ``submission``, a CSV ``order_id,products`` (space-separated ids or ``None``).
    """
    if k <= 0:
        raise DataError(f"--k must be a positive number of products, got {k}")
    inputs = [Path(data_dir), Path(run_dir)]
    check_output(out, PREDICTIONS, force, inputs)
    if submission is not None:
        check_output(submission, SUBMISSION, force, inputs)
    run = load_run(run_dir)
    data = read_dataset(data_dir)
    if read_manifest(data_dir).fingerprint != run.manifest.data.fingerprint:
        log.warning("%s differs from the data %s was trained on; predicting anyway", data_dir, run_dir)
    cutoffs, users = C.eval_set_cutoffs(data.orders, eval_set)
    if users.len() == 0:
        raise DataError(f"{data_dir}: eval set '{eval_set}' has no orders to predict")
    # Orders of the train set are window 0's targets: the ALS fitted without them.
    als = run.als(latest=eval_set != S.TRAIN)
    window = build_window(data, order_lines(data), cutoffs, 0, run.config, als=als, network=run.network())
    rows = rows_of([window], users)
    scores = run.rankers.score(rows)
    orders = data.orders.filter(pl.col(S.EVAL_SET) == eval_set).select(S.ORDER, S.USER)
    preds = (
        top_k(rows, scores["ranking"], k)
        .join(orders, on=S.USER, how="inner")
        .select(*PREDICTION_COLUMNS)
        .sort(S.ORDER, S.RANK)
    )
    with publishing_file(out, PREDICTIONS, force=force, inputs=inputs) as tmp:
        preds.write_parquet(tmp)
    if submission is not None:
        probs = rows.select(S.USER, S.PRODUCT, S.IS_REPEAT).with_columns(pl.Series(S.SCORE, scores["basket"]))
        baskets = choose_baskets(probs.filter(pl.col(S.IS_REPEAT)), S.USER, keys=users)
        text = kaggle_submission(baskets, orders).write_csv().encode()
        publish_bytes(submission, text, SUBMISSION, force=force, inputs=inputs)
    return preds


def kaggle_submission(baskets: pl.DataFrame, orders: pl.DataFrame) -> pl.DataFrame:
    """``order_id, products`` as Kaggle wants them: space-separated ids, ``None`` as a token."""
    return (
        baskets.join(orders, on=S.USER)
        .sort(S.ORDER)
        .select(
            S.ORDER,
            pl.when(pl.col(S.BASKET_PRODUCTS).list.len() == 0)
            .then(pl.lit("None"))
            .otherwise(
                pl.concat_str(
                    pl.col(S.BASKET_PRODUCTS).list.eval(pl.element().cast(pl.String)).list.join(" "),
                    pl.when(pl.col(S.BASKET_NONE)).then(pl.lit(" None")).otherwise(pl.lit("")),
                )
            )
            .alias(SUBMISSION_PRODUCTS),
        )
    )
