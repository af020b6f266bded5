"""What real logs contain beyond the Kaggle files: each case is repaired with one warning (count and
examples), refused with ``strict=True``, or accepted as is (README, "Using the full Kaggle data")."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.ingest import ingest
from basketcast.pipeline.data.repairs import UNKNOWN_ID
from basketcast.pipeline.data.storage import Dataset, read_dataset
from basketcast.pipeline.errors import DataError
from tests.conftest import AISLES, DEPARTMENTS, ORDERS, PRIOR, PRODUCTS, TRAIN


def _sub(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def _orders(data: Dataset, user: int) -> list[tuple[int, int, int | None]]:
    """(order_id, order_number, days_since_prior_order) of ``user`` in order."""
    frame = data.orders.filter(pl.col(S.USER) == user).sort(S.ORDER_NUMBER)
    return frame.select(S.ORDER, S.ORDER_NUMBER, S.DAYS_PRIOR).rows()


def _lines(data: Dataset, order: int) -> list[tuple[int, int]]:
    """(product_id, add_to_cart_order) of ``order``."""
    return data.order_products.filter(pl.col(S.ORDER) == order).sort(S.CART_POS).select(S.PRODUCT, S.CART_POS).rows()


def _unknown_products(data: Dataset) -> None:
    products = data.products.filter(pl.col(S.PRODUCT) >= 998).sort(S.PRODUCT)
    assert products.rows() == [
        (998, "unknown product 998", UNKNOWN_ID, UNKNOWN_ID),
        (999, "unknown product 999", UNKNOWN_ID, UNKNOWN_ID),
    ]
    assert (UNKNOWN_ID, "unknown") in data.aisles.rows() and (UNKNOWN_ID, "unknown") in data.departments.rows()
    assert data.aisles.height == 5 and data.departments.height == 4  # the real ones kept, one reserved row each


def _missing_aisle(data: Dataset) -> None:
    assert (113, "unknown aisle 113") in data.aisles.rows()
    assert data.products.filter(pl.col(S.PRODUCT) == 103)[S.AISLE].item() == 113


def _missing_department(data: Dataset) -> None:
    assert (17, "unknown department 17") in data.departments.rows()


def _repeated_line(data: Dataset) -> None:
    assert _lines(data, 12) == [(101, 1), (103, 2)]


def _middle_order_dropped(data: Dataset) -> None:
    # Order 12 (15 days after 11) had no lines: order 13 now comes 15 + 21 = 36 → 30 days after 11.
    assert _orders(data, 1) == [(11, 1, None), (13, 2, 30), (14, 3, 29)]


def _first_order_dropped(data: Dataset) -> None:
    assert _orders(data, 1) == [(12, 1, None), (13, 2, 21), (14, 3, 29)]


def _user_gone(data: Dataset) -> None:
    assert 3 not in data.orders[S.USER].to_list()


def _train_order_dropped(data: Dataset) -> None:
    assert _orders(data, 1) == [(11, 1, None), (12, 2, 15), (13, 3, 21)]
    assert data.orders.filter(pl.col(S.EVAL_SET) == S.TRAIN)[S.ORDER].to_list() == [23]


def _days_capped(data: Dataset) -> None:
    assert _orders(data, 1)[-1] == (14, 4, 30)


def _days_rounded(data: Dataset) -> None:
    assert [days for _, _, days in _orders(data, 1)] == [None, 15, 20, 29]


def _first_days_cleared(data: Dataset) -> None:
    assert _orders(data, 2)[0] == (21, 1, None)


def _renumbered(data: Dataset) -> None:
    assert [number for _, number, _ in _orders(data, 1)] == [1, 2, 3, 4]


def _renumbered_from_3(data: Dataset) -> None:
    assert _orders(data, 2) == [(21, 1, None), (22, 2, 7), (23, 3, 7)]


TRAIN_OF_USER_2 = {
    "orders": _sub(ORDERS, "23,2,test,3", "23,2,train,3"),
    "order_products__train": "order_id,product_id,add_to_cart_order,reordered\n23,104,1,1\n",
}

# name → (file overrides, fragments of the warning, check of the data written)
REPAIRS: dict[str, tuple[dict[str, str], tuple[str, ...], Callable[[Dataset], None]]] = {
    "products missing from products.csv": (
        {
            "order_products__train": _sub(TRAIN, "14,105,2,0", "14,999,2,0"),
            "order_products__prior": PRIOR + "21,998,3,0\n22,998,2,1\n",
        },
        (
            "order_products__prior.csv / order_products__train.csv, column product_id: 2 products missing from "
            "products.csv (3 lines) (first: product_id=998, lines=2, order_id=21; product_id=999, lines=1",
            "added as 'unknown product <id>' in aisle 'unknown' and department 'unknown' (id 0, reserved)",
        ),
        _unknown_products,
    ),
    "aisle missing from aisles.csv": (
        {"products": _sub(PRODUCTS, "103,Bread,112,3", "103,Bread,113,3")},
        (
            "products.csv, column aisle_id: 1 row refer to aisles missing from aisles.csv",
            "aisle_id=113",
            "1 aisle added as 'unknown aisle <id>'",
        ),
        _missing_aisle,
    ),
    "department missing from departments.csv": (
        {"products": _sub(PRODUCTS, "102,Milk,84,16", "102,Milk,84,17")},
        ("column department_id", "missing from departments.csv", "added as 'unknown department <id>'"),
        _missing_department,
    ),
    "the same product twice in one order": (
        {"order_products__prior": PRIOR + "12,101,3,1\n"},
        (
            "order_products__prior.csv, column order_id+product_id: 1 row repeating a product already in its order",
            "row=10, order_id=12, product_id=101, add_to_cart_order=3",
            "merged: the product's first line in the order (lowest add_to_cart_order) is kept",
        ),
        _repeated_line,
    ),
    "a prior order without lines": (
        {"order_products__prior": _sub(PRIOR, "12,101,1,1\n12,103,2,0\n", "")},
        (
            "orders.csv, column order_id: 1 order of eval_set prior/train without lines",
            "order_id=12",
            "dropped: the user's next order counts the days since the previous kept order (capped at 30)",
        ),
        _middle_order_dropped,
    ),
    "a first order without lines": (
        {"order_products__prior": _sub(PRIOR, "11,101,1,0\n11,102,2,0\n", "")},
        ("1 order of eval_set prior/train without lines", "order_id=11"),
        _first_order_dropped,
    ),
    "a user whose only order has no lines": (
        {"orders": ORDERS + "31,3,prior,1,1,9,\n"},
        ("order_id=31", "1 user had no other order and is gone"),
        _user_gone,
    ),
    "a train order without lines": (
        {**TRAIN_OF_USER_2},
        ("1 order of eval_set prior/train without lines", "order_id=14, user_id=1, eval_set=train"),
        _train_order_dropped,
    ),
    "days_since_prior_order above 30": (
        {"orders": _sub(ORDERS, "29.0", "45.0")},
        ("orders.csv, column days_since_prior_order: 1 row are above 30", "capped at 30"),
        _days_capped,
    ),
    "fractional days_since_prior_order": (
        {"orders": _sub(_sub(ORDERS, "15.0", "14.5"), "21.0", "20.4")},
        (
            "orders.csv, column days_since_prior_order: 2 rows are not whole days (first: row=2, "
            "days_since_prior_order=14.5",
            "rounded to the nearest day (halves up)",
        ),
        _days_rounded,
    ),
    "days_since_prior_order set on a first order": (
        {"orders": _sub(ORDERS, "21,2,prior,1,0,10,", "21,2,prior,1,0,10,0")},
        ("column days_since_prior_order: 1 row are set on a user's first order", "cleared"),
        _first_days_cleared,
    ),
    "order numbers with gaps": (
        {"orders": _sub(_sub(ORDERS, "13,1,prior,3", "13,1,prior,5"), "14,1,train,4", "14,1,train,9")},
        (
            "orders.csv, column order_number: 1 user with order numbers that do not run 1..n (first: row=1, "
            "user_id=1, orders=4, first=1, last=9)",
            "renumbered 1..n in their order",
        ),
        _renumbered,
    ),
    "order numbers starting at 3, days set on the first": (
        {
            "orders": _sub(
                _sub(_sub(ORDERS, "21,2,prior,1,0,10,", "21,2,prior,3,0,10,4.0"), "22,2,prior,2", "22,2,prior,4"),
                "23,2,test,3",
                "23,2,test,5",
            )
        },
        ("user_id=2, orders=3, first=3, last=5", "renumbered 1..n", "are set on a user's first order", "cleared"),
        _renumbered_from_3,
    ),
}


@pytest.mark.parametrize("case", list(REPAIRS))
def test_repaired_with_a_warning(case: str, tiny_kaggle: Callable[..., Path], tmp_path: Path) -> None:
    overrides, fragments, check = REPAIRS[case]
    report = ingest(tiny_kaggle(**overrides), tmp_path / "out")
    warnings = "\n".join(report.warnings)
    for fragment in fragments:
        assert fragment in warnings, f"{fragment!r} not in {warnings!r}"
    assert report.manifest.warnings == len(report.warnings)
    check(read_dataset(tmp_path / "out"))


@pytest.mark.parametrize("case", list(REPAIRS))
def test_refused_when_strict(case: str, tiny_kaggle: Callable[..., Path], tmp_path: Path) -> None:
    overrides, fragments, _ = REPAIRS[case]
    with pytest.raises(DataError) as info:
        ingest(tiny_kaggle(**overrides), tmp_path / "out", strict=True)
    message = str(info.value)
    assert message.startswith("ingest:") and "nothing written" in message and "refused by --strict" in message
    assert fragments[0].split(" (first:")[0] in message
    assert not (tmp_path / "out").exists()


def test_strict_refuses_every_problem_at_once(tiny_kaggle: Callable[..., Path], tmp_path: Path) -> None:
    src = tiny_kaggle(
        orders=_sub(ORDERS, "29.0", "45.0"),
        order_products__prior=PRIOR + "12,101,3,1\n",
        products=_sub(PRODUCTS, "103,Bread,112,3", "103,Bread,113,3"),
    )
    with pytest.raises(DataError, match="3 problems found") as info:
        ingest(src, tmp_path / "out", strict=True)
    assert "are above 30" in str(info.value) and "repeating a product" in str(info.value)


def test_unknown_products_without_aisles_file_get_the_reserved_rows(
    tiny_kaggle: Callable[..., Path], tmp_path: Path
) -> None:
    src = tiny_kaggle(order_products__train=_sub(TRAIN, "14,105,2,0", "14,999,2,0"), aisles=None, departments=None)
    report = ingest(src, tmp_path / "out")
    data = read_dataset(tmp_path / "out")
    assert sorted(data.aisles.rows()) == [
        (0, "unknown"),
        (24, "aisle 24"),
        (84, "aisle 84"),
        (86, "aisle 86"),
        (112, "aisle 112"),
    ]
    assert (0, "unknown") in data.departments.rows()
    assert sum("missing from products.csv" in w for w in report.warnings) == 1
    # Absent optional files are placeholders, not repairs: strict still accepts them.
    ingest(tiny_kaggle(aisles=None, departments=None), tmp_path / "strict", strict=True)


def test_many_unknown_products_are_counted_with_five_examples(tiny_kaggle: Callable[..., Path], tmp_path: Path) -> None:
    extra = "".join(f"21,{2000 + i},{3 + i},0\n" for i in range(40))
    report = ingest(tiny_kaggle(order_products__prior=PRIOR + extra), tmp_path / "out")
    (warning,) = report.warnings
    assert "40 products missing from products.csv (40 lines)" in warning
    assert warning.count("product_id=") == 5
    assert read_dataset(tmp_path / "out").products.height == 5 + 40


# --- accepted as they are -----------------------------------------------------------------------
def test_users_with_one_order_are_accepted(tiny_kaggle: Callable[..., Path], tmp_path: Path) -> None:
    """A single prior order (history, no label), a single train order (a label, no history) or a
    single test order (a cold start): all valid, no warning."""
    orders = ORDERS + "31,3,prior,1,1,9,\n41,4,train,1,2,9,\n51,5,test,1,3,9,\n"
    src = tiny_kaggle(
        orders=orders, order_products__prior=PRIOR + "31,101,1,0\n", order_products__train=TRAIN + "41,102,1,0\n"
    )
    report = ingest(src, tmp_path / "out", strict=True)
    assert report.warnings == []
    assert report.manifest.users == 5


def test_a_log_without_train_orders_may_have_an_empty_train_file(
    tiny_kaggle: Callable[..., Path], tmp_path: Path
) -> None:
    src = tiny_kaggle(
        orders=_sub(ORDERS, "14,1,train,4", "14,1,prior,4"),
        order_products__prior=PRIOR + "14,101,1,1\n14,105,2,0\n",
        order_products__train="order_id,product_id,add_to_cart_order,reordered\n",
    )
    report = ingest(src, tmp_path / "out", strict=True)
    assert report.warnings == []
    assert read_dataset(tmp_path / "out").order_products.filter(pl.col(S.EVAL_SET) == S.TRAIN).height == 0


def test_reordered_mismatch_is_refused_by_strict_too(tiny_kaggle: Callable[..., Path], tmp_path: Path) -> None:
    bad = _sub(PRIOR, "12,103,2,0", "12,103,2,1")
    with pytest.raises(DataError, match="disagree with the user's history"):
        ingest(tiny_kaggle(order_products__prior=bad), tmp_path / "strict", strict=True)


def test_catalogue_files_are_untouched_when_complete(tiny_kaggle: Callable[..., Path], tmp_path: Path) -> None:
    ingest(tiny_kaggle(), tmp_path / "out")
    data = read_dataset(tmp_path / "out")
    assert data.aisles.height == len(AISLES.strip().splitlines()) - 1
    assert data.departments.height == len(DEPARTMENTS.strip().splitlines()) - 1
    assert UNKNOWN_ID not in data.aisles[S.AISLE].to_list()
