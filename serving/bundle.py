"""The serving bundle: the one description of its files, its manifest and where it lives.

A serving bundle is the folder ``RUN_DIR/serving`` written by ``basketcast.pipeline.workflows.export`` (the
last step of ``basketcast train``, or ``basketcast export``) and published with the rest of the
run folder:

- ``ranker.onnx`` (orders candidates), ``basket.onnx`` (calibrated probabilities for baskets);
- ``base.npy`` float32 (rows × base features): every known user's candidates with the features
  known once their history is cut after their last order; ``products.npy`` uint32 and
  ``repeat.npy`` bool per row; ``users.npy`` uint32 (sorted) and ``offsets.npy`` int64
  (users + 1): the rows of ``users[i]`` are ``offsets[i]:offsets[i + 1]``;
- ``popular_products.npy`` / ``popular_scores.npy``: the cold-start list;
- ``catalog.parquet``: product id, name, aisle, department;
- ``drift_reference.json``: the profile of the *training* data's snapshot that ``basketcast
  score`` compares the scored users with (``basketcast.serving.drift.DriftReference``); a bundle exported on
  other data carries the training bundle's over. Absent in bundles of older versions: scoring
  then skips drift with a notice;
- ``manifest.json``: :class:`BundleManifest`.

The server may be pointed at a run folder or at a bundle folder itself; :func:`bundle_dir` is
the one place that decides which. The run folder's dashboard page (``dashboard.html``) sits next
to the bundle, so its name is kept here too (the serving layer serves it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from basketcast.pipeline.errors import BundleError

BUNDLE: Final = "serving"  # the bundle's folder name inside a run folder
RANKER: Final = "ranker.onnx"
BASKET: Final = "basket.onnx"
CATALOG: Final = "catalog.parquet"
RELATED: Final = "related"  # the co-occurrence table (basketcast.pipeline.model.cooccurrence), a folder
MANIFEST: Final = "manifest.json"
# What fresh online rows need (basketcast.serving.online): the published product-level state and every
# known user's history as the snapshot saw it. Absent in bundles of older versions (no refresh).
PUBLISHED: Final = "published"  # folder: products, product features, TIFU reference, ALS items, config, network
HISTORY: Final = "history"  # folder of .npy arrays, HISTORY_ARRAYS
# The snapshot's history, user after user (users as in users.npy): orders of users[i] are
# order_offsets[i]:order_offsets[i+1]; lines of order j are line_offsets[j]:line_offsets[j+1].
HISTORY_ARRAYS: Final[dict[str, type[np.generic]]] = {
    "order_offsets": np.int64,
    "order_number": np.uint16,
    "dow": np.uint8,
    "hour": np.uint8,
    "days": np.float32,  # NaN = unknown (a first order)
    "line_offsets": np.int64,
    "product": np.uint32,
    "cart_pos": np.uint16,
    "reordered": np.uint8,
}
# Files of the PUBLISHED folder.
PUBLISHED_PRODUCTS: Final = "products.parquet"  # PRODUCT, AISLE, DEPARTMENT of the catalogue
PUBLISHED_PRODUCT_FEATURES: Final = "product_features.parquet"  # basketcast.features.product of the snapshot's history
PUBLISHED_TIFU: Final = "tifu_reference.npz"  # basketcast.features.tifu.Neighbourhood
PUBLISHED_ALS: Final = "als.npz"  # basketcast.pipeline.model.candidates.ALSModel, item side only
PUBLISHED_CONFIG: Final = "config.json"  # {"features": FeatureConfig, "candidates": CandidateConfig}
PUBLISHED_SEQUENCE: Final = "sequence"  # the network (basketcast.pipeline.model.sequence.OnnxScorer), when trained
DASHBOARD: Final = "dashboard.html"  # in the run folder, beside the bundle
DRIFT_REFERENCE: Final = (
    "drift_reference.json"  # basketcast.serving.drift.DriftReference (optional: older bundles lack it)
)
# The snapshot's arrays: file stem → dtype (each stored as STEM.npy).
ARRAYS: Final[dict[str, type[np.generic]]] = {
    "base": np.float32,
    "products": np.uint32,
    "repeat": np.bool_,
    "users": np.uint32,
    "offsets": np.int64,
    "popular_products": np.uint32,
    "popular_scores": np.float32,
}

__all__ = [
    "ARRAYS",
    "BASKET",
    "BUNDLE",
    "CATALOG",
    "DASHBOARD",
    "DRIFT_REFERENCE",
    "MANIFEST",
    "RANKER",
    "BundleError",
    "BundleManifest",
    "Parity",
    "bundle_dir",
    "is_bundle",
    "is_run_folder",
    "read_manifest",
    "run_dir_of",
]


class Parity(BaseModel):
    """ONNX against LightGBM on the snapshot's rows (see ``basketcast.pipeline.workflows.export.parity``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rows: int  # every snapshot row, compared at the first context
    users: int | None = None  # users whose rows were compared (absent in bundles of older versions)
    contexts: int | None = None  # request contexts compared
    users_all_contexts: int | None = None  # users compared at every context (a seeded sample)
    rows_all_contexts: int | None = None
    rows_with_nan: int
    max_abs_diff_ranking: float
    max_abs_diff_basket: float
    users_with_different_top10: int  # beyond near-ties: the export fails when this is not 0
    users_with_tied_swaps: int | None = None  # top-10 swaps of candidates scored within the tolerance


class BundleManifest(BaseModel):
    """``manifest.json`` of a bundle: its version, the feature layout and the shapes of its arrays."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str  # sortable and unique per publish: creation time + the ranking model's hash
    created: str
    features: list[str]  # every ranker input, in order: base features, then context features
    base_features: list[str]  # the columns of base.npy
    shapes: dict[str, list[int]]  # array stem → shape
    users: int
    rows: int
    ranking_objective: str
    onnx_bytes: dict[str, int]
    snapshot_bytes: int
    parity: Parity | None = None  # absent only while the bundle is being written
    seconds: float | None = None  # time to write the bundle
    cart_weight: float = 0.0  # β of "+ β · mean PMI to the cart" (chosen on stop users)
    cart_attention_weight: float = 0.0  # γ of "ranker score + γ · cart attention" (cart.onnx; chosen on stop users)
    none_source: str = "product"  # P(None) of the baskets: product rule, network None row, or mean


def bundle_dir(path: Path) -> Path:
    """The serving bundle of ``path``: ``path/serving`` for a run folder, else ``path`` itself."""
    path = Path(path)
    return path / BUNDLE if (path / BUNDLE).is_dir() else path


def run_dir_of(path: Path) -> Path:
    """The run folder of ``path``: its parent when ``path`` is a run's ``serving`` folder."""
    path = Path(path)
    return path.parent if path.name == BUNDLE else path


def is_bundle(path: Path) -> bool:
    """Whether ``path`` is a bundle folder itself (it holds the bundle manifest and ranker)."""
    return (Path(path) / MANIFEST).is_file() and (Path(path) / RANKER).is_file()


def is_run_folder(path: Path) -> bool:
    """Whether ``path`` is a run folder with a bundle inside."""
    return is_bundle(Path(path) / BUNDLE)


def read_manifest(folder: Path) -> BundleManifest:
    """The manifest of the bundle ``folder`` (a bundle folder itself); BundleError names the problem."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise BundleError(f"{path}: not found (export the model with `basketcast export`)")
    try:
        return BundleManifest.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'document'}: {e['msg']}" for e in exc.errors())
        raise BundleError(f"{path}: corrupt or from another version ({problems})") from exc
