"""Batch scoring: every requested user's top-k from the serving bundle, streamed to Parquet.

Users are processed in chunks: the chunk's snapshot rows are gathered (memory-mapped), context
features added, scored with one onnxruntime call, reduced to the top-k per user with NumPy and
appended to a Parquet file through pyarrow's writer — memory stays bounded by the chunk size
whatever the number of users. The file is written under a temporary name and renamed when
complete. Unknown user ids are counted and reported; they get the cold-start list or, with
``unknown="skip"``, no rows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.ids import index_of
from basketcast.pipeline.data.publish import Kind, parquet_with_columns, publishing_file
from basketcast.pipeline.ranking import best_first
from basketcast.serving.model import Context, ServingModel
from basketcast.serving.reasons import POPULAR

log = logging.getLogger(__name__)

OUT_SCHEMA = pa.schema(
    [(S.USER, pa.uint32()), (S.PRODUCT, pa.uint32()), (S.SCORE, pa.float32()), (S.RANK, pa.uint16())]
)
REASON = "reason"  # with ``reasons=True``: why each product is there (basketcast.serving.reasons)
REASONS_SCHEMA = OUT_SCHEMA.append(pa.field(REASON, pa.string()))
_PLAIN = parquet_with_columns(OUT_SCHEMA.names)
_WITH_REASONS = parquet_with_columns(REASONS_SCHEMA.names)


def is_scores_file(path: Path) -> bool:
    """A scores file of :func:`score_users`, with or without the reason column."""
    return _PLAIN(path) or _WITH_REASONS(path)


SCORES = Kind("scores file (Parquet)", folder=False, recognise=is_scores_file)


@dataclass
class ScoreReport:
    """What a batch run did."""

    users: int = 0
    scored_users: int = 0
    unknown_users: int = 0
    unknown_examples: list[int] = field(default_factory=list)
    candidate_rows: int = 0
    output_rows: int = 0
    seconds: float = 0.0


def read_user_ids(path: Path) -> np.ndarray:
    """The ``user_id`` column of a Parquet file as sorted unique uint32; clear errors otherwise."""
    from basketcast.pipeline.errors import DataError

    try:
        frame = pl.read_parquet(path, columns=[S.USER])
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except pl.exceptions.ColumnNotFoundError as exc:
        raise DataError(f"{path}, column {S.USER}: missing") from exc
    except Exception as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from exc
    col = frame[S.USER]
    if col.null_count():
        row = int(col.is_null().arg_max())  # type: ignore[arg-type]
        raise DataError(f"{path}, column {S.USER}: {col.null_count()} empty values (first at row {row + 1})")
    if not col.dtype.is_integer() or (col < 0).any():
        bad = col.filter(col < 0).head(1).to_list() if col.dtype.is_integer() else col.head(1).to_list()
        raise DataError(f"{path}, column {S.USER}: must hold non-negative integer ids (found {bad})")
    return np.unique(col.cast(pl.UInt32).to_numpy())


def top_k_per_group(groups: np.ndarray, scores: np.ndarray, products: np.ndarray, k: int) -> np.ndarray:
    """Indices of the best ``k`` rows of each contiguous group (score desc, then product id asc)."""
    order = best_first(products, scores, groups)
    g = groups[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    rank = np.arange(g.size) - np.repeat(starts, np.diff(np.r_[starts, g.size]))
    return order[rank < k]


def score_users(
    model: ServingModel,
    users: np.ndarray | None,
    out: Path,
    *,
    k: int = 20,
    ctx: Context,
    chunk_users: int = 5_000,
    unknown: Literal["popular", "skip"] = "popular",
    progress: Callable[[int, int], None] | None = None,
    force: bool = False,
    reasons: bool = False,
) -> ScoreReport:
    """Score ``users`` (None = every user in the snapshot) into ``out`` (Parquet: user_id,
    product_id, score, rank; k rows per user). ``progress(done, total)`` is called per chunk.

    ``reasons``: add a ``reason`` column (string: why each product is recommended, from the row's
    own feature values, ``basketcast.serving.reasons``); off by default, the output schema is then unchanged.

    ``out`` is published atomically and replaces only a scores file (or anything with ``force``),
    never the model it reads (``basketcast.pipeline.data.publish``)."""
    start = time.perf_counter()
    all_users = model.users
    users = np.asarray(all_users) if users is None else np.unique(np.asarray(users, dtype=np.uint32))
    pos = index_of(all_users, users)
    known = pos >= 0
    report = ScoreReport(users=int(users.size), unknown_users=int((~known).sum()))
    report.unknown_examples = users[~known][:10].tolist()
    with (
        publishing_file(Path(out), SCORES, force=force, inputs=[model.path]) as tmp_name,
        pq.ParquetWriter(tmp_name, REASONS_SCHEMA if reasons else OUT_SCHEMA, compression="zstd") as writer,
    ):
        for lo in range(0, users.size, chunk_users):
            chunk_known = known[lo : lo + chunk_users]
            rows_idx = pos[lo : lo + chunk_users][chunk_known]
            if rows_idx.size:
                table = _score_chunk(model, rows_idx, k, ctx, reasons)
                report.candidate_rows += int(model.offsets[rows_idx + 1].sum() - model.offsets[rows_idx].sum())
                report.scored_users += int(rows_idx.size)
                writer.write_table(table)
                report.output_rows += table.num_rows
            cold = users[lo : lo + chunk_users][~chunk_known]
            if cold.size and unknown == "popular":
                table = _popular_table(model, cold, k, reasons)
                writer.write_table(table)
                report.output_rows += table.num_rows
            if progress is not None:
                progress(min(lo + chunk_users, users.size), users.size)
    report.seconds = time.perf_counter() - start
    if report.unknown_users:
        log.warning(
            "%d unknown user ids (e.g. %s): %s",
            report.unknown_users,
            report.unknown_examples,
            "cold-start list" if unknown == "popular" else "skipped",
        )
    return report


def _score_chunk(model: ServingModel, user_rows: np.ndarray, k: int, ctx: Context, reasons: bool = False) -> pa.Table:
    idx, counts = model.gather(user_rows)
    X = model.features(idx, ctx)
    scores = model.rank_scores(X)
    groups = np.repeat(np.arange(user_rows.size), counts)
    products = np.asarray(model.products[idx])
    best = top_k_per_group(groups, scores, products, k)
    g = groups[best]
    first = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    rank = np.arange(g.size) - np.repeat(first, np.diff(np.r_[first, g.size])) + 1
    table = pa.table(
        {
            S.USER: pa.array(model.users[user_rows][g], pa.uint32()),
            S.PRODUCT: pa.array(products[best], pa.uint32()),
            S.SCORE: pa.array(scores[best], pa.float32()),
            S.RANK: pa.array(rank.astype(np.uint16), pa.uint16()),
        },
        schema=OUT_SCHEMA,
    )
    if not reasons:
        return table
    # Only the top-k rows are explained (the rules read each row on its own).
    why = model.reasons(products[best], X[best], scores[best])
    return table.append_column(REASONS_SCHEMA.field(REASON), pa.array(why, pa.string()))


def _popular_table(model: ServingModel, users: np.ndarray, k: int, reasons: bool = False) -> pa.Table:
    n = min(k, model.popular_products.size)
    table = pa.table(
        {
            S.USER: pa.array(np.repeat(users, n), pa.uint32()),
            S.PRODUCT: pa.array(np.tile(model.popular_products[:n], users.size), pa.uint32()),
            S.SCORE: pa.array(np.tile(model.popular_scores[:n], users.size), pa.float32()),
            S.RANK: pa.array(np.tile(np.arange(1, n + 1, dtype=np.uint16), users.size), pa.uint16()),
        },
        schema=OUT_SCHEMA,
    )
    if not reasons:
        return table
    return table.append_column(REASONS_SCHEMA.field(REASON), pa.array([POPULAR] * table.num_rows, pa.string()))
