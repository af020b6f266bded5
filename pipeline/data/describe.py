"""The first statistics a data scientist checks on a canonical :class:`~basketcast.pipeline.data.storage.Dataset`.

:func:`describe` computes them (plain Python numbers, lists and dicts, ready for JSON) and
:func:`format_description` renders them as a one-screen text report.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import polars as pl

from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.storage import Dataset

__all__ = [
    "BASKET_SIZE",
    "HOUR_BANDS",
    "ORDERS",
    "REORDERS",
    "basket_sizes",
    "days_between",
    "describe",
    "format_description",
    "orders_by_dow_hour",
    "reorder_rate",
]

# Columns of the frames below.
ORDERS: Final = "orders"  # number of orders
BASKET_SIZE: Final = "basket_size"  # products in an order
REORDERS: Final = "reorders"  # lines with reordered = 1

# Hour bands of the compact dow x hour block of the text report: (label, first hour, last hour).
HOUR_BANDS: Final[tuple[tuple[str, int, int], ...]] = (
    ("0-5", 0, 5),
    ("6-8", 6, 8),
    ("9-11", 9, 11),
    ("12-14", 12, 14),
    ("15-17", 15, 17),
    ("18-20", 18, 20),
    ("21-23", 21, 23),
)
TOP_DEPARTMENTS: Final = 5
_N_DOW: Final = S.DOW_RANGE[1] - S.DOW_RANGE[0] + 1
_N_HOUR: Final = S.HOUR_RANGE[1] - S.HOUR_RANGE[0] + 1
_COUNT: Final = "count"


def _num(value: Any) -> float | None:
    """A Polars scalar as a float (``None`` stays ``None``)."""
    return None if value is None else float(value)


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def reorder_rate(where: pl.Expr | None = None) -> pl.Expr:
    """The reorder rate: the share of order lines with ``reordered = 1`` (Float64; null without lines).

    Every line whose order's contents are known counts, ``prior`` and ``train`` alike (the flag means
    the same in both: the user bought the product in an earlier order), first orders included (their
    lines are never reorders, and they are part of what the shop sells). Use it in ``select`` for
    the whole table or in ``group_by(...).agg`` per group (department, aisle, product). ``where``
    keeps only some lines first: a per-user rate leaves out the user's first order
    (``pl.col(S.ORDER_NUMBER) > 1``), which cannot hold a reorder.
    """
    flag = pl.col(S.REORDERED) if where is None else pl.col(S.REORDERED).filter(where)
    return flag.cast(pl.Float64).mean()


def basket_sizes(order_products: pl.DataFrame) -> pl.DataFrame:
    """One row per order with lines: ``S.ORDER``, ``BASKET_SIZE`` (its products) and ``REORDERS``
    (its lines with ``reordered = 1``), both UInt32, in no particular order.

    The basket size statistics (mean, median, distribution) are over these orders: a ``test``
    order, whose contents are unknown, has no basket size (not a size of 0).
    """
    return order_products.group_by(S.ORDER).agg(
        pl.len().cast(pl.UInt32).alias(BASKET_SIZE), pl.col(S.REORDERED).cast(pl.UInt32).sum().alias(REORDERS)
    )


def days_between(orders: pl.DataFrame) -> pl.Series:
    """Days since the same user's previous order (``S.DAYS_PRIOR``), one value per order that has a
    previous one: first orders (null) are left out, ``test`` orders count. Instacart caps it at 30."""
    return orders[S.DAYS_PRIOR].drop_nulls()


def orders_by_dow_hour(orders: pl.DataFrame) -> pl.DataFrame:
    """Orders per (day of week, hour): all 7 × 24 cells, zeros included, sorted by day then hour.

    Columns ``S.DOW`` (UInt8), ``S.HOUR`` (UInt8), ``ORDERS`` (UInt32). Every order counts,
    ``test`` orders included (their time is known).
    """
    dows = np.arange(S.DOW_RANGE[0], S.DOW_RANGE[1] + 1, dtype=np.uint8)
    hours = np.arange(S.HOUR_RANGE[0], S.HOUR_RANGE[1] + 1, dtype=np.uint8)
    grid = pl.DataFrame({S.DOW: np.repeat(dows, hours.size), S.HOUR: np.tile(hours, dows.size)})
    counts = orders.group_by(S.DOW, S.HOUR).agg(pl.len().cast(pl.UInt32).alias(ORDERS))
    return (
        grid.join(counts, on=[S.DOW, S.HOUR], how="left").with_columns(pl.col(ORDERS).fill_null(0)).sort(S.DOW, S.HOUR)
    )


def describe(data: Dataset) -> dict[str, Any]:
    """Headline statistics of ``data`` (canonical tables), as JSON-ready Python values.

    Returns a dict with:

    - ``users``, ``orders``, ``lines``, ``products`` (catalog size), ``products_bought`` (distinct
      products in the lines);
    - ``orders_per_user``: mean, median, min, max (the train/test order included);
    - ``basket_size``: mean, median, p90 of lines per order, over orders that have lines
      (:func:`basket_sizes`);
    - ``reorder_ratio``: share of all order lines with ``reordered = 1`` (:func:`reorder_rate`);
    - ``no_reorder_share``: share of orders with lines and ``order_number > 1`` that contain no
      reordered product;
    - ``days_between``: mean, median, share_7, share_30 of ``days_since_prior_order`` (non-null,
      :func:`days_between`);
    - ``dow_hour``: 7 x 24 nested list of order counts (``[dow][hour]``); ``orders_by_dow``: 7 counts;
    - ``top_departments``: up to 5 ``{"department", "share"}`` by share of all lines;
    - ``eval_set_orders`` / ``eval_set_lines``: counts per eval set; ``train_share_of_last``: share of
      users' last orders that are train (train / (train + test)).

    Statistics of an empty selection are ``None``.
    """
    orders, lines = data.orders, data.order_products
    per_user = orders.group_by(S.USER).agg(pl.len().alias(_COUNT))[_COUNT]
    sizes = basket_sizes(lines)
    later = sizes.join(orders.select(S.ORDER, S.ORDER_NUMBER), on=S.ORDER, how="inner").filter(
        pl.col(S.ORDER_NUMBER) > 1
    )
    dow_hour = orders_by_dow_hour(orders)[ORDERS].to_numpy().reshape(_N_DOW, _N_HOUR).tolist()
    eval_orders = _eval_counts(orders)
    return {
        "users": int(per_user.len()),
        "orders": orders.height,
        "lines": lines.height,
        "products": data.products.height,
        "products_bought": int(lines[S.PRODUCT].n_unique()),
        "orders_per_user": {
            "mean": _num(per_user.mean()),
            "median": _num(per_user.median()),
            "min": None if per_user.is_empty() else int(per_user.min()),  # type: ignore[arg-type]
            "max": None if per_user.is_empty() else int(per_user.max()),  # type: ignore[arg-type]
        },
        "basket_size": {
            "mean": _num(sizes[BASKET_SIZE].mean()),
            "median": _num(sizes[BASKET_SIZE].median()),
            "p90": _num(sizes[BASKET_SIZE].quantile(0.9, interpolation="linear")),
        },
        "reorder_ratio": _num(lines.select(reorder_rate()).item()),
        "no_reorder_share": _share(int((later[REORDERS] == 0).sum()), later.height),
        "days_between": _days_between_stats(days_between(orders)),
        "dow_hour": dow_hour,
        "orders_by_dow": [sum(row) for row in dow_hour],
        "top_departments": _top_departments(data),
        "eval_set_orders": eval_orders,
        "eval_set_lines": _eval_counts(lines),
        "train_share_of_last": _share(eval_orders[S.TRAIN], eval_orders[S.TRAIN] + eval_orders[S.TEST]),
    }


def _days_between_stats(days: pl.Series) -> dict[str, float | None]:
    return {
        "mean": _num(days.mean()),
        "median": _num(days.median()),
        "share_7": _share(int((days == 7).sum()), days.len()),
        "share_30": _share(int((days == S.DAYS_PRIOR_RANGE[1]).sum()), days.len()),
    }


def _top_departments(data: Dataset) -> list[dict[str, Any]]:
    """The TOP_DEPARTMENTS departments with the most lines: ``{"department", "share"}`` of all lines."""
    dept_lines = (
        data.order_products.select(S.PRODUCT)
        .join(data.products.select(S.PRODUCT, S.DEPARTMENT), on=S.PRODUCT, how="left")
        .join(data.departments, on=S.DEPARTMENT, how="left")
        .group_by(S.DEPARTMENT_NAME)
        .agg(pl.len().alias(_COUNT))
        .sort([_COUNT, S.DEPARTMENT_NAME], descending=[True, False], nulls_last=True)
        .head(TOP_DEPARTMENTS)
    )
    n_lines = data.order_products.height
    return [{"department": name, "share": count / n_lines} for name, count in dept_lines.iter_rows()]


def _eval_counts(frame: pl.DataFrame) -> dict[str, int]:
    """Rows of ``frame`` per eval set (every eval set, zeros included)."""
    counts = dict(frame.group_by(S.EVAL_SET).agg(pl.len()).iter_rows())
    return {name: int(counts.get(name, 0)) for name in S.EVAL_SETS}


def _f(value: Any, spec: str = ".2f") -> str:
    """Format a number, ``-`` for ``None``."""
    return "-" if value is None else format(value, spec)


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def format_description(stats: dict[str, Any]) -> str:
    """Render the output of :func:`describe` as a readable one-screen text report.

    The dow x hour table is condensed to order counts per day of week and hour band
    (:data:`HOUR_BANDS`) with a total column.
    """
    opu, basket, days = stats["orders_per_user"], stats["basket_size"], stats["days_between"]
    eval_orders, eval_lines = stats["eval_set_orders"], stats["eval_set_lines"]
    out = [
        f"users {stats['users']:,}   orders {stats['orders']:,}   lines {stats['lines']:,}   "
        f"products {stats['products']:,} ({stats['products_bought']:,} bought)",
        "eval sets      orders "
        + " | ".join(f"{k} {v:,}" for k, v in eval_orders.items())
        + "   lines "
        + " | ".join(f"{k} {v:,}" for k, v in eval_lines.items()),
        f"               last orders that are train: {_pct(stats['train_share_of_last'])}",
        f"orders/user    mean {_f(opu['mean'], '.1f')}   median {_f(opu['median'], 'g')}   "
        f"min {_f(opu['min'], 'd')}   max {_f(opu['max'], 'd')}",
        f"basket size    mean {_f(basket['mean'])}   median {_f(basket['median'], 'g')}   p90 {_f(basket['p90'], 'g')}",
        f"reorder ratio  {_f(stats['reorder_ratio'], '.3f')} of order lines;   "
        f"orders with no reorder (order_number > 1): {_pct(stats['no_reorder_share'])}",
        f"days between   mean {_f(days['mean'], '.1f')}   median {_f(days['median'], 'g')}   "
        f"at 7: {_pct(days['share_7'])}   at 30: {_pct(days['share_30'])}",
        "top depts      " + "   ".join(f"{d['department']} {_pct(d['share'])}" for d in stats["top_departments"]),
        "",
        "orders by day of week x hour band",
    ]
    widths = max(7, len(f"{max(stats['orders_by_dow'], default=0):,}") + 1)
    out.append("  dow " + "".join(f"{label:>{widths}}" for label, _, _ in HOUR_BANDS) + f"{'total':>{widths + 2}}")
    for dow, row in enumerate(stats["dow_hour"]):
        bands = [sum(row[lo : hi + 1]) for _, lo, hi in HOUR_BANDS]
        out.append(
            f"  {dow + S.DOW_RANGE[0]:>3} "
            + "".join(f"{c:>{widths},}" for c in bands)
            + f"{stats['orders_by_dow'][dow]:>{widths + 2},}"
        )
    return "\n".join(out)
