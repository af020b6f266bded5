"""Shopping patterns of a canonical data folder: the aggregations behind the dashboard's first section.

Every function takes canonical tables (or the order lines of ``basketcast.features.history.order_lines``) and
returns a small Polars frame with the columns named below; nothing here plots. "Lines" are the
products of orders whose contents are known (the Kaggle ``prior`` and ``train`` files); ``test``
orders count for the time of ordering but have no lines.

The statistics shared with ``basketcast.pipeline.data.describe`` (reorder rate, basket size, days between
orders, orders by day × hour) use its single definitions.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import polars as pl

from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.describe import (
    BASKET_SIZE,
    ORDERS,
    REORDERS,
    basket_sizes,
    days_between,
    orders_by_dow_hour,
)
from basketcast.pipeline.data.describe import reorder_rate as reorder_rate_of_lines

__all__ = [
    "AT_RISK",
    "BASKET_SIZE",
    "DOW_LABELS",
    "LINES",
    "NAME",
    "ORDERS",
    "ORDERS_SINCE",
    "PROBABILITY",
    "REBOUGHT",
    "REORDERS",
    "REORDER_RATE",
    "WEEKEND_DOWS",
    "basket_size_distribution",
    "days_between_distribution",
    "headline",
    "orders_by_dow_hour",
    "reorder_decay",
    "reorder_rate",
    "top_products",
]

# Output columns (besides the canonical ones and ``describe``'s ORDERS, BASKET_SIZE, REORDERS).
LINES: Final = "lines"  # number of order lines
REORDER_RATE: Final = "reorder_rate"  # reorders / lines (``describe.reorder_rate``)
ORDERS_SINCE: Final = "orders_since_last"  # orders since the user last bought the product
AT_RISK: Final = "at_risk"  # (user, product) pairs that reached that many orders without a rebuy
REBOUGHT: Final = "rebought"  # of those, the ones bought again exactly then
PROBABILITY: Final = "probability"  # rebought / at_risk
NAME: Final = "name"

# Days by name, 0 = Sunday (``schema.DAY_NAMES``: an assumption the page states). Days 0 and 1 carry
# the weekend peak of orders (as in ``features/user.py``): the dashboard calls them the weekend.
DOW_LABELS: Final = S.DAY_NAMES
WEEKEND_DOWS: Final = (0, 1)


def basket_size_distribution(order_products: pl.DataFrame) -> pl.DataFrame:
    """Number of orders of each basket size (products per order), over orders with lines.

    Columns ``BASKET_SIZE`` (UInt32), ``ORDERS`` (UInt32), sorted by size; only sizes that occur.
    """
    sizes = basket_sizes(order_products)
    return sizes.group_by(BASKET_SIZE).agg(pl.len().cast(pl.UInt32).alias(ORDERS)).sort(BASKET_SIZE)


def days_between_distribution(orders: pl.DataFrame) -> pl.DataFrame:
    """Orders by days since the user's previous order, every value of 0..30 (first orders excluded).

    Columns ``S.DAYS_PRIOR`` (UInt8), ``ORDERS`` (UInt32).
    """
    lo, hi = S.DAYS_PRIOR_RANGE
    grid = pl.DataFrame({S.DAYS_PRIOR: np.arange(lo, hi + 1, dtype=np.uint8)})
    counts = days_between(orders).to_frame().group_by(S.DAYS_PRIOR).agg(pl.len().cast(pl.UInt32).alias(ORDERS))
    return grid.join(counts, on=S.DAYS_PRIOR, how="left").with_columns(pl.col(ORDERS).fill_null(0)).sort(S.DAYS_PRIOR)


def reorder_rate(lines: pl.DataFrame, by: str, names: pl.DataFrame, name_col: str) -> pl.DataFrame:
    """Lines, reorders and reorder rate per value of ``by`` (e.g. ``S.DEPARTMENT`` or ``S.AISLE``).

    Args:
        lines: order lines with ``by`` and ``S.REORDERED`` (``basketcast.features.history.order_lines``).
        by: the grouping column.
        names: a table with ``by`` and ``name_col`` (e.g. ``data.departments``, ``S.DEPARTMENT_NAME``).
        name_col: the column of ``names`` holding the display name.

    Returns:
        ``by``, ``NAME`` (the display name; ``"<by> <id>"`` when missing from ``names``), ``LINES``,
        ``REORDERS``, ``REORDER_RATE``; sorted by lines (most first), ties by ``by``.
    """
    agg = lines.group_by(by).agg(
        pl.len().cast(pl.UInt32).alias(LINES),
        pl.col(S.REORDERED).cast(pl.UInt32).sum().alias(REORDERS),
        reorder_rate_of_lines().alias(REORDER_RATE),
    )
    return (
        agg.join(names.select(pl.col(by), pl.col(name_col).alias(NAME)), on=by, how="left")
        .with_columns(pl.col(NAME).fill_null(pl.format(f"{by} {{}}", pl.col(by))))
        .select(by, NAME, LINES, REORDERS, REORDER_RATE)
        .sort([LINES, by], descending=[True, False])
    )


def top_products(lines: pl.DataFrame, products: pl.DataFrame, n: int, by: str = LINES) -> pl.DataFrame:
    """The ``n`` products with the most lines (``by=LINES``) or the most reorders (``by=REORDERS``).

    Columns ``S.PRODUCT``, ``S.PRODUCT_NAME`` (``"product <id>"`` when unknown), ``LINES``,
    ``REORDERS``, ``REORDER_RATE``; best first, ties by product id.
    """
    if by not in (LINES, REORDERS):
        raise ValueError(f"by must be {LINES!r} or {REORDERS!r}, got {by!r}")
    counts = reorder_rate(lines, S.PRODUCT, products, S.PRODUCT_NAME).rename({NAME: S.PRODUCT_NAME})
    return counts.sort([by, S.PRODUCT], descending=[True, False]).head(n)


def reorder_decay(lines: pl.DataFrame, max_orders: int = 30, min_at_risk: int = 1) -> pl.DataFrame:
    """How the chance of buying a product again falls with the orders since it was last bought.

    For every (user, product) with purchases at order numbers p1 < … < pm and the user's last order
    with lines L: each gap p(i+1) − p(i) is a rebuy after that many orders; after the last purchase
    the pair went L − pm orders without one (censored). For n = 1..``max_orders``:

    - ``AT_RISK``: pairs that reached n orders since their last purchase without buying it again
      (gaps ≥ n plus censored stretches ≥ n);
    - ``REBOUGHT``: gaps exactly n;
    - ``PROBABILITY``: REBOUGHT / AT_RISK, the chance the product is in the next order given that
      n − 1 orders went by without it (a discrete hazard).

    Args:
        lines: order lines with ``S.USER``, ``S.ORDER_NUMBER``, ``S.PRODUCT``.
        max_orders: the largest n reported.
        min_at_risk: rows with fewer pairs at risk are dropped (their rate is noise).

    Returns:
        ``ORDERS_SINCE`` (UInt16), ``AT_RISK``, ``REBOUGHT`` (UInt64), ``PROBABILITY`` (Float64).
    """
    bought = lines.select(S.USER, S.PRODUCT, pl.col(S.ORDER_NUMBER).cast(pl.Int64)).unique()
    last = bought.group_by(S.USER).agg(pl.col(S.ORDER_NUMBER).max().alias("_last"))
    nxt = bought.sort(S.USER, S.PRODUCT, S.ORDER_NUMBER).with_columns(
        pl.col(S.ORDER_NUMBER).shift(-1).over(S.USER, S.PRODUCT).alias("_next")
    )
    gaps = nxt.filter(pl.col("_next").is_not_null()).select((pl.col("_next") - pl.col(S.ORDER_NUMBER)).alias("_n"))
    censored = (
        nxt.filter(pl.col("_next").is_null())
        .join(last, on=S.USER)
        .select((pl.col("_last") - pl.col(S.ORDER_NUMBER)).alias("_n"))
    )
    top = max_orders + 1  # every value above max_orders lands in one bucket (still at risk below it)
    gap_counts = np.bincount(np.minimum(gaps["_n"].to_numpy(), top), minlength=top + 1)
    cens_counts = np.bincount(np.minimum(censored["_n"].to_numpy(), top), minlength=top + 1)
    at_risk = np.cumsum((gap_counts + cens_counts)[::-1])[::-1]  # at_risk[n] = Σ_{m ≥ n}
    n = np.arange(1, max_orders + 1)
    out = pl.DataFrame(
        {
            ORDERS_SINCE: n.astype(np.uint16),
            AT_RISK: at_risk[n].astype(np.uint64),
            REBOUGHT: gap_counts[n].astype(np.uint64),
        }
    )
    return out.filter(pl.col(AT_RISK) >= max(min_at_risk, 1)).with_columns(
        (pl.col(REBOUGHT) / pl.col(AT_RISK)).alias(PROBABILITY)
    )


def headline(orders: pl.DataFrame, order_products: pl.DataFrame) -> dict[str, float]:
    """A few numbers for the page header: users, orders, lines, products bought, mean basket,
    reorder rate, median days between orders (the definitions of ``basketcast.pipeline.data.describe``)."""
    sizes = basket_sizes(order_products)[BASKET_SIZE]
    days = days_between(orders)
    return {
        "users": float(orders[S.USER].n_unique()),
        "orders": float(orders.height),
        "lines": float(order_products.height),
        "products": float(order_products[S.PRODUCT].n_unique()),
        "basket_size": float(sizes.mean()) if sizes.len() else float("nan"),  # type: ignore[arg-type]
        "reorder_rate": float(order_products.select(reorder_rate_of_lines()).item())
        if order_products.height
        else float("nan"),
        "days_between_median": float(days.median()) if days.len() else float("nan"),  # type: ignore[arg-type]
    }
