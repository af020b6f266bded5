"""Transaction logs → the Kaggle layout: each derivation rule on hand-written logs, and round trips."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.generate import generate
from basketcast.pipeline.data.ingest import ingest
from basketcast.pipeline.data.storage import Dataset, read_dataset, read_manifest, write_dataset
from basketcast.pipeline.data.transactions import (
    TIMESTAMP,
    LogColumns,
    ingest_transactions,
    to_transactions,
    transactions_frame,
)
from basketcast.pipeline.errors import DataError
from tests.conftest import EXCERPT

HEADER = "user_id,order_id,product_id,timestamp"
# User 1: three orders (the third 40 days on, so capped at 30); user 2: two orders on one day.
LOG = f"""{HEADER}
1,101,7,2024-03-03T09:15:00
1,101,8,2024-03-03T09:15:20
1,102,8,2024-03-05 18:00:00
1,102,9,2024-03-05 18:00:01
1,103,7,2024-04-14T08:00:00
2,201,7,2024-03-06T23:59:00
2,202,7,2024-03-06T23:59:00
"""


def _write(tmp_path: Path, text: str, name: str = "log.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _ingest(tmp_path: Path, text: str, name: str = "log.csv", **kwargs: object) -> Dataset:
    out = tmp_path / f"data-{name}"
    ingest_transactions(_write(tmp_path, text, name), out, **kwargs)  # type: ignore[arg-type]
    return read_dataset(out)


def _orders(data: Dataset) -> list[tuple[object, ...]]:
    cols = [S.ORDER, S.USER, S.EVAL_SET, S.ORDER_NUMBER, S.DOW, S.HOUR, S.DAYS_PRIOR]
    return data.orders.sort(S.ORDER).select(cols).rows()


def _lines(data: Dataset) -> list[tuple[object, ...]]:
    cols = [S.ORDER, S.PRODUCT, S.CART_POS, S.REORDERED, S.EVAL_SET]
    return data.order_products.sort(S.ORDER, S.CART_POS).select(cols).rows()


# --- the derivation rules ------------------------------------------------------------------------
def test_every_kaggle_column_is_derived_by_instacart_rules(tmp_path: Path) -> None:
    data = _ingest(tmp_path, LOG)
    # 2024-03-03 is a Sunday (dow 0); 03-05 a Tuesday (2 days on); 04-14 a Sunday, 40 days on → 30.
    # User 2's two orders share a timestamp: order id decides (201 first).
    assert _orders(data) == [
        (101, 1, "prior", 1, 0, 9, None),
        (102, 1, "prior", 2, 2, 18, 2),
        (103, 1, "train", 3, 0, 8, 30),
        (201, 2, "prior", 1, 3, 23, None),
        (202, 2, "train", 2, 3, 23, 0),
    ]
    assert _lines(data) == [
        (101, 7, 1, 0, "prior"),
        (101, 8, 2, 0, "prior"),
        (102, 8, 1, 1, "prior"),
        (102, 9, 2, 0, "prior"),
        (103, 7, 1, 1, "train"),
        (201, 7, 1, 0, "prior"),
        (202, 7, 1, 1, "train"),
    ]
    manifest = read_manifest(tmp_path / "data-log.csv")
    assert manifest.source.startswith("transactions:") and manifest.users == 2


def test_last_order_test_keeps_no_lines(tmp_path: Path) -> None:
    data = _ingest(tmp_path, LOG, last_order="test")
    assert [r[2] for r in _orders(data)] == ["prior", "prior", "test", "prior", "test"]
    assert {r[0] for r in _lines(data)} == {101, 102, 201}


def test_days_are_calendar_days_not_elapsed_hours(tmp_path: Path) -> None:
    log = f"{HEADER}\n1,1,5,2024-03-04T23:30:00\n1,2,5,2024-03-05T00:10:00\n1,3,5,2024-03-05T23:00:00\n"
    assert [r[6] for r in _orders(_ingest(tmp_path, log))] == [None, 1, 0]


def test_a_product_twice_in_a_basket_is_one_line_at_its_first_position(tmp_path: Path) -> None:
    log = f"{HEADER}\n1,1,5,2024-03-04T10:00:00\n1,1,6,2024-03-04T10:00:01\n1,1,5,2024-03-04T10:00:02\n"
    out = tmp_path / "data"
    report = ingest_transactions(_write(tmp_path, log), out)
    assert _lines(read_dataset(out)) == [(1, 5, 1, 0, "train"), (1, 6, 2, 0, "train")]
    assert any("bought more than once" in w and "1 line merged" in w for w in report.warnings)


def test_quantities_are_summed_and_returns_leave_the_order(tmp_path: Path) -> None:
    log = (
        "user_id,order_id,product_id,timestamp,qty\n"
        "1,1,5,2024-03-04T10:00:00,2\n1,1,5,2024-03-04T10:00:05,-2\n1,1,6,2024-03-04T10:00:06,1\n"
        "1,2,6,2024-03-06T10:00:00,-1\n"  # a return on its own: no order
        "1,3,6,2024-03-08T10:00:00,1\n1,3,6,2024-03-08T10:00:01,1\n"
    )
    out = tmp_path / "data"
    report = ingest_transactions(_write(tmp_path, log), out, columns=LogColumns(quantity="qty"))
    data = read_dataset(out)
    assert _orders(data) == [(1, 1, "prior", 1, 1, 10, None), (3, 1, "train", 2, 5, 10, 4)]
    assert _lines(data) == [(1, 6, 1, 0, "prior"), (3, 6, 1, 1, "train")]
    assert any("quantity ≤ 0" in w and "1 order left without lines" in w for w in report.warnings)


def test_jittered_lines_of_a_basket_are_one_order_at_its_first_time(tmp_path: Path) -> None:
    # Lines out of time order in the file, crossing 10:00 and midnight; two share a timestamp.
    log = (
        f"{HEADER}\n"
        "1,9,30,2024-03-09T23:59:59.900\n"
        "1,9,10,2024-03-09T23:59:58.5\n"
        "1,9,20,2024-03-10T00:00:03\n"
        "1,9,40,2024-03-10T00:00:03\n"
    )
    data = _ingest(tmp_path, log)
    assert _orders(data) == [(9, 1, "train", 1, 6, 23, None)]  # Saturday 23:00, the first line's time
    assert [r[1] for r in _lines(data)] == [10, 30, 20, 40]  # by time, then file order


def test_text_order_ids_are_numbered_by_time(tmp_path: Path) -> None:
    log = f"{HEADER}\n7,INV-b,5,2024-03-05T10:00\n7,INV-a,5,2024-03-09T10:00\n8,INV-c,6,2024-03-01T10:00\n"
    out = tmp_path / "data"
    report = ingest_transactions(_write(tmp_path, log), out)
    assert [(r[0], r[1], r[3]) for r in _orders(read_dataset(out))] == [(1, 8, 1), (2, 7, 1), (3, 7, 2)]
    assert any("numbered 1..3" in w for w in report.warnings)


# --- time forms ----------------------------------------------------------------------------------
def test_epoch_seconds_milliseconds_and_iso_forms_agree(tmp_path: Path) -> None:
    # 2024-03-03T09:15:00Z and 2024-03-05T18:00:30Z.
    forms = {
        "iso": ("2024-03-03T09:15:00", "2024-03-05 18:00:30.250"),
        "basic": ("20240303T091500", "20240305T180030"),
        "offset": ("2024-03-03T09:15:00+00:00", "2024-03-05T18:00:30Z"),
        "seconds": ("1709457300", "1709661630.25"),
        "millis": ("1709457300000", "1709661630250"),
    }
    results = set()
    for name, (a, b) in forms.items():
        data = _ingest(tmp_path, f"{HEADER}\n1,1,5,{a}\n1,2,5,{b}\n", f"{name}.csv")
        results.add(tuple(_orders(data)))
    assert results == {((1, 1, "prior", 1, 0, 9, None), (2, 1, "train", 2, 2, 18, 2))}


def test_offsets_keep_their_wall_clock_and_timezone_converts(tmp_path: Path) -> None:
    log = f"{HEADER}\n1,1,5,2024-03-03T23:30:00-05:00\n1,2,5,1709661600\n"  # 2024-03-05T18:00Z
    data = _ingest(tmp_path, log, "a.csv")
    assert [(r[4], r[5]) for r in _orders(data)] == [(0, 23), (2, 18)]
    paris = _ingest(tmp_path, log, "b.csv", timezone="Europe/Paris")  # UTC+1 in March
    assert [(r[4], r[5], r[6]) for r in _orders(paris)] == [(1, 5, None), (2, 19, 1)]


def test_an_unparseable_timestamp_is_named_with_its_row(tmp_path: Path) -> None:
    log = f"{HEADER}\n1,1,5,2024-03-03T09:15:00\n1,2,5,2024-02-30T10:00\n1,3,5,soon\n"
    with pytest.raises(DataError) as err:
        ingest_transactions(_write(tmp_path, log), tmp_path / "out")
    message = str(err.value)
    assert "log.csv, column timestamp: 2 rows are neither ISO 8601" in message
    assert "row=2, timestamp=2024-02-30T10:00; row=3, timestamp=soon" in message
    assert not (tmp_path / "out").exists()


def test_bad_ids_and_an_order_of_two_users_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"column user_id: 1 row are not numbers \(first: row=2, user_id=bob\)"):
        _ingest(tmp_path, f"{HEADER}\n1,1,5,2024-03-03\nbob,2,5,2024-03-04\n", "a.csv")
    with pytest.raises(DataError, match=r"column product_id: 1 row are not in 1..4,294,967,295"):
        _ingest(tmp_path, f"{HEADER}\n1,1,0,2024-03-03\n", "b.csv")
    with pytest.raises(DataError, match=r"column order_id: 1 row repeat an order id of another user.*row=2"):
        _ingest(tmp_path, f"{HEADER}\n1,1,5,2024-03-03\n2,1,6,2024-03-03\n", "c.csv")


# --- files -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("sep", ["\t", ";", "|"])
def test_the_separator_is_sniffed(tmp_path: Path, sep: str) -> None:
    text = LOG.replace(",", sep)
    data = _ingest(tmp_path, text, "log.txt")
    assert _orders(data) == _orders(_ingest(tmp_path, LOG))


def test_a_wrong_separator_names_the_one_that_fits(tmp_path: Path) -> None:
    path = _write(tmp_path, LOG.replace(",", "\t"), "log.tsv")
    with pytest.raises(DataError) as err:
        ingest_transactions(path, tmp_path / "out", sep=",")
    message = str(err.value)
    assert message.startswith(f"{path}, column user_id: missing")
    assert "the header splits into the expected columns with a tab: pass --sep '\\t'" in message


def test_a_missing_column_is_named_with_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, LOG.replace("timestamp", "time"))
    with pytest.raises(DataError, match=rf"^{path}, column timestamp: missing .*found \['user_id', .*'time'\]"):
        ingest_transactions(path, tmp_path / "out")
    data = _ingest(tmp_path, LOG.replace("timestamp", "time").replace("user_id", "customer"), "b.csv",
                   columns=LogColumns(user="customer", time="time"))  # fmt: skip
    assert len(_orders(data)) == 5


def test_parquet_with_native_datetimes_is_read_whatever_its_suffix(tmp_path: Path) -> None:
    frame = pl.read_csv(LOG.encode(), try_parse_dates=False).with_columns(
        pl.col(TIMESTAMP).str.replace(" ", "T").str.to_datetime("%Y-%m-%dT%H:%M:%S", time_zone="UTC")
    )
    frame.write_parquet(tmp_path / "log.dat")
    out = tmp_path / "pq"
    ingest_transactions(tmp_path / "log.dat", out)
    assert _orders(read_dataset(out)) == _orders(_ingest(tmp_path, LOG))


# --- the catalogue -------------------------------------------------------------------------------
def test_placeholders_without_a_catalogue(tmp_path: Path) -> None:
    data = _ingest(tmp_path, LOG)
    assert data.products.rows() == [(7, "product 7", 0, 0), (8, "product 8", 0, 0), (9, "product 9", 0, 0)]
    assert data.aisles.rows() == [(0, "unknown")] and data.departments.rows() == [(0, "unknown")]


def test_a_catalogue_gives_names_aisles_and_departments(tmp_path: Path) -> None:
    catalog = _write(
        tmp_path,
        "product_id;product_name;aisle;department\n7;Milk;milk;dairy eggs\n8;Bananas;fresh fruits;produce\n"
        "9;;;\n10;Eggs;eggs;dairy eggs\n",
        "catalog.csv",
    )
    out = tmp_path / "data"
    report = ingest_transactions(_write(tmp_path, LOG), out, catalog=catalog)
    data = read_dataset(out)
    # Names without ids: ids 1..n alphabetically; 9 has none (unknown); 10 is kept though never bought.
    assert data.aisles.rows() == [(0, "unknown"), (1, "eggs"), (2, "fresh fruits"), (3, "milk")]
    assert data.departments.rows() == [(0, "unknown"), (1, "dairy eggs"), (2, "produce")]
    assert data.products.rows() == [
        (7, "Milk", 3, 1),
        (8, "Bananas", 2, 2),
        (9, "product 9", 0, 0),
        (10, "Eggs", 1, 1),
    ]
    assert report.warnings == []


def test_products_missing_from_the_catalogue_are_a_repair(tmp_path: Path) -> None:
    catalog = _write(tmp_path, "product_id,product_name,aisle_id,aisle\n7,Milk,84,milk\n", "catalog.csv")
    out = tmp_path / "data"
    report = ingest_transactions(_write(tmp_path, LOG), out, catalog=catalog)
    data = read_dataset(out)
    assert data.products.rows() == [
        (7, "Milk", 84, 0),
        (8, "unknown product 8", 0, 0),
        (9, "unknown product 9", 0, 0),
    ]
    assert data.aisles.rows() == [(0, "unknown"), (84, "milk")]
    assert any("2 products missing from" in w for w in report.warnings)
    with pytest.raises(DataError, match="refused by --strict"):
        ingest_transactions(_write(tmp_path, LOG), tmp_path / "strict", catalog=catalog, strict=True)


# --- round trips -----------------------------------------------------------------------------------
def test_the_real_excerpt_round_trips_exactly(tmp_path: Path) -> None:
    """Kaggle layout → transaction log → Kaggle layout: every table equal, so the same fingerprint.

    Instacart's weekdays agree with its days (date differences), so the log's dates are exact;
    a 30 ("30 or more") becomes the first day ≥ 30 with the right weekday and is capped back to 30.
    """
    kaggle = ingest(EXCERPT, tmp_path / "kaggle").manifest
    log = to_transactions(tmp_path / "kaggle", tmp_path / "log.csv")
    assert log.columns == [S.USER, S.ORDER, S.PRODUCT, TIMESTAMP]
    back = ingest_transactions(tmp_path / "log.csv", tmp_path / "back").manifest
    a, b = read_dataset(tmp_path / "kaggle"), read_dataset(tmp_path / "back")
    assert a.orders.sort(S.ORDER).equals(b.orders.sort(S.ORDER))
    assert a.order_products.sort(S.ORDER, S.PRODUCT).equals(b.order_products.sort(S.ORDER, S.PRODUCT))
    assert a.products.equals(b.products)
    assert back.fingerprint == kaggle.fingerprint and back.rows == kaggle.rows


def test_generated_data_round_trips_with_its_catalogue(tmp_path: Path) -> None:
    """The generator draws weekdays independently of the days, and 36 % of last orders are test orders
    (no lines): what cannot come back is checked against the documented rule."""
    data = generate(40, seed=3)
    write_dataset(tmp_path / "gen", data, source="test")
    to_transactions(tmp_path / "gen", tmp_path / "log.parquet", catalog=tmp_path / "catalog.parquet")
    ingest_transactions(tmp_path / "log.parquet", tmp_path / "back", catalog=tmp_path / "catalog.parquet")
    back = read_dataset(tmp_path / "back")
    assert back.products.equals(data.products.sort(S.PRODUCT))
    used = {S.AISLE: data.products[S.AISLE].unique(), S.DEPARTMENT: data.products[S.DEPARTMENT].unique()}
    assert back.aisles.equals(data.aisles.filter(pl.col(S.AISLE).is_in(used[S.AISLE].implode())).sort(S.AISLE))
    assert back.departments.equals(data.departments.filter(pl.col(S.DEPARTMENT).is_in(used[S.DEPARTMENT].implode())))

    orig = data.orders.filter(pl.col(S.EVAL_SET) != S.TEST).sort(S.USER, S.ORDER_NUMBER)
    got = back.orders.sort(S.USER, S.ORDER_NUMBER)
    assert got[S.ORDER].to_list() == orig[S.ORDER].to_list()  # test orders (no lines) are not in a log
    for column in (S.USER, S.ORDER_NUMBER, S.DOW, S.HOUR):
        assert got[column].equals(orig[column]), column
    # The last order of a log is its user's train order (a test order's user: the last prior).
    last = orig.with_columns((pl.col(S.ORDER_NUMBER) == pl.col(S.ORDER_NUMBER).max().over(S.USER)).alias("last"))
    assert got[S.EVAL_SET].to_list() == [S.TRAIN if x else S.PRIOR for x in last["last"]]
    # Days: the first day on or after the given days with the order's weekday (a same-day order at an
    # earlier hour a week on), capped at 30; equal wherever the weekday agrees.
    prev_dow = pl.col(S.DOW).cast(pl.Int64).shift(1).over(S.USER)
    prev_hour = pl.col(S.HOUR).cast(pl.Int64).shift(1).over(S.USER)
    days = pl.col(S.DAYS_PRIOR).cast(pl.Int64)
    gap = days + (pl.col(S.DOW).cast(pl.Int64) - prev_dow - days) % 7
    gap = pl.when((gap == 0) & (pl.col(S.HOUR) < prev_hour)).then(7).otherwise(gap)
    expected = orig.select(gap.clip(upper_bound=30).cast(pl.UInt8).alias(S.DAYS_PRIOR))[S.DAYS_PRIOR]
    assert got[S.DAYS_PRIOR].equals(expected)
    consistent = (orig[S.DAYS_PRIOR] == expected).fill_null(True)
    assert 0 < consistent.sum() < orig.height  # some agree, some do not: both cases covered

    lines = data.order_products.join(orig.select(S.ORDER), on=S.ORDER).sort(S.ORDER, S.PRODUCT)
    got_lines = back.order_products.sort(S.ORDER, S.PRODUCT)
    for column in (S.ORDER, S.PRODUCT, S.CART_POS, S.REORDERED):
        assert got_lines[column].equals(lines[column]), column


def test_transactions_frame_puts_each_order_on_its_weekday_and_hour() -> None:
    data = generate(15, seed=11)
    log = transactions_frame(data, start=dt.date(2020, 6, 1))  # a Monday
    firsts = log.group_by(S.ORDER).agg(pl.col(TIMESTAMP).min()).join(data.orders, on=S.ORDER)
    weekday = (firsts[TIMESTAMP].dt.weekday().cast(pl.Int64) % 7).cast(pl.UInt8)
    assert weekday.equals(firsts[S.DOW]) and firsts[TIMESTAMP].dt.hour().cast(pl.UInt8).equals(firsts[S.HOUR])
    assert log[TIMESTAMP].is_sorted() and log.select((pl.col(TIMESTAMP) >= dt.datetime(2020, 6, 1)).all()).item()
