"""The HTTP contract, through FastAPI's TestClient on a model trained on the real excerpt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from basketcast.serving.main import create_app
from basketcast.serving.model import ServingModel
from basketcast.serving.settings import Settings
from basketcast.serving.state import get_model

UNKNOWN = 4_000_000_000


def known_users(trained_run: Path, min_rows: int = 30) -> list[int]:
    """Users of the snapshot with at least ``min_rows`` candidates (enough for k=10 and exclusions)."""
    model = ServingModel.load(trained_run)
    counts = np.diff(model.offsets)
    return [int(u) for u, n in zip(model.users, counts, strict=True) if n >= min_rows]


@pytest.fixture(scope="module")
def users(trained_run: Path) -> list[int]:
    return known_users(trained_run)


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert error["status"] == status and error["message"]
    if code is not None:
        assert error["code"] == code
    return error


def counter(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text exposition (0 if absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready" and body["model_version"] and body["error"] is None


def test_recommendations_for_a_known_user(client: TestClient, users: list[int]) -> None:
    r = client.get(f"/v1/users/{users[0]}/recommendations", params={"k": 10, "dow": 2, "hour": 9})
    assert r.status_code == 200
    body = r.json()
    assert body["user_id"] == users[0] and body["strategy"] == "ranker"
    assert body["model_version"] == client.get("/ready").json()["model_version"]
    assert body["context"] == {"dow": 2, "hour": 9, "days_since_last_order": None}
    items = body["items"]
    assert len(items) == 10 and [i["rank"] for i in items] == list(range(1, 11))
    assert set(items[0]) == {"product_id", "name", "aisle", "department", "score", "rank", "repeat", "reason"}
    scores = [i["score"] for i in items]
    assert scores == sorted(scores, reverse=True)
    assert len({i["product_id"] for i in items}) == 10
    assert all(isinstance(i["name"], str) and i["name"] for i in items)


def test_context_defaults_to_now_and_days_change_the_scores(client: TestClient, users: list[int]) -> None:
    body = client.get(f"/v1/users/{users[0]}/recommendations").json()
    assert 0 <= body["context"]["dow"] <= 6 and 0 <= body["context"]["hour"] <= 23
    assert len(body["items"]) == 10  # default k
    url = f"/v1/users/{users[0]}/recommendations?k=50&dow=1&hour=10&days_since_last_order="
    near, far = client.get(url + "1").json(), client.get(url + "30").json()
    assert far["context"]["days_since_last_order"] == 30
    assert [i["score"] for i in near["items"]] != [i["score"] for i in far["items"]]


def test_unknown_user_gets_the_flagged_popular_list(client: TestClient) -> None:
    r = client.get(f"/v1/users/{UNKNOWN}/recommendations", params={"k": 5})
    assert r.status_code == 200
    body = r.json()
    assert body["strategy"] == "popular" and len(body["items"]) == 5
    assert not any(i["repeat"] for i in body["items"])
    excluded = body["items"][0]["product_id"]
    again = client.get(f"/v1/users/{UNKNOWN}/recommendations", params={"k": 5, "cart": excluded}).json()
    assert excluded not in [i["product_id"] for i in again["items"]] and len(again["items"]) == 5


def test_exclude_and_cart_remove_products_and_keep_k(client: TestClient, users: list[int]) -> None:
    base = f"/v1/users/{users[0]}/recommendations?k=10&dow=3&hour=14"
    full = [i["product_id"] for i in client.get(base).json()["items"]]
    # comma-separated and repeated exclude: removed, the order of the rest kept
    r = client.get(f"{base}&exclude={full[0]},{full[2]}&exclude={full[4]}")
    assert r.status_code == 200
    left = [i["product_id"] for i in r.json()["items"]]
    assert len(left) == 10
    assert not {full[0], full[2], full[4]} & set(left)
    assert left[:7] == [p for p in full if p not in {full[0], full[2], full[4]}]  # order kept
    assert [i["rank"] for i in r.json()["items"]] == list(range(1, 11))
    # a cart as well: removed too, still k items (the cart may also re-rank the rest: test_cart_and_related)
    r = client.get(f"{base}&exclude={full[0]},{full[2]}&exclude={full[4]}&cart={full[1]}")
    left = [i["product_id"] for i in r.json()["items"]]
    assert len(left) == 10 and not {full[0], full[1], full[2], full[4]} & set(left)
    assert [i["rank"] for i in r.json()["items"]] == list(range(1, 11))


def test_batch_returns_one_result_per_user_in_order(client: TestClient, users: list[int]) -> None:
    ids = [users[1], UNKNOWN, users[0], users[1]]
    r = client.post("/v1/recommendations", json={"user_ids": ids, "k": 7, "dow": 4, "hour": 18, "days": 6})
    assert r.status_code == 200
    body = r.json()
    assert body["k"] == 7 and body["context"] == {"dow": 4, "hour": 18, "days_since_last_order": 6.0}
    assert [x["user_id"] for x in body["results"]] == ids
    assert [x["strategy"] for x in body["results"]] == ["ranker", "popular", "ranker", "ranker"]
    assert all(len(x["items"]) == 7 for x in body["results"])
    single = client.get(
        f"/v1/users/{users[0]}/recommendations", params={"k": 7, "dow": 4, "hour": 18, "days_since_last_order": 6}
    ).json()
    assert [i["product_id"] for i in body["results"][2]["items"]] == [i["product_id"] for i in single["items"]]


def test_batch_of_the_maximum_size(client: TestClient, users: list[int]) -> None:
    ids = (users * 1000)[:1000]
    r = client.post("/v1/recommendations", json={"user_ids": ids, "k": 3})
    assert r.status_code == 200 and len(r.json()["results"]) == 1000


@pytest.mark.parametrize(
    "body",
    [
        {"user_ids": list(range(1001))},
        {"user_ids": []},
        {"user_ids": [1], "k": 0},
        {"user_ids": [1], "k": 101},
        {"user_ids": ["1"]},
        {"user_ids": [1.5]},
        {"user_ids": [-1]},
        {"user_ids": [2**32]},
        {"user_ids": [1], "hour": 24},
        {"user_ids": [1], "days": -1},
        {"user_ids": [1], "unexpected": True},
        {"users": [1]},
        [1, 2],
    ],
)
def test_batch_rejects_bad_bodies(client: TestClient, body: Any) -> None:
    error = assert_error(client.post("/v1/recommendations", json=body), 422, "validation_error")
    assert error["details"] and all("loc" in d and "msg" in d for d in error["details"])


def test_batch_rejects_malformed_json(client: TestClient) -> None:
    r = client.post("/v1/recommendations", content=b'{"user_ids": [1,', headers={"content-type": "application/json"})
    assert_error(r, 422, "validation_error")


def test_basket_of_a_known_and_an_unknown_user(client: TestClient, users: list[int]) -> None:
    r = client.get(f"/v1/users/{users[0]}/basket", params={"dow": 1, "hour": 9})
    assert r.status_code == 200
    body = r.json()
    assert body["strategy"] == "ranker" and body["model_version"] and isinstance(body["none"], bool)
    assert 0 < body["expected_f1"] <= 1
    probs = [p["probability"] for p in body["products"]]
    assert probs == sorted(probs, reverse=True) and all(0 <= p <= 1 for p in probs)
    assert body["products"] or body["none"]
    assert all(set(p) == {"product_id", "name", "aisle", "department", "probability"} for p in body["products"])
    cold = client.get(f"/v1/users/{UNKNOWN}/basket").json()
    assert cold["strategy"] == "popular" and cold["products"] == [] and cold["none"] is True
    assert cold["expected_f1"] is None


@pytest.fixture(scope="module")
def candidates_of(trained_run: Path) -> dict[int, int]:
    """Each known user's number of candidates in the snapshot."""
    model = ServingModel.load(trained_run)
    return {int(u): int(n) for u, n in zip(model.users, np.diff(model.offsets), strict=True)}


@pytest.mark.parametrize("k, status", [("1", 200), ("100", 200), ("0", 422), ("101", 422), ("-3", 422), ("ten", 422)])
def test_k_bounds(client: TestClient, users: list[int], candidates_of: dict[int, int], k: str, status: int) -> None:
    r = client.get(f"/v1/users/{users[0]}/recommendations?k={k}")
    if status != 200:
        assert "k" in assert_error(r, status, "validation_error")["message"]
        return
    # Exactly min(k, candidates): a user with fewer than 100 candidates and one with more.
    fewest, most = min(candidates_of, key=candidates_of.__getitem__), max(candidates_of, key=candidates_of.__getitem__)
    assert candidates_of[fewest] < 100 < candidates_of[most]
    for user in (users[0], fewest, most):
        r = client.get(f"/v1/users/{user}/recommendations?k={k}")
        assert r.status_code == 200
        items = r.json()["items"]
        assert len(items) == min(int(k), candidates_of[user]), user
        assert [i["rank"] for i in items] == list(range(1, len(items) + 1))
        assert len({i["product_id"] for i in items}) == len(items)


@pytest.mark.parametrize(
    "url",
    [
        "/v1/users/abc/recommendations",
        "/v1/users/-1/recommendations",
        "/v1/users/1.5/recommendations",
        "/v1/users/+1/recommendations",
        "/v1/users/1_000/recommendations",
        "/v1/users/%EF%BC%91/recommendations",
        f"/v1/users/{2**32}/recommendations",
        "/v1/users/abc/basket",
        "/v1/users/-7/basket",
        "/v1/users/1/recommendations?exclude=1,x",
        "/v1/users/1/recommendations?exclude=-3",
        "/v1/users/1/recommendations?cart=1.5",
        f"/v1/users/1/recommendations?cart={2**32}",
        "/v1/users/1/recommendations?exclude=" + ",".join(map(str, range(1001))),
        "/v1/users/1/recommendations?dow=7",
        "/v1/users/1/recommendations?hour=-1",
        "/v1/users/1/recommendations?days_since_last_order=nan",
        "/v1/users/1/recommendations?days_since_last_order=31",
        "/v1/users/1/basket?days_since_last_order=inf",
    ],
)
def test_malformed_input_is_a_422(client: TestClient, url: str) -> None:
    assert_error(client.get(url), 422, "validation_error")


def test_oversized_bodies_get_413(client: TestClient) -> None:
    big = b'{"user_ids": [' + b"1," * 600_000 + b"1]}"
    assert len(big) > 1024 * 1024
    r = client.post("/v1/recommendations", content=big, headers={"content-type": "application/json"})
    assert assert_error(r, 413, "payload_too_large")["limit_bytes"] == 1024 * 1024

    def chunks() -> Any:  # no Content-Length: counted as it arrives
        for _ in range(20):
            yield b" " * 100_000

    r = client.post("/v1/recommendations", content=chunks(), headers={"content-type": "application/json"})
    assert_error(r, 413, "payload_too_large")


def test_unknown_routes_and_wrong_methods(client: TestClient) -> None:
    assert "/nope" in assert_error(client.get("/nope"), 404, "not_found")["message"]
    assert_error(client.get("/v1/users/1"), 404, "not_found")
    r = client.delete("/v1/users/1/recommendations")
    assert_error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "GET"
    assert_error(client.get("/v1/recommendations"), 405, "method_not_allowed")
    assert_error(client.get("/admin/reload"), 405, "method_not_allowed")


def test_openapi_lists_every_route(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {
        "/v1/users/{user_id}/recommendations": {"get"},
        "/v1/recommendations": {"post"},
        "/v1/users/{user_id}/basket": {"get"},
        "/health": {"get"},
        "/ready": {"get"},
        "/metrics": {"get"},
        "/admin/reload": {"post"},
    }.items() <= {path: set(ops) for path, ops in spec["paths"].items()}.items()
    assert "ErrorResponse" in spec["components"]["schemas"]
    user_id = spec["paths"]["/v1/users/{user_id}/recommendations"]["get"]["parameters"][0]
    assert user_id["name"] == "user_id" and user_id["schema"]["type"] == "integer"
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_metrics_count_requests_by_route_template_and_status(client: TestClient, users: list[int]) -> None:
    route = "/v1/users/{user_id}/recommendations"
    before = client.get("/metrics").text
    for user in users[:3]:
        assert client.get(f"/v1/users/{user}/recommendations").status_code == 200
    client.get("/v1/users/1/recommendations?k=0")
    client.get("/no/such/route")
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    after = r.text

    def delta(name: str, **labels: str) -> float:
        return counter(after, name, **labels) - counter(before, name, **labels)

    assert delta("basketcast_http_requests_total", method="GET", route=route, status="200") == 3
    assert delta("basketcast_http_requests_total", method="GET", route=route, status="422") == 1
    assert delta("basketcast_http_requests_total", route="<unmatched>", status="404") == 1
    assert delta("basketcast_http_request_duration_seconds_count", route=route, status="200") == 3
    assert counter(after, "basketcast_model_reloads_total", result="loaded") == 1
    assert "basketcast_model_info" in after


def test_without_a_model_the_app_starts_and_says_why(tmp_path: Path) -> None:
    app = create_app(Settings(model_dir=tmp_path / "missing", reload_on_sighup=False))
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200
        ready = c.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["status"] == "unavailable" and ready.json()["model_version"] is None
        assert "missing" in ready.json()["error"]  # names the folder
        error = assert_error(c.get("/v1/users/1/recommendations"), 503, "model_unavailable")
        assert "missing" in error["message"]
        assert_error(c.post("/v1/recommendations", json={"user_ids": [1]}), 503)
        assert_error(c.get("/v1/users/1/basket"), 503)
        assert_error(c.post("/admin/reload"), 409, "reload_refused")


class _Exploding:
    version = "fake"
    online = None  # a model that cannot refresh rows (as a bundle of an older version)

    def recommend(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")


def test_server_faults_are_a_logged_500_and_dependencies_can_be_swapped(
    trained_run: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(Settings(model_dir=trained_run, reload_on_sighup=False))
    app.dependency_overrides[get_model] = lambda: _Exploding()
    with TestClient(app, raise_server_exceptions=False) as c:
        error = assert_error(c.get("/v1/users/1/recommendations"), 500, "internal_error")
        assert "boom" not in error["message"]
        assert "boom" in caplog.text
        assert c.get("/v1/users/x/recommendations").status_code == 422  # client errors stay 4xx


def test_admin_token(trained_run: Path) -> None:
    app = create_app(Settings(model_dir=trained_run, admin_token=SecretStr("s3cret"), reload_on_sighup=False))
    with TestClient(app) as c:
        assert_error(c.post("/admin/reload"), 401, "unauthorized")
        assert_error(c.post("/admin/reload", headers={"Authorization": "Bearer wrong"}), 401)
        r = c.post("/admin/reload", headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 200 and r.json()["status"] == "unchanged"
        assert r.json()["workers_notified"] is False


def test_serve_command_options() -> None:
    from click.testing import CliRunner

    from basketcast.serving.server import serve_command

    result = CliRunner().invoke(serve_command, ["--help"])
    assert result.exit_code == 0
    assert all(opt in result.output for opt in ("--model", "--workers", "--port", "--host"))
    assert CliRunner().invoke(serve_command, ["--model", "x", "--workers", "0"]).exit_code == 2
