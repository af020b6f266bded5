"""Ingest a shop's transaction log (one row per product bought) into the canonical data folder.

A real shop exports a *transaction log*: user, order (basket) id, timestamp, product, maybe a
quantity and a price — not the Kaggle layout. :func:`ingest_transactions` reads such a log (CSV
with a sniffed or given separator, or Parquet), derives every Kaggle column the way Instacart
defines it, checks the derived tables with the very rules of :mod:`basketcast.pipeline.data.ingest` and
publishes them with :func:`basketcast.pipeline.data.ingest.publish_tables`, so the data folder is the one
``basketcast ingest`` writes for the Kaggle layout (same tables, dtypes, manifest; the manifest's
``source`` is ``transactions:FILE``). :func:`to_transactions` goes the other way: it writes a
data folder as a transaction log (timestamps consistent with its days and hours), for tests,
demos and notebooks.

The rules (also in the README, "Your own data"):

- **Columns.** ``user_id``, ``order_id``, ``product_id``, ``timestamp`` by default
  (:class:`LogColumns`; ``--user-col`` …); an optional quantity column. Other columns (price, …)
  are ignored. Users and products must be whole numbers 1..4,294,967,295. Order ids are kept when
  they all are; otherwise (text such as ``INV-0001``) every order is numbered 1..n by (first
  timestamp, user, original id), and a warning says so.
- **Timestamps.** ISO 8601 text — date, ``T`` or space, optional seconds and fraction, optional
  ``Z`` / ``±HH[:MM]`` offset; the basic form ``20240301T093000`` too — or epoch numbers (a column
  whose every value is a number): seconds, or milliseconds when a value reaches 1e11 (1e11 s is
  the year 5138). Parquet ``Datetime``/``Date`` columns are used as they are. The *wall clock*
  gives the day of week, hour and date: a time without a zone is the shop's local time; a time
  with an offset is read at that offset's wall clock (``2024-03-01T09:30+01:00`` is 09:30);
  epoch and zone-aware Parquet times are read in UTC — ``timezone`` (``--timezone``) converts
  epoch and offset times to the shop's zone instead. Orders are sequenced by the absolute instant.
- **Orders.** All lines with one order id form one order (an id shared by two users is refused);
  its time is its *first* line's (lines of a basket scanned over a few minutes are one order).
- ``order_number``: 1..n per user by order time; equal times by order id.
- ``order_dow``: 0 = Sunday … 6 = Saturday. Instacart does not document it; basketcast assumes
  it everywhere (``basketcast.serving.model.Context``, the generator's marginals), and the real data fits:
  in the committed excerpt every order with days < 30 has ``dow = (previous dow + days) mod 7``.
- ``order_hour_of_day``: the wall clock's hour, 0..23.
- ``days_since_prior_order``: calendar days between the dates of a user's consecutive orders
  (the same evidence: Instacart's days agree with its weekdays, so they are date differences, not
  elapsed 24-hour periods), capped at 30 (Instacart's "30 or more"), null on the first order.
- ``add_to_cart_order``: 1..n within the order by line time, then position in the file.
- The same product twice in an order is one line, at its first position. With a quantity column
  the quantities are summed and a product whose total is ≤ 0 (returned or refunded) is not in the
  order; an order left without lines is no order. The Kaggle layout has no quantity: it is not kept.
- ``reordered``: 1 when the user bought the product in an earlier order, else 0.
- ``eval_set``: ``prior`` for every order but each user's last, which is ``train`` (default) or
  ``test`` (``last_order``); a test order keeps no lines, as in Kaggle (its basket is what is to
  be predicted).
- **Catalogue** (optional, CSV or Parquet): ``product_id`` and any of ``product_name``,
  ``aisle_id``/``aisle``, ``department_id``/``department``. Ids given are kept (0 or empty =
  unknown); names without ids get ids 1..n in alphabetical order; an empty name is ``product <id>``
  / ``aisle <id>`` / ``department <id>``. Products bought but missing from it are added as
  ``unknown product <id>`` (a repair: refused with ``strict``). Without a catalogue every product is
  ``product <id>`` in one ``unknown`` aisle and department (id 0), exactly as Kaggle ingest does.

Every problem is a :class:`~basketcast.pipeline.errors.DataError` naming the file, the column and the first
offending rows (``row`` = 1-based data row), raised before anything is written.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import gzip
import io
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import polars as pl

from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.ingest import (
    COUNT_MAX,
    ID_MAX,
    IngestReport,
    check_line_values,
    check_order_values,
    check_reordered,
    publish_tables,
    validate_lines,
    validate_orders,
)
from basketcast.pipeline.data.publish import Kind, check_output, publishing_file
from basketcast.pipeline.data.readers import GZIP_MAGIC, HEAD_BYTES, ROW, Failures, describe_rows, open_source
from basketcast.pipeline.data.repairs import (
    MAX_DAYS,
    UNKNOWN_ID,
    UNKNOWN_NAME,
    Notes,
    check_unique,
    pair_key,
    with_unknown_products,
    with_unknown_row,
)
from basketcast.pipeline.data.storage import DATA_FOLDER, Dataset, read_dataset
from basketcast.pipeline.errors import DataError

TIMESTAMP: Final = "timestamp"  # the default name of the log's time column (a source column, not canonical)
SEPARATORS: Final = (",", "\t", ";", "|")  # tried in this order when the separator is sniffed
SEPARATOR_NAMES: Final = {",": "a comma", "\t": "a tab", ";": "';'", "|": "'|'"}
SEPARATOR_ARGS: Final = {",": "','", "\t": "'\\t'", ";": "';'", "|": "'|'"}
PARQUET_MAGIC: Final = b"PAR1"
EPOCH_MS_FROM: Final = 1e11  # an epoch value this large is milliseconds (1e11 s is the year 5138)
DEFAULT_START: Final = dt.date(2017, 1, 1)  # a Sunday of the year Instacart's data comes from
LastOrder = Literal["train", "test"]

# Columns used inside this module only.
_INSTANT = "_instant"  # the absolute time (UTC, naive) that orders are sequenced by
_LOCAL = "_local"  # the wall clock (naive) that gives dow, hour and date
_QTY = "_quantity"
_SOURCE_ORDER = "_source_order"  # the order id as written (text ids are renumbered)
_ISO = (  # ISO 8601: extended or basic date, optional time with fraction, optional offset
    r"^\s*(\d{4})-?(\d{2})-?(\d{2})(?:[T ](\d{2})(?::?(\d{2})(?::?(\d{2})(?:[.,](\d{1,9}))?)?)?)?"
    r"\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?\s*$"
)
_NUMBER = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"
_CATALOGUE_OPTIONAL = (S.PRODUCT_NAME, S.AISLE, S.AISLE_NAME, S.DEPARTMENT, S.DEPARTMENT_NAME)


@dataclass(frozen=True)
class LogColumns:
    """The log's column names for the user, order, product, time and (optional) quantity."""

    user: str = S.USER
    order: str = S.ORDER
    product: str = S.PRODUCT
    time: str = TIMESTAMP
    quantity: str | None = None

    def required(self) -> list[str]:
        return [self.user, self.order, self.product, self.time]


# --- reading a CSV or Parquet file ---------------------------------------------------------------
def _head(path: Path) -> bytes:
    """The first bytes of ``path`` as text is parsed: a zip's CSV member or gzip decompressed."""
    data = open_source(path)  # DataError for a missing, empty, unreadable or damaged file
    if isinstance(data, io.BytesIO):
        return data.getvalue()[:HEAD_BYTES]
    with path.open("rb") as fh:
        head = fh.read(HEAD_BYTES)
    if head.startswith(GZIP_MAGIC):
        try:
            with gzip.open(path, "rb") as gz:
                return gz.read(HEAD_BYTES)
        except (OSError, EOFError) as exc:
            raise DataError(f"{path}: not a valid gzip file, it is truncated or damaged ({exc})") from exc
    return head


def _split_header(line: str, sep: str) -> list[str]:
    return [name.strip() for name in next(csv.reader([line], delimiter=sep), [])]


def _choose_separator(path: Path, head: bytes, needed: Sequence[str], sep: str | None, option: str) -> str:
    """The separator of the CSV ``path`` (``sep`` when given, else sniffed from the header).

    DataError naming the file and the first missing column when the header lacks one of ``needed``,
    with the separator that would have produced them when there is one.
    """
    text = head.removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="replace")
    header = text.splitlines()[0] if text.strip() else ""
    if not header.strip():
        raise DataError(f"{path}: is empty, expected a header line and data rows")
    fits = [s for s in SEPARATORS if all(c in _split_header(header, s) for c in needed)]
    if sep is None:
        if fits:
            return fits[0]
        sep = max(SEPARATORS, key=lambda s: len(_split_header(header, s)))
    found = _split_header(header, sep)
    missing = [c for c in needed if c not in found]
    if not missing:
        return sep
    if fits:
        hint = f"; the header splits into the expected columns with {SEPARATOR_NAMES[fits[0]]}: pass {option} "
        hint += SEPARATOR_ARGS[fits[0]]
    else:
        hint = "; name the log's columns with --user-col, --order-col, --product-col, --time-col"
    raise DataError(
        f"{path}, column {missing[0]}: missing (needed columns {list(needed)}; found {found} "
        f"splitting the header with {SEPARATOR_NAMES.get(sep, repr(sep))}){hint}"
    )


def read_table(
    path: Path,
    needed: Sequence[str],
    optional: Sequence[str] = (),
    *,
    sep: str | None = None,
    option: str = "--sep",
) -> pl.DataFrame:
    """The ``needed`` and present ``optional`` columns of a CSV or Parquet file, plus :data:`ROW`.

    Parquet is recognised by its magic bytes (whatever the suffix) and keeps its dtypes; CSV (plain,
    ``.gz`` or a ``.zip`` holding one ``.csv``) comes back as text, its separator ``sep`` or sniffed
    among comma, tab, ``;`` and ``|``; rows whose every column read is empty are skipped. DataError
    naming ``path`` when it cannot be read or lacks a needed column.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a CSV or Parquet file")
    head = _head(path)
    if head.startswith(PARQUET_MAGIC):
        return _read_parquet(path, needed, optional)
    if b"\x00" in head[:1024]:
        raise DataError(f"{path}: holds binary data, expected CSV text (UTF-8) or Parquet")
    separator = _choose_separator(path, head, needed, sep, option)
    header = _split_header(
        head.removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="replace").splitlines()[0], sep=separator
    )
    columns = [*needed, *(c for c in optional if c in header and c not in needed)]
    try:
        frame = pl.read_csv(
            open_source(path), separator=separator, columns=columns, infer_schema=False, encoding="utf8-lossy"
        )
    except (pl.exceptions.PolarsError, OSError) as exc:
        first = str(exc).strip().split("\n", 1)[0]
        raise DataError(f"{path}: cannot be read as CSV with {SEPARATOR_NAMES.get(separator)} ({first})") from exc
    frame = frame.with_columns(pl.col(columns).str.strip_chars().replace("", None)).with_row_index(ROW, offset=1)
    return frame.filter(~pl.all_horizontal(pl.col(columns).is_null()))


def _read_parquet(path: Path, needed: Sequence[str], optional: Sequence[str]) -> pl.DataFrame:
    try:
        found = list(pl.read_parquet_schema(path))
        missing = [c for c in needed if c not in found]
        if missing:
            raise DataError(f"{path}, column {missing[0]}: missing (needed columns {list(needed)}; found {found})")
        columns = [*needed, *(c for c in optional if c in found and c not in needed)]
        return pl.read_parquet(path, columns=columns).with_row_index(ROW, offset=1)
    except (pl.exceptions.PolarsError, OSError) as exc:
        first = str(exc).strip().split("\n", 1)[0]
        raise DataError(f"{path}: cannot be read as Parquet ({first})") from exc


# --- parsing values --------------------------------------------------------------------------------
def _as_float(frame: pl.DataFrame, column: str) -> pl.Expr:
    """``column`` as Float64: numbers cast, text parsed (null where it is not a number)."""
    dtype = frame.schema[column]
    col = pl.col(column)
    if dtype.is_numeric():
        return col.cast(pl.Float64)
    return col.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)


def _id_problems(frame: pl.DataFrame, column: str, lo: int, hi: int) -> list[tuple[str, pl.DataFrame]]:
    """(rule, offending rows) for each way ``column`` fails to be whole numbers in ``lo..hi``."""
    value = _as_float(frame, column)
    col = pl.col(column)
    checks = [
        ("are empty", col.is_null()),
        ("are not numbers", col.is_not_null() & (value.is_null() | value.is_nan())),
        ("are not whole numbers", value.is_finite() & (value != value.floor())),
        (f"are not in {lo:,}..{hi:,}", value.is_finite() & (value == value.floor()) & ((value < lo) | (value > hi))),
        ("are not finite numbers", value.is_infinite()),
    ]
    return [(rule, frame.filter(bad).select(ROW, column)) for rule, bad in checks]


def _parse_ids(f: Failures, file: str, frame: pl.DataFrame, column: str, hi: int, lo: int = 1) -> pl.Expr:
    """Record every failure of ``column`` as ids ``lo..hi``; the expression of its Int64 values."""
    for rule, bad in _id_problems(frame, column, lo, hi):
        f.check(file, column, rule, bad)
    return _as_float(frame, column).cast(pl.Int64, strict=False)


def _zone(timezone: str | None) -> str | None:
    if timezone is None:
        return None
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise DataError(
            f"--timezone {timezone!r}: not a known time zone (e.g. Europe/Paris, America/New_York)"
        ) from exc
    return timezone


def _in_zone(instant: pl.Expr, timezone: str | None) -> pl.Expr:
    """The wall clock in ``timezone`` of a naive UTC ``instant`` (UTC itself when None)."""
    if timezone is None:
        return instant
    return instant.dt.replace_time_zone("UTC").dt.convert_time_zone(timezone).dt.replace_time_zone(None)


def parse_times(f: Failures, file: str, frame: pl.DataFrame, column: str, timezone: str | None = None) -> pl.DataFrame:
    """``frame`` with :data:`_INSTANT` (UTC) and :data:`_LOCAL` (wall clock), both naive Datetime(us).

    The forms accepted are those of the module docstring; a value that is none of them is a failure
    recorded in ``f`` (file, column, rows). ``timezone`` converts epoch and offset times.
    """
    dtype = frame.schema[column]
    col = pl.col(column)
    us = pl.Datetime("us")
    f.check(file, column, "are empty", frame.filter(col.is_null()).select(ROW, column))
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            return frame.with_columns(col.cast(us).alias(_INSTANT), col.cast(us).alias(_LOCAL))
        instant = col.dt.convert_time_zone("UTC").dt.replace_time_zone(None).cast(us)
        local = col.dt.replace_time_zone(None).cast(us) if timezone is None else _in_zone(instant, timezone)
        return frame.with_columns(instant.alias(_INSTANT), local.alias(_LOCAL))
    if dtype == pl.Date:
        return frame.with_columns(col.cast(us).alias(_INSTANT), col.cast(us).alias(_LOCAL))
    text = col.cast(pl.String).str.strip_chars()
    # A number is an epoch time (per value): seconds, or milliseconds from EPOCH_MS_FROM on.
    seconds = _as_float(frame, column)
    is_epoch = (text.str.contains(_NUMBER) & seconds.is_finite()).fill_null(False)
    scale = pl.when(seconds.abs() >= EPOCH_MS_FROM).then(1e3).otherwise(1e6)
    epoch = pl.from_epoch(pl.when(is_epoch).then((seconds * scale).round(0).cast(pl.Int64, strict=False)), "us")
    parts = text.str.extract_groups(_ISO)
    g = [parts.struct.field(str(i)) for i in range(1, 9)]
    fraction = g[6].fill_null("0").str.pad_end(6, "0").str.slice(0, 6)
    normal = pl.concat_str(
        g[0], pl.lit("-"), g[1], pl.lit("-"), g[2], pl.lit("T"), g[3].fill_null("00"), pl.lit(":"),
        g[4].fill_null("00"), pl.lit(":"), g[5].fill_null("00"), pl.lit("."), fraction,
    )  # fmt: skip
    wall = normal.str.strptime(us, "%Y-%m-%dT%H:%M:%S%.f", strict=False)
    offset = g[7]
    sign = pl.when(offset.str.starts_with("-")).then(-1).otherwise(1)
    digits = offset.str.replace_all(":", "").str.slice(1)
    hours, mins = digits.str.slice(0, 2).cast(pl.Int64), digits.str.slice(2, 2).replace("", "0").cast(pl.Int64)
    minutes = (
        pl.when(offset.is_null() | (offset.str.to_lowercase() == "z")).then(0).otherwise(sign * (hours * 60 + mins))
    )
    parsed = frame.with_columns(
        pl.when(is_epoch).then(epoch).otherwise(wall - pl.duration(minutes=minutes)).alias(_INSTANT),
        (is_epoch | offset.is_not_null()).alias("_aware"),
        wall.alias(_LOCAL),
    ).with_columns(
        pl.when(pl.col("_aware") & (is_epoch | pl.lit(timezone is not None)))
        .then(_in_zone(pl.col(_INSTANT), timezone))
        .otherwise(pl.col(_LOCAL))
        .alias(_LOCAL)
    )
    bad = parsed.filter(col.is_not_null() & pl.col(_INSTANT).is_null()).select(ROW, column)
    rule = "are neither ISO 8601 times (e.g. 2024-03-01T09:30:00, 2024-03-01 09:30+01:00) nor epoch numbers"
    f.check(file, column, rule, bad)
    return parsed.drop("_aware")


# --- the log --------------------------------------------------------------------------------------
def read_log(
    path: Path,
    columns: LogColumns,
    notes: Notes,
    *,
    sep: str | None = None,
    timezone: str | None = None,
) -> pl.DataFrame:
    """The parsed log: :data:`ROW`, user_id, order_id, product_id (Int64), the instant and wall
    clock, the quantity (Float64, when a quantity column is named) and the order id as written.

    Every value that does not parse is reported together as one DataError (file, column, rows).
    """
    file = str(path)
    needed = columns.required() + ([columns.quantity] if columns.quantity else [])
    if len(set(needed)) != len(needed):
        raise DataError(f"{path}: the same column is named for two roles ({needed}); name each once")
    raw = read_table(path, needed, sep=sep)
    if not raw.height:
        raise DataError(f"{path}: has a header but no data rows")
    f = Failures()
    user = _parse_ids(f, file, raw, columns.user, ID_MAX[S.USER])
    product = _parse_ids(f, file, raw, columns.product, ID_MAX[S.PRODUCT])
    f.check(file, columns.order, "are empty", raw.filter(pl.col(columns.order).is_null()).select(ROW, columns.order))
    exprs = [pl.col(ROW), user.alias(S.USER), product.alias(S.PRODUCT), pl.col(columns.order).alias(_SOURCE_ORDER)]
    if columns.quantity:
        q = _as_float(raw, columns.quantity)
        bad = raw.filter(~q.is_finite().fill_null(False)).select(ROW, columns.quantity)
        f.check(file, columns.quantity, "are not numbers", bad)
        exprs.append(q.alias(_QTY))
    timed = parse_times(f, file, raw, columns.time, timezone)
    f.raise_if_any()
    log = timed.select(*exprs, pl.col(_INSTANT), pl.col(_LOCAL))
    return _order_ids(notes, file, columns.order, log)


def _order_ids(notes: Notes, file: str, column: str, log: pl.DataFrame) -> pl.DataFrame:
    """``log`` with the Int64 order_id: as written when every id is a whole number 1..2^32-1, else
    1..n by (first time, user, id as written) with a warning. An id of two users is refused."""
    shared = log.filter(pl.col(S.USER).n_unique().over(_SOURCE_ORDER) > 1)
    if shared.height:
        first_user = pl.col(S.USER).sort_by(ROW).first().over(_SOURCE_ORDER)
        bad = shared.filter(pl.col(S.USER) != first_user).sort(ROW).select(ROW, _SOURCE_ORDER, S.USER)
        raise DataError(
            describe_rows(
                file,
                column,
                "repeat an order id of another user (one order, one user)",
                bad.rename({_SOURCE_ORDER: column}),
            )
        )
    if not any(bad.height for _, bad in _id_problems(log, _SOURCE_ORDER, 1, ID_MAX[S.ORDER])):
        return log.with_columns(_as_float(log, _SOURCE_ORDER).cast(pl.Int64).alias(S.ORDER))
    key = pl.col(_SOURCE_ORDER).cast(pl.String)
    firsts = log.group_by(_SOURCE_ORDER).agg(pl.col(_INSTANT).min(), pl.col(S.USER).first(), pl.col(ROW).min())
    numbered = firsts.sort(_INSTANT, S.USER, key).with_row_index(S.ORDER, offset=1)
    example = numbered.sort(ROW).head(1).row(0, named=True)
    notes.inform(
        f"{file}, column {column}: not all whole numbers 1..{ID_MAX[S.ORDER]:,} (first: row={example[ROW]}, "
        f"{column}={example[_SOURCE_ORDER]}); the {numbered.height:,} orders are numbered 1..{numbered.height:,} "
        "by time, user and id as written"
    )
    ids = numbered.select(_SOURCE_ORDER, pl.col(S.ORDER).cast(pl.Int64))
    return log.join(ids, on=_SOURCE_ORDER, how="left", nulls_equal=True)


def derive_tables(
    log: pl.DataFrame, notes: Notes, file: str, *, last_order: LastOrder = "train"
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Kaggle ``orders`` and ``order_products`` of a parsed log (rules: module docstring).

    Both frames keep :data:`ROW` (an order's row is its first line's) and Int64 / String columns,
    ready for the checks of :mod:`basketcast.pipeline.data.ingest`; test orders have no lines.
    """
    lines = log.sort(S.ORDER, _INSTANT, ROW)
    per_product = lines.group_by(S.ORDER, S.PRODUCT, maintain_order=True).agg(
        pl.col(ROW, S.USER, _INSTANT, _LOCAL).first(),
        pl.len().alias("_lines"),
        *([pl.col(_QTY).sum()] if _QTY in log.columns else []),
    )
    repeated = per_product.filter(pl.col("_lines") > 1)
    if repeated.height:
        extra = int(repeated["_lines"].sum()) - repeated.height
        rule = "summed" if _QTY in log.columns else "counted once"
        notes.inform(
            describe_rows(
                file,
                f"{S.ORDER}+{S.PRODUCT}",
                "bought more than once in their order",
                repeated.select(ROW, S.ORDER, S.PRODUCT, "_lines"),
                noun="product",
            )
            + f"; one line each, at its first position ({extra:,} line{'s' * (extra > 1)} merged, quantities {rule})"
        )
    if _QTY in log.columns:
        returned = per_product.filter(pl.col(_QTY) <= 0)
        if returned.height:
            orders_before = per_product[S.ORDER].n_unique()
            per_product = per_product.filter(pl.col(_QTY) > 0)
            gone = orders_before - per_product[S.ORDER].n_unique()
            notes.inform(
                describe_rows(
                    file,
                    f"{S.ORDER}+{S.PRODUCT}",
                    "with a total quantity ≤ 0 in their order (returned or refunded)",
                    returned.select(ROW, S.ORDER, S.PRODUCT, _QTY),
                    noun="product",
                )
                + f"; left out of the order ({gone:,} order{'s' * (gone != 1)} left without lines, dropped)"
            )
        if not per_product.height:
            raise DataError(f"{file}: no line with a positive quantity")
    per_product = per_product.sort(S.ORDER, _INSTANT, ROW)
    orders = (
        per_product.group_by(S.ORDER, maintain_order=True)
        .agg(pl.col(ROW, S.USER, _INSTANT, _LOCAL).first())
        .sort(S.USER, _INSTANT, S.ORDER)
    )
    date = pl.col(_LOCAL).dt.date()
    days = (date - date.shift(1).over(S.USER)).dt.total_days().clip(0, MAX_DAYS)
    number = pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over(S.USER)
    orders = orders.with_columns(
        number.alias(S.ORDER_NUMBER),
        (pl.col(_LOCAL).dt.weekday().cast(pl.Int64) % 7).alias(S.DOW),  # ISO 1 = Monday … 7 = Sunday → 0 = Sunday
        pl.col(_LOCAL).dt.hour().cast(pl.Int64).alias(S.HOUR),
        days.cast(pl.Int64).alias(S.DAYS_PRIOR),
    ).with_columns(
        pl.when(pl.col(S.ORDER_NUMBER) == pl.col(S.ORDER_NUMBER).max().over(S.USER))
        .then(pl.lit(last_order))
        .otherwise(pl.lit(S.PRIOR))
        .alias(S.EVAL_SET)
    )
    _check_counts(file, orders, per_product)
    cart = pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over(S.ORDER)
    keyed = (
        per_product.with_columns(cart.alias(S.CART_POS))
        .join(orders.select(S.ORDER, S.ORDER_NUMBER, S.EVAL_SET), on=S.ORDER)
        .with_columns(pair_key(S.USER, S.PRODUCT).alias("_key"))
        .sort("_key", S.ORDER_NUMBER)
    )
    # Sorted by (user, product, order number): a line repeats a purchase iff the row above has its key.
    reordered = (pl.col("_key") == pl.col("_key").shift(1)).fill_null(False).cast(pl.Int64)
    lines = (
        keyed.with_columns(reordered.alias(S.REORDERED))
        .filter(pl.col(S.EVAL_SET) != S.TEST)
        .sort(S.ORDER, S.CART_POS)
        .select(ROW, S.ORDER, S.PRODUCT, S.CART_POS, S.REORDERED, S.EVAL_SET)
    )
    orders = orders.sort(S.USER, S.ORDER_NUMBER).select(ROW, *S.TABLE_SCHEMAS[S.ORDERS])
    return orders, lines


def _check_counts(file: str, orders: pl.DataFrame, lines: pl.DataFrame) -> None:
    """order_number and add_to_cart_order are UInt16 in the canonical tables."""
    f = Failures()
    many = orders.filter(pl.col(S.ORDER_NUMBER) > COUNT_MAX).group_by(S.USER).agg(pl.col(ROW).min()).sort(ROW)
    f.check(file, S.USER, f"have more than {COUNT_MAX:,} orders", many.select(ROW, S.USER), noun="user")
    big = (
        lines.group_by(S.ORDER)
        .agg(pl.len().alias("products"), pl.col(ROW).min())
        .filter(pl.col("products") > COUNT_MAX)
    )
    f.check(
        file,
        S.ORDER,
        f"have more than {COUNT_MAX:,} products",
        big.sort(ROW).select(ROW, S.ORDER, "products"),
        noun="order",
    )
    f.raise_if_any()


# --- the catalogue ------------------------------------------------------------------------------
def _level(
    f: Failures, file: str, frame: pl.DataFrame, key: str, name_col: str, hi: int
) -> tuple[pl.Expr, pl.DataFrame | None]:
    """A product's aisle (or department) id and the table of ids and names, from ``frame``'s
    columns ``key`` (ids) and/or ``name_col`` (names); None for the table when neither is there."""
    has_key, has_name = key in frame.columns, name_col in frame.columns
    if not has_key and not has_name:
        return pl.lit(UNKNOWN_ID, pl.Int64), None
    if has_key:
        _parse_ids(f, file, frame.filter(pl.col(key).is_not_null()), key, hi, lo=0)  # failures only
        value = _as_float(frame, key).cast(pl.Int64, strict=False)
        ids_expr = pl.when(pl.col(key).is_not_null()).then(value).otherwise(UNKNOWN_ID)
        name = pl.col(name_col).cast(pl.String) if has_name else pl.lit(None, pl.String)
        pairs = frame.select(ROW, ids_expr.alias(key), name.alias(name_col)).filter(pl.col(key) != UNKNOWN_ID)
        conflicting = pairs.filter(pl.col(name_col).is_not_null()).filter(pl.col(name_col).n_unique().over(key) > 1)
        f.check(file, name_col, f"name one {key} differently", conflicting.sort(ROW).select(ROW, key, name_col))
        table = (
            pairs.group_by(key)
            .agg(pl.col(name_col).drop_nulls().first())
            .with_columns(pl.col(name_col).fill_null(pl.format(f"{name_col} {{}}", pl.col(key))))
        )
        return ids_expr, table.sort(key)
    names = frame.select(pl.col(name_col).cast(pl.String)).drop_nulls().unique().sort(name_col)
    if names.height > hi:
        raise DataError(f"{file}, column {name_col}: {names.height:,} different names, at most {hi:,} fit")
    table = names.with_row_index(key, offset=1).with_columns(pl.col(key).cast(pl.Int64))
    mapping = dict(zip(table[name_col].to_list(), table[key].to_list(), strict=True))
    ids_expr = pl.col(name_col).cast(pl.String).replace_strict(mapping, default=UNKNOWN_ID, return_dtype=pl.Int64)
    return ids_expr, table.select(key, name_col)


def read_catalogue(path: Path, f: Failures) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Products (with :data:`ROW`), aisles and departments of a catalogue file (module docstring)."""
    file = str(path)
    raw = read_table(path, [S.PRODUCT], _CATALOGUE_OPTIONAL, option="(the catalogue's separator is sniffed)")
    if not raw.height:
        raise DataError(f"{path}: has a header but no data rows")
    product = _parse_ids(f, file, raw, S.PRODUCT, ID_MAX[S.PRODUCT])
    aisle, aisles = _level(f, file, raw, S.AISLE, S.AISLE_NAME, ID_MAX[S.AISLE])
    department, departments = _level(f, file, raw, S.DEPARTMENT, S.DEPARTMENT_NAME, ID_MAX[S.DEPARTMENT])
    f.raise_if_any()
    name = pl.col(S.PRODUCT_NAME).cast(pl.String) if S.PRODUCT_NAME in raw.columns else pl.lit(None, pl.String)
    products = raw.select(
        ROW,
        product.alias(S.PRODUCT),
        name.alias(S.PRODUCT_NAME),
        aisle.alias(S.AISLE),
        department.alias(S.DEPARTMENT),
    ).with_columns(pl.col(S.PRODUCT_NAME).fill_null(pl.format("product {}", pl.col(S.PRODUCT))))
    check_unique(f, file, products, [S.PRODUCT])
    f.raise_if_any()
    empty = {S.AISLE: S.AISLE_NAME, S.DEPARTMENT: S.DEPARTMENT_NAME}
    tables = [
        t if t is not None else pl.DataFrame(schema={k: pl.Int64, empty[k]: pl.String})
        for t, k in ((aisles, S.AISLE), (departments, S.DEPARTMENT))
    ]
    return products, tables[0], tables[1]


def catalogue(
    notes: Notes, lines: pl.DataFrame, catalog: Path | None, source: str
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Products, aisles and departments for the products of ``lines``: from ``catalog`` (completed with
    ``unknown product <id>`` rows, a repair) or placeholders, as Kaggle ingest makes them."""
    bought = lines.select(pl.col(S.PRODUCT).unique().sort())
    if catalog is None:
        notes.inform(
            "no catalogue given: products get placeholder names ('product <id>') and one 'unknown' aisle and "
            "department (pass --catalog FILE with product_id and product_name, aisle, department)"
        )
        products = bought.with_columns(
            pl.format("product {}", pl.col(S.PRODUCT)).alias(S.PRODUCT_NAME),
            pl.lit(UNKNOWN_ID, pl.Int64).alias(S.AISLE),
            pl.lit(UNKNOWN_ID, pl.Int64).alias(S.DEPARTMENT),
        )
        aisles = pl.DataFrame({S.AISLE: [UNKNOWN_ID], S.AISLE_NAME: [UNKNOWN_NAME]})
        departments = pl.DataFrame({S.DEPARTMENT: [UNKNOWN_ID], S.DEPARTMENT_NAME: [UNKNOWN_NAME]})
        return products, aisles, departments
    products, aisles, departments = read_catalogue(catalog, notes.failures)
    products = products.drop(ROW)
    unknown = bought.join(products.select(S.PRODUCT), on=S.PRODUCT, how="anti")
    if unknown.height:
        counts = (
            lines.join(unknown, on=S.PRODUCT)
            .group_by(S.PRODUCT)
            .agg(pl.len().alias("lines"), pl.col(ROW).min())
            .sort(["lines", S.PRODUCT], descending=[True, False])
            .select(ROW, S.PRODUCT, "lines")
        )
        notes.repaired(
            describe_rows(source, S.PRODUCT, f"missing from {catalog}", counts, noun="product"),
            f"added as 'unknown product <id>' in aisle '{UNKNOWN_NAME}' and department '{UNKNOWN_NAME}' "
            f"(id {UNKNOWN_ID}, reserved)",
        )
        products = with_unknown_products(products, unknown[S.PRODUCT])
    products = products.sort(S.PRODUCT)
    if (products[S.AISLE] == UNKNOWN_ID).any():
        aisles = with_unknown_row(aisles, S.AISLE)
    if (products[S.DEPARTMENT] == UNKNOWN_ID).any():
        departments = with_unknown_row(departments, S.DEPARTMENT)
    return products, aisles.sort(S.AISLE), departments.sort(S.DEPARTMENT)


# --- the command ----------------------------------------------------------------------------------
def check_tables(file: str, orders: pl.DataFrame, lines: pl.DataFrame) -> None:
    """The rules Kaggle ingest enforces, run on the derived tables (they hold by construction;
    this is the same gate every data folder passes)."""
    f = Failures()
    check_order_values(f, file, orders)
    validate_orders(f, file, orders)
    check_line_values(f, file, lines)
    for eval_set in (S.PRIOR, S.TRAIN):
        validate_lines(f, file, lines.filter(pl.col(S.EVAL_SET) == eval_set), orders, eval_set)
    f.raise_if_any()
    mismatched = check_reordered(lines, orders)
    if mismatched.height:  # pragma: no cover - a bug here, not in the data
        raise DataError(describe_rows(file, S.REORDERED, "derived inconsistently", mismatched))


def ingest_transactions(
    source: Path,
    out: Path,
    *,
    columns: LogColumns | None = None,
    sep: str | None = None,
    catalog: Path | None = None,
    last_order: LastOrder = "train",
    timezone: str | None = None,
    strict: bool = False,
    force: bool = False,
) -> IngestReport:
    """Derive the Kaggle tables of the transaction log ``source`` and publish them to ``out``.

    ``columns`` names the log's columns (defaults: :class:`LogColumns`); ``sep`` the CSV separator
    (sniffed when None); ``catalog`` an optional product catalogue; ``last_order`` the eval set of
    each user's last order; ``timezone`` the shop's zone for epoch and offset times. Repairs (products
    missing from the catalogue) are warnings, or errors with ``strict``. ``out`` is checked first
    (:func:`basketcast.pipeline.data.publish.check_output`); nothing is written unless everything passes.
    """
    source, out = Path(source), Path(out)
    columns = columns or LogColumns()
    if last_order not in (S.TRAIN, S.TEST):
        raise DataError(f"last_order {last_order!r}: expected 'train' or 'test'")
    if sep is not None and len(sep) != 1:
        raise DataError(f"--sep {sep!r}: expected one character (e.g. ',', ';', '|', or a tab: $'\\t')")
    zone = _zone(timezone)
    inputs = [source] + ([Path(catalog)] if catalog is not None else [])
    check_output(out, DATA_FOLDER, force, inputs)
    if not source.exists():
        raise DataError(f"{source}: transaction log not found")
    file = str(source)
    notes = Notes(Failures(), strict=strict)
    log = read_log(source, columns, notes, sep=sep, timezone=zone)
    orders, lines = derive_tables(log, notes, file, last_order=last_order)
    del log
    check_tables(file, orders, lines)
    tables = catalogue(notes, lines, None if catalog is None else Path(catalog), file)
    notes.failures.raise_if_any()
    return publish_tables(
        out,
        orders,
        lines,
        tables,
        source=f"transactions:{source.resolve()}",
        inputs=inputs,
        warnings=notes.warnings,
        force=force,
    )


# --- the other way: a data folder as a transaction log --------------------------------------------
def transactions_frame(data: Dataset, *, start: dt.date = DEFAULT_START) -> pl.DataFrame:
    """The order lines of ``data`` as a transaction log: user_id, order_id, product_id, timestamp.

    Every user's first order falls on the first day from ``start`` with its ``order_dow``; each later
    order ``days_since_prior_order`` days after the previous one — or, where the data's weekday
    disagrees with the days (synthetic data; a 30 that means "30 or more"), the first day from there
    with the order's weekday — at its hour, plus one minute per earlier order of the user in the same
    hour of the same day (a same-day order at an earlier hour moves a week on). Each line is one
    second after the previous one of its basket, so ``add_to_cart_order`` is the time order.
    ``order_number``, ``order_dow``, ``order_hour_of_day``, ``add_to_cart_order`` and ``reordered``
    of prior and train orders come back exactly from :func:`ingest_transactions`; days come back
    exactly where they agree with the weekdays (all of Instacart's real orders). Test orders have no
    lines and are not in the log. Rows are in time order (timestamp, order, cart position).
    """
    start_dow = (start.weekday() + 1) % 7  # 0 = Sunday
    i64 = pl.Int64
    dow, hour, days = pl.col(S.DOW).cast(i64), pl.col(S.HOUR).cast(i64), pl.col(S.DAYS_PRIOR).cast(i64)
    prev_dow, prev_hour = dow.shift(1).over(S.USER), hour.shift(1).over(S.USER)
    first = pl.col(S.ORDER_NUMBER) == pl.col(S.ORDER_NUMBER).min().over(S.USER)
    gap = (
        pl.when(first)
        .then((dow - start_dow) % 7)
        .otherwise(days.fill_null(0) + (dow - prev_dow - days.fill_null(0)) % 7)
    )
    gap = pl.when(~first & (gap == 0) & (hour < prev_hour)).then(7).otherwise(gap)
    orders = (
        data.orders.sort(S.USER, S.ORDER_NUMBER)
        .with_columns(gap.alias("_day"))
        .with_columns(pl.col("_day").cum_sum().over(S.USER))
        .with_columns(pl.int_range(pl.len(), dtype=i64).over(S.USER, "_day", S.HOUR).alias("_minute"))
        .with_columns(
            (
                pl.lit(dt.datetime.combine(start, dt.time()), pl.Datetime("us"))
                + pl.duration(days=pl.col("_day"), hours=hour, minutes=pl.col("_minute"))
            ).alias(_INSTANT)
        )
        .select(S.ORDER, S.USER, _INSTANT)
    )
    when = pl.col(_INSTANT) + pl.duration(seconds=pl.col(S.CART_POS).cast(i64) - 1)
    return (
        data.order_products.join(orders, on=S.ORDER)
        .with_columns(when.alias(TIMESTAMP))
        .sort(TIMESTAMP, S.ORDER, S.CART_POS)
        .select(pl.col(S.USER).cast(i64), pl.col(S.ORDER).cast(i64), pl.col(S.PRODUCT).cast(i64), pl.col(TIMESTAMP))
    )


def catalogue_frame(data: Dataset) -> pl.DataFrame:
    """``data``'s products with their aisle and department ids and names: a catalogue file's columns.

    The reserved unknown aisle/department (id 0) is written empty, as a catalogue says "unknown".
    """
    known = {S.AISLE: S.AISLE_NAME, S.DEPARTMENT: S.DEPARTMENT_NAME}
    frame = data.products.join(data.aisles, on=S.AISLE, how="left").join(data.departments, on=S.DEPARTMENT, how="left")
    return frame.select(
        pl.col(S.PRODUCT).cast(pl.Int64),
        S.PRODUCT_NAME,
        *(
            expr
            for key, name in known.items()
            for expr in (
                pl.when(pl.col(key) != UNKNOWN_ID).then(pl.col(key).cast(pl.Int64)).alias(key),
                pl.when(pl.col(key) != UNKNOWN_ID).then(pl.col(name)).alias(name),
            )
        ),
    ).sort(S.PRODUCT)


def _log_kind(columns: Sequence[str]) -> Kind:
    def recognise(path: Path) -> bool:
        with contextlib.suppress(DataError):
            head = _head(path)
            if head.startswith(PARQUET_MAGIC):
                return list(pl.read_parquet_schema(path)) == list(columns)
            return head.decode("utf-8", errors="replace").splitlines()[0] == ",".join(columns)
        return False

    return Kind("transaction log", folder=False, recognise=recognise)


def _write(frame: pl.DataFrame, path: Path, force: bool, inputs: list[Path]) -> None:
    """``frame`` as Parquet (``.parquet`` / ``.pq``) or CSV (ISO 8601 times), published atomically."""
    with publishing_file(path, _log_kind(frame.columns), force=force, inputs=inputs) as tmp:
        if path.suffix in (".parquet", ".pq"):
            frame.write_parquet(tmp, compression="zstd")
        else:
            frame.write_csv(tmp, datetime_format="%Y-%m-%dT%H:%M:%S")


def to_transactions(
    data_dir: Path,
    path: Path,
    *,
    start: dt.date = DEFAULT_START,
    catalog: Path | None = None,
    force: bool = False,
) -> pl.DataFrame:
    """Write the data folder ``data_dir`` as a transaction log at ``path`` (and its catalogue at
    ``catalog``), CSV or Parquet by suffix; returns the log (:func:`transactions_frame`).

    ``basketcast ingest --format transactions --source PATH [--catalog CATALOG]`` reads it back.
    """
    data = read_dataset(Path(data_dir))
    log = transactions_frame(data, start=start)
    _write(log, Path(path), force, [Path(data_dir)])
    if catalog is not None:
        _write(catalogue_frame(data), Path(catalog), force, [Path(data_dir)])
    return log
