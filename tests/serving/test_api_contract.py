"""The six places where schemathesis found the OpenAPI document and the behaviour disagreeing,
pinned one by one (test_schema_fuzz.py fuzzes the whole document), and the documented limits.

1. an id list (`cart`, `exclude`) that matches the documented pattern is accepted, one that does
   not is refused — the server checks with that very pattern;
2. a JSON `false` (or `"3"`) is not a number for `days_since_last_order`;
3. `43.0` is an integer (JSON Schema): accepted in `user_ids`, `k`, `dow`, `hour`;
4. the 400 for an unparsable body is documented (and is the error envelope);
5. `/admin/reload` is documented with the security it has: Bearer with a token, none without
   (then only loopback may call it);
6. the document's bounds are JSON Schema's (`minimum`/`maximum`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from basketcast.serving.main import create_app
from basketcast.serving.schemas import ID_LIST_PATTERN, MAX_BATCH_USERS, MAX_EXCLUDE, MAX_K, UINT32_MAX
from basketcast.serving.settings import Settings

UNKNOWN = 4_000_000_000


def envelope(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and body["error"]["status"] == status
    assert isinstance(body["error"]["code"], str) and isinstance(body["error"]["message"], str)
    return dict(body["error"])


@pytest.fixture(scope="module")
def spec(client: TestClient) -> dict[str, Any]:
    return dict(client.get("/openapi.json").json())


def _param(spec: dict[str, Any], path: str, name: str) -> dict[str, Any]:
    params = spec["paths"][path]["get"]["parameters"]
    return dict(next(p for p in params if p["name"] == name))


@pytest.mark.parametrize(
    "value, ok",
    [
        ("1", True),
        ("1,2", True),
        ("1, 2", True),
        (" 7 ,, 8 ,", True),
        ("", True),
        (",", True),
        ("0000000001", True),
        (str(UINT32_MAX), True),
        (str(UINT32_MAX + 1), False),
        ("12345678901", False),
        ("1.5", False),
        ("-3", False),
        ("+3", False),
        ("1_000", False),
        ("x", False),
        ("1;2", False),
        ("\u0661", False),  # ARABIC-INDIC DIGIT ONE
        ("1\t", False),
    ],
)
def test_id_lists_accept_exactly_the_documented_pattern(
    client: TestClient, spec: dict[str, Any], value: str, ok: bool
) -> None:
    for name in ("cart", "exclude"):
        documented = _param(spec, "/v1/users/{user_id}/recommendations", name)["schema"]["items"]["pattern"]
        assert documented == ID_LIST_PATTERN
        assert bool(re.search(documented, value)) is ok  # what a JSON Schema validator says
        r = client.get(f"/v1/users/{UNKNOWN}/recommendations", params={"k": 3, name: value})
        if ok:
            assert r.status_code == 200, r.text
        else:
            assert "not a product id" in envelope(r, 422)["message"]


def test_id_lists_remove_their_products_and_are_limited(client: TestClient) -> None:
    popular = [i["product_id"] for i in client.get(f"/v1/users/{UNKNOWN}/recommendations?k=5").json()["items"]]
    r = client.get(f"/v1/users/{UNKNOWN}/recommendations", params={"k": 5, "cart": f" {popular[0]} ,{popular[1]},"})
    shown = [i["product_id"] for i in r.json()["items"]]
    assert len(shown) == 5 and not {popular[0], popular[1]} & set(shown)
    many = ",".join(map(str, range(MAX_EXCLUDE)))
    assert client.get(f"/v1/users/1/recommendations?cart={many}").status_code == 200
    assert "more than" in envelope(client.get(f"/v1/users/1/recommendations?cart={many},1"), 422)["message"]


@pytest.mark.parametrize("value", [False, True, "3", [3], {"d": 3}])
def test_days_is_a_number_not_a_boolean_or_a_string(client: TestClient, value: object) -> None:
    for key in ("days_since_last_order", "days"):
        r = client.post("/v1/recommendations", json={"user_ids": [1], key: value})
        assert envelope(r, 422)["details"][0]["loc"] == ["body", key]
    r = client.post("/v1/recommendations", json={"user_ids": [1], "days_since_last_order": 3})
    assert r.status_code == 200 and r.json()["context"]["days_since_last_order"] == 3.0


def test_integral_floats_are_integers_as_json_schema_says(client: TestClient) -> None:
    r = client.post("/v1/recommendations", json={"user_ids": [43.0, 7], "k": 5.0, "dow": 3.0, "hour": 0.0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["user_id"] for x in body["results"]] == [43, 7] and body["k"] == 5
    assert body["context"]["dow"] == 3 and body["context"]["hour"] == 0
    for bad in ({"user_ids": [43.5]}, {"user_ids": [True]}, {"user_ids": ["43"]}, {"user_ids": [1], "k": 5.5}):
        envelope(client.post("/v1/recommendations", json=bad), 422)
    # the query string: "5.0" is an integer, "+5", " 5", "1_0", "nan" are not numbers at all
    assert client.get("/v1/users/1/recommendations?k=5.0").status_code == 200
    for query in ("k=%2B5", "k=%205", "k=1_0", "dow=", "days_since_last_order=nan", "hour=1e400"):
        envelope(client.get(f"/v1/users/1/recommendations?{query}"), 422)
        envelope(client.get(f"/v1/users/1/basket?{query.replace('k=', 'dow=')}"), 422)


def test_both_spellings_of_days(client: TestClient, spec: dict[str, Any]) -> None:
    props = spec["components"]["schemas"]["BatchRequest"]["properties"]
    assert props["days"]["deprecated"] is True  # documented, since the body forbids other properties
    r = client.post("/v1/recommendations", json={"user_ids": [1], "days": 2, "days_since_last_order": 4})
    assert r.json()["context"]["days_since_last_order"] == 4.0
    envelope(client.post("/v1/recommendations", json={"user_ids": [1], "days": 99, "days_since_last_order": 4}), 422)


def test_an_unparsable_body_is_a_documented_400(client: TestClient, spec: dict[str, Any]) -> None:
    responses = spec["paths"]["/v1/recommendations"]["post"]["responses"]
    assert {"400", "413", "422", "503"} <= set(responses)
    nested = b"[" * 100_000  # deeper than the JSON parser's recursion limit
    r = client.post("/v1/recommendations", content=nested, headers={"content-type": "application/json"})
    assert envelope(r, 400)["code"] == "bad_request"
    r = client.post("/v1/recommendations", content=b"{", headers={"content-type": "application/json"})
    assert envelope(r, 422)["details"][0]["type"] == "json_invalid"


def test_the_document_has_json_schema_bounds(spec: dict[str, Any]) -> None:
    recommend = {
        p["name"]: p["schema"] for p in spec["paths"]["/v1/users/{user_id}/recommendations"]["get"]["parameters"]
    }
    basket = {p["name"]: p["schema"] for p in spec["paths"]["/v1/users/{user_id}/basket"]["get"]["parameters"]}
    body = spec["components"]["schemas"]["BatchRequest"]["properties"]
    for schema in (recommend, basket):
        assert (schema["user_id"]["minimum"], schema["user_id"]["maximum"]) == (0, UINT32_MAX)
        assert (schema["dow"]["minimum"], schema["dow"]["maximum"]) == (0, 6)
        assert (schema["hour"]["minimum"], schema["hour"]["maximum"]) == (0, 23)
        assert schema["days_since_last_order"]["type"] == "number"  # absent or a number, never null
    assert (recommend["k"]["minimum"], recommend["k"]["maximum"]) == (1, MAX_K)
    assert body["user_ids"]["maxItems"] == MAX_BATCH_USERS and body["user_ids"]["items"]["maximum"] == UINT32_MAX
    assert (body["k"]["minimum"], body["k"]["maximum"]) == (1, MAX_K)


def test_admin_security_is_documented_as_configured(trained_run: Path) -> None:
    open_app = create_app(Settings(model_dir=trained_run, reload_on_sighup=False))
    with TestClient(open_app, base_url="http://127.0.0.1") as c:
        op = c.get("/openapi.json").json()["paths"]["/admin/reload"]["post"]
        assert "security" not in op and "401" not in op["responses"] and "403" in op["responses"]
        assert c.post("/admin/reload").status_code == 200  # no token configured: open on loopback
    with TestClient(open_app, base_url="http://10.20.30.40") as c:  # arrived on a network address
        assert "BASKETCAST_ADMIN_TOKEN" in envelope(c.post("/admin/reload"), 403)["message"]
    with TestClient(open_app, base_url="http://[::ffff:127.0.0.1]") as c:
        assert c.post("/admin/reload").status_code == 200

    token_app = create_app(Settings(model_dir=trained_run, admin_token=SecretStr("t0k"), reload_on_sighup=False))
    with TestClient(token_app, base_url="http://10.20.30.40") as c:
        spec = c.get("/openapi.json").json()
        op = spec["paths"]["/admin/reload"]["post"]
        assert op["security"] == [{"HTTPBearer": []}] and "401" in op["responses"] and "403" not in op["responses"]
        assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
        envelope(c.post("/admin/reload"), 401)
        assert c.post("/admin/reload", headers={"Authorization": "Bearer t0k"}).status_code == 200


def test_a_blank_admin_token_is_no_token() -> None:
    assert Settings(admin_token=SecretStr("  ")).admin_token is None
    assert Settings(admin_token=SecretStr("x")).admin_token is not None


def test_the_dashboard_404_is_documented_as_the_envelope(client: TestClient, spec: dict[str, Any]) -> None:
    doc = spec["paths"]["/dashboard"]["get"]["responses"]["404"]
    assert doc["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    envelope(client.get("/dashboard"), 404)  # the suite's trained run has no dashboard.html
