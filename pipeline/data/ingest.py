"""Ingest the Kaggle Instacart CSV layout into the canonical data folder.

``ingest(source, out)`` reads ``orders``, ``order_products__prior``, ``order_products__train``
and, when present, ``products``, ``aisles``, ``departments`` — each as ``NAME.csv``,
``NAME.csv.zip`` (as Kaggle distributes them) or ``NAME.csv.gz`` — validates everything
before writing anything, and publishes the canonical Parquet tables atomically.

Every rule that fails contributes one message naming the file, the column, how many rows fail
and the first few offending rows (``row`` = 1-based data row, i.e. file line minus the header).
All messages of a validation pass are raised together as one :class:`DataError`.

Finding, opening and parsing the files is :mod:`pipeline.data.readers`; this module holds the
source schema (:data:`SOURCE_COLUMNS`), the validation rules and the steps of :func:`ingest`:
locate and read the sources → per-row checks → orders and lines keys and references →
catalogue tables → ``reordered`` consistency → publish.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.data import schema as S
from pipeline.data.readers import (
    ROW,
    SUFFIXES,
    ColumnKind,
    Failures,
    describe_rows,
    find_source,
    read_csv_table,
)
from pipeline.data.storage import DataManifest, Dataset, write_dataset
from pipeline.errors import DataError

log = logging.getLogger(__name__)

PRIOR_LINES = "order_products__prior"
TRAIN_LINES = "order_products__train"
REQUIRED_FILES = (S.ORDERS, PRIOR_LINES, TRAIN_LINES)
OPTIONAL_FILES = (S.PRODUCTS, S.AISLES, S.DEPARTMENTS)
UNKNOWN_ID = 0  # placeholder aisle/department id when the source has no products table

# Columns of each source file: name -> "int" | "float" | "str".
SOURCE_COLUMNS: dict[str, dict[str, ColumnKind]] = {
    S.ORDERS: {
        S.ORDER: "int",
        S.USER: "int",
        S.EVAL_SET: "str",
        S.ORDER_NUMBER: "int",
        S.DOW: "int",
        S.HOUR: "int",
        S.DAYS_PRIOR: "float",
    },
    PRIOR_LINES: {S.ORDER: "int", S.PRODUCT: "int", S.CART_POS: "int", S.REORDERED: "int"},
    TRAIN_LINES: {S.ORDER: "int", S.PRODUCT: "int", S.CART_POS: "int", S.REORDERED: "int"},
    S.PRODUCTS: {S.PRODUCT: "int", S.PRODUCT_NAME: "str", S.AISLE: "int", S.DEPARTMENT: "int"},
    S.AISLES: {S.AISLE: "int", S.AISLE_NAME: "str"},
    S.DEPARTMENTS: {S.DEPARTMENT: "int", S.DEPARTMENT_NAME: "str"},
}
NULLABLE = {(S.ORDERS, S.DAYS_PRIOR)}
# Largest id each canonical dtype holds.
ID_MAX = {S.ORDER: 2**32 - 1, S.USER: 2**32 - 1, S.PRODUCT: 2**32 - 1, S.AISLE: 2**16 - 1, S.DEPARTMENT: 2**8 - 1}
COUNT_MAX = 2**16 - 1  # order_number and add_to_cart_order are UInt16


@dataclass
class IngestReport:
    """What an ingest did: the manifest it wrote and the warnings it raised."""

    manifest: DataManifest
    warnings: list[str] = field(default_factory=list)


# --- reading -------------------------------------------------------------------------------
def read_source_csv(path: Path, kind: str) -> pl.DataFrame:
    """Read one source file with the columns of ``kind`` (a key of SOURCE_COLUMNS); see
    :func:`pipeline.data.readers.read_csv_table`."""
    return read_csv_table(path, SOURCE_COLUMNS[kind])


# --- validation ------------------------------------------------------------------------------
def _check_columns(f: Failures, file: str, frame: pl.DataFrame, kind: str) -> None:
    """Nulls, integrality and positivity of ids; shared by every file."""
    for column, type_ in SOURCE_COLUMNS[kind].items():
        col = pl.col(column)
        if (kind, column) not in NULLABLE:
            f.check(file, column, "are empty", frame.filter(col.is_null()).select(ROW, column))
        if type_ == "int":
            f.check(file, column, "are not whole numbers", frame.filter(col != col.floor()).select(ROW, column))
        if column in ID_MAX:
            f.check(file, column, "are not positive ids", frame.filter(col <= 0).select(ROW, column))
            too_big = frame.filter(col > ID_MAX[column]).select(ROW, column)
            f.check(file, column, f"are larger than {ID_MAX[column]:,}", too_big)


def _as_int(frame: pl.DataFrame, kind: str) -> pl.DataFrame:
    """Cast the whole-number columns of a type-checked source frame to Int64."""
    ints = [c for c, t in SOURCE_COLUMNS[kind].items() if t == "int"]
    return frame.with_columns(pl.col(ints).cast(pl.Int64))


def _compact(frame: pl.DataFrame, kind: str) -> pl.DataFrame:
    """Cast a range-checked source frame to the canonical dtypes of its table (ROW kept)."""
    table = S.ORDER_PRODUCTS if kind in (PRIOR_LINES, TRAIN_LINES) else kind
    schema = S.TABLE_SCHEMAS[table]
    return frame.with_columns(pl.col(c).cast(schema[c]) for c in SOURCE_COLUMNS[kind]).with_columns(
        pl.col(ROW).cast(pl.UInt32)
    )


def _check_range(f: Failures, file: str, frame: pl.DataFrame, column: str, lo: int, hi: int | None) -> None:
    """Values of ``column`` must lie in ``lo..hi`` (no upper bound when ``hi`` is None)."""
    col = pl.col(column)
    bad = frame.filter((col < lo) | (col > hi) if hi is not None else (col < lo))
    f.check(file, column, f"out of range {lo}..{hi if hi is not None else ''}", bad.select(ROW, column))


def _pair_key(a: str, b: str) -> pl.Expr:
    """One UInt64 per (a, b) pair of 32-bit ids: hashing one integer column is far cheaper than a struct."""
    return pl.col(a).cast(pl.UInt64) * (1 << 32) + pl.col(b).cast(pl.UInt64)


def _check_unique(f: Failures, file: str, frame: pl.DataFrame, columns: Sequence[str]) -> None:
    """``columns`` (one id, or a pair of 32-bit ids) must be unique."""
    key = _pair_key(*columns) if len(columns) == 2 else pl.col(columns[0])
    dup = frame.filter(key.is_duplicated()).select(ROW, *columns)
    f.check(file, "+".join(columns), "are duplicates (must be unique)", dup)


def check_order_values(f: Failures, file: str, orders: pl.DataFrame) -> None:
    """Per-row rules of orders.csv: eval set names, ranges, days on first/later orders."""
    f.check(
        file,
        S.EVAL_SET,
        f"not one of {list(S.EVAL_SETS)}",
        orders.filter(~pl.col(S.EVAL_SET).is_in(S.EVAL_SETS)).select(ROW, S.EVAL_SET),
    )
    _check_range(f, file, orders, S.ORDER_NUMBER, 1, COUNT_MAX)
    _check_range(f, file, orders, S.DOW, *S.DOW_RANGE)
    _check_range(f, file, orders, S.HOUR, *S.HOUR_RANGE)
    _check_range(f, file, orders, S.DAYS_PRIOR, *S.DAYS_PRIOR_RANGE)
    days = pl.col(S.DAYS_PRIOR)
    f.check(file, S.DAYS_PRIOR, "are not whole days", orders.filter(days != days.floor()).select(ROW, S.DAYS_PRIOR))
    first = pl.col(S.ORDER_NUMBER) == 1
    days_null = pl.col(S.DAYS_PRIOR).is_null()
    f.check(
        file,
        S.DAYS_PRIOR,
        "are empty on a user's later order (only order_number 1 may be empty)",
        orders.filter(~first & days_null).select(ROW, S.USER, S.ORDER_NUMBER, S.DAYS_PRIOR),
    )
    f.check(
        file,
        S.DAYS_PRIOR,
        "are set on a user's first order (must be empty there)",
        orders.filter(first & ~days_null).select(ROW, S.USER, S.ORDER_NUMBER, S.DAYS_PRIOR),
    )


def check_line_values(f: Failures, file: str, lines: pl.DataFrame) -> None:
    """Per-row rules of an order_products file."""
    _check_range(f, file, lines, S.CART_POS, 1, COUNT_MAX)
    f.check(file, S.REORDERED, "not 0 or 1", lines.filter(~pl.col(S.REORDERED).is_in([0, 1])).select(ROW, S.REORDERED))


def validate_orders(f: Failures, file: str, orders: pl.DataFrame) -> None:
    """Keys and per-user rules of orders.csv (after the per-row rules passed)."""
    _check_unique(f, file, orders, [S.ORDER])
    _check_unique(f, file, orders, [S.USER, S.ORDER_NUMBER])
    per_user = orders.group_by(S.USER).agg(
        pl.len().alias("orders"),
        pl.col(S.ORDER_NUMBER).max().alias("max_order_number"),
        (pl.col(S.EVAL_SET) != S.PRIOR).sum().alias("train_or_test"),
        pl.col(S.ORDER_NUMBER).filter(pl.col(S.EVAL_SET) != S.PRIOR).max().alias("train_or_test_number"),
        pl.col(ROW).min(),
    )
    f.check(
        file,
        S.ORDER_NUMBER,
        "users whose order_number does not run 1..n without gaps",
        per_user.filter(pl.col("max_order_number") != pl.col("orders")).select(
            ROW, S.USER, "orders", "max_order_number"
        ),
    )
    f.check(
        file,
        S.EVAL_SET,
        "users with more than one train/test order",
        per_user.filter(pl.col("train_or_test") > 1).select(ROW, S.USER, "train_or_test"),
    )
    f.check(
        file,
        S.EVAL_SET,
        "users whose train/test order is not their last order",
        per_user.filter(pl.col("train_or_test_number") != pl.col("max_order_number")).select(
            ROW, S.USER, "train_or_test_number", "max_order_number"
        ),
    )


def validate_lines(f: Failures, file: str, lines: pl.DataFrame, orders: pl.DataFrame, eval_set: str) -> None:
    """Keys of one order_products file and its references to orders.csv."""
    _check_unique(f, file, lines, [S.ORDER, S.PRODUCT])
    joined = lines.select(ROW, S.ORDER).join(
        orders.select(S.ORDER, pl.col(S.EVAL_SET).alias("order_eval_set")), on=S.ORDER, how="left"
    )
    f.check(
        file,
        S.ORDER,
        "refer to an order missing from orders.csv",
        joined.filter(pl.col("order_eval_set").is_null()).select(ROW, S.ORDER),
    )
    f.check(
        file,
        S.ORDER,
        f"refer to orders whose eval_set is not '{eval_set}' (a {eval_set} file may only hold {eval_set} orders)",
        joined.filter(pl.col("order_eval_set").is_not_null() & (pl.col("order_eval_set") != eval_set)),
    )


def check_reordered(lines: pl.DataFrame, orders: pl.DataFrame) -> pl.DataFrame:
    """Lines whose ``reordered`` flag disagrees with the user's history.

    Expected: 1 iff the same user bought the product in an earlier order. Returns the
    mismatching lines with columns row, order_id, user_id, order_number, product_id, reordered,
    expected (empty frame when all agree).
    """
    keyed = (
        lines.select(ROW, S.ORDER, S.PRODUCT, S.REORDERED)
        .join(orders.select(S.ORDER, S.USER, S.ORDER_NUMBER), on=S.ORDER, how="inner")
        .with_columns(_pair_key(S.USER, S.PRODUCT).alias("_key"))
        .sort("_key", S.ORDER_NUMBER)
    )
    # Sorted by (user, product, order number): a line repeats a purchase iff the row above has its key.
    expected = (pl.col("_key") == pl.col("_key").shift(1)).fill_null(False).cast(pl.UInt8)
    return (
        keyed.with_columns(expected.alias("expected"))
        .filter(pl.col(S.REORDERED) != pl.col("expected"))
        .select(ROW, S.ORDER, S.USER, S.ORDER_NUMBER, S.PRODUCT, S.REORDERED, "expected")
        .sort(ROW)
    )


# --- the command ---------------------------------------------------------------------------------
def ingest(source: Path, out: Path, *, strict_reordered: bool = False) -> IngestReport:
    """Validate the Kaggle layout in ``source`` and publish the canonical tables to ``out``.

    Raises DataError (and writes nothing) on any failed rule. ``reordered`` flags that disagree
    with the history are a warning, or an error with ``strict_reordered``.
    """
    source = Path(source)
    paths = locate_sources(source)
    raw = {name: read_source_csv(path, name) for name, path in paths.items()}
    warnings: list[str] = []
    f = Failures()
    check_values(f, paths, raw)
    orders = raw[S.ORDERS]
    validate_orders(f, paths[S.ORDERS].name, orders)
    for name, eval_set in ((PRIOR_LINES, S.PRIOR), (TRAIN_LINES, S.TRAIN)):
        validate_lines(f, paths[name].name, raw[name], orders, eval_set)
    lines = merge_lines(raw)
    validate_merged_lines(f, paths, orders, lines)
    products, aisles, departments = _catalogue(f, raw, paths, lines, warnings)
    f.raise_if_any()
    _reordered_or_raise(paths, lines, orders, warnings, strict=strict_reordered)

    data = Dataset(
        orders=orders.drop(ROW),
        order_products=lines.drop(ROW),
        products=products,
        aisles=aisles,
        departments=departments,
    )
    return _publish(data, source, out, warnings)


def locate_sources(source: Path) -> dict[str, Path]:
    """The file of each source table present in ``source`` (required and optional ones).

    Raises DataError when the folder or a required file is missing, or a table is present in
    more than one form.
    """
    if not source.is_dir():
        raise DataError(f"{source}: source folder not found")
    paths: dict[str, Path] = {}
    for name in REQUIRED_FILES + OPTIONAL_FILES:
        path = find_source(source, name)
        if path is None and name in REQUIRED_FILES:
            raise DataError(f"{source}: required file {name}{SUFFIXES[0]} (or {' / '.join(SUFFIXES[1:])}) not found")
        if path is not None:
            paths[name] = path
    return paths


def check_values(f: Failures, paths: dict[str, Path], raw: dict[str, pl.DataFrame]) -> None:
    """Per-row rules of every file; on success ``raw`` holds frames in their canonical dtypes.

    Two passes, each raising its failures together: column types and ids first, then the value
    ranges. ``raw`` is updated in place (each frame replaced by its cast version).
    """
    for name, frame in raw.items():
        _check_columns(f, paths[name].name, frame, name)
    f.raise_if_any()
    # Types are sound now: whole numbers (and days, checked whole-valued below) become Int64.
    raw.update({name: _as_int(frame, name) for name, frame in raw.items()})
    check_order_values(f, paths[S.ORDERS].name, raw[S.ORDERS])
    for name in (PRIOR_LINES, TRAIN_LINES):
        check_line_values(f, paths[name].name, raw[name])
    f.raise_if_any()
    # Every value fits its canonical dtype now: compact columns keep the relational checks small.
    raw.update({name: _compact(frame, name) for name, frame in raw.items()})


def merge_lines(raw: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """The prior and train lines as one frame with their ``eval_set``.

    Removes both line frames from ``raw`` so their memory is freed once merged.
    """
    lines = pl.concat(
        [
            raw[PRIOR_LINES].with_columns(pl.lit(S.PRIOR, S.EVAL_SET_DTYPE).alias(S.EVAL_SET)),
            raw[TRAIN_LINES].with_columns(pl.lit(S.TRAIN, S.EVAL_SET_DTYPE).alias(S.EVAL_SET)),
        ]
    )
    del raw[PRIOR_LINES], raw[TRAIN_LINES]
    return lines


def validate_merged_lines(f: Failures, paths: dict[str, Path], orders: pl.DataFrame, lines: pl.DataFrame) -> None:
    """Rules across both line files: no line in both, and every prior/train order has lines."""
    f.check(
        f"{paths[PRIOR_LINES].name} + {paths[TRAIN_LINES].name}",
        f"{S.ORDER}+{S.PRODUCT}",
        "appear in both files",
        lines.filter(_pair_key(S.ORDER, S.PRODUCT).is_duplicated() & (pl.col(S.EVAL_SET) == S.TRAIN)).select(
            ROW, S.ORDER, S.PRODUCT
        ),
    )
    empty_orders = orders.filter(pl.col(S.EVAL_SET) != S.TEST).join(lines.select(S.ORDER), on=S.ORDER, how="anti")
    f.check(
        paths[S.ORDERS].name,
        S.ORDER,
        "prior/train orders have no lines in the order_products files",
        empty_orders.select(ROW, S.ORDER, S.EVAL_SET),
    )


def _reordered_or_raise(
    paths: dict[str, Path], lines: pl.DataFrame, orders: pl.DataFrame, warnings: list[str], *, strict: bool
) -> None:
    """Append a warning for ``reordered`` flags that disagree with the history; raise if ``strict``."""
    mismatched = check_reordered(lines, orders)
    if mismatched.height:
        msg = describe_rows(
            f"{paths[PRIOR_LINES].name} + {paths[TRAIN_LINES].name}",
            S.REORDERED,
            "disagree with the user's history (1 iff bought in an earlier order)",
            mismatched,
        )
        if strict:
            raise DataError(f"ingest: nothing written:\n- {msg}")
        warnings.append(msg)


def _publish(data: Dataset, source: Path, out: Path, warnings: list[str]) -> IngestReport:
    """Log the warnings and write ``data`` atomically to ``out``."""
    for message in warnings:
        log.warning(message)
    manifest = write_dataset(out, data, source=f"kaggle-csv:{source.resolve()}", warnings=len(warnings))
    return IngestReport(manifest=manifest, warnings=warnings)


# --- catalogue tables ------------------------------------------------------------------------------
def _catalogue(
    f: Failures,
    raw: dict[str, pl.DataFrame],
    paths: dict[str, Path],
    lines: pl.DataFrame,
    warnings: list[str],
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Products, aisles and departments: validated when given, placeholders when absent."""
    if S.PRODUCTS not in raw:
        return _placeholder_catalogue(lines, warnings)
    products = raw[S.PRODUCTS]
    pfile = paths[S.PRODUCTS].name
    _check_unique(f, pfile, products, [S.PRODUCT])
    unknown = lines.join(products.select(S.PRODUCT), on=S.PRODUCT, how="anti")
    f.check(
        f"{paths[PRIOR_LINES].name} / {paths[TRAIN_LINES].name}",
        S.PRODUCT,
        f"refer to products missing from {pfile}",
        unknown.select(ROW, S.EVAL_SET, S.ORDER, S.PRODUCT),
    )
    catalogues = []
    for table, key, name_col in (
        (S.AISLES, S.AISLE, S.AISLE_NAME),
        (S.DEPARTMENTS, S.DEPARTMENT, S.DEPARTMENT_NAME),
    ):
        if table in raw:
            frame = raw[table]
            _check_unique(f, paths[table].name, frame, [key])
            missing = products.join(frame.select(key), on=key, how="anti")
            f.check(
                pfile,
                key,
                f"refer to {table} missing from {paths[table].name}",
                missing.select(ROW, S.PRODUCT, key),
            )
            catalogues.append(frame.drop(ROW))
        else:
            warnings.append(f"{table}.csv not found: {table} get placeholder names ('{name_col} <id>')")
            ids = products.select(pl.col(key).unique().sort())
            catalogues.append(
                ids.with_columns(pl.format(f"{name_col} {{}}", pl.col(key).cast(pl.Int64)).alias(name_col))
            )
    return products.drop(ROW), catalogues[0], catalogues[1]


def _placeholder_catalogue(lines: pl.DataFrame, warnings: list[str]) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Without products.csv: 'product <id>' for every product bought, one 'unknown' aisle and department."""
    warnings.append(
        "products.csv not found: products get placeholder names ('product <id>') and one 'unknown' aisle and department"
    )
    ids = lines.select(pl.col(S.PRODUCT).unique().sort())
    products = ids.with_columns(
        pl.format("product {}", pl.col(S.PRODUCT).cast(pl.Int64)).alias(S.PRODUCT_NAME),
        pl.lit(UNKNOWN_ID).alias(S.AISLE),
        pl.lit(UNKNOWN_ID).alias(S.DEPARTMENT),
    )
    aisles = pl.DataFrame({S.AISLE: [UNKNOWN_ID], S.AISLE_NAME: ["unknown"]})
    departments = pl.DataFrame({S.DEPARTMENT: [UNKNOWN_ID], S.DEPARTMENT_NAME: ["unknown"]})
    return products, aisles, departments
