"""The reason of every recommendation (basketcast.serving.reasons): each rule on hand-made feature values,
then the served reasons checked against the real excerpt's own order history."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from basketcast.features.build import FEATURE_NAMES
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.model.cooccurrence import Cooccurrence
from basketcast.serving import reasons as R
from basketcast.serving.batch import OUT_SCHEMA, REASON, score_users
from basketcast.serving.bundle import HISTORY, bundle_dir
from basketcast.serving.model import Context, ServingModel

NAN = float("nan")
DEPTS = ["produce", "dairy eggs", "bakery", "snacks"]


def values(**columns: list[float]) -> dict[str, np.ndarray]:
    """Feature columns of hand-made rows; a name left out is all NaN."""
    n = len(next(iter(columns.values())))
    out = {name: np.full(n, np.nan, np.float32) for name in R.INPUTS}
    for name, col in columns.items():
        out[name] = np.asarray(col, np.float32)
    return out


# --- the rules on hand-made rows ---------------------------------------------------------


def test_the_rules_read_features_the_ranker_scores() -> None:
    assert set(R.INPUTS) <= set(FEATURE_NAMES)


def test_frequent_repeat_counts_orders() -> None:
    v = values(up_orders=[12, 2], u_orders=[15, 4], up_mean_gap_days=[7.0, 0.0])
    assert R.explain(v, DEPTS[:2]) == ["in 12 of your 15 orders", "in 2 of your 4 orders"]


def test_regular_repeat_gives_gap_and_last_purchase_rounded() -> None:
    v = values(
        up_orders=[3, 4, 2, 2],
        u_orders=[20, 20, 20, 20],
        up_mean_gap_days=[6.6, 1.2, 10.5, 30.0],
        up_days_since_last=[9.0, 0.0, 1.0, 2.5],
    )
    assert R.explain(v, DEPTS) == [
        "you buy this about every 7 days; last time 9 days ago",
        "you buy this about every day; last time today",
        "you buy this about every 11 days; last time 1 day ago",  # half up, not to even
        "you buy this about every 30 days; last time 3 days ago",
    ]


def test_a_same_day_gap_is_not_a_cycle() -> None:
    v = values(up_orders=[2], u_orders=[10], up_mean_gap_days=[0.0], up_days_since_last=[5.0])
    assert R.explain(v, DEPTS[:1]) == ["you bought this 5 days ago"]


def test_bought_once() -> None:
    v = values(up_orders=[1, 1], u_orders=[10, 10], up_days_since_last=[14.0, NAN])
    assert R.explain(v, DEPTS[:2]) == ["you bought this 14 days ago", "you bought this before"]


def test_new_products_explained_by_department_taste() -> None:
    v = values(up_orders=[0, 0, 0], u_orders=[10, 10, 10], ud_orders_share=[0.6, 0.2, 0.1])
    assert R.explain(v, DEPTS[:3]) == [
        "popular in produce among shoppers like you",
        "popular in dairy eggs among shoppers like you",
        R.EXPLORE,
    ]


def test_missing_features_fall_back_to_explore() -> None:
    assert R.explain({R.UP_ORDERS: np.array([np.nan], np.float32)}, ["x"]) == [R.EXPLORE]
    assert R.explain({}, []) == []


def test_the_cart_rule_comes_first_where_a_partner_is_given() -> None:
    v = values(up_orders=[12, 12, 0], u_orders=[15, 15, 15])
    got = R.explain(v, DEPTS[:3], partners=["Bananas", None, "Whole Milk"])
    assert got == ["often bought with Bananas", "in 12 of your 15 orders", "often bought with Whole Milk"]
    assert R.rule_of(v, np.array([True, False, False])).tolist() == [0, 1, 5]


def test_cart_driven_needs_a_large_enough_bonus() -> None:
    bonus = np.array([0.0, 0.1, 0.1, 0.3], np.float32)
    scores = np.array([0.5, 0.5, 0.3, 0.4], np.float32)
    assert R.cart_driven(bonus, scores).tolist() == [False, False, True, True]


def tiny_table() -> Cooccurrence:
    """Products 1 and 2 always together, 1 and 3 often, 4 alone: 1's best partner is 2."""
    baskets = [[1, 2, 3]] * 6 + [[1, 2]] * 4 + [[3, 5]] * 3 + [[4]] * 10 + [[5, 6]] * 6 + [[2, 6]] * 2
    rows = [(u, 1, p) for u, basket in enumerate(baskets, start=1) for p in basket]
    lines = pl.DataFrame(rows, schema=[S.USER, S.ORDER_NUMBER, S.PRODUCT], orient="row")
    return Cooccurrence.of(lines, min_support=2, max_orders=None)


def test_cart_partner_is_the_cart_product_of_highest_pmi() -> None:
    table = tiny_table()
    pmi = {
        (a, b): float(table.related_to(a, 50).filter(pl.col(S.PRODUCT) == b)["pmi"].sum()) for a in (2, 3) for b in (1,)
    }
    assert pmi[(2, 1)] > 0 and pmi[(3, 1)] > 0
    best = 2 if pmi[(2, 1)] >= pmi[(3, 1)] else 3
    ids, values_ = R.cart_partners(table, np.array([3, 2], np.uint32), np.array([1, 4, 2], np.uint32))
    assert ids.tolist() == [best, 0, 0]  # 4 has no partner; 2 is in the cart
    assert values_[0] == pytest.approx(max(pmi.values()))
    # A partner exactly when the cart re-rank gives a positive score.
    cart_scores = table.cart_scores(np.array([3, 2], np.uint32), np.array([1, 4, 2, 5, 6], np.uint32))
    ids, _ = R.cart_partners(table, np.array([3, 2], np.uint32), np.array([1, 4, 2, 5, 6], np.uint32))
    assert ((ids > 0) == (cart_scores > 0)).all()


# --- the served reasons against the real excerpt's order history ------------------------


@pytest.fixture(scope="module")
def model(trained_run: Path) -> ServingModel:
    return ServingModel.load(trained_run)


def history_before_cutoff(model: ServingModel, data: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(orders up to each snapshot user's cutoff with cum_days, their lines), from the data folder."""
    folder = bundle_dir(model.path) / HISTORY
    offsets = np.load(folder / "order_offsets.npy")
    number = np.load(folder / "order_number.npy")
    has = np.diff(offsets) > 0
    cutoffs = pl.DataFrame(
        {
            S.USER: pl.Series(np.asarray(model.users)[has], dtype=pl.UInt32),
            "cutoff": pl.Series(number[offsets[1:][has] - 1].astype(np.int64)),
        }
    )
    orders = (
        pl.read_parquet(data / f"{S.ORDERS}.parquet")
        .join(cutoffs, on=S.USER)
        .filter(pl.col(S.ORDER_NUMBER) <= pl.col("cutoff"))
        .sort(S.USER, S.ORDER_NUMBER)
        .with_columns(pl.col(S.DAYS_PRIOR).fill_null(0).cast(pl.Int64).cum_sum().over(S.USER).alias("day"))
    )
    lines = pl.read_parquet(data / f"{S.ORDER_PRODUCTS}.parquet").join(
        orders.select(S.ORDER, S.USER, S.ORDER_NUMBER, "day"), on=S.ORDER
    )
    return orders, lines


def _days(text: str) -> int:
    return 0 if text == "today" else int(text.split()[0])


FREQUENT = re.compile(r"^in (\d+) of your (\d+) orders$")
REGULAR = re.compile(r"^you buy this about every (day|\d+ days); last time (today|\d+ days? ago)$")
ONCE = re.compile(r"^you bought this (today|\d+ days? ago)$")


def test_reasons_match_the_users_own_order_history(model: ServingModel, excerpt_run: dict[str, Path]) -> None:
    orders, lines = history_before_cutoff(model, excerpt_run["data"])
    days_to_order = 3
    ctx = Context(dow=2, hour=10, days=float(days_to_order))
    users = np.asarray(model.users)[:: max(1, model.users.size // 40)][:40].tolist()
    checked = {"frequent": 0, "regular": 0, "once": 0}
    for user in users:
        rec = model.recommend(user, 10, ctx)
        assert len(rec.reasons) == rec.products.size and all(rec.reasons)
        mine = lines.filter(pl.col(S.USER) == user)
        n_orders = orders.filter(pl.col(S.USER) == user).height
        last_day = int(orders.filter(pl.col(S.USER) == user)["day"].max())  # type: ignore[arg-type]
        for product, repeat, reason in zip(rec.products.tolist(), rec.repeat.tolist(), rec.reasons, strict=True):
            bought = mine.filter(pl.col(S.PRODUCT) == product)
            times = bought[S.ORDER_NUMBER].n_unique()
            assert repeat == (times > 0), (user, product, reason)
            if not repeat:
                assert "shoppers" in reason, (user, product, reason)
                continue
            since = last_day - int(bought["day"].max()) + days_to_order  # type: ignore[arg-type]
            if m := FREQUENT.match(reason):
                assert (int(m[1]), int(m[2])) == (times, n_orders), (user, product, reason)
                checked["frequent"] += 1
            elif m := REGULAR.match(reason):
                gap = (int(bought["day"].max()) - int(bought["day"].min())) / (times - 1)  # type: ignore[arg-type]
                every = 1 if m[1] == "day" else int(m[1].split()[0])
                assert every == int(np.floor(gap + 0.5)), (user, product, reason, gap)
                assert _days(m[2]) == since, (user, product, reason)
                checked["regular"] += 1
            elif m := ONCE.match(reason):
                assert _days(m[1]) == since, (user, product, reason)
                checked["once"] += 1
            else:
                pytest.fail(f"user {user}, product {product}: unexpected reason for a repeat: {reason!r}")
    assert checked["frequent"] and checked["regular"], checked


def test_often_bought_with_names_a_cart_product(model: ServingModel) -> None:
    assert model.related is not None
    # Carts of products with the longest co-occurrence lists, so that the re-rank has something to say.
    lengths = np.diff(model.related.offsets)
    hubs = model.related.products[np.argsort(-lengths, kind="stable")[:3]].tolist()
    found = 0
    for user in np.asarray(model.users)[:30].tolist():
        for cart in ([hubs[0]], hubs[:2], hubs):
            rec = model.recommend(user, 20, Context(dow=1, hour=9, days=7.0), cart=cart)
            names = {model.product_info(p)[0] for p in cart}
            for product, reason in zip(rec.products.tolist(), rec.reasons, strict=True):
                assert product not in cart
                if reason.startswith("often bought with "):
                    assert reason.removeprefix("often bought with ") in names, (user, cart, reason)
                    found += 1
    assert found, "no recommendation was explained by the cart"


def test_popular_list_reason(model: ServingModel) -> None:
    rec = model.recommend(2**32 - 2, 5, Context(dow=0, hour=10))
    assert rec.strategy == "popular" and rec.reasons == (R.POPULAR,) * rec.products.size


def test_batch_users_get_the_same_reasons_as_one_user(model: ServingModel) -> None:
    users = np.asarray(model.users)[:5].tolist()
    ctx = Context(dow=4, hour=18, days=5.0)
    many = model.recommend_many(users, 8, ctx)
    for user, rec in zip(users, many, strict=True):
        one = model.recommend(user, 8, ctx)
        assert rec.reasons == one.reasons and rec.products.tolist() == one.products.tolist()


def test_score_users_reason_column_only_when_asked(model: ServingModel, tmp_path: Path) -> None:
    users = np.r_[np.asarray(model.users)[:4], np.uint32(2**32 - 2)].astype(np.uint32)
    ctx = Context(dow=4, hour=18, days=5.0)
    score_users(model, users, tmp_path / "plain.parquet", k=6, ctx=ctx)
    assert pq.read_schema(tmp_path / "plain.parquet").names == OUT_SCHEMA.names
    score_users(model, users, tmp_path / "why.parquet", k=6, ctx=ctx, reasons=True)
    why = pl.read_parquet(tmp_path / "why.parquet")
    assert why.columns == [*OUT_SCHEMA.names, REASON]
    assert why[REASON].null_count() == 0 and (why[REASON].str.len_chars() > 0).all()
    assert (why.filter(pl.col(S.USER) == 2**32 - 2)[REASON] == R.POPULAR).all()
    for user, rec in zip(users[:4].tolist(), model.recommend_many(users[:4].tolist(), 6, ctx), strict=True):
        assert why.filter(pl.col(S.USER) == user).sort(S.RANK)[REASON].to_list() == list(rec.reasons)
    # Either file is our own scores output: scoring again replaces it, with or without reasons.
    score_users(model, users, tmp_path / "why.parquet", k=6, ctx=ctx, force=True)
    assert pq.read_schema(tmp_path / "why.parquet").names == OUT_SCHEMA.names
    score_users(model, users, tmp_path / "plain.parquet", k=6, ctx=ctx, reasons=True, force=True)
    assert pl.read_parquet(tmp_path / "plain.parquet").equals(why)


def test_notebook_recommend_has_a_reason_column(trained_run: Path) -> None:
    import basketcast

    rec = basketcast.load(trained_run)
    frame = rec.recommend([int(rec.users[0]), 2**32 - 2], k=4, dow=1, hour=10)
    assert frame.columns[-1] == "reason"
    assert (frame["reason"].str.len_chars() > 0).all()
    assert (frame.filter(pl.col("strategy") == "popular")["reason"] == R.POPULAR).all()


def test_api_items_each_have_a_reason(client: TestClient, model: ServingModel) -> None:
    user = int(model.users[0])
    for url in (f"/v1/users/{user}/recommendations?k=10", f"/v1/users/{2**32 - 2}/recommendations?k=3"):
        r = client.get(url)
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        assert items and all(isinstance(i["reason"], str) and i["reason"] for i in items)
    r = client.post("/v1/recommendations", json={"user_ids": [user], "k": 5})
    assert r.status_code == 200 and all(i["reason"] for i in r.json()["results"][0]["items"])
