"""The public notebook API (``import basketcast``): its answers are the serving model's own, with
the catalogue's names; training, ingest and generate through it; its version; the wheel."""

from __future__ import annotations

import importlib.metadata
import inspect
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

import basketcast
from basketcast.pipeline.cli import main as cli
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.errors import BundleError, ConfigError
from basketcast.pipeline.evaluation.report import RANKER
from basketcast.pipeline.workflows.run_folder import RunManifest
from basketcast.serving.model import POPULAR_STRATEGY, RANKER_STRATEGY, Context, ServingModel
from tests.conftest import EXCERPT

ROOT = Path(__file__).resolve().parents[1]
DOW, HOUR = 0, 10
CTX = Context(dow=DOW, hour=HOUR)
UNKNOWN = 999_999_999
FAST = {
    "lightgbm": {"n_estimators": 30},
    "xgboost": {"enabled": False},
    "windows": {"extra_windows": 0},
    "tracking": [],
}
NAMES = [S.PRODUCT_NAME, S.AISLE_NAME, S.DEPARTMENT_NAME]


@pytest.fixture(scope="module")
def model(excerpt_run: dict[str, Path]) -> ServingModel:
    return ServingModel.load(excerpt_run["run"])


@pytest.fixture(scope="module")
def rec(excerpt_run: dict[str, Path]) -> basketcast.Recommender:
    return basketcast.load(excerpt_run["run"])


def _users(model: ServingModel) -> list[int]:
    return [int(u) for u in model.users[:: max(1, len(model.users) // 6)][:6]]


def _catalogue(model: ServingModel) -> dict[int, tuple[str, str, str]]:
    return {
        row[S.PRODUCT]: (row[S.PRODUCT_NAME], row[S.AISLE_NAME], row[S.DEPARTMENT_NAME])
        for row in model.catalog.iter_rows(named=True)
    }


# --------------------------------------------------------------------------- the package


def test_version_is_the_installed_metadata() -> None:
    assert basketcast.__version__ == importlib.metadata.version("basketcast")


def test_cli_prints_the_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"basketcast, version {basketcast.__version__}"


def test_every_public_name_is_documented_with_an_example() -> None:
    assert sorted(basketcast.__all__) == sorted(
        ["DataFolder", "Recommender", "Run", "__version__", "from_transactions", "generate", "ingest", "load", "train"]
    )
    documented = [getattr(basketcast, n) for n in basketcast.__all__ if n != "__version__"]
    documented += [
        member
        for cls in (basketcast.Recommender, basketcast.Run)
        for name, member in vars(cls).items()
        if not name.startswith("_") and callable(member)
    ]
    for obj in documented:
        doc = inspect.getdoc(obj) or ""
        assert "Example" in doc, f"{obj.__qualname__}: no example in its docstring"


def test_import_loads_no_training_or_serving_library() -> None:
    heavy = "{'lightgbm', 'torch', 'onnxruntime', 'mlflow', 'basketcast.serving'}"
    loaded = "{n for m in sys.modules for n in (m.split('.')[0], '.'.join(m.split('.')[:2]))}"
    code = f"import sys, basketcast; print(sorted({loaded} & {heavy}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- the recommender


def test_recommend_equals_the_serving_model(rec: basketcast.Recommender, model: ServingModel) -> None:
    users = _users(model)
    table = rec.recommend(users, k=7, dow=DOW, hour=HOUR)
    assert table.columns == [
        S.USER,
        S.RANK,
        S.PRODUCT,
        *NAMES,
        S.SCORE,
        "repeat",
        "strategy",
        "reason",
    ]
    assert table[S.USER].unique(maintain_order=True).to_list() == users
    for user in users:
        mine = table.filter(pl.col(S.USER) == user)
        theirs = model.recommend(user, 7, CTX)
        assert mine[S.PRODUCT].to_list() == theirs.products.tolist()
        np.testing.assert_allclose(mine[S.SCORE].to_numpy(), theirs.scores, rtol=1e-6)
        assert mine["repeat"].to_list() == theirs.repeat.tolist()
        assert mine[S.RANK].to_list() == list(range(1, theirs.products.size + 1))
        assert set(mine["strategy"]) == {RANKER_STRATEGY}


def test_names_are_joined_from_the_catalogue(rec: basketcast.Recommender, model: ServingModel) -> None:
    table = rec.recommend(_users(model), k=10, dow=DOW, hour=HOUR)
    catalogue = _catalogue(model)
    assert table.height > 0
    for row in table.iter_rows(named=True):
        assert (row[S.PRODUCT_NAME], row[S.AISLE_NAME], row[S.DEPARTMENT_NAME]) == catalogue[row[S.PRODUCT]]
    assert table[NAMES].null_count().sum_horizontal().item() == 0


def test_unknown_users_get_the_popular_list_flagged(rec: basketcast.Recommender, model: ServingModel) -> None:
    known = int(model.users[0])
    table = rec.recommend([UNKNOWN, known], k=5, dow=DOW, hour=HOUR)
    cold = table.filter(pl.col(S.USER) == UNKNOWN)
    assert set(cold["strategy"]) == {POPULAR_STRATEGY}
    assert cold[S.PRODUCT].to_list() == model.popular_products[:5].tolist()
    assert not cold["repeat"].any()
    assert set(table.filter(pl.col(S.USER) == known)["strategy"]) == {RANKER_STRATEGY}
    assert rec.recommend(UNKNOWN, k=3, dow=DOW, hour=HOUR)[S.PRODUCT].to_list() == model.popular_products[:3].tolist()


def test_a_cart_is_left_out_and_reranks_as_the_serving_model(rec: basketcast.Recommender, model: ServingModel) -> None:
    user = _users(model)[1]
    first = rec.recommend(user, k=10, dow=DOW, hour=HOUR)[S.PRODUCT].to_list()
    cart = first[:2]
    table = rec.recommend([user], k=8, cart=cart, dow=DOW, hour=HOUR)
    theirs = model.recommend(user, 8, CTX, cart=cart)
    assert table[S.PRODUCT].to_list() == theirs.products.tolist()
    np.testing.assert_allclose(table[S.SCORE].to_numpy(), theirs.scores, rtol=1e-6)
    assert not set(cart) & set(table[S.PRODUCT].to_list())
    per_user = rec.recommend([user, UNKNOWN], k=8, cart={user: cart}, dow=DOW, hour=HOUR)
    assert per_user.filter(pl.col(S.USER) == user)[S.PRODUCT].to_list() == theirs.products.tolist()


def test_basket_equals_the_serving_model(rec: basketcast.Recommender, model: ServingModel) -> None:
    users = [*_users(model), UNKNOWN]
    table = rec.basket(users, dow=DOW, hour=HOUR)
    assert table.columns == [
        S.USER,
        S.RANK,
        S.PRODUCT,
        *NAMES,
        "probability",
        "none",
        "expected_f1",
        "strategy",
    ]
    catalogue = _catalogue(model)
    for user in users:
        mine = table.filter(pl.col(S.USER) == user)
        theirs = model.basket(user, CTX)
        items = mine.filter(pl.col(S.PRODUCT).is_not_null())
        assert items[S.PRODUCT].to_list() == theirs.products.tolist()
        np.testing.assert_allclose(items["probability"].to_numpy(), theirs.probabilities, rtol=1e-6)
        assert [catalogue[p] for p in items[S.PRODUCT]] == list(items.select(NAMES).iter_rows())
        none_rows = mine.filter(pl.col(S.PRODUCT).is_null())
        assert none_rows.height == int(theirs.none)  # "None" is one more row when predicted
        assert none_rows[S.PRODUCT_NAME].to_list() == ["None"] * none_rows.height
        assert set(mine["none"]) == {theirs.none}
        assert set(mine["strategy"]) == {theirs.strategy}
        f1 = mine["expected_f1"].unique().to_list()
        assert f1 == ([None] if np.isnan(theirs.expected_f1) else [pytest.approx(theirs.expected_f1)])
    cold = table.filter(pl.col(S.USER) == UNKNOWN)
    assert cold.height == 1 and cold["none"].item() and cold["strategy"].item() == POPULAR_STRATEGY


def test_related_products_with_names(rec: basketcast.Recommender, model: ServingModel) -> None:
    product = int(model.popular_products[0])
    table = rec.related(product, k=5)
    theirs = model.related_products(product, 5)
    assert table[S.PRODUCT].to_list() == theirs[S.PRODUCT].to_list()
    assert table.columns[:5] == [S.RANK, S.PRODUCT, *NAMES]
    catalogue = _catalogue(model)
    assert [catalogue[p] for p in table[S.PRODUCT]] == list(table.select(NAMES).iter_rows())


def test_version_and_bad_inputs(rec: basketcast.Recommender, excerpt_run: dict[str, Path]) -> None:
    manifest = RunManifest.load(excerpt_run["run"] / "manifest.json")
    assert manifest.serving is not None and rec.version == manifest.serving.version
    for bad in (-1, 2**32, "7", 1.5):
        with pytest.raises(ValueError, match="user ids"):
            rec.recommend([bad], dow=DOW, hour=HOUR)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="k must"):
        rec.recommend(1, k=0)
    with pytest.raises(ValueError, match="hour"):
        rec.basket(1, hour=24)
    with pytest.raises(BundleError, match="not found"):
        basketcast.load(excerpt_run["run"] / "absent")
    assert rec.recommend([], dow=DOW, hour=HOUR).height == 0


def test_evaluate_gives_the_run_report(
    rec: basketcast.Recommender, excerpt_run: dict[str, Path], tmp_path: Path
) -> None:
    table = rec.evaluate(excerpt_run["data"], out=tmp_path / "evaluation")
    report = basketcast.Run(excerpt_run["run"]).report
    assert sorted(table["method"]) == sorted(report["method"])
    ranker = table.filter(pl.col("method") == RANKER)
    assert ranker["ndcg@10"].item() == pytest.approx(report.filter(pl.col("method") == RANKER)["ndcg@10"].item())
    assert (tmp_path / "evaluation" / "report.json").is_file()
    bundle_only = basketcast.load(excerpt_run["run"] / "serving")
    with pytest.raises(BundleError, match="bundle alone"):
        bundle_only.evaluate(excerpt_run["data"])


# --------------------------------------------------------------------------- ingest, generate, train


def test_ingest_and_train_through_the_api(tmp_path: Path) -> None:
    data = basketcast.ingest(EXCERPT, tmp_path / "data")
    assert data.users > 0 and data.path == tmp_path / "data" and data.lines > data.orders
    run = basketcast.train(data, tmp_path / "run", config=FAST)
    assert run.path == tmp_path / "run"
    assert run.report.columns[0] == "method"
    assert {RANKER, "popularity", "tifu_knn"} <= set(run.report["method"])
    assert "ndcg@10" in run.report.columns and run.kaggle_f1
    rec = run.recommender()
    user = int(rec.model.users[0])
    assert rec.recommend(user, k=3, dow=DOW, hour=HOUR).height == 3
    with pytest.raises(ConfigError, match=r"lightgbm\.n_trees"):
        basketcast.train(data, tmp_path / "run2", config={"lightgbm": {"n_trees": 5}})
    assert not (tmp_path / "run2").exists()


def test_generate(tmp_path: Path) -> None:
    data = basketcast.generate(20, tmp_path / "synthetic", seed=3)
    assert data.users == 20 and data.manifest.source == "synthetic:users=20,seed=3"
    again = basketcast.generate(20, tmp_path / "synthetic", seed=3)  # replaces its own kind of output
    assert again.fingerprint == data.fingerprint
    with pytest.raises(ValueError, match="users"):
        basketcast.generate(0, tmp_path / "none")


def test_from_transactions_a_file_or_a_frame(tmp_path: Path) -> None:
    from basketcast.pipeline.data.storage import read_dataset
    from basketcast.pipeline.data.transactions import catalogue_frame, to_transactions

    data = basketcast.ingest(EXCERPT, tmp_path / "data")
    log = to_transactions(data.path, tmp_path / "log.csv")
    from_file = basketcast.from_transactions(tmp_path / "log.csv", tmp_path / "from-file")
    catalogue = catalogue_frame(read_dataset(data.path))
    from_frame = basketcast.from_transactions(log, tmp_path / "from-frame", catalog=catalogue)
    assert from_file.users == from_frame.users == log[S.USER].n_unique()
    assert from_file.lines == from_frame.lines == log.height
    assert from_file.manifest.source.startswith("transactions:")
    products = read_dataset(from_frame.path).products
    assert products.sort(S.PRODUCT)[S.PRODUCT_NAME].to_list() == catalogue.sort(S.PRODUCT)[S.PRODUCT_NAME].to_list()


# --------------------------------------------------------------------------- packaging


@pytest.mark.slow
def test_the_wheel_is_named_basketcast_and_holds_every_package(tmp_path: Path) -> None:
    """``pip wheel .`` on a copy of the sources (the build writes build/ and *.egg-info beside them)."""
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("basketcast", "pipeline", "features", "serving"):
        shutil.copytree(ROOT / package, src / package, ignore=ignore, symlinks=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    out = tmp_path / "wheels"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", str(src), "-w", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    wheels = list(out.glob("*.whl"))
    assert [w.name.split("-")[0] for w in wheels] == ["basketcast"]
    names = set(zipfile.ZipFile(wheels[0]).namelist())
    tops = {n.split("/")[0] for n in names if ".dist-info/" not in n}
    assert tops == {"basketcast"}, tops
    for member in (
        "basketcast/__init__.py",
        "basketcast/pipeline/cli.py",
        "basketcast/features/history.py",
        "basketcast/serving/model.py",
        "basketcast/pipeline/dashboard/page.html",
        "basketcast/serving/static/README.md",
    ):
        assert member in names
