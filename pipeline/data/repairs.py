"""What ingest repairs or completes in real logs, each reported as one warning (or refused).

Real grocery logs converted to the Kaggle layout are messier than Kaggle's files. The repairs
here keep every order and product that can be kept and say what they did (:class:`Notes`: a
warning each, or a failure with ``strict``): ``days_since_prior_order`` above 30, fractional or
set on a first order; the same product twice in an order; prior/train orders without lines and
order numbers with gaps; products, aisles and departments missing from the catalogue (added as
"unknown", :data:`UNKNOWN_ID`). The decision table is in the README ("Using the full Kaggle data");
:mod:`basketcast.pipeline.data.ingest` calls these steps in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.readers import PRIOR_LINES, ROW, TRAIN_LINES, Failures, describe_rows

# The aisle and department of products without one (unknown products, or no products.csv): source
# ids must be positive, so 0 never clashes with a real id.
UNKNOWN_ID = 0
UNKNOWN_NAME = "unknown"
MAX_DAYS = S.DAYS_PRIOR_RANGE[1]  # days_since_prior_order is capped here, as in the Kaggle data (30 = '30 or more')


def pair_key(a: str, b: str) -> pl.Expr:
    """One UInt64 per (a, b) pair of 32-bit ids: hashing one integer column is far cheaper than a struct."""
    return pl.col(a).cast(pl.UInt64) * (1 << 32) + pl.col(b).cast(pl.UInt64)


def check_unique(f: Failures, file: str, frame: pl.DataFrame, columns: Sequence[str]) -> None:
    """``columns`` (one id, or a pair of 32-bit ids) must be unique."""
    key = pair_key(*columns) if len(columns) == 2 else pl.col(columns[0])
    dup = frame.filter(key.is_duplicated()).select(ROW, *columns)
    f.check(file, "+".join(columns), "are duplicates (must be unique)", dup)


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


def is_first() -> pl.Expr:
    """Whether an order is its user's first (the smallest order_number: numbers may have gaps)."""
    return pl.col(S.ORDER_NUMBER) == pl.col(S.ORDER_NUMBER).min().over(S.USER)


def merge_repeated_lines(notes: Notes, file: str, lines: pl.DataFrame) -> pl.DataFrame:
    """The same product twice in one order becomes one line: the first (lowest add_to_cart_order)."""
    key = pair_key(S.ORDER, S.PRODUCT)
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


# --- repairs of orders -----------------------------------------------------------------------------
def repair_orders(notes: Notes, file: str, orders: pl.DataFrame, lines: pl.DataFrame) -> pl.DataFrame:
    """Days on first orders cleared, prior/train orders without lines dropped, order numbers made 1..n.

    Each repair is a warning (an error when strict). Valid orders are returned untouched.
    """
    first_with_days = orders.filter(is_first() & pl.col(S.DAYS_PRIOR).is_not_null())
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
        orders = orders.with_columns(pl.when(~is_first()).then(pl.col(S.DAYS_PRIOR)).alias(S.DAYS_PRIOR))
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


# --- catalogue tables ------------------------------------------------------------------------------
def catalogue_tables(
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
    check_unique(f, pfile, products, [S.PRODUCT])
    catalogues = []
    for table, key, name_col in (
        (S.AISLES, S.AISLE, S.AISLE_NAME),
        (S.DEPARTMENTS, S.DEPARTMENT, S.DEPARTMENT_NAME),
    ):
        if table in raw:
            frame = raw[table]
            check_unique(f, paths[table].name, frame, [key])
            frame = _complete_table(notes, pfile, paths[table].name, products, frame.drop(ROW), key, name_col)
        else:
            notes.inform(f"{table}.csv not found: {table} get placeholder names ('{name_col} <id>')")
            ids = products.select(pl.col(key).unique().sort())
            frame = ids.with_columns(pl.format(f"{name_col} {{}}", pl.col(key).cast(pl.Int64)).alias(name_col))
        catalogues.append(frame)
    products = _add_unknown_products(notes, paths, products.drop(ROW), lines)
    if products.select((pl.col(S.AISLE) == UNKNOWN_ID).any()).item():
        catalogues = [
            with_unknown_row(frame, key) for frame, key in zip(catalogues, (S.AISLE, S.DEPARTMENT), strict=True)
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
    return with_unknown_products(products, per_product[S.PRODUCT])


def with_unknown_products(products: pl.DataFrame, ids: pl.Series) -> pl.DataFrame:
    """``products`` with a row ``unknown product <id>`` in the reserved aisle and department
    (:data:`UNKNOWN_ID`) for each of ``ids`` (not in ``products``), in id order."""
    added = (
        ids.to_frame(S.PRODUCT)
        .sort(S.PRODUCT)
        .with_columns(
            pl.format("unknown product {}", pl.col(S.PRODUCT).cast(pl.Int64)).alias(S.PRODUCT_NAME),
            pl.lit(UNKNOWN_ID).alias(S.AISLE),
            pl.lit(UNKNOWN_ID).alias(S.DEPARTMENT),
        )
    )
    return pl.concat([products, added.select(products.columns).cast(products.schema)])


def with_unknown_row(frame: pl.DataFrame, key: str) -> pl.DataFrame:
    """``frame`` (aisles or departments) with the reserved row (:data:`UNKNOWN_ID`, "unknown"),
    unless it has it already."""
    if (frame[key] == UNKNOWN_ID).any():
        return frame
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
