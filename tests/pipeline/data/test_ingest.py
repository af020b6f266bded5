"""Ingest: every validation rule gives its own clear message and writes nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.ingest import ingest
from basketcast.pipeline.data.storage import read_dataset, read_manifest
from basketcast.pipeline.errors import DataError, OutputError
from tests.conftest import EXCERPT, ORDERS, PRIOR, PRODUCTS, TRAIN


def _replace_line(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


@pytest.mark.parametrize("compression", ["csv", "gz", "zip"])
def test_valid_layout_ingests_in_every_compression(
    tiny_kaggle: Callable[..., Path], tmp_path: Path, compression: str
) -> None:
    out = tmp_path / "data"
    report = ingest(tiny_kaggle(compression), out)
    data = read_dataset(out)
    assert report.warnings == []
    assert data.orders.height == 7
    assert data.order_products.height == 11
    for table, schema in S.TABLE_SCHEMAS.items():
        assert dict(data.table(table).schema) == schema
    # eval_set of each line comes from its file; the test order has no lines.
    per_set = data.order_products.group_by(S.EVAL_SET).len().sort(S.EVAL_SET)
    assert per_set.rows() == [(S.PRIOR, 9), (S.TRAIN, 2)]
    first = data.orders.filter(pl.col(S.ORDER_NUMBER) == 1)
    assert first[S.DAYS_PRIOR].null_count() == first.height
    manifest = read_manifest(out)
    assert manifest.rows["orders"] == 7 and manifest.users == 2
    assert len(manifest.fingerprint) == 16


def test_fingerprint_depends_on_content_not_path(tiny_kaggle: Callable[..., Path], tmp_path: Path) -> None:
    src = tiny_kaggle()
    a = ingest(src, tmp_path / "a").manifest.fingerprint
    b = ingest(src, tmp_path / "b").manifest.fingerprint
    changed = tiny_kaggle("gz", order_products__train=_replace_line(TRAIN, "14,105,2,0", "14,103,2,0"))
    c = ingest(changed, tmp_path / "c").manifest.fingerprint
    assert a == b != c


def test_missing_catalogue_files_get_placeholders(tiny_kaggle: Callable[..., Path], tmp_path: Path) -> None:
    report = ingest(tiny_kaggle(products=None, aisles=None, departments=None), tmp_path / "out")
    data = read_dataset(tmp_path / "out")
    assert any("products.csv not found" in w for w in report.warnings)
    assert data.products.height == 5
    assert data.products.filter(pl.col(S.PRODUCT) == 101)[S.PRODUCT_NAME].item() == "product 101"
    assert data.aisles[S.AISLE_NAME].to_list() == ["unknown"]


def test_missing_aisles_file_names_aisles_by_id(tiny_kaggle: Callable[..., Path], tmp_path: Path) -> None:
    report = ingest(tiny_kaggle(aisles=None), tmp_path / "out")
    data = read_dataset(tmp_path / "out")
    assert any("aisles.csv not found" in w for w in report.warnings)
    assert sorted(data.aisles[S.AISLE_NAME].to_list()) == ["aisle 112", "aisle 24", "aisle 84", "aisle 86"]


# Each case: file overrides → fragments the error must contain.
BAD_INPUTS: dict[str, tuple[dict[str, str | None], tuple[str, ...]]] = {
    "missing required file": ({"order_products__train": None}, ("order_products__train.csv", "not found")),
    "missing column": (
        {"orders": ORDERS.replace("order_dow", "dow")},
        ("orders.csv", "column order_dow", "missing"),
    ),
    "unparsable number": (
        {"order_products__prior": _replace_line(PRIOR, "12,103,2,0", "12,abc,2,0")},
        ("order_products__prior.csv", "column product_id", "not numbers", "row=4", "product_id=abc"),
    ),
    "fractional id": (
        {"order_products__prior": _replace_line(PRIOR, "12,103,2,0", "12,103.5,2,0")},
        ("order_products__prior.csv", "column product_id", "not whole numbers", "row=4"),
    ),
    "non-positive id": (
        {"orders": _replace_line(ORDERS, "21,2,prior,1", "21,-2,prior,1")},
        ("orders.csv", "column user_id", "not positive ids", "row=5"),
    ),
    "empty required value": (
        {"orders": _replace_line(ORDERS, "22,2,prior,2,1,11,7.0", "22,2,prior,2,1,,7.0")},
        ("orders.csv", "column order_hour_of_day", "are empty", "row=6"),
    ),
    "unknown eval_set": (
        {"orders": _replace_line(ORDERS, "13,1,prior", "13,1,valid")},
        ("orders.csv", "column eval_set", "not one of", "eval_set=valid"),
    ),
    "dow out of range": (
        {"orders": _replace_line(ORDERS, "12,1,prior,2,3,7", "12,1,prior,2,7,7")},
        ("orders.csv", "column order_dow", "out of range 0..6", "row=2"),
    ),
    "hour out of range": (
        {"orders": _replace_line(ORDERS, "12,1,prior,2,3,7", "12,1,prior,2,3,24")},
        ("orders.csv", "column order_hour_of_day", "out of range 0..23"),
    ),
    "negative days": (
        {"orders": _replace_line(ORDERS, "29.0", "-1.0")},
        ("orders.csv", "column days_since_prior_order", "out of range 0..", "row=4"),
    ),
    "duplicate user + order_number": (
        {"orders": _replace_line(ORDERS, "13,1,prior,3", "13,1,prior,2")},
        ("orders.csv", "column user_id+order_number", "duplicates"),
    ),
    "reserved aisle id 0 in products.csv": (
        {"products": _replace_line(PRODUCTS, "103,Bread,112,3", "103,Bread,0,3")},
        ("products.csv", "column aisle_id", "not positive ids", "row=3"),
    ),
    "days missing on a later order": (
        {"orders": _replace_line(ORDERS, "12,1,prior,2,3,7,15.0", "12,1,prior,2,3,7,")},
        ("orders.csv", "column days_since_prior_order", "later order"),
    ),
    "cart position below 1": (
        {"order_products__prior": _replace_line(PRIOR, "12,103,2,0", "12,103,0,0")},
        ("order_products__prior.csv", "column add_to_cart_order", "out of range 1.."),
    ),
    "reordered not binary": (
        {"order_products__prior": _replace_line(PRIOR, "12,103,2,0", "12,103,2,2")},
        ("order_products__prior.csv", "column reordered", "not 0 or 1"),
    ),
    "duplicate order_id": (
        {"orders": _replace_line(ORDERS, "22,2,prior,2", "21,2,prior,2")},
        ("orders.csv", "column order_id", "duplicates"),
    ),
    "line of an unknown order": (
        {"order_products__prior": PRIOR + "99,101,1,0\n"},
        ("order_products__prior.csv", "column order_id", "missing from orders.csv", "order_id=99"),
    ),
    "line of a test order": (
        {"order_products__train": TRAIN + "23,101,1,1\n"},
        ("order_products__train.csv", "column order_id", "eval_set is not 'train'", "order_eval_set=test"),
    ),
    "prior line of a train order": (
        {"order_products__prior": PRIOR + "14,102,3,1\n"},
        ("order_products__prior.csv", "eval_set is not 'prior'"),
    ),
    "two train/test orders": (
        {"orders": _replace_line(ORDERS, "13,1,prior,3", "13,1,test,3")},
        ("orders.csv", "column eval_set", "more than one train/test order", "user_id=1"),
    ),
    "train order not last": (
        {
            "orders": _replace_line(
                _replace_line(ORDERS, "13,1,prior,3", "13,1,train,3"), "14,1,train,4", "14,1,prior,4"
            ),
            "order_products__prior": _replace_line(PRIOR, "13,101,1,1\n13,102,2,1\n", "") + "14,101,1,1\n14,105,2,0\n",
            "order_products__train": "order_id,product_id,add_to_cart_order,reordered\n13,101,1,1\n13,102,2,1\n",
        },
        ("orders.csv", "column eval_set", "not their last order", "user_id=1"),
    ),
    "duplicate product": (
        {"products": PRODUCTS + "101,Banana again,24,4\n"},
        ("products.csv", "column product_id", "duplicates"),
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_names_file_column_rows_and_writes_nothing(
    case: str, tiny_kaggle: Callable[..., Path], tmp_path: Path
) -> None:
    overrides, fragments = BAD_INPUTS[case]
    out = tmp_path / "data"
    with pytest.raises(DataError) as info:
        ingest(tiny_kaggle(**overrides), out)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".data")], "temporary folder left behind"


def test_reordered_mismatch_is_a_warning_or_a_strict_error(tiny_kaggle: Callable[..., Path], tmp_path: Path) -> None:
    bad = _replace_line(PRIOR, "12,103,2,0", "12,103,2,1")  # 103 was never bought before order 12
    report = ingest(tiny_kaggle(order_products__prior=bad), tmp_path / "lenient")
    assert len(report.warnings) == 1 and "column reordered" in report.warnings[0]
    assert "product_id=103" in report.warnings[0] and "expected=0" in report.warnings[0]
    with pytest.raises(DataError, match="disagree with the user's history"):
        ingest(tiny_kaggle(order_products__prior=bad), tmp_path / "strict", strict_reordered=True)
    assert not (tmp_path / "strict").exists()


def test_failed_ingest_leaves_existing_data_untouched(tiny_kaggle: Callable[..., Path], tmp_path: Path) -> None:
    out = tmp_path / "data"
    ingest(tiny_kaggle(), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = tiny_kaggle("gz", orders=_replace_line(ORDERS, "13,1,prior", "13,1,valid"))
    with pytest.raises(DataError):
        ingest(bad, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_interrupted_write_leaves_existing_data_untouched(
    tiny_kaggle: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "data"
    ingest(tiny_kaggle(), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    calls = {"n": 0}
    real_write = pl.DataFrame.write_parquet

    def crash_on_third(self: pl.DataFrame, *args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated interruption")
        real_write(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pl.DataFrame, "write_parquet", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        ingest(tiny_kaggle("zip"), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_real_excerpt_ingests_cleanly(tmp_path: Path) -> None:
    report = ingest(EXCERPT, tmp_path / "real")
    data = read_dataset(tmp_path / "real")
    # Only the expected warning: the excerpt has no products/aisles/departments files.
    assert len(report.warnings) == 1 and "products.csv not found" in report.warnings[0]
    assert data.orders[S.USER].n_unique() == 100
    assert data.order_products.height == 20323 + 1156
    assert data.orders.filter(pl.col(S.EVAL_SET) == S.TRAIN).height == 100


def test_out_may_not_be_or_hold_the_source_and_nothing_is_read_first(
    tiny_kaggle: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tiny_kaggle()
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    monkeypatch.setattr(
        "basketcast.pipeline.data.ingest.read_csv_table", lambda *a, **k: pytest.fail("read before the check")
    )
    with pytest.raises(OutputError, match="would overwrite the input"):
        ingest(src, src)
    with pytest.raises(OutputError, match="would overwrite the input"):
        ingest(src, src.parent)
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before
