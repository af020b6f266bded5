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

Finding, opening and parsing the files is :mod:`pipeline.data.readers`; this module holds the
source schema (:data:`SOURCE_COLUMNS`), the validation rules and the steps of :func:`ingest`:
locate and read the sources → per-row checks → orders and lines keys and references →
repairs of orders and lines → catalogue tables → ``reordered`` consistency → publish.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from pipeline.data import schema as S
from pipeline.data.publish import check_output
from pipeline.data.readers import (
    ROW,
    SUFFIXES,
    ColumnKind,
    Failures,
    describe_rows,
    find_source,
    read_csv_table,
)
from pipeline.data.storage import DATA_FOLDER, DataManifest, Dataset, write_dataset
from pipeline.errors import DataError

log = logging.getLogger(__name__)

PRIOR_LINES = "order_products__prior"
TRAIN_LINES = "order_products__train"
REQUIRED_FILES = (S.ORDERS, PRIOR_LINES, TRAIN_LINES)
OPTIONAL_FILES = (S.PRODUCTS, S.AISLES, S.DEPARTMENTS)
# The aisle and department of products without one (unknown products, or no products.csv): source
# ids must be positive, so 0 never clashes with a real id.
UNKNOWN_ID = 0
UNKNOWN_NAME = "unknown"

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
MAX_DAYS = S.DAYS_PRIOR_RANGE[1]  # days_since_prior_order is capped here, as in the Kaggle data (30 = '30 or more')


@dataclass
class IngestReport:
    """What an ingest did: the manifest it wrote and the warnings it raised."""

    manifest: DataManifest
    warnings: list[str] = field(default_factory=list)


class Notes:
    """Where ingest reports what it repaired or completed: a warning each, or a failure when strict."""

    def __init__(self, failures: Failures, *, strict: bool) -> None:
        self.failures = failures
        self.strict = strict
        self.warnings: list[str] = []

    def repaired(self, problem: str, repair: str | None = None, *, strict: bool | None = None) -> None:
        """Report ``problem`` and what ingest did about it (``repair``; None: kept as given)."""
        if self.strict if strict is None else strict:
            suffix = "" if repair is None else f"; refused by --strict (without it: {repair})"
            self.failures.messages.append(problem + suffix)
        else:
            self.warnings.append(problem if repair is None else f"{problem}; {repair}")

    def inform(self, message: str) -> None:
        """A warning that strict mode does not refuse (e.g. placeholders for an absent optional file)."""
        self.warnings.append(message)


# --- reading -------------------------------------------------------------------------------
def read_source_csv(path: Path, kind: str, notes: list[str] | None = None) -> pl.DataFrame:
    """Read one source file with the columns of ``kind`` (a key of SOURCE_COLUMNS); see
    :func:`pipeline.data.readers.read_csv_table`."""
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


def _pair_key(a: str, b: str) -> pl.Expr:
    """One UInt64 per (a, b) pair of 32-bit ids: hashing one integer column is far cheaper than a struct."""
    return pl.col(a).cast(pl.UInt64) * (1 << 32) + pl.col(b).cast(pl.UInt64)


def _check_unique(f: Failures, file: str, frame: pl.DataFrame, columns: Sequence[str]) -> None:
    """``columns`` (one id, or a pair of 32-bit ids) must be unique."""
    key = _pair_key(*columns) if len(columns) == 2 else pl.col(columns[0])
    dup = frame.filter(key.is_duplicated()).select(ROW, *columns)
    f.check(file, "+".join(columns), "are duplicates (must be unique)", dup)


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


def repair_days(notes: Notes, file: str, orders: pl.DataFrame) -> pl.DataFrame:
    """``days_since_prior_order``: fractions rounded to the nearest day (halves up), values above
    :data:`MAX_DAYS` capped at it (30 means "30 or more" in the Kaggle data); a warning each."""
    days = pl.col(S.DAYS_PRIOR)
    fractional = days != days.floor()
    rounded = pl.when(fractional).then((days + 0.5).floor()).otherwise(days)
    flagged = orders.select(fractional.any().alias("fractional"), (rounded > MAX_DAYS).any().alias("over")).row(0)
    if not any(flagged):
        return orders  # the usual case: untouched
    if flagged[0]:
        notes.repaired(
            describe_rows(
                file, S.DAYS_PRIOR, "are not whole days", orders.filter(fractional).select(ROW, S.DAYS_PRIOR)
            ),
            "rounded to the nearest day (halves up)",
        )
    if flagged[1]:
        over = orders.filter(rounded > MAX_DAYS).select(ROW, S.USER, S.ORDER_NUMBER, S.DAYS_PRIOR)
        notes.repaired(
            describe_rows(file, S.DAYS_PRIOR, f"are above {MAX_DAYS}", over),
            f"capped at {MAX_DAYS} (as in the Kaggle data, where {MAX_DAYS} means '{MAX_DAYS} or more')",
        )
    return orders.with_columns(rounded.clip(upper_bound=MAX_DAYS).alias(S.DAYS_PRIOR))


def check_line_values(f: Failures, file: str, lines: pl.DataFrame) -> None:
    """Per-row rules of an order_products file."""
    _check_range(f, file, lines, S.CART_POS, 1, COUNT_MAX)
    f.check(file, S.REORDERED, "not 0 or 1", lines.filter(~pl.col(S.REORDERED).is_in([0, 1])).select(ROW, S.REORDERED))


def _is_first() -> pl.Expr:
    """Whether an order is its user's first (the smallest order_number: numbers may have gaps)."""
    return pl.col(S.ORDER_NUMBER) == pl.col(S.ORDER_NUMBER).min().over(S.USER)


def validate_orders(f: Failures, file: str, orders: pl.DataFrame) -> None:
    """Keys and per-user rules of orders.csv (after the per-row rules passed)."""
    _check_unique(f, file, orders, [S.ORDER])
    _check_unique(f, file, orders, [S.USER, S.ORDER_NUMBER])
    f.check(
        file,
        S.DAYS_PRIOR,
        "are empty on a user's later order (only the user's first order may be empty)",
        orders.filter(~_is_first() & pl.col(S.DAYS_PRIOR).is_null()).select(ROW, S.USER, S.ORDER_NUMBER, S.DAYS_PRIOR),
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
def ingest(
    source: Path, out: Path, *, strict: bool = False, strict_reordered: bool = False, force: bool = False
) -> IngestReport:
    """Validate the Kaggle layout in ``source`` and publish the canonical tables to ``out``.

    Raises DataError (and writes nothing) on any failed rule. What ingest repairs or completes
    (see the module docstring) is a warning each, or an error with ``strict``. ``reordered``
    flags that disagree with the history are a warning, or an error with ``strict`` or
    ``strict_reordered`` (which refuses only those). ``out`` may replace only a data folder
    unless ``force`` (:func:`pipeline.data.publish.check_output`), and never ``source``; that is
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
    products, aisles, departments = _catalogue(f, notes, raw, paths, lines)
    f.raise_if_any()
    orders = repair_orders(notes, paths[S.ORDERS].name, orders, lines)
    f.raise_if_any()
    _reordered(notes, paths, lines, orders, strict=strict or strict_reordered)
    f.raise_if_any()

    data = Dataset(
        orders=orders.drop(ROW),
        order_products=lines.drop(ROW),
        products=products,
        aisles=aisles,
        departments=departments,
    )
    return _publish(data, source, out, notes.warnings, force=force)


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


def merge_repeated_lines(notes: Notes, file: str, lines: pl.DataFrame) -> pl.DataFrame:
    """The same product twice in one order becomes one line: the first (lowest add_to_cart_order)."""
    key = _pair_key(S.ORDER, S.PRODUCT)
    if not lines.select(key.is_duplicated().any()).item():
        return lines
    kept = lines.sort(S.CART_POS, ROW).unique(subset=[S.ORDER, S.PRODUCT], keep="first", maintain_order=True)
    dropped = lines.join(kept.select(ROW), on=ROW, how="anti").sort(ROW)
    notes.repaired(
        describe_rows(
            file,
            f"{S.ORDER}+{S.PRODUCT}",
            "repeating a product already in its order",
            dropped.select(ROW, S.ORDER, S.PRODUCT, S.CART_POS),
        ),
        "merged: the product's first line in the order (lowest add_to_cart_order) is kept",
    )
    return kept.sort(ROW)


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
        lines.filter(_pair_key(S.ORDER, S.PRODUCT).is_duplicated() & (pl.col(S.EVAL_SET) == S.TRAIN)).select(
            ROW, S.ORDER, S.PRODUCT
        ),
    )


# --- repairs of orders -----------------------------------------------------------------------------
def repair_orders(notes: Notes, file: str, orders: pl.DataFrame, lines: pl.DataFrame) -> pl.DataFrame:
    """Days on first orders cleared, prior/train orders without lines dropped, order numbers made 1..n.

    Each repair is a warning (an error when strict). Valid orders are returned untouched.
    """
    first_with_days = orders.filter(_is_first() & pl.col(S.DAYS_PRIOR).is_not_null())
    if first_with_days.height:
        notes.repaired(
            describe_rows(
                file,
                S.DAYS_PRIOR,
                "are set on a user's first order",
                first_with_days.select(ROW, S.USER, S.ORDER_NUMBER, S.DAYS_PRIOR),
            ),
            "cleared (a first order has no previous one)",
        )
        orders = orders.with_columns(pl.when(~_is_first()).then(pl.col(S.DAYS_PRIOR)).alias(S.DAYS_PRIOR))
    per_user = orders.group_by(S.USER).agg(
        pl.col(ROW).min(),
        pl.len().alias("orders"),
        pl.col(S.ORDER_NUMBER).min().alias("first"),
        pl.col(S.ORDER_NUMBER).max().alias("last"),
    )
    gaps = per_user.filter((pl.col("first") != 1) | (pl.col("last").cast(pl.UInt32) != pl.col("orders")))
    if gaps.height:
        notes.repaired(
            describe_rows(
                file,
                S.ORDER_NUMBER,
                "with order numbers that do not run 1..n",
                gaps.sort(ROW).select(ROW, S.USER, "orders", "first", "last"),
                noun="user",
            ),
            "renumbered 1..n in their order (days_since_prior_order kept as given)",
        )
    empty = orders.filter(pl.col(S.EVAL_SET) != S.TEST).join(lines.select(S.ORDER).unique(), on=S.ORDER, how="anti")
    if empty.height:
        orders = _drop_orders(notes, file, orders, empty)
    if gaps.height or empty.height:
        orders = orders.with_columns(
            pl.col(S.ORDER_NUMBER).rank("ordinal").over(S.USER).cast(S.TABLE_SCHEMAS[S.ORDERS][S.ORDER_NUMBER])
        )
    return orders


def _drop_orders(notes: Notes, file: str, orders: pl.DataFrame, empty: pl.DataFrame) -> pl.DataFrame:
    """Drop the orders of ``empty``; the user's next order absorbs their days since the previous order."""
    users_before = orders[S.USER].n_unique()
    ordered = orders.sort(S.USER, S.ORDER_NUMBER).with_columns(
        (~pl.col(S.ORDER).is_in(empty[S.ORDER].implode())).alias("_kept")
    )
    # Each kept order and the dropped orders right before it form one group (dropped orders after
    # a user's last kept order form group 0 and simply go).
    group = [S.USER, "_group"]
    days = pl.col(S.DAYS_PRIOR).cast(pl.Int64)
    merged = (
        ordered.with_columns(pl.col("_kept").cast(pl.Int32).cum_sum(reverse=True).over(S.USER).alias("_group"))
        .with_columns(
            pl.when(days.is_null().any().over(group))
            .then(None)  # the group holds the user's first order: the kept one becomes the first
            .otherwise(days.sum().over(group).clip(upper_bound=MAX_DAYS))
            .cast(S.TABLE_SCHEMAS[S.ORDERS][S.DAYS_PRIOR])
            .alias(S.DAYS_PRIOR)
        )
        .filter(pl.col("_kept"))
        .drop("_kept", "_group")
        .sort(ROW)
    )
    gone = users_before - merged[S.USER].n_unique()
    notes.repaired(
        describe_rows(
            file,
            S.ORDER,
            "of eval_set prior/train without lines in the order_products files",
            empty.sort(ROW).select(ROW, S.ORDER, S.USER, S.EVAL_SET),
            noun="order",
        ),
        f"dropped: the user's next order counts the days since the previous kept order (capped at {MAX_DAYS}) "
        f"and order numbers are renumbered 1..n"
        + (
            f"; {gone:,} user{'s' * (gone > 1)} had no other order and {'are' if gone > 1 else 'is'} gone"
            if gone
            else ""
        ),
    )
    return merged


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


def _publish(data: Dataset, source: Path, out: Path, warnings: list[str], *, force: bool) -> IngestReport:
    """Log the warnings and write ``data`` atomically to ``out``."""
    for message in warnings:
        log.warning(message)
    manifest = write_dataset(
        out, data, source=f"kaggle-csv:{source.resolve()}", warnings=len(warnings), force=force, inputs=[source]
    )
    return IngestReport(manifest=manifest, warnings=warnings)


# --- catalogue tables ------------------------------------------------------------------------------
def _catalogue(
    f: Failures,
    notes: Notes,
    raw: dict[str, pl.DataFrame],
    paths: dict[str, Path],
    lines: pl.DataFrame,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Products, aisles and departments: validated and completed when given, placeholders when absent."""
    if S.PRODUCTS not in raw:
        return _placeholder_catalogue(lines, notes)
    products = raw[S.PRODUCTS]
    pfile = paths[S.PRODUCTS].name
    _check_unique(f, pfile, products, [S.PRODUCT])
    catalogues = []
    for table, key, name_col in (
        (S.AISLES, S.AISLE, S.AISLE_NAME),
        (S.DEPARTMENTS, S.DEPARTMENT, S.DEPARTMENT_NAME),
    ):
        if table in raw:
            frame = raw[table]
            _check_unique(f, paths[table].name, frame, [key])
            frame = _complete_table(notes, pfile, paths[table].name, products, frame.drop(ROW), key, name_col)
        else:
            notes.inform(f"{table}.csv not found: {table} get placeholder names ('{name_col} <id>')")
            ids = products.select(pl.col(key).unique().sort())
            frame = ids.with_columns(pl.format(f"{name_col} {{}}", pl.col(key).cast(pl.Int64)).alias(name_col))
        catalogues.append(frame)
    products = _add_unknown_products(notes, paths, products.drop(ROW), lines)
    if products.select((pl.col(S.AISLE) == UNKNOWN_ID).any()).item():
        catalogues = [
            _with_unknown_row(frame, key) for frame, key in zip(catalogues, (S.AISLE, S.DEPARTMENT), strict=True)
        ]
    return products, catalogues[0], catalogues[1]


def _complete_table(
    notes: Notes, pfile: str, tfile: str, products: pl.DataFrame, frame: pl.DataFrame, key: str, name_col: str
) -> pl.DataFrame:
    """``frame`` (aisles or departments) with a row ``unknown <name_col> <id>`` for every id that
    products refer to but ``frame`` lacks."""
    missing = products.join(frame.select(key), on=key, how="anti")
    if not missing.height:
        return frame
    ids = missing.select(pl.col(key).unique().sort())
    notes.repaired(
        describe_rows(pfile, key, f"refer to {name_col}s missing from {tfile}", missing.select(ROW, S.PRODUCT, key)),
        f"{ids.height:,} {name_col}{'s' * (ids.height > 1)} added as 'unknown {name_col} <id>'",
    )
    added = ids.with_columns(pl.format(f"unknown {name_col} {{}}", pl.col(key).cast(pl.Int64)).alias(name_col))
    return pl.concat([frame, added.select(frame.columns).cast(frame.schema)])


def _add_unknown_products(
    notes: Notes, paths: dict[str, Path], products: pl.DataFrame, lines: pl.DataFrame
) -> pl.DataFrame:
    """``products`` with a row ``unknown product <id>`` (aisle and department :data:`UNKNOWN_ID`)
    for every product bought but missing from products.csv."""
    unknown = lines.join(products.select(S.PRODUCT), on=S.PRODUCT, how="anti")
    if not unknown.height:
        return products
    per_product = (
        unknown.group_by(S.PRODUCT)
        .agg(pl.len().alias("lines"), pl.col(S.ORDER).first())
        .sort(["lines", S.PRODUCT], descending=[True, False])
    )
    pfile = paths[S.PRODUCTS].name
    notes.repaired(
        describe_rows(
            f"{paths[PRIOR_LINES].name} / {paths[TRAIN_LINES].name}",
            S.PRODUCT,
            f"missing from {pfile} ({unknown.height:,} line{'s' * (unknown.height > 1)})",
            per_product,
            noun="product",
        ),
        f"added as 'unknown product <id>' in aisle '{UNKNOWN_NAME}' and department '{UNKNOWN_NAME}' "
        f"(id {UNKNOWN_ID}, reserved)",
    )
    added = (
        per_product.select(S.PRODUCT)
        .sort(S.PRODUCT)
        .with_columns(
            pl.format("unknown product {}", pl.col(S.PRODUCT).cast(pl.Int64)).alias(S.PRODUCT_NAME),
            pl.lit(UNKNOWN_ID).alias(S.AISLE),
            pl.lit(UNKNOWN_ID).alias(S.DEPARTMENT),
        )
    )
    return pl.concat([products, added.select(products.columns).cast(products.schema)])


def _with_unknown_row(frame: pl.DataFrame, key: str) -> pl.DataFrame:
    """``frame`` (aisles or departments) with the reserved row (:data:`UNKNOWN_ID`, "unknown")."""
    name_col = next(c for c in frame.columns if c != key)
    row = pl.DataFrame({key: [UNKNOWN_ID], name_col: [UNKNOWN_NAME]})
    return pl.concat([frame, row.cast(frame.schema)])


def _placeholder_catalogue(lines: pl.DataFrame, notes: Notes) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Without products.csv: 'product <id>' for every product bought, one 'unknown' aisle and department."""
    notes.inform(
        "products.csv not found: products get placeholder names ('product <id>') and one 'unknown' aisle and department"
    )
    ids = lines.select(pl.col(S.PRODUCT).unique().sort())
    products = ids.with_columns(
        pl.format("product {}", pl.col(S.PRODUCT).cast(pl.Int64)).alias(S.PRODUCT_NAME),
        pl.lit(UNKNOWN_ID).alias(S.AISLE),
        pl.lit(UNKNOWN_ID).alias(S.DEPARTMENT),
    )
    aisles = pl.DataFrame({S.AISLE: [UNKNOWN_ID], S.AISLE_NAME: [UNKNOWN_NAME]})
    departments = pl.DataFrame({S.DEPARTMENT: [UNKNOWN_ID], S.DEPARTMENT_NAME: [UNKNOWN_NAME]})
    return products, aisles, departments
