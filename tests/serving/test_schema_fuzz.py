"""schemathesis over every route of the app ``create_app`` builds, serving the suite's trained model.

The OpenAPI document must tell the truth: for every operation, cases generated from the document
(schema-valid ones and schema-violating ones, in schemathesis' examples, coverage and fuzzing
phases) are sent in-process (ASGI) and every answer is checked — no 5xx, the status code and the
content type documented, the body valid against the documented schema, a schema-valid request
accepted and a schema-violating one refused, and every error the JSON envelope
``{"error": {"status", "code", "message"}}``. Twice: without an admin token (``/admin`` open on
loopback, documented without security) and with one (documented as a Bearer scheme, 401 without
it). Bounded and reproducible: ``derandomize``, 40 examples per operation in the fuzzing phase
(the coverage phase adds its own deterministic boundary and negative cases), no deadline — 957
cases in all, a few seconds.

No stateful phase: no operation creates something another one reads; the one link the
schemathesis CLI infers (a user id from a batch answer, reused by the single-user routes) only
re-sends ids the fuzzing already covers.

The apps are built at import, their model folder given by the ``served`` fixture before their
lifespan starts: ``schemathesis.pytest.from_fixture`` (lazy schemas) fails under pytest 9
(``'Function' object has no attribute '_nodeid'``, schemathesis 4.32). The number of cases is
printed (``-s``) and each operation must have been exercised.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from pydantic import SecretStr
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from basketcast.serving.main import create_app
from basketcast.serving.routers.dashboard import DashboardSettings, get_dashboard_settings
from basketcast.serving.settings import Settings, get_settings

TOKEN = "fuzz-admin-token"
MAX_EXAMPLES = 40
OPERATIONS = {
    "GET /health",
    "GET /ready",
    "GET /metrics",
    "GET /v1/users/{user_id}/recommendations",
    "POST /v1/recommendations",
    "GET /v1/users/{user_id}/basket",
    "GET /v1/products/{product_id}/related",
    "POST /v1/orders",
    "POST /admin/reload",
    "GET /dashboard",
}
CASES: Counter[str] = Counter()  # (configuration, operation) → cases sent
STATUSES: Counter[str] = Counter()  # status codes seen, over every case


@schemathesis.check
def error_envelope(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx/5xx body is ``{"error": {"status": <the status>, "code": str, "message": str, ...}}``.

    /ready's 503 is a readiness report (documented as ``Readiness``), not an error.
    """
    if response.status_code < 400 or (case.path == "/ready" and response.status_code == 503):
        return None
    body = json.loads(response.content)
    assert isinstance(body, dict) and set(body) == {"error"}, f"not the error envelope: {body!r:.200}"
    error = body["error"]
    assert error["status"] == response.status_code, error
    assert isinstance(error["code"], str) and error["code"], error
    assert isinstance(error["message"], str) and error["message"], error
    return True


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    positive_data_acceptance,
    negative_data_rejection,
    error_envelope,
]


def _app(token: str | None) -> Any:
    """An app whose document is final now (it depends on the admin token only); the model folder
    is given by the ``served`` fixture before its lifespan starts (at the first case)."""
    app = create_app(Settings(admin_token=SecretStr(token) if token else None, reload_on_sighup=False))
    app.state.token = token
    return app


APPS = {"open": _app(None), "token": _app(TOKEN)}
SCHEMAS = {}
for _name, _app_ in APPS.items():
    SCHEMAS[_name] = schemathesis.openapi.from_dict(_app_.openapi())
    SCHEMAS[_name].app = _app_
    if _app_.state.token:
        SCHEMAS[_name].config.headers = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def served(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Both apps serve the suite's trained run; the token app also has a dashboard page (200
    text/html), the open one none (404). Their lifespans (run by schemathesis, once per process)
    are shut down at the end, which releases the models."""
    from schemathesis.python import asgi

    page = tmp_path_factory.mktemp("fuzz-dashboard") / "dashboard.html"
    page.write_text("<!DOCTYPE html><title>dashboard</title>")
    for app in APPS.values():
        token = SecretStr(app.state.token) if app.state.token else None
        settings_ = Settings(model_dir=trained_run, admin_token=token, reload_on_sighup=False)
        app.dependency_overrides[get_settings] = lambda s=settings_: s
        board = DashboardSettings(dashboard_path=page if token else None)
        app.dependency_overrides[get_dashboard_settings] = lambda b=board: b
    try:
        yield
    finally:
        asgi.shutdown_lifespans()


def _keys(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from _keys(value)
    elif isinstance(node, list):
        for value in node:
            yield from _keys(value)


def test_the_documents_use_json_schema_bounds_only() -> None:
    """pydantic writes `ge`/`le` (not JSON Schema: ignored by every client) when a validator hides a
    bound from it; every bound must be `minimum`/`maximum`."""
    for app in APPS.values():
        schemas = [
            p.get("schema", {})
            for ops in app.openapi()["paths"].values()
            for op in ops.values()
            for p in op.get("parameters", [])
        ] + list(app.openapi()["components"]["schemas"].values())
        assert not {"ge", "le", "gt", "lt"} & set(_keys(schemas))


def test_the_documents_say_how_admin_is_protected() -> None:
    for name, app in APPS.items():
        reload_op = app.openapi()["paths"]["/admin/reload"]["post"]
        if name == "token":
            assert reload_op["security"] == [{"HTTPBearer": []}] and "401" in reload_op["responses"]
        else:
            assert "security" not in reload_op and "401" not in reload_op["responses"]
            assert "403" in reload_op["responses"]  # off loopback without a token


@schemathesis.pytest.parametrize(**SCHEMAS)
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_does_what_its_schema_says(case: Any, served: None) -> None:
    response = case.call()
    config = "token" if case.operation.schema.app.state.token else "open"
    CASES[f"{config} {case.operation.label}"] += 1
    STATUSES[str(response.status_code)] += 1
    case.validate_response(response, checks=CHECKS)


def test_every_operation_was_fuzzed() -> None:
    """Runs after the fuzzing above (same module, file order): every operation got cases, both ways."""
    if not CASES:
        pytest.skip("the fuzz test did not run in this session (selected alone?)")
    for config in ("open", "token"):
        done = {label.split(" ", 1)[1] for label in CASES if label.startswith(config + " ")}
        assert done == OPERATIONS, (config, OPERATIONS - done)
    total = sum(CASES.values())
    print(f"\nschemathesis: {total} cases, statuses {dict(sorted(STATUSES.items()))}")
    for label, n in sorted(CASES.items()):
        print(f"  {n:5d}  {label}")
    assert all(n >= 5 for n in CASES.values()), CASES
