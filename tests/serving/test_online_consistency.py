"""Offline/online consistency (Feast's promise): the rows a shopper gets after posting orders through
the API equal what the offline feature store computes for the same history.

Each real user X of the excerpt is replayed as a new shopper Y: X's orders are posted one by one
(``POST /v1/orders``, a real app with the embedded stores). After every order, Y's rows in the
online store must equal, to float32 precision, the rows the offline pipeline computes for X cut
after the same orders — built over *every* user's history (``basketcast.features.history.as_of`` with X's
cutoff moved), with the product table and TIFU reference the offline code computes from the
published data, the run's ALS folded in and the run's network. After X's last order Y's rows must
also equal X's rows in the exported snapshot (every column but the two ALS ones: the snapshot
keeps the fit's user factors), and Y's served recommendations the ranker's on the offline rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient

from basketcast.features import cutoffs as C
from basketcast.features.build import BASE_FEATURES, FeatureTables, PublishedTables, base_matrix
from basketcast.features.history import as_of, order_lines
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.storage import read_dataset
from basketcast.pipeline.model.candidates import candidates
from basketcast.pipeline.workflows.export import latest_history
from basketcast.pipeline.workflows.run_folder import load_run
from basketcast.serving.main import create_app
from basketcast.serving.model import Context
from basketcast.serving.online import UserRows
from basketcast.serving.settings import Settings

NEW_USER_OFFSET = 3_000_000_000
ALS_COLUMNS = [BASE_FEATURES.index(S.ALS_SCORE), BASE_FEATURES.index(S.ALS_RANK)]
CTX = {"order_dow": 3, "order_hour_of_day": 10}
# "To float32": a group-by sums a user's values in another order over a one-user frame than over
# every user's, so the last bit of a float32 may differ (measured: at most 1 ulp).
RTOL = 4 * float(np.finfo(np.float32).eps)


@pytest.fixture(scope="module")
def replay(excerpt_run: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    state = tmp_path_factory.mktemp("online-state")
    app = create_app(Settings(model_dir=excerpt_run["run"], state_dir=state, reload_on_sighup=False))
    with TestClient(app) as client:
        yield {"client": client, "app": app}


def offline_rows(data_dir: Path, run_dir: Path, user: int, target: int) -> tuple[pl.DataFrame, np.ndarray]:
    """The offline feature store's candidates and base rows of ``user`` cut before order ``target``."""
    data = read_dataset(data_dir)
    run = load_run(run_dir)
    lines = order_lines(data)
    published = PublishedTables.of(FeatureTables.of(latest_history(data, lines), run.config.features))
    cutoffs = C.next_order(data.orders).with_columns(
        pl.when(pl.col(S.USER) == user)
        .then(target)
        .otherwise(pl.col(S.TARGET_ORDER_NUMBER))
        .alias(S.TARGET_ORDER_NUMBER)
    )
    h = as_of(data, cutoffs, lines)
    als = run.als(latest=True).fold_in(h.lines.filter(pl.col(S.USER) == user).select(S.USER, S.PRODUCT))
    cands = candidates(h, als, pl.Series(S.USER, [user], pl.UInt32), run.config.candidates)
    frame = FeatureTables.of(h, run.config.features, run.network(), published).base_frame(cands)
    return cands, base_matrix(frame)


def assert_rows_equal(online: UserRows, cands: pl.DataFrame, base: np.ndarray) -> int:
    """Equal products, flags and features (to RTOL); returns the largest difference in float32 ulps."""
    assert online.products.tolist() == cands[S.PRODUCT].to_list()
    assert online.repeat.tolist() == cands[S.IS_REPEAT].to_list()
    np.testing.assert_allclose(online.base, base, rtol=RTOL, atol=0, equal_nan=True)
    finite = np.isfinite(base)
    a = online.base[finite].astype(np.float32).view(np.int32).astype(np.int64)
    b = base[finite].astype(np.float32).view(np.int32).astype(np.int64)
    return int(np.abs(a - b).max(initial=0))


def test_posted_orders_give_the_offline_rows(excerpt_run: dict[str, Path], replay: dict[str, object]) -> None:
    client = replay["client"]
    assert isinstance(client, TestClient)
    realtime = client.app.state.realtime  # type: ignore[attr-defined]
    model = client.app.state.models.model  # type: ignore[attr-defined]
    assert model.online is not None and model.online.network is not None  # the suite's run has the network
    data = read_dataset(excerpt_run["data"])
    h = latest_history(data, order_lines(data))
    compared_rows = compared_states = worst_ulps = 0
    users = h.cutoffs[S.USER].to_list()[:3]
    assert len(users) == 3
    for x in users:
        y = NEW_USER_OFFSET + x
        orders = h.orders.filter(pl.col(S.USER) == x).sort(S.ORDER_NUMBER)
        for order in orders.iter_rows(named=True):
            products = (
                h.lines.filter((pl.col(S.USER) == x) & (pl.col(S.ORDER_NUMBER) == order[S.ORDER_NUMBER]))
                .sort(S.CART_POS)[S.PRODUCT]
                .to_list()
            )
            if not products:
                continue  # an order without lines cannot be posted (the API needs a product)
            body = {
                "order_id": f"replay-{x}-{order[S.ORDER_NUMBER]}",
                "user_id": y,
                "products": products,
                "order_dow": order[S.DOW],
                "order_hour_of_day": order[S.HOUR],
                "days_since_prior_order": order[S.DAYS_PRIOR],
            }
            answer = client.post("/v1/orders", json=body)
            assert answer.status_code == 201, answer.text
            assert answer.json()["fresh"] is True
            online = UserRows.unpack(realtime.online_store.get_rows(model.version, y))
            cands, base = offline_rows(excerpt_run["data"], excerpt_run["run"], x, order[S.ORDER_NUMBER] + 1)
            worst_ulps = max(worst_ulps, assert_rows_equal(online, cands, base))
            compared_rows += base.shape[0]
            compared_states += 1
        # After X's last order: Y's rows are X's snapshot rows (all but the ALS columns) ...
        rows = model.rows(x)
        snap_products = np.asarray(model.products[rows])
        snap_base = np.asarray(model.base[rows])
        assert sorted(snap_products[np.asarray(model.repeat[rows])].tolist()) == sorted(
            online.products[online.repeat].tolist()
        )
        position = {p: i for i, p in enumerate(snap_products.tolist())}
        keep = [j for j in range(len(BASE_FEATURES)) if j not in ALS_COLUMNS]
        for i in np.flatnonzero(online.repeat):
            np.testing.assert_allclose(
                online.base[i, keep], snap_base[position[int(online.products[i])], keep], rtol=RTOL, equal_nan=True
            )
        # ... and Y's served recommendations are the ranker's on the offline rows of that state.
        served = client.get(
            f"/v1/users/{y}/recommendations", params={"k": 10, "dow": 3, "hour": 10, "days_since_last_order": 7}
        )
        assert served.status_code == 200 and served.json()["freshness"] == "fresh"
        offline = UserRows(cands[S.PRODUCT].to_numpy(), cands[S.IS_REPEAT].to_numpy(), base, 0, 0)
        expected = model.recommend(y, 10, Context(dow=3, hour=10, days=7.0), fresh=offline)
        assert [i["product_id"] for i in served.json()["items"]] == expected.products.tolist()
        np.testing.assert_allclose([i["score"] for i in served.json()["items"]], expected.scores, rtol=1e-5)
    print(f"consistency: {compared_states} states, {compared_rows} rows compared, worst {worst_ulps} ulp")
    assert compared_states >= 10 and compared_rows >= 200
