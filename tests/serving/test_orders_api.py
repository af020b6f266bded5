"""POST /v1/orders with the embedded stores: recorded once, answered fresh, errors that say why."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from basketcast.serving.main import create_app
from basketcast.serving.settings import Settings

NEW = 4_100_000_000  # user ids far from the excerpt's


@pytest.fixture(scope="module")
def orders_client(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    state = tmp_path_factory.mktemp("orders-state")
    app = create_app(Settings(model_dir=trained_run, state_dir=state, reload_on_sighup=False))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def order(order_id: str, user: int, products: list[int], **extra: Any) -> dict[str, Any]:
    return {"order_id": order_id, "user_id": user, "products": products, **extra}


def top(client: TestClient, user: int, **params: Any) -> dict[str, Any]:
    answer = client.get(f"/v1/users/{user}/recommendations", params={"k": 10, "dow": 2, "hour": 10, **params})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_a_new_shopper_leaves_the_popular_list_with_their_first_order(orders_client: TestClient) -> None:
    user = NEW + 1
    before = top(orders_client, user)
    assert before["strategy"] == "popular" and before["freshness"] == "snapshot"
    bought = [item["product_id"] for item in before["items"][:3]]
    answer = orders_client.post("/v1/orders", json=order("new-1", user, bought, order_dow=2, order_hour_of_day=9))
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["status"] == "created" and body["fresh"] is True and body["orders"] == 1
    after = top(orders_client, user)
    assert after["strategy"] == "ranker" and after["freshness"] == "fresh"
    repeats = {item["product_id"] for item in after["items"] if item["repeat"]}
    assert repeats == set(bought)


def test_an_order_turns_its_products_into_repeats_and_restarts_their_cycles(
    orders_client: TestClient, trained_run: Path
) -> None:
    from basketcast.serving.model import ServingModel

    model = ServingModel.load(trained_run)
    user = int(model.users[1])
    before = top(orders_client, user)
    assert before["strategy"] == "ranker" and before["freshness"] == "snapshot"
    new_product = (
        next(i["product_id"] for i in before["items"] if not i["repeat"])
        if any(not i["repeat"] for i in before["items"])
        else int(model.popular_products[0])
    )
    answer = orders_client.post(
        "/v1/orders",
        json=order("cycle-1", user, [new_product], order_dow=2, order_hour_of_day=9, days_since_prior_order=6),
    )
    assert answer.status_code == 201 and answer.json()["fresh"] is True
    assert answer.json()["orders"] == int(model.online.dataset(user, []).orders.height) + 1  # type: ignore[union-attr]
    after = top(orders_client, user, k=100)
    assert after["freshness"] == "fresh"
    assert {i["product_id"]: i["repeat"] for i in after["items"]}.get(new_product) is True
    # Its rows now say it was bought in the last order (orders since the last purchase = 0).
    rows = orders_client.app.state.realtime.rows_for(model_of(orders_client), user).rows  # type: ignore[attr-defined]
    assert rows is not None
    from basketcast.features.build import BASE_FEATURES

    since_last = rows.base[:, BASE_FEATURES.index("up_orders_since_last")]
    assert since_last[rows.products.tolist().index(new_product)] == 0


def model_of(client: TestClient) -> Any:
    return client.app.state.models.model  # type: ignore[attr-defined]


def test_retries_are_recorded_once_and_reused_ids_are_refused(orders_client: TestClient) -> None:
    user = NEW + 2
    body = order("retry-1", user, [1, 2, 3], placed_at="2026-11-30T18:05:00+01:00")
    first = orders_client.post("/v1/orders", json=body)
    again = orders_client.post("/v1/orders", json=body)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["status"] == "duplicate"
    realtime = orders_client.app.state.realtime  # type: ignore[attr-defined]
    recorded = realtime.order_log.orders_of(user)
    assert [o.order_id for o in recorded] == ["retry-1"]
    assert (recorded[0].dow, recorded[0].hour) == (1, 17)  # Monday 17:00 UTC, Instacart's 0 = Sunday
    other = orders_client.post("/v1/orders", json=order("retry-1", user, [4]))
    assert other.status_code == 409 and other.json()["error"]["code"] == "order_id_conflict"
    later = orders_client.post("/v1/orders", json=order("retry-2", user, [2], placed_at="2026-12-02T17:05:00Z"))
    assert later.status_code == 201
    assert realtime.order_log.orders_of(user)[-1].days_since_prior == pytest.approx(2.0)  # from the two times


@pytest.mark.parametrize(
    "body",
    [
        {"order_id": "x", "user_id": 1},
        order("x", 1, []),
        order("", 1, [1]),
        order("bad id!", 1, [1]),
        order("x", -1, [1]),
        order("x", 1, [2**32]),
        order("x", 1, [1], order_dow=7, order_hour_of_day=1),
        order("x", 1, [1], placed_at="2026-12-01T10:00:00"),  # no timezone
        order("x", 1, [1], days_since_prior_order=-1),
        order("x", 1, [1], surprise=True),
    ],
)
def test_bad_orders_are_422_and_not_recorded(orders_client: TestClient, body: dict[str, Any]) -> None:
    answer = orders_client.post("/v1/orders", json=body)
    assert answer.status_code == 422, answer.text
    assert orders_client.app.state.realtime.order_log.orders_of(1) == []  # type: ignore[attr-defined]


def test_unknown_products_are_recorded_and_named(orders_client: TestClient) -> None:
    answer = orders_client.post("/v1/orders", json=order("unknown-1", NEW + 3, [3_999_999_999]))
    assert answer.status_code == 201
    assert answer.json()["unknown_products"] == [3_999_999_999]


def test_cached_answers_are_dropped_by_a_new_order(orders_client: TestClient) -> None:
    user = NEW + 4
    metrics = orders_client.app.state.metrics  # type: ignore[attr-defined]
    orders_client.post("/v1/orders", json=order("cache-1", user, [1, 2]))
    first = top(orders_client, user)
    hits = metrics.cache.labels("hit")._value.get()
    assert top(orders_client, user) == first  # served from the cache
    assert metrics.cache.labels("hit")._value.get() == hits + 1
    orders_client.post("/v1/orders", json=order("cache-2", user, [3]))
    after = top(orders_client, user)
    assert after != first and 3 in {i["product_id"] for i in after["items"] if i["repeat"]}
    text = orders_client.get("/metrics").text
    assert (
        "basketcast_prediction_cache_hit_ratio" in text and 'basketcast_online_reads_total{freshness="fresh"}' in text
    )


def test_ready_reports_the_stores(orders_client: TestClient) -> None:
    online = orders_client.get("/ready").json()["online"]
    assert online["order_log"].startswith("sqlite:") and online["online_store"].startswith("sqlite:")
    assert online["order_log_up"] and online["online_store_up"] and not online["degraded"]
    assert online["refreshes_rows"] is True


def test_batch_and_basket_use_fresh_rows(orders_client: TestClient) -> None:
    user = NEW + 5
    orders_client.post("/v1/orders", json=order("batch-1", user, [1, 2, 3]))
    batch = orders_client.post("/v1/recommendations", json={"user_ids": [user, NEW + 999], "k": 5}).json()
    assert [r["freshness"] for r in batch["results"]] == ["fresh", "snapshot"]
    assert [r["strategy"] for r in batch["results"]] == ["ranker", "popular"]
    basket = orders_client.get(f"/v1/users/{user}/basket").json()
    assert basket["freshness"] == "fresh" and basket["strategy"] == "ranker"
    assert {p["product_id"] for p in basket["products"]} <= {1, 2, 3}


def test_after_a_hot_swap_the_new_version_rebuilds_the_rows_from_the_log(model_dir: Path, tmp_path: Path) -> None:
    """Rows are keyed by model version: a reload never serves the old version's rows, and the new
    version recomputes them from the order log on the user's next read."""
    from tests.serving.conftest import publish, set_version

    app = create_app(Settings(model_dir=model_dir, state_dir=tmp_path / "state", reload_on_sighup=False))
    with TestClient(app) as client:
        user = NEW + 6
        product = int(model_of(client).popular_products[3])
        assert client.post("/v1/orders", json=order("swap-1", user, [product])).status_code == 201
        old = model_of(client).version
        publish(model_dir, set_version("20991231T000000000000Z-swapped"))
        assert client.post("/admin/reload").json()["status"] == "reloaded"
        realtime = client.app.state.realtime  # type: ignore[attr-defined]
        assert realtime.online_store.get_rows("20991231T000000000000Z-swapped", user) is None  # not yet
        after = top(client, user)
        assert after["freshness"] == "fresh" and after["strategy"] == "ranker"
        assert product in {i["product_id"] for i in after["items"] if i["repeat"]}
        assert realtime.online_store.get_rows("20991231T000000000000Z-swapped", user) is not None
        assert realtime.online_store.get_rows(old, user) is not None  # the old version's rows, untouched
