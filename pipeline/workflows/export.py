"""Export a run for serving: ONNX rankers checked against LightGBM, and the online snapshot.

``write_bundle`` writes ``RUN_DIR/serving`` (format: ``basketcast.serving.bundle``): the ranking and basket
models converted with onnxmltools, every known user's candidates and base features as of "after
their last known order" (the same feature code as training, cut by ``basketcast.features.cutoffs.next_order``,
candidates from the ALS fitted on all known orders), the cold-start list and the catalogue. It
refuses to write a bundle whose ONNX scores differ from LightGBM's by more than ``TOLERANCE`` on
a snapshot row (NaN included) — every row at the first of ``PARITY_CONTEXTS``, about a million
rows at all of them — or change a user's top-10 order beyond near-ties (candidates LightGBM
scores within ``TOLERANCE`` of each other).
``export`` rebuilds the bundle of an existing run folder and republishes the folder atomically.
On data other than the training data (``--data``: new orders since, or other shoppers) every
user's ALS factors are folded in from that data's history (``ALSModel.fold_in``, as the online rows
are after a posted order), never taken from the fit's user with the same id.

The drift reference (``basketcast.serving.drift``: the profile that ``basketcast score`` compares scored users
with) must describe the data the run was *trained* on. ``write_bundle`` builds it from the bundle's
own snapshot by default — at training time that is the training data's. ``export`` builds it again
only when the data's fingerprint is the run's training data's; on other data it copies the
reference of the run's current bundle (by this rule, the training one). A run whose bundle has none
(older versions) exported on other data gets none: export it once on its training data first.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

import lightgbm as lgb
import numpy as np
import polars as pl

from basketcast.features import cutoffs as C
from basketcast.features.build import BASE_FEATURES, FEATURE_NAMES, FeatureTables, PublishedTables, base_matrix
from basketcast.features.history import History, as_of, order_lines
from basketcast.features.sequence import SequenceScorer
from basketcast.pipeline.config import TrainConfig
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.publish import publishing_dir
from basketcast.pipeline.data.storage import Dataset, read_dataset, write_json
from basketcast.pipeline.data.storage import read_manifest as read_data_manifest
from basketcast.pipeline.errors import ExportError
from basketcast.pipeline.model.candidates import ALSModel, candidates
from basketcast.pipeline.model.cooccurrence import Cooccurrence
from basketcast.pipeline.model.sequence import OnnxScorer
from basketcast.pipeline.model.training import Rankers
from basketcast.pipeline.progress import Timings
from basketcast.pipeline.ranking import best_first
from basketcast.pipeline.workflows.run_folder import RUN_FOLDER, load_run
from basketcast.serving.bundle import (
    BASKET,
    BUNDLE,
    CATALOG,
    DRIFT_REFERENCE,
    HISTORY,
    HISTORY_ARRAYS,
    MANIFEST,
    PUBLISHED,
    PUBLISHED_ALS,
    PUBLISHED_CONFIG,
    PUBLISHED_PRODUCT_FEATURES,
    PUBLISHED_PRODUCTS,
    PUBLISHED_SEQUENCE,
    PUBLISHED_TIFU,
    RANKER,
    RELATED,
    BundleManifest,
    Parity,
)
from basketcast.serving.cart import CART_FILE, VOCABULARY_FILE
from basketcast.serving.drift import build_reference, write_reference
from basketcast.serving.model import Context, ServingModel

log = logging.getLogger(__name__)

TOLERANCE = 1e-4
POPULAR = 100
SNAPSHOT_CHUNK_USERS = 20_000
# The parity check compares every snapshot row at each of these request contexts: the context
# features differ per context (days=None is a request without days_since_last_order: the user's
# usual gap), and so do the trees' paths through them.
PARITY_CONTEXTS: tuple[Context, ...] = (
    Context(dow=0, hour=10),
    Context(dow=3, hour=15, days=7.0),
    Context(dow=6, hour=22, days=30.0),
)
# Rows (whole users) featurised and scored at a time: ~0.3 KB per row, so memory stays bounded at
# any snapshot size.
PARITY_CHUNK_ROWS = 200_000
# Every row is compared at the first context; a seeded sample of users holding about this many
# rows at every context (every user of a snapshot this small). At full Instacart scale (15M rows)
# all three contexts on every row took 293 s of the 15-minute budget; this takes a third of it.
PARITY_ALL_CONTEXT_ROWS = 1_000_000
PARITY_SEED = 0
GRAPH_NAME = "basketcast_lightgbm"  # the ONNX graph's name (onnxmltools would draw a random one)


def float32_thresholds(booster: lgb.Booster) -> lgb.Booster:
    """The same model with every split threshold rounded down to the nearest float32.

    LightGBM compares a feature value with a float64 threshold; ONNX's TreeEnsemble holds float32
    thresholds, so a value between the two roundings would take the other branch. For float32
    inputs x, ``x <= t`` ⟺ ``x <= t32`` where t32 is the largest float32 not above t — so the
    rounded model predicts exactly like the original on float32 features, and converts exactly.
    """
    lines = booster.model_to_string().split("\n")
    for i, line in enumerate(lines):
        if line.startswith("num_cat=") and line != "num_cat=0":
            raise ExportError("categorical splits are not supported by the float32 threshold rounding")
        if line.startswith("threshold=") and line != "threshold=":  # a tree without splits has none
            t = np.array(line.split("=", 1)[1].split(" "), dtype=np.float64)
            t32 = t.astype(np.float32)
            above = t32.astype(np.float64) > t
            t32[above] = np.nextafter(t32[above], np.float32(-np.inf))
            lines[i] = "threshold=" + " ".join(repr(float(v)) for v in t32)
    # tree_sizes holds byte offsets of the tree blocks, which the new numbers change; without
    # it LightGBM parses the trees one after another.
    return lgb.Booster(model_str="\n".join(line for line in lines if not line.startswith("tree_sizes=")))


def to_onnx(booster: lgb.Booster) -> bytes:
    """Convert a LightGBM Booster (binary or lambdarank) to ONNX; input "input" float32 (n, features)."""
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    model = convert_lightgbm(
        float32_thresholds(booster),
        initial_types=[("input", FloatTensorType([None, booster.num_feature()]))],
        zipmap=False,
        target_opset=15,
    )
    # onnxmltools names the graph with a fresh random UUID on every call: a fixed name makes the same
    # booster the same bytes, so an export is reproducible byte for byte, like the rest of the bundle.
    model.graph.name = GRAPH_NAME
    return model.SerializeToString()  # type: ignore[no-any-return]


def latest_history(data: Dataset, lines: pl.DataFrame) -> History:
    """The history of every user's next, unseen order: all known orders (cut by ``next_order``)."""
    return as_of(data, C.next_order(data.orders), lines)


class SnapshotRows(Protocol):
    """Writes every user's candidate rows of ``h`` (base features, float32) to ``base`` (a .npy
    file); returns the small arrays (products, repeat, users sorted, offsets) and the product-level
    tables the rows were computed with (published beside them for fresh online rows)."""

    def __call__(
        self,
        base: Path,
        h: History,
        als: ALSModel,
        config: TrainConfig,
        timings: Timings,
        network: SequenceScorer | None,
    ) -> tuple[dict[str, np.ndarray], PublishedTables]: ...


def snapshot_rows_locally(
    base: Path,
    h: History,
    als: ALSModel,
    config: TrainConfig,
    timings: Timings,
    network: SequenceScorer | None,
) -> tuple[dict[str, np.ndarray], PublishedTables]:
    """:class:`SnapshotRows` in this process.

    Candidates are made for all users at once (a few columns), then featurised
    SNAPSHOT_CHUNK_USERS users at a time straight into ``base``: memory stays bounded by the
    chunk, whatever the number of users.
    """
    with timings.stage(f"snapshot: candidates ({h.cutoffs.height:,} users)"):
        cands = candidates(h, als, h.cutoffs[S.USER], config.candidates)  # sorted by user
    users, counts = np.unique(cands[S.USER].to_numpy(), return_counts=True)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    with timings.stage(f"snapshot: features ({cands.height:,} rows, one cutoff)"):
        tables = FeatureTables.of(h, config.features, network)
        published = PublishedTables.of(tables)
        with open_rows(base, cands.height) as fh:
            for first in range(0, users.size, SNAPSHOT_CHUNK_USERS):
                lo, hi = int(offsets[first]), int(offsets[min(first + SNAPSHOT_CHUNK_USERS, users.size)])
                frame = tables.base_frame(cands.slice(lo, hi - lo))  # keeps the row order
                fh.write(base_matrix(frame).tobytes())
        del tables
    arrays = {
        "products": cands[S.PRODUCT].to_numpy().astype(np.uint32),
        "repeat": cands[S.IS_REPEAT].to_numpy().astype(np.bool_),
        "users": users.astype(np.uint32),
        "offsets": offsets,
    }
    return arrays, published


@contextlib.contextmanager
def open_rows(path: Path, rows: int) -> Iterator[BinaryIO]:
    """``path`` opened for appending ``rows`` base rows (float32) behind a .npy header: written
    pages go to the page cache, not to this process's resident memory (as a writable memory map's
    would)."""
    with path.open("wb") as fh:
        header = {"descr": "<f4", "fortran_order": False, "shape": (rows, len(BASE_FEATURES))}
        np.lib.format.write_array_header_1_0(fh, header)
        yield fh


def _write_snapshot(
    folder: Path,
    h: History,
    als: ALSModel,
    config: TrainConfig,
    timings: Timings,
    network: SequenceScorer | None,
    rows: SnapshotRows = snapshot_rows_locally,
) -> dict[str, np.ndarray]:
    """Every known user's candidates and base features as of ``h`` (see ``latest_history``), the
    published product-level state and the users' histories. Returns the small arrays."""
    arrays, published = rows(folder / "base.npy", h, als, config, timings, network)
    _write_published(folder / PUBLISHED, h.products, published, als, config, network)
    with timings.stage("snapshot: users' histories (for fresh online rows)"):
        _write_history(folder / HISTORY, h, arrays["users"])
    return arrays


def _write_published(
    folder: Path,
    catalogue: pl.DataFrame,
    published: PublishedTables,
    als: ALSModel,
    config: TrainConfig,
    network: SequenceScorer | None,
) -> None:
    """The product-level state fresh online rows are computed against (``basketcast.serving.online``): the
    catalogue's ids, the product features and TIFU reference of the snapshot's history, the ALS
    item side (users are folded in), the candidate and feature settings, and the network."""
    folder.mkdir()
    # Sorted by id: basketcast.features.tifu.catalogue_ids then only checks the order on every fresh row.
    products = catalogue.select(S.PRODUCT, S.AISLE, S.DEPARTMENT).sort(S.PRODUCT)
    products.write_parquet(folder / PUBLISHED_PRODUCTS)
    published.product.write_parquet(folder / PUBLISHED_PRODUCT_FEATURES)
    published.reference.save(folder / PUBLISHED_TIFU)
    als.item_side().save(folder / PUBLISHED_ALS)
    write_json(
        folder / PUBLISHED_CONFIG,
        {"features": config.features.model_dump(), "candidates": config.candidates.model_dump()},
    )
    if isinstance(network, OnnxScorer):
        network.save(folder / PUBLISHED_SEQUENCE, meta={})


def _write_history(folder: Path, h: History, users: np.ndarray) -> None:
    """The orders and lines of ``users`` (the snapshot's, sorted) as ``h`` sees them: HISTORY_ARRAYS."""
    folder.mkdir()
    keep = pl.Series(S.USER, users)
    orders = h.orders.filter(pl.col(S.USER).is_in(keep.implode())).sort(S.USER, S.ORDER_NUMBER)
    lines = h.lines.filter(pl.col(S.USER).is_in(keep.implode())).sort(S.USER, S.ORDER_NUMBER, S.CART_POS, S.PRODUCT)
    per_order = lines.group_by(S.USER, S.ORDER_NUMBER).len()
    orders = orders.join(per_order, on=[S.USER, S.ORDER_NUMBER], how="left", maintain_order="left").with_columns(
        pl.col("len").fill_null(0)
    )
    order_users = orders[S.USER].to_numpy()
    arrays: dict[str, np.ndarray] = {
        "order_offsets": np.searchsorted(order_users, users, side="left").astype(np.int64),
        "order_number": orders[S.ORDER_NUMBER].to_numpy().astype(np.uint16),
        "dow": orders[S.DOW].to_numpy().astype(np.uint8),
        "hour": orders[S.HOUR].to_numpy().astype(np.uint8),
        "days": orders[S.DAYS_PRIOR].cast(pl.Float32).fill_null(float("nan")).to_numpy().astype(np.float32),
        "line_offsets": np.concatenate([[0], np.cumsum(orders["len"].to_numpy())]).astype(np.int64),
        "product": lines[S.PRODUCT].to_numpy().astype(np.uint32),
        "cart_pos": lines[S.CART_POS].to_numpy().astype(np.uint16),
        "reordered": lines[S.REORDERED].to_numpy().astype(np.uint8),
    }
    arrays["order_offsets"] = np.append(arrays["order_offsets"], np.int64(orders.height))
    for name, dtype in HISTORY_ARRAYS.items():
        np.save(folder / f"{name}.npy", arrays[name].astype(dtype, copy=False), allow_pickle=False)


def _write_arrays(
    folder: Path,
    h: History,
    als: ALSModel,
    config: TrainConfig,
    data: Dataset,
    timings: Timings,
    network: SequenceScorer | None,
    rows: SnapshotRows,
) -> dict[str, list[int]]:
    arrays = _write_snapshot(folder, h, als, config, timings, network, rows)
    lines = h.lines
    popular = lines.group_by(S.PRODUCT).len().sort(["len", S.PRODUCT], descending=[True, False]).head(POPULAR)
    arrays["popular_products"] = popular[S.PRODUCT].to_numpy().astype(np.uint32)
    arrays["popular_scores"] = (popular["len"] / lines.height).to_numpy().astype(np.float32)
    for name, arr in arrays.items():
        np.save(folder / f"{name}.npy", arr, allow_pickle=False)
    catalog = (
        data.products.join(data.aisles, on=S.AISLE, how="left")
        .join(data.departments, on=S.DEPARTMENT, how="left")
        .select(S.PRODUCT, S.PRODUCT_NAME, S.AISLE_NAME, S.DEPARTMENT_NAME)
    )
    catalog.write_parquet(folder / CATALOG)
    shapes = {name: list(arr.shape) for name, arr in arrays.items()}
    shapes["base"] = list(np.load(folder / "base.npy", mmap_mode="r").shape)
    return shapes


def parity(
    bundle: ServingModel,
    rankers: Rankers,
    contexts: tuple[Context, ...] = PARITY_CONTEXTS,
    chunk_rows: int = PARITY_CHUNK_ROWS,
    all_context_rows: int = PARITY_ALL_CONTEXT_ROWS,
) -> Parity:
    """ONNX vs LightGBM on every row of the snapshot at ``contexts[0]``, and at every context for a
    seeded sample of users holding about ``all_context_rows`` rows (every user when the snapshot
    is smaller: up to ~14,000 users at 70 candidates each).

    Users are taken ``chunk_rows`` rows at a time (at least one whole user). Returns the max abs
    differences of both models, the users whose top-10 (the one tie rule, ``basketcast.pipeline.ranking``)
    differs by more than ``TOLERANCE`` in LightGBM's own scores at some context, and the users
    whose top-10 only swaps candidates that LightGBM scores within ``TOLERANCE`` of each other
    (float32 against float64 sums can order such near-ties either way).
    """
    offsets = np.asarray(bundle.offsets)
    n_users = int(bundle.users.size)
    share = min(1.0, all_context_rows / max(int(offsets[-1]), 1))
    every_context = np.random.default_rng(PARITY_SEED).random(n_users) < share if share < 1 else np.ones(n_users, bool)
    result = _ParityTally(n_users)
    first = 0
    while first < n_users:
        last = int(np.searchsorted(offsets, offsets[first] + chunk_rows, side="right")) - 1
        last = min(max(last, first + 1), n_users)
        users = np.arange(first, last)
        for c, ctx in enumerate(contexts):
            chosen = users if c == 0 else users[every_context[first:last]]
            if chosen.size:
                result.compare(bundle, rankers, chosen, ctx, first_context=c == 0)
        first = last
    return Parity(
        rows=int(offsets[-1]),
        users=n_users,
        contexts=len(contexts),
        users_all_contexts=int(every_context.sum()),
        rows_all_contexts=int((offsets[1:] - offsets[:-1])[every_context].sum()),
        rows_with_nan=result.with_nan,
        max_abs_diff_ranking=result.max_rank,
        max_abs_diff_basket=result.max_basket,
        users_with_different_top10=int(result.mismatched.sum()),
        users_with_tied_swaps=int((result.tied & ~result.mismatched).sum()),
    )


class _ParityTally:
    """What :func:`parity` has seen so far, user by user."""

    def __init__(self, n_users: int) -> None:
        self.mismatched = np.zeros(n_users, dtype=bool)
        self.tied = np.zeros(n_users, dtype=bool)
        self.max_rank = self.max_basket = 0.0
        self.with_nan = 0

    def compare(
        self, bundle: ServingModel, rankers: Rankers, users: np.ndarray, ctx: Context, first_context: bool
    ) -> None:
        """Score the rows of ``users`` (positions in ``bundle.users``, ascending) at ``ctx`` both ways."""
        rows, counts = bundle.gather(users)
        groups = np.repeat(np.arange(users.size), counts)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        products = np.asarray(bundle.products[rows])
        X = bundle.features(rows, ctx)
        if first_context:
            self.with_nan += int(np.isnan(X).any(axis=1).sum())
        native = np.asarray(rankers.ranking.predict(X))
        onnx = bundle.rank_scores(X)
        basket_diff = np.abs(np.asarray(rankers.basket.predict(X)) - bundle.basket_probabilities(X))
        self.max_rank = max(self.max_rank, float(np.max(np.abs(native - onnx))))
        self.max_basket = max(self.max_basket, float(np.max(basket_diff)))
        a, b = _top10(groups, starts, products, native), _top10(groups, starts, products, onnx)
        swapped = products[a] != products[b]
        beyond = swapped & (np.abs(native[a] - native[b]) > TOLERANCE)
        self.mismatched[users[groups[a[beyond]]]] = True
        self.tied[users[groups[a[swapped]]]] = True


def _top10(groups: np.ndarray, starts: np.ndarray, products: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Row indices of each group's top 10, group after group (rows sorted by group)."""
    order = best_first(products, scores, groups)
    return order[np.arange(order.size) - starts[groups[order]] < 10]


def write_bundle(
    folder: Path,
    data: Dataset,
    h: History,
    rankers: Rankers,
    als: ALSModel,
    config: TrainConfig,
    timings: Timings | None = None,
    network: SequenceScorer | None = None,
    *,
    cart_weight: float = 0.0,
    cart_attention_weight: float = 0.0,
    none_source: str = "product",
    cart_files: Path | None = None,
    rows: SnapshotRows = snapshot_rows_locally,
    drift_reference: Path | Literal["build", "none"] = "build",
) -> BundleManifest:
    """Write the serving bundle into ``folder`` (created); returns its manifest. Raises on failed parity.

    ``timings`` records the snapshot's candidates, its features and the ONNX export + parity check;
    ``network`` computes the sequence features of the snapshot (missing without it). The
    co-occurrence table of ``h``'s baskets goes to ``related/`` (``GET /v1/products/{id}/related``
    and the cart term of the served score, weighted by ``cart_weight``); ``none_source`` says where
    the served baskets take P(None) from (``basketcast.pipeline.model.basket.NONE_SOURCES``). ``rows`` computes
    the snapshot's rows: in this process by default, on a Dask cluster with
    ``basketcast.pipeline.workflows.cluster_train.snapshot_rows_on_cluster``. ``drift_reference``: "build" the
    drift reference from this snapshot (``h`` is the training data's), copy the given file (the
    training bundle's), or write "none".
    """
    folder.mkdir(parents=True)
    start = time.perf_counter()
    timings = timings or Timings()
    shapes = _write_arrays(folder, h, als, config, data, timings, network, rows)
    with timings.stage("co-occurrence table (often bought together)"):
        Cooccurrence.of(h.lines.select(S.USER, S.ORDER_NUMBER, S.PRODUCT)).save(folder / RELATED)
    has_cart = cart_files is not None and (cart_files / CART_FILE).is_file()
    if has_cart:  # the cart attention and the vocabulary it reads product ids with
        assert cart_files is not None
        for name in (CART_FILE, VOCABULARY_FILE):
            shutil.copyfile(cart_files / name, folder / name)
    with timings.stage("ONNX export + parity check"):
        ranker_bytes = to_onnx(rankers.ranking)
        (folder / RANKER).write_bytes(ranker_bytes)
        (folder / BASKET).write_bytes(to_onnx(rankers.basket))
        created = dt.datetime.now(dt.UTC)
        manifest = BundleManifest(
            # Sortable and unique per publish: time to the microsecond + the ranking model's hash.
            version=created.strftime("%Y%m%dT%H%M%S%fZ") + "-" + hashlib.sha256(ranker_bytes).hexdigest()[:8],
            created=created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            features=list(FEATURE_NAMES),
            base_features=list(BASE_FEATURES),
            shapes=shapes,
            users=shapes["users"][0],
            rows=shapes["base"][0],
            ranking_objective=rankers.ranking_objective,
            onnx_bytes={RANKER: len(ranker_bytes), BASKET: (folder / BASKET).stat().st_size},
            snapshot_bytes=sum((folder / f"{n}.npy").stat().st_size for n in shapes),
            cart_weight=cart_weight,
            cart_attention_weight=cart_attention_weight if has_cart else 0.0,
            none_source=none_source,
        )
        _write_manifest(folder, manifest)
        served = ServingModel.load(folder, threads=os.cpu_count() or 1)
        check = parity(served, rankers)
        manifest = manifest.model_copy(update={"parity": check, "seconds": round(time.perf_counter() - start, 2)})
        _write_manifest(folder, manifest)
    if check.max_abs_diff_ranking > TOLERANCE or check.max_abs_diff_basket > TOLERANCE:
        raise ExportError(f"ONNX export differs from LightGBM by more than {TOLERANCE}: {check}")
    if check.users_with_different_top10:
        raise ExportError(f"ONNX export changes the top-10 order of some users: {check}")
    if drift_reference == "build":
        with timings.stage("drift reference (profile of the training snapshot)"):
            write_reference(folder / DRIFT_REFERENCE, build_reference(served))
    elif drift_reference != "none":
        shutil.copyfile(drift_reference, folder / DRIFT_REFERENCE)
    del served
    log.info(
        "serving bundle %s: %d users, %d rows, ONNX %.1f MB, parity %s",
        manifest.version,
        manifest.users,
        manifest.rows,
        len(ranker_bytes) / 1e6,
        check,
    )
    return manifest


def _write_manifest(folder: Path, manifest: BundleManifest) -> None:
    write_json(folder / MANIFEST, manifest.model_dump(exclude_none=True))


def export(
    run_dir: Path,
    data_dir: Path | None = None,
    rows: SnapshotRows = snapshot_rows_locally,
    on_data: Callable[[Dataset], object] | None = None,
) -> BundleManifest:
    """Rebuild ``RUN_DIR/serving`` from the run's models and republish the run folder atomically.

    Unchanged files are hard-linked into the new folder, so this costs only the new bundle.
    ``data_dir`` defaults to the data the run was trained on. ``rows`` computes the snapshot's
    rows (see :func:`write_bundle`); ``on_data`` is called with the data first (a cluster writes
    its user buckets).
    """
    run = load_run(run_dir)
    data_path = Path(data_dir) if data_dir else Path(run.manifest.data.path)
    data = read_dataset(data_path)
    if on_data is not None:
        on_data(data)
    als = run.als(latest=True)
    trained_on = read_data_manifest(data_path).fingerprint == run.manifest.data.fingerprint
    reference = _drift_reference_source(run.folder.bundle / DRIFT_REFERENCE, data_path, trained_on)
    with publishing_dir(run.path, RUN_FOLDER) as tmp:
        for item in run.path.iterdir():
            if item.name == BUNDLE:
                continue
            if item.is_dir():
                shutil.copytree(item, tmp / item.name, copy_function=os.link)
            else:
                os.link(item, tmp / item.name)
        h = latest_history(data, order_lines(data))
        if not trained_on:
            # Other data (new orders since training, or other shoppers): every user's ALS factors are
            # folded in from their history here, as the online rows do after a posted order
            # (basketcast.serving.online), instead of the fit's factors of whoever had the same id then.
            started = time.perf_counter()
            als = als.fold_in(h.lines.select(S.USER, S.PRODUCT))
            log.info("ALS: %d users folded in (%.1f s)", als.user_ids.size, time.perf_counter() - started)
        report = run.report()
        return write_bundle(
            tmp / BUNDLE,
            data,
            h,
            run.rankers,
            als,
            run.config,
            network=run.network(),
            cart_weight=report.cart_weight or 0.0,
            cart_attention_weight=report.cart_attention_weight or 0.0,
            none_source=report.none_source or "product",
            cart_files=run.folder.sequence,
            rows=rows,
            drift_reference=reference,
        )


def _drift_reference_source(previous: Path, data_path: Path, trained_on: bool) -> Path | Literal["build", "none"]:
    """Where the re-exported bundle's drift reference comes from (see the module doc); ``trained_on``:
    whether ``data_path`` is the data the run was trained on."""
    if trained_on:
        return "build"
    if previous.is_file():
        return previous
    log.warning(
        "%s: the run's bundle has no drift reference and %s is not the data it was trained on: the new bundle "
        "has none (export once on the training data to add one); basketcast score will skip drift",
        previous.parent,
        data_path,
    )
    return "none"
