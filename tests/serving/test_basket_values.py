"""The basket endpoint's values, not only its shape: for every real user of the excerpt,
``GET /v1/users/{id}/basket`` equals the F1-optimal basket over the user's repeat candidates
(at most ``MAX_CANDIDATES``, as offline) and the basket ``predict --submission`` writes for the
user's next order in the same context.

The excerpt's last orders are turned into Kaggle ``test`` orders (products withheld): the
snapshot is then cut exactly where ``predict --eval-set test`` cuts, before the test order, with
the same ALS, so the two paths see the same candidates and features. The test order's context
maps to the query parameters one to one: ``order_dow`` → ``dow``, ``order_hour_of_day`` →
``hour``, ``days_since_prior_order`` → ``days_since_last_order``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient

from basketcast.pipeline.config import TrainConfig
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.ingest import ingest
from basketcast.pipeline.model.basket import MAX_CANDIDATES, optimal_basket
from basketcast.pipeline.ranking import best_first
from basketcast.pipeline.workflows.predict import SUBMISSION_PRODUCTS, predict
from basketcast.pipeline.workflows.run import train
from basketcast.serving.main import create_app
from basketcast.serving.model import Context, ServingModel
from basketcast.serving.settings import Settings
from tests.conftest import EXCERPT, FAST_TRAIN

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def test_order_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The excerpt with every last order a ``test`` order: data, run (≈2 s to train), submission."""
    root = tmp_path_factory.mktemp("basket-values")
    src = root / "kaggle"
    src.mkdir()
    orders = pl.read_csv(EXCERPT / "orders.csv.gz")
    orders.with_columns(pl.col(S.EVAL_SET).replace(S.TRAIN, S.TEST)).write_csv(src / "orders.csv")
    shutil.copy(EXCERPT / "order_products__prior.csv.gz", src)
    (src / "order_products__train.csv").write_text("order_id,product_id,add_to_cart_order,reordered\n")
    ingest(src, root / "data")
    train(root / "data", root / "run", TrainConfig.model_validate(FAST_TRAIN))
    predict(
        root / "data",
        root / "run",
        eval_set=S.TEST,
        k=10,
        out=root / "predictions.parquet",
        submission=root / "submission.csv",
    )
    return {"data": root / "data", "run": root / "run", "submission": root / "submission.csv"}


def test_basket_endpoint_equals_the_submission_and_the_capped_optimal_basket(
    test_order_run: dict[str, Path],
) -> None:
    run = test_order_run["run"]
    model = ServingModel.load(run)
    orders = pl.read_parquet(test_order_run["data"] / "orders.parquet").filter(pl.col(S.EVAL_SET) == S.TEST)
    submission = pl.read_csv(test_order_run["submission"], schema_overrides={SUBMISSION_PRODUCTS: pl.String})
    expected = dict(zip(submission[S.ORDER].to_list(), submission[SUBMISSION_PRODUCTS].to_list(), strict=True))
    assert orders.height == len(expected) == model.users.size == 100

    capped = non_empty = 0
    app = create_app(Settings(model_dir=run, reload_on_sighup=False))
    with TestClient(app) as client:
        for order in orders.iter_rows(named=True):
            user = order[S.USER]
            params = {"dow": order[S.DOW], "hour": order[S.HOUR], "days_since_last_order": order[S.DAYS_PRIOR]}
            body = client.get(f"/v1/users/{user}/basket", params=params).json()
            got = [p["product_id"] for p in body["products"]]

            # 1. The Kaggle submission of `predict --eval-set test` for this order.
            tokens = [str(p) for p in got] + (["None"] if body["none"] else [])
            assert tokens == expected[order[S.ORDER]].split(), f"user {user}"

            # 2. optimal_basket over the user's repeat candidates, the MAX_CANDIDATES most probable.
            rows = model.rows(user)
            assert rows is not None
            ctx = Context(dow=order[S.DOW], hour=order[S.HOUR], days=order[S.DAYS_PRIOR])
            repeat = np.asarray(model.repeat[rows])
            probs = model.basket_probabilities(model.features(rows, ctx))[repeat]
            products = np.asarray(model.products[rows])[repeat]
            best = best_first(products, probs)[:MAX_CANDIDATES]
            k, none, f1 = optimal_basket(probs[best])
            assert got == products[best[:k]].tolist(), f"user {user}"
            assert body["none"] == none and body["expected_f1"] == pytest.approx(f1, rel=1e-12, abs=0)
            np.testing.assert_allclose([p["probability"] for p in body["products"]], probs[best[:k]], rtol=1e-6)
            capped += int(repeat.sum() > MAX_CANDIDATES)
            non_empty += int(k > 0)
    # The cap is exercised by real users, and the comparison is not one of empty baskets.
    assert capped >= 10 and non_empty >= 50, (capped, non_empty)
