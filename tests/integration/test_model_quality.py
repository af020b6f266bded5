"""The trained model on generated data: known answers for a hand-made shopper, and a minimum quality.

A small synthetic population (the generator's story: staples, recency, taste) plus one shopper
written by hand: banana in every one of 12 orders, an early one-off purchase never repeated, and
a rotating set of fillers. The ranker must put the banana first and the one-off low.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest

from basketcast.pipeline.config import TrainConfig
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.generate import generate
from basketcast.pipeline.data.storage import Dataset, write_dataset
from basketcast.pipeline.evaluation.report import EvaluationReport
from basketcast.pipeline.workflows.predict import predict
from basketcast.pipeline.workflows.run import train

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# The binary objective: the known-answer test below reads the whole ranked list, which the
# calibrated probabilities order; lambdarank orders the head of each list and is indifferent to the
# tail. With "auto", which objective wins on this data's few stop users depends on the machine's
# float paths (BLAS kernels in ALS), and lambdarank put the abandoned product 6th on one machine.
CONFIG = TrainConfig.model_validate(
    {
        "mlflow": False,
        "lightgbm": {"n_estimators": 300, "objective": "binary"},
        "xgboost": {"enabled": False},
        "windows": {"extra_windows": 2},
    }
)


def add_shopper(data: Dataset, user: int, baskets: list[list[int]]) -> Dataset:
    """Append a user whose orders hold ``baskets`` (the last one is the train order)."""
    first_order = int(data.orders[S.ORDER].max()) + 1  # type: ignore[arg-type]
    orders, lines, seen = [], [], set()
    for n, basket in enumerate(baskets, start=1):
        oid = first_order + n
        eval_set = S.TRAIN if n == len(baskets) else S.PRIOR
        orders.append((oid, user, eval_set, n, 2, 10, None if n == 1 else 7))
        for pos, product in enumerate(basket, start=1):
            lines.append((oid, product, pos, int(product in seen), eval_set))
        seen |= set(basket)
    o = pl.DataFrame(orders, schema=list(S.TABLE_SCHEMAS[S.ORDERS]), orient="row")
    lp = pl.DataFrame(lines, schema=list(S.TABLE_SCHEMAS[S.ORDER_PRODUCTS]), orient="row")
    return replace(
        data,
        orders=pl.concat([data.orders, S.conform(S.ORDERS, o)]),
        order_products=pl.concat([data.order_products, S.conform(S.ORDER_PRODUCTS, lp)]),
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("model")
    data = generate(1200, seed=3)
    popular = data.order_products.group_by(S.PRODUCT).len().sort("len", descending=True)[S.PRODUCT].to_list()
    banana, one_off, fillers = popular[0], popular[1], popular[2:14]
    baskets = [[banana, one_off, fillers[0]]] + [[banana, fillers[i % 12], fillers[(i + 5) % 12]] for i in range(1, 12)]
    user = int(data.orders[S.USER].max()) + 1  # type: ignore[arg-type]
    write_dataset(root / "data", add_shopper(data, user, baskets), source="test")
    result = train(root / "data", root / "run", CONFIG)
    return {"root": root, "report": result.report, "user": user, "banana": banana, "one_off": one_off}


def test_staple_first_and_abandoned_product_low(trained: dict[str, object]) -> None:
    root: Path = trained["root"]  # type: ignore[assignment]
    preds = predict(root / "data", root / "run", eval_set=S.TRAIN, k=50, out=root / "preds.parquet")
    mine = preds.filter(pl.col(S.USER) == trained["user"]).sort(S.RANK)
    ranked = mine[S.PRODUCT].to_list()
    assert ranked[0] == trained["banana"]
    # Bought once, 11 orders ago, never again: not in the top 10, below every recent filler.
    assert trained["one_off"] not in ranked[:10]


def test_ranker_beats_the_simple_baselines(trained: dict[str, object]) -> None:
    report: EvaluationReport = trained["report"]  # type: ignore[assignment]
    methods = report.methods
    ranker = report.ranker
    for baseline in ("popularity", "top_frequency", "als"):
        assert ranker["ndcg@10"] > methods[baseline]["ndcg@10"], baseline
        assert ranker["recall@10"] > methods[baseline]["recall@10"], baseline
    # Observed on this data (240 validation users): NDCG@10 0.4672, TIFU-KNN 0.4583, top-frequency
    # 0.4298; without its user × product features (every up_* column NaN) the ranker gets 0.4491.
    # 0.455 is 0.012 below the observation, 8× the largest cross-machine drift measured for these
    # figures (0.0014, BENCHMARKS.md), and catches that loss.
    assert ranker["ndcg@10"] > 0.455
    # Not worse than TIFU-KNN by more than 0.02 (the margin the real users of test_heldout.py support).
    assert ranker["ndcg@10"] > methods["tifu_knn"]["ndcg@10"] - 0.02
    basket_f1 = report.kaggle_f1
    assert basket_f1["lightgbm_f1_optimal"] > basket_f1["top_frequency_best_fixed_size"]
