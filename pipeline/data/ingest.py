"""Ingest the Kaggle Instacart CSV layout into the canonical data folder.

``ingest(source, out)`` reads ``orders``, ``order_products__prior``, ``order_products__train``
and, when present, ``products``, ``aisles``, ``departments`` — each as ``NAME.csv``,
``NAME.csv.zip`` (as Kaggle distributes them) or ``NAME.csv.gz`` — validates everything
before writing anything, and publishes the canonical Parquet tables atomically.

Every rule that fails contributes one message naming the file, the column, how many rows fail
and the first few offending rows (``row`` = 1-based data row, i.e. file line minus the header).
All messages of a validation pass are raised together as one :class:`DataError`.

What real logs contain beyond the Kaggle files is repaired, each repair reported as one warning
with a count and examples (and refused instead with ``strict=True``): products missing from
``products.csv`` (added as ``unknown product <id>`` in the reserved aisle and department
:data:`UNKNOWN_ID`), aisles/departments missing from their tables, the same product twice in an
order, prior/train orders without lines, order numbers with gaps, ``days_since_prior_order``
above 30, fractional or set on a first order, and text that is not UTF-8. The decision table is
in the README ("Using the full Kaggle data").

Finding, opening and parsing the files is :mod:`basketcast.pipeline.data.readers`; this module holds the
source schema (:data:`SOURCE_COLUMNS`), the validation rules and the steps of :func:`ingest`:
locate and read the sources → per-row checks → orders and lines keys and references →
repairs of orders and lines → catalogue tables → ``reordered`` consistency → publish.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.publish import check_output
from basketcast.pipeline.data.readers import (
    PRIOR_LINES,
    ROW,
    SUFFIXES,
    TRAIN_LINES,
    ColumnKind,
    Failures,
    describe_rows,
    find_source,
    read_csv_table,
)
from basketcast.pipeline.data.repairs import (
    Notes,
    catalogue_tables,
    check_unique,
    is_first,
    merge_repeated_lines,
    pair_key,
    repair_days,
    repair_orders,
)
from basketcast.pipeline.data.storage import DATA_FOLDER, DataManifest, Dataset, write_dataset
from basketcast.pipeline.errors import DataError

log = logging.getLogger(__name__)

REQUIRED_FILES = (S.ORDERS, PRIOR_LINES, TRAIN_LINES)
OPTIONAL_FILES = (S.PRODUCTS, S.AISLES, S.DEPARTMENTS)

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
def read_source_csv(path: Path, kind: str, notes: list[str] | None = None) -> pl.DataFrame:
    """Read one source file with the columns of ``kind`` (a key of SOURCE_COLUMNS); see
    :func:`basketcast.pipeline.data.readers.read_csv_table`."""
    return read_csv_table(path, SOURCE_COLUMNS[kind], notes=notes)


def check_has_rows(paths: dict[str, Path], raw: dict[str, pl.DataFrame]) -> None:
    """A file with a header and no rows is refused, except the train lines of a log without train orders."""
    for name, frame in raw.items():
        if frame.height:
            continue
        if name == TRAIN_LINES:
            train_orders = raw[S.ORDERS].filter(pl.col(S.EVAL_SET) == S.TRAIN).height
            if not train_orders:
                continue
            raise DataError(
                f"{paths[name]}: has a header but no data rows, "
                f"while {paths[S.ORDERS].name} has {train_orders:,} train order{'s' * (train_orders > 1)}"
            )
        hint = " (remove it to use placeholder names)" if name in OPTIONAL_FILES else ""
        raise DataError(f"{paths[name]}: has a header but no data rows{hint}")


# --- validation ------------------------------------------------------------------------------
def _check_columns(f: Failures, file: str, frame: pl.DataFrame, kind: str) -> None:
    """Nulls, finiteness, integrality and positivity of ids; shared by every file."""
    for column, type_ in SOURCE_COLUMNS[kind].items():
        col = pl.col(column)
        if (kind, column) not in NULLABLE:
            f.check(file, column, "are empty", frame.filter(col.is_null()).select(ROW, column))
        if type_ == "str":
            continue
        finite = col.is_finite()  # NaN and infinity parse as numbers: reported once, as such
        f.check(file, column, "are not finite numbers", frame.filter(~finite).select(ROW, column))
        if type_ == "int":
            f.check(
                file, column, "are not whole numbers", frame.filter(finite & (col != col.floor())).select(ROW, column)
            )
        if column in ID_MAX:
            f.check(file, column, "are not positive ids", frame.filter(finite & (col <= 0)).select(ROW, column))
            too_big = frame.filter(finite & (col > ID_MAX[column])).select(ROW, column)
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


def check_order_values(f: Failures, file: str, orders: pl.DataFrame) -> None:
    """Per-row rules of orders.csv: eval set names and ranges (days: only ``>= 0``, see :func:`repair_days`)."""
    f.check(
        file,
        S.EVAL_SET,
        f"not one of {list(S.EVAL_SETS)}",
        orders.filter(~pl.col(S.EVAL_SET).is_in(S.EVAL_SETS)).select(ROW, S.EVAL_SET),
    )
    _check_range(f, file, orders, S.ORDER_NUMBER, 1, COUNT_MAX)
    _check_range(f, file, orders, S.DOW, *S.DOW_RANGE)
    _check_range(f, file, orders, S.HOUR, *S.HOUR_RANGE)
    _check_range(f, file, orders, S.DAYS_PRIOR, S.DAYS_PRIOR_RANGE[0], None)


def check_line_values(f: Failures, file: str, lines: pl.DataFrame) -> None:
    """Per-row rules of an order_products file."""
    _check_range(f, file, lines, S.CART_POS, 1, COUNT_MAX)
    f.check(file, S.REORDERED, "not 0 or 1", lines.filter(~pl.col(S.REORDERED).is_in([0, 1])).select(ROW, S.REORDERED))


def validate_orders(f: Failures, file: str, orders: pl.DataFrame) -> None:
    """Keys and per-user rules of orders.csv (after the per-row rules passed)."""
    check_unique(f, file, orders, [S.ORDER])
    check_unique(f, file, orders, [S.USER, S.ORDER_NUMBER])
    f.check(
        file,
        S.DAYS_PRIOR,
        "are empty on a user's later order (only the user's first order may be empty)",
        orders.filter(~is_first() & pl.col(S.DAYS_PRIOR).is_null()).select(ROW, S.USER, S.ORDER_NUMBER, S.DAYS_PRIOR),
    )
    per_user = orders.group_by(S.USER).agg(
        (pl.col(S.EVAL_SET) != S.PRIOR).sum().alias("train_or_test"),
        pl.col(S.ORDER_NUMBER).max().alias("max_order_number"),
        pl.col(S.ORDER_NUMBER).filter(pl.col(S.EVAL_SET) != S.PRIOR).max().alias("train_or_test_number"),
        pl.col(ROW).min(),
    )
    f.check(
        file,
        S.EVAL_SET,
        "have more than one train/test order",
        per_user.filter(pl.col("train_or_test") > 1).select(ROW, S.USER, "train_or_test"),
        noun="user",
    )
    f.check(
        file,
        S.EVAL_SET,
        "have a train/test order that is not their last order",
        per_user.filter(pl.col("train_or_test_number") != pl.col("max_order_number")).select(
            ROW, S.USER, "train_or_test_number", "max_order_number"
        ),
        noun="user",
    )


def validate_lines(f: Failures, file: str, lines: pl.DataFrame, orders: pl.DataFrame, eval_set: str) -> None:
    """References of one order_products file to orders.csv."""
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
        .with_columns(pair_key(S.USER, S.PRODUCT).alias("_key"))
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
def ingest(
    source: Path, out: Path, *, strict: bool = False, strict_reordered: bool = False, force: bool = False
) -> IngestReport:
    """Validate the Kaggle layout in ``source`` and publish the canonical tables to ``out``.

    Raises DataError (and writes nothing) on any failed rule. What ingest repairs or completes
    (see the module docstring) is a warning each, or an error with ``strict``. ``reordered``
    flags that disagree with the history are a warning, or an error with ``strict`` or
    ``strict_reordered`` (which refuses only those). ``out`` may replace only a data folder
    unless ``force`` (:func:`basketcast.pipeline.data.publish.check_output`), and never ``source``; that is
    checked before anything is read.
    """
    source, out = Path(source), Path(out)
    check_output(out, DATA_FOLDER, force, [source])
    paths = locate_sources(source)
    f = Failures()
    notes = Notes(f, strict=strict)
    reader_notes: list[str] = []
    raw = {name: read_source_csv(path, name, reader_notes) for name, path in paths.items()}
    for message in reader_notes:
        notes.repaired(message)
    check_has_rows(paths, raw)
    check_values(f, notes, paths, raw)
    orders = raw[S.ORDERS]
    validate_orders(f, paths[S.ORDERS].name, orders)
    for name, eval_set in ((PRIOR_LINES, S.PRIOR), (TRAIN_LINES, S.TRAIN)):
        validate_lines(f, paths[name].name, raw[name], orders, eval_set)
        raw[name] = merge_repeated_lines(notes, paths[name].name, raw[name])
    lines = merge_lines(raw)
    validate_merged_lines(f, paths, lines)
    products, aisles, departments = catalogue_tables(f, notes, raw, paths, lines)
    f.raise_if_any()
    orders = repair_orders(notes, paths[S.ORDERS].name, orders, lines)
    f.raise_if_any()
    _reordered(notes, paths, lines, orders, strict=strict or strict_reordered)
    f.raise_if_any()

    return publish_tables(
        out,
        orders,
        lines,
        (products, aisles, departments),
        source=f"kaggle-csv:{source.resolve()}",
        inputs=[source],
        warnings=notes.warnings,
        force=force,
    )


def locate_sources(source: Path) -> dict[str, Path]:
    """The file of each source table present in ``source`` (required and optional ones).

    Raises DataError when the folder or a required file is missing, or a table is present in
    more than one form or not as a readable file.
    """
    if not source.is_dir():
        what = "is a file, expected the folder holding the CSV files" if source.exists() else "source folder not found"
        raise DataError(f"{source}: {what}")
    paths: dict[str, Path] = {}
    for name in REQUIRED_FILES + OPTIONAL_FILES:
        path = find_source(source, name)
        if path is None and name in REQUIRED_FILES:
            raise DataError(f"{source}: required file {name}{SUFFIXES[0]} (or {' / '.join(SUFFIXES[1:])}) not found")
        if path is not None:
            paths[name] = path
    return paths


def check_values(f: Failures, notes: Notes, paths: dict[str, Path], raw: dict[str, pl.DataFrame]) -> None:
    """Per-row rules of every file; on success ``raw`` holds frames in their canonical dtypes.

    Two passes, each raising its failures together: column types and ids first, then the value
    ranges (days repaired, see :func:`repair_days`). ``raw`` is updated in place (each frame
    replaced by its cast version).
    """
    for name, frame in raw.items():
        _check_columns(f, paths[name].name, frame, name)
    f.raise_if_any()
    # Types are sound now: whole numbers become Int64 (days stay Float64 until repaired).
    raw.update({name: _as_int(frame, name) for name, frame in raw.items()})
    check_order_values(f, paths[S.ORDERS].name, raw[S.ORDERS])
    for name in (PRIOR_LINES, TRAIN_LINES):
        check_line_values(f, paths[name].name, raw[name])
    f.raise_if_any()
    raw[S.ORDERS] = repair_days(notes, paths[S.ORDERS].name, raw[S.ORDERS])
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


def validate_merged_lines(f: Failures, paths: dict[str, Path], lines: pl.DataFrame) -> None:
    """Rules across both line files: no line in both."""
    f.check(
        f"{paths[PRIOR_LINES].name} + {paths[TRAIN_LINES].name}",
        f"{S.ORDER}+{S.PRODUCT}",
        "appear in both files",
        lines.filter(pair_key(S.ORDER, S.PRODUCT).is_duplicated() & (pl.col(S.EVAL_SET) == S.TRAIN)).select(
            ROW, S.ORDER, S.PRODUCT
        ),
    )


def _reordered(
    notes: Notes, paths: dict[str, Path], lines: pl.DataFrame, orders: pl.DataFrame, *, strict: bool
) -> None:
    """Report ``reordered`` flags that disagree with the history (kept as given)."""
    mismatched = check_reordered(lines, orders)
    if mismatched.height:
        notes.repaired(
            describe_rows(
                f"{paths[PRIOR_LINES].name} + {paths[TRAIN_LINES].name}",
                S.REORDERED,
                "disagree with the user's history (1 iff bought in an earlier order)",
                mismatched,
            ),
            strict=strict,
        )


def publish_tables(
    out: Path,
    orders: pl.DataFrame,
    lines: pl.DataFrame,
    catalogue: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame],
    *,
    source: str,
    inputs: list[Path],
    warnings: list[str],
    force: bool,
) -> IngestReport:
    """The checked tables as a data folder at ``out``, written atomically: the readers' ROW column
    dropped from orders and lines, ``catalogue`` = (products, aisles, departments), ``source`` the
    manifest's description of where they came from; the warnings are logged first."""
    products, aisles, departments = catalogue
    data = Dataset(
        orders=orders.drop(ROW),
        order_products=lines.drop(ROW),
        products=products,
        aisles=aisles,
        departments=departments,
    )
    for message in warnings:
        log.warning(message)
    manifest = write_dataset(out, data, source=source, warnings=len(warnings), force=force, inputs=inputs)
    return IngestReport(manifest=manifest, warnings=warnings)
