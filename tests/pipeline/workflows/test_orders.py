"""The order log ↔ data folders: backfill (`orders load`) and merge (`orders merge`, `train --orders-from`)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from basketcast.pipeline.cli import main
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.generate import generate
from basketcast.pipeline.data.storage import Dataset, read_dataset, read_manifest, write_dataset
from basketcast.pipeline.workflows.orders import LINE_COLUMNS, load_orders, merge_order_log, posted_orders
from basketcast.serving.stores.base import OrderRecord


@pytest.fixture(scope="module")
def data() -> Dataset:
    full = generate(n_users=120, seed=5)
    no_test = full.orders.filter(pl.col(S.EVAL_SET) == S.TEST).select(S.USER)
    orders = full.orders.join(no_test, on=S.USER, how="anti")
    lines = full.order_products.join(orders.select(S.ORDER), on=S.ORDER, how="semi")
    return Dataset(orders, lines, full.products, full.aisles, full.departments)


def canonical(data: Dataset) -> pl.DataFrame:
    """Every line with its order's user, number and context, without ids and eval sets."""
    return (
        data.order_products.join(data.orders, on=S.ORDER)
        .select(S.USER, S.ORDER_NUMBER, S.DOW, S.HOUR, S.DAYS_PRIOR, S.CART_POS, S.PRODUCT, S.REORDERED)
        .sort(S.USER, S.ORDER_NUMBER, S.CART_POS)
    )


def split_last_orders(data: Dataset) -> tuple[Dataset, list[OrderRecord]]:
    """``data`` without each user's last order, and those orders as the log would hold them."""
    last = data.orders.group_by(S.USER).agg(pl.col(S.ORDER_NUMBER).max())
    held = data.orders.join(last, on=[S.USER, S.ORDER_NUMBER], how="semi").sort(S.USER)
    kept = data.orders.join(held.select(S.ORDER), on=S.ORDER, how="anti")
    records = []
    for row in held.iter_rows(named=True):
        products = data.order_products.filter(pl.col(S.ORDER) == row[S.ORDER]).sort(S.CART_POS)[S.PRODUCT].to_list()
        days = row[S.DAYS_PRIOR]
        records.append(
            OrderRecord(
                str(row[S.ORDER]), row[S.USER], tuple(products), row[S.DOW], row[S.HOUR], None if days is None else days
            )
        )
    lines = data.order_products.join(kept.select(S.ORDER), on=S.ORDER, how="semi")
    return Dataset(kept, lines, data.products, data.aisles, data.departments), records


def test_merging_the_last_orders_back_gives_the_data(data: Dataset) -> None:
    """The Kaggle rules the merge applies (numbering, days, reordered from the history) are the
    data's own: held-out last orders merged back reproduce it line for line."""
    without, records = split_last_orders(data)
    merged = merge_order_log(without, records)
    assert canonical(merged).equals(canonical(data))
    assert merged.orders[S.ORDER].is_unique().all()


def test_merge_adds_unknown_products_and_drops_a_superseded_test_order() -> None:
    full = generate(n_users=60, seed=9)
    tested = full.orders.filter(pl.col(S.EVAL_SET) == S.TEST)
    assert tested.height > 0
    user = int(tested[S.USER][0])
    new_product = int(full.products[S.PRODUCT].max()) + 1  # type: ignore[arg-type]
    known = int(full.products[S.PRODUCT][0])
    posted = [OrderRecord("p1", user, (new_product, known, known), dow=1, hour=8, days_since_prior=44.0)]
    merged = merge_order_log(full, posted)
    mine = merged.orders.filter(pl.col(S.USER) == user).sort(S.ORDER_NUMBER)
    assert S.TEST not in mine[S.EVAL_SET].to_list()  # the posted order is what happened next
    last = mine.tail(1)
    assert last[S.DAYS_PRIOR].item() == 30  # capped
    lines = merged.order_products.filter(pl.col(S.ORDER) == last[S.ORDER].item()).sort(S.CART_POS)
    assert lines[S.PRODUCT].to_list() == [new_product, known]  # a repeated product counts once
    added = merged.products.filter(pl.col(S.PRODUCT) == new_product)
    assert added[S.PRODUCT_NAME].item() == f"unknown product {new_product}"
    assert (merged.aisles[S.AISLE] == 0).any() and (merged.departments[S.DEPARTMENT] == 0).any()


def test_load_is_idempotent_and_merge_publishes_a_data_folder(data: Dataset, tmp_path: Path) -> None:
    without, records = split_last_orders(data)
    held = {int(r.order_id) for r in records}
    source = tmp_path / "held.parquet"  # a Parquet file of order lines (LINE_COLUMNS)
    data.orders.filter(pl.col(S.ORDER).is_in(held)).join(data.order_products.drop(S.EVAL_SET), on=S.ORDER).select(
        LINE_COLUMNS
    ).write_parquet(source)
    log_url = f"sqlite:///{tmp_path / 'log.sqlite'}"
    first = load_orders(source, log_url)
    again = load_orders(source, log_url)
    assert (first.created, first.duplicates) == (len(records), 0)
    assert (again.created, again.duplicates) == (0, len(records))
    assert [r.products for r in posted_orders(log_url)] == [r.products for r in records]

    base = tmp_path / "base"
    write_dataset(base, without, source="without the last orders")
    runner = CliRunner()
    out = runner.invoke(main, ["orders", "merge", "--data", str(base), "--log", log_url, "--out", str(tmp_path / "m")])
    assert out.exit_code == 0, out.output
    assert f"merged {len(records):,} posted orders" in out.output
    merged = read_dataset(tmp_path / "m")
    assert canonical(merged).equals(canonical(data))
    assert "posted orders from sqlite:///" in read_manifest(tmp_path / "m").source
    bad = runner.invoke(main, ["orders", "load", str(source), "--log", "mysql://somewhere/db"])
    assert bad.exit_code == 2 and "unsupported order log URL" in bad.output
