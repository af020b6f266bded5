"""``cart=`` re-ranks (not only filters) and ``GET /v1/products/{id}/related``, over HTTP.

The served score with a cart is the ranker's score + the bundle's cart weight × the candidate's
mean PMI with the cart's products (``basketcast.serving.model.ServingModel.recommend``). The weight the
excerpt's stop users chose may be 0 (their carts are few), so the re-ranking test serves a copy
of the trained bundle whose manifest sets a weight, as a model trained on more carts would.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from basketcast.serving.bundle import BUNDLE, MANIFEST
from basketcast.serving.main import create_app
from basketcast.serving.model import Context, ServingModel
from basketcast.serving.settings import Settings


def _weighted_copy(model_dir: Path, weight: float) -> Path:
    """The bundle with the co-occurrence weight β = ``weight`` and the cart attention's γ = 0, so
    that the served score with a cart is the ranker's + β × mean PMI alone."""
    manifest = model_dir / BUNDLE / MANIFEST
    doc = json.loads(manifest.read_text())
    doc["cart_weight"] = weight
    doc["cart_attention_weight"] = 0.0
    manifest.write_text(json.dumps(doc))
    return model_dir


def _user_and_cart(model: ServingModel) -> tuple[int, int, int, int]:
    """A user whose ranking has A above B, and a cart product C related to B but not to A."""
    assert model.related is not None
    ctx = Context(dow=2, hour=10, days=7.0)
    for user in np.asarray(model.users)[:200].tolist():
        ranked = model.recommend(int(user), 20, ctx).products.tolist()
        for b in ranked[3:]:
            rel = model.related_products(b, 50)
            for c in rel["product_id"].to_list():
                if c in ranked:
                    continue
                a = ranked[0]
                if model.related.cart_scores(np.array([c], np.uint32), np.array([a], np.uint32))[0] == 0:
                    return int(user), a, b, int(c)
    raise AssertionError("no user with a candidate related to a product outside their candidates")


def test_cart_changes_the_ranking_not_only_filters(model_dir: Path) -> None:
    run = _weighted_copy(model_dir, 50.0)
    model = ServingModel.load(run)
    user, a, b, c = _user_and_cart(model)
    app = create_app(Settings(model_dir=run, reload_on_sighup=False))
    with TestClient(app) as client:
        params = {"k": 20, "dow": 2, "hour": 10, "days_since_last_order": 7}
        plain = [
            i["product_id"] for i in client.get(f"/v1/users/{user}/recommendations", params=params).json()["items"]
        ]
        with_cart = client.get(f"/v1/users/{user}/recommendations", params={**params, "cart": str(c)}).json()
        ranked = [i["product_id"] for i in with_cart["items"]]
    assert plain.index(a) < plain.index(b)
    assert b in ranked and (a not in ranked or ranked.index(b) < ranked.index(a)), (plain, ranked)
    assert c not in ranked  # the cart is still left out


def test_cart_without_weight_only_filters(model_dir: Path) -> None:
    model = ServingModel.load(_weighted_copy(model_dir, 0.0))
    user, _, _, c = _user_and_cart(model)
    ctx = Context(dow=2, hour=10, days=7.0)
    plain = [p for p in model.recommend(user, 30, ctx).products.tolist() if p != c]
    carted = model.recommend(user, 30, ctx, cart=[c]).products.tolist()
    assert carted == plain[: len(carted)]


def test_related_products(client: TestClient, trained_run: Path) -> None:
    model = ServingModel.load(trained_run)
    assert model.related is not None
    product = int(model.related.products[np.argmax(np.diff(model.related.offsets))])
    body = client.get(f"/v1/products/{product}/related", params={"k": 5}).json()
    assert body["product_id"] == product
    items = body["items"]
    assert 1 <= len(items) <= 5
    assert [i["rank"] for i in items] == list(range(1, len(items) + 1))
    pmis = [i["pmi"] for i in items]
    assert pmis == sorted(pmis, reverse=True) and min(pmis) > 0
    assert all(i["support"] >= 5 and i["lift"] > 1 for i in items)
    assert product not in [i["product_id"] for i in items]


def test_related_unknown_product_is_404(client: TestClient) -> None:
    response = client.get("/v1/products/4294967295/related")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_cart_attention_scores_many_users_in_bounded_calls(trained_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Scored whole users a few at a time (bounded memory), the deltas equal one call over all rows."""
    import basketcast.serving.cart as cart_module
    from basketcast.features.sequence import SEQ_STATES

    model = ServingModel.load(trained_run)
    assert model.cart_attention is not None
    users = np.asarray(model.users)[:40]
    idx, counts = model.gather(np.arange(users.size))
    states = np.asarray(model.base[idx][:, [model.manifest.base_features.index(n) for n in SEQ_STATES]])
    products = np.asarray(model.products[idx])
    row_user = np.repeat(np.arange(users.size), counts)
    carts = [products[row_user == u][:3] for u in range(users.size)]
    whole = model.cart_attention.deltas(row_user, products, states, carts)
    assert np.abs(whole).max() > 0
    monkeypatch.setattr(cart_module, "ROWS_PER_CALL", 50)
    monkeypatch.setattr(cart_module, "USERS_PER_CALL", 3)
    np.testing.assert_allclose(model.cart_attention.deltas(row_user, products, states, carts), whole, atol=1e-6)
