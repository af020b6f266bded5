"""Shared fixtures: a tiny valid Kaggle-layout folder written from hand-made rows."""

from __future__ import annotations

import gzip
import io
import os
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl
import pytest

EXCERPT = Path(__file__).parent / "data" / "instacart_excerpt"

# Two users. User 1: orders 1-3 prior, 4 train. User 2: orders 1-2 prior, 3 test.
ORDERS = """order_id,user_id,eval_set,order_number,order_dow,order_hour_of_day,days_since_prior_order
11,1,prior,1,2,8,
12,1,prior,2,3,7,15.0
13,1,prior,3,3,12,21.0
14,1,train,4,4,7,29.0
21,2,prior,1,0,10,
22,2,prior,2,1,11,7.0
23,2,test,3,5,9,7.0
"""
PRIOR = """order_id,product_id,add_to_cart_order,reordered
11,101,1,0
11,102,2,0
12,101,1,1
12,103,2,0
13,101,1,1
13,102,2,1
21,101,1,0
21,104,2,0
22,104,1,1
"""
TRAIN = """order_id,product_id,add_to_cart_order,reordered
14,101,1,1
14,105,2,0
"""
PRODUCTS = """product_id,product_name,aisle_id,department_id
101,Banana,24,4
102,Milk,84,16
103,Bread,112,3
104,Eggs,86,16
105,Apples,24,4
"""
AISLES = """aisle_id,aisle
24,fresh fruits
84,milk
86,eggs
112,bread
"""
DEPARTMENTS = """department_id,department
3,bakery
4,produce
16,dairy eggs
"""
TINY = {
    "orders": ORDERS,
    "order_products__prior": PRIOR,
    "order_products__train": TRAIN,
    "products": PRODUCTS,
    "aisles": AISLES,
    "departments": DEPARTMENTS,
}


def write_kaggle(folder: Path, files: dict[str, str], compression: str = "csv") -> Path:
    """Write ``files`` (name → CSV text) into ``folder`` as .csv, .csv.gz or .csv.zip."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        if compression == "csv":
            (folder / f"{name}.csv").write_text(text)
        elif compression == "gz":
            (folder / f"{name}.csv.gz").write_bytes(gzip.compress(text.encode()))
        elif compression == "zip":
            with zipfile.ZipFile(folder / f"{name}.csv.zip", "w") as zf:
                zf.writestr(f"{name}.csv", text)
        else:
            raise ValueError(compression)
    return folder


@pytest.fixture
def tiny_kaggle(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``tiny_kaggle(**overrides)`` writes the tiny layout with some files replaced
    (a value of None drops the file) and returns the folder."""

    def make(compression: str = "csv", **overrides: str | None) -> Path:
        given: dict[str, str | None] = {**TINY, **overrides}
        files = {k: v for k, v in given.items() if v is not None}
        return write_kaggle(tmp_path / f"src-{compression}", files, compression)

    return make


def csv_frame(text: str) -> pl.DataFrame:
    return pl.read_csv(io.StringIO(text))


FAST_TRAIN = {
    "mlflow": False,
    "lightgbm": {"n_estimators": 150},
    "xgboost": {"enabled": False},
    "windows": {"extra_windows": 1},
    # The suite's run exercises the sequence network and the cart attention (off by default).
    "sequence": {"enabled": True, "epochs": 2},
}


@pytest.fixture(scope="session", autouse=True)
def private_data_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The user-level MLflow store (``$XDG_DATA_HOME/basketcast/mlflow``) and W&B's offline runs
    of the suite live in a temporary folder, never in the user's home."""
    folder = tmp_path_factory.mktemp("xdg-data")
    saved = {name: os.environ.get(name) for name in ("XDG_DATA_HOME", "WANDB_MODE", "WANDB_SILENT")}
    os.environ.update({"XDG_DATA_HOME": str(folder), "WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    try:
        yield folder
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="session", autouse=True)
def private_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The embedded online stores of every server the suite starts live in a temporary folder
    (``BASKETCAST_STATE_DIR`` defaults to ``$XDG_STATE_HOME/basketcast``), never in the user's home."""
    folder = tmp_path_factory.mktemp("xdg-state")
    previous = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(folder)
    try:
        yield folder / "basketcast"
    finally:
        if previous is None:
            os.environ.pop("XDG_STATE_HOME", None)
        else:
            os.environ["XDG_STATE_HOME"] = previous


@pytest.fixture(scope="session")
def excerpt_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A run folder (with its serving bundle) trained on the real excerpt: {"data": …, "run": …}."""
    from basketcast.pipeline.config import TrainConfig
    from basketcast.pipeline.data.ingest import ingest
    from basketcast.pipeline.workflows.run import train

    root = tmp_path_factory.mktemp("excerpt-run")
    ingest(EXCERPT, root / "data")
    train(root / "data", root / "run", TrainConfig.model_validate(FAST_TRAIN))
    return {"data": root / "data", "run": root / "run"}
