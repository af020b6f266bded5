"""Drift of batch-scored users against the training snapshot: PSI per feature and of the scores.

Every ``basketcast score`` compares the users it scored with the data the model was trained on
and writes, next to the scores (``X.parquet`` → ``X.drift.json``, ``X.drift.html``,
``X.drift.prom``; a folder of parts → ``drift.json``, … inside it):

- ``drift.json``: :class:`DriftSummary` — per base feature its PSI, status, reference and current
  mean and missing share; the PSI of the scores (``score_psi``); the flagged features; the
  thresholds; the model versions and the numbers of users and rows on both sides;
- ``drift.html``: one self-contained page (no script, no external resource): every feature sorted
  by PSI, and the reference vs current bin shares of each flagged feature and of the scores as
  inline SVG bars;
- ``drift.prom``: the same as Prometheus gauges in node_exporter's textfile-collector format
  (``basketcast_drift_psi{feature, model_version}``, ``basketcast_drift_score_psi``,
  ``basketcast_drift_flagged_features``, ``basketcast_drift_scored_users``,
  ``basketcast_drift_last_run_timestamp_seconds``, each with ``model_version``).

Each file is published atomically (``basketcast.pipeline.data.publish``: a temporary sibling renamed into
place), so a scraper or a browser sees the previous file or the new one.

The reference (:class:`DriftReference`, the bundle's ``drift_reference.json``) is built by
:func:`build_reference` from the serving snapshot *of the training data* — every training user's
candidate rows as of after their last order, the same rows ``basketcast score`` reads — when the
bundle is written at training time (or re-exported on the training data); a bundle exported on
other data carries the training bundle's reference over (``basketcast.pipeline.workflows.export``). A bundle
without one (older versions) is scored without drift, with a one-line notice.

The population stability index
-------------------------------
For a feature, the reference values define bins; with ``r_i`` and ``c_i`` the shares of the
reference and current values in bin ``i`` (of ``B`` bins), each smoothed as
``(n_i / n + ε) / (1 + B ε)`` with ``ε`` = :data:`EPSILON` so that no share is 0,

    PSI = Σ_i (c_i − r_i) · ln(c_i / r_i)

(the symmetrised Kullback–Leibler divergence of the two binned distributions; 0 when they are
equal). Bins: :data:`BINS` quantile bins of the reference (interior deciles; tied quantiles
merged, so a feature that is mostly 0 gets fewer bins; values outside the reference's range go to
the first or last bin), plus one bin for missing values (NaN); a feature whose reference holds at
most :data:`MAX_CATEGORIES` distinct whole numbers (a department id, "bought in the last 3
orders") gets one bin per value instead, values under :data:`MIN_CATEGORY_SHARE` of the reference
and values the reference never had going to one "other" bin, plus the missing bin.

Status: PSI < :data:`STABLE_BELOW` (0.1) *stable*, below :data:`DRIFTED_FROM` (0.25) *moderate*,
else *drifted*; a drifted feature is *flagged*. These are the usual credit-scoring thresholds.
Two samples of one distribution have an expected PSI of about ``(B − 1)(1/n + 1/m)``: with 10
bins and a few hundred users per side that is ≈ 0.05, so fewer than :data:`MIN_USERS` scored
users are reported with a note (their PSI is mostly noise).

What is compared
----------------
- User-level features (``basketcast.features.user.FEATURES`` and the sequence network's ``seq_none``: the
  same value on each of a user's rows) one value per user; every other base feature one value
  per candidate row. A seeded sample of at most :data:`SAMPLE` users / rows on each side (the
  sampling error is then negligible against the thresholds).
- The current users are the scored users the snapshot knows (user ids of the scores file; unknown
  users given the cold-start list have no rows and are left out), their rows as in the snapshot.
- Scores: the reference holds the ranker's scores of each sampled snapshot user's top
  :data:`SCORE_RANKS` candidates at :data:`REFERENCE_CONTEXT` (the context features move this
  distribution little: PSI ≤ 0.005 between six contexts on 400 users), counted per rank, so that a
  scores file of top-``k`` is compared on ranks ≤ min(k, 20) with the same ranks of the reference.
  The context features themselves are not compared: they are the request's, not the users'.
"""

from __future__ import annotations

import datetime as dt
import html
import itertools
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, ValidationError

from basketcast.features.sequence import SEQ_NONE
from basketcast.features.user import FEATURES as USER_FEATURES
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.ids import index_of
from basketcast.pipeline.data.publish import Kind, atomic_write_bytes, publishing_file, text_starting_with
from basketcast.serving.batch import top_k_per_group
from basketcast.serving.bundle import DRIFT_REFERENCE, bundle_dir, read_manifest
from basketcast.serving.model import Context, ServingModel

SCHEMA_VERSION: Final = 1
BINS: Final = 10
MAX_CATEGORIES: Final = 25
MIN_CATEGORY_SHARE: Final = 0.005
EPSILON: Final = 1e-4
STABLE_BELOW: Final = 0.1
DRIFTED_FROM: Final = 0.25
SAMPLE: Final = 200_000
SCORE_RANKS: Final = 20
SCORE_USERS: Final = 20_000  # users whose top-20 scores make the score reference
MIN_USERS: Final = 100
SEED: Final = 0
REFERENCE_CONTEXT: Final = Context(dow=0, hour=10)  # days: each user's usual gap
CHUNK_USERS: Final = 5_000
USER_LEVEL: Final = frozenset({*USER_FEATURES, SEQ_NONE})
SCORE: Final = "score"  # the scores' name in the report

Status = Literal["stable", "moderate", "drifted"]
Level = Literal["user", "row"]

__all__ = [
    "DRIFTED_FROM",
    "STABLE_BELOW",
    "Bins",
    "DriftReference",
    "DriftResult",
    "DriftSummary",
    "build_reference",
    "compare",
    "drift_of_scores",
    "drift_paths",
    "load_reference",
    "profile",
    "psi",
    "status_of",
]


# --- bins and the PSI ------------------------------------------------------------------------
class Bins(BaseModel):
    """How a feature's values fall into bins (learnt from the reference): ``quantile`` bins split at
    ``edges`` (``len(edges) + 1`` bins), or ``categorical`` bins, one per value of ``values`` and one
    "other"; then, in both cases, the missing (NaN) bin last."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["quantile", "categorical"]
    edges: list[float] = []
    values: list[float] = []

    @property
    def size(self) -> int:
        """Number of bins, the missing bin included."""
        return (len(self.edges) + 1 if self.kind == "quantile" else len(self.values) + 1) + 1

    def index(self, x: np.ndarray) -> np.ndarray:
        """The bin of each value of ``x`` (float, any shape → int64 of the same shape)."""
        x = np.asarray(x, dtype=np.float64)
        missing = np.isnan(x)
        if self.kind == "quantile":
            idx = np.searchsorted(np.asarray(self.edges, dtype=np.float64), x, side="right")
        else:
            values = np.asarray(self.values, dtype=np.float64)
            pos = np.minimum(np.searchsorted(values, x), max(values.size - 1, 0))
            hit = values[pos] == x if values.size else np.zeros(x.shape, bool)
            idx = np.where(hit, pos, values.size)  # else "other"
        return np.where(missing, self.size - 1, idx).astype(np.int64)

    def counts(self, x: np.ndarray) -> np.ndarray:
        """Values of ``x`` per bin (int64, ``size``)."""
        return np.bincount(self.index(x).ravel(), minlength=self.size).astype(np.int64)

    def labels(self) -> list[str]:
        """A short label per bin, for the report."""
        if self.kind == "quantile":
            e = [_num(v) for v in self.edges]
            if not e:
                out = ["all"]
            else:
                out = [f"< {e[0]}", *(f"{a} – {b}" for a, b in itertools.pairwise(e)), f"≥ {e[-1]}"]
        else:
            out = [*(_num(v) for v in self.values), "other"]
        return [*out, "missing"]

    def short_labels(self) -> list[str]:
        """Each bin's lower edge (the first: "<" its upper edge), for the bars' axis."""
        if self.kind == "quantile":
            e = [_num(v) for v in self.edges]
            out = [f"<{e[0]}", *e] if e else ["all"]
        else:
            out = [*(_num(v) for v in self.values), "other"]
        return [*out, "NaN"]


def fit_bins(x: np.ndarray, bins: int = BINS, categorical: bool = True) -> Bins:
    """The bins of a feature from its reference values ``x`` (NaN = missing; see the module doc);
    ``categorical=False``: quantile bins whatever the values."""
    x = np.asarray(x, dtype=np.float64)
    present = x[~np.isnan(x)]
    if present.size == 0:
        return Bins(kind="quantile")
    values, counts = np.unique(present, return_counts=True)
    finite = np.isfinite(values)
    if categorical and values.size <= MAX_CATEGORIES and finite.all() and np.all(values == np.round(values)):
        kept = values[counts >= MIN_CATEGORY_SHARE * present.size]
        return Bins(kind="categorical", values=[float(v) for v in kept])
    quantiles = np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1], method="linear")
    return Bins(kind="quantile", edges=[float(v) for v in np.unique(quantiles)])


def psi(reference: np.ndarray, current: np.ndarray, epsilon: float = EPSILON) -> float:
    """The PSI of two count vectors over the same bins (see the module doc); NaN if a side is empty."""
    r, c = np.asarray(reference, np.float64), np.asarray(current, np.float64)
    if r.sum() <= 0 or c.sum() <= 0:
        return math.nan
    b = r.size
    r = (r / r.sum() + epsilon) / (1 + b * epsilon)
    c = (c / c.sum() + epsilon) / (1 + b * epsilon)
    return float(np.sum((c - r) * np.log(c / r)))


def status_of(value: float) -> Status:
    """stable / moderate / drifted by the thresholds (NaN, no data: stable)."""
    if not value >= STABLE_BELOW:
        return "stable"
    return "moderate" if value < DRIFTED_FROM else "drifted"


def _mean(x: np.ndarray) -> float | None:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else None


def _num(v: float) -> str:
    return f"{v:.3g}" if v != round(v) or abs(v) >= 1e6 else str(int(v))


# --- the reference ---------------------------------------------------------------------------
class FeatureProfile(BaseModel):
    """One base feature of the reference: its bins and the reference's counts in them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    level: Level
    bins: Bins
    counts: list[int]
    mean: float | None
    missing_share: float


class ScoreProfile(BaseModel):
    """The ranker's scores of the reference users' top candidates: ``counts_by_rank[r - 1]`` are the
    counts of rank ``r`` in ``bins``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bins: Bins
    counts_by_rank: list[list[int]]
    sums_by_rank: list[float]  # sum of the scores of each rank (for the mean of ranks ≤ k)
    users: int


class DriftReference(BaseModel):
    """``drift_reference.json`` of a bundle: the training snapshot's profile."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int
    created_at: str
    model_version: str  # of the bundle it was built in (at training time, or on the training data)
    source: str
    users: int  # users of the snapshot
    rows: int  # candidate rows of the snapshot
    sampled_users: int
    sampled_rows: int
    context: dict[str, float | None]  # REFERENCE_CONTEXT of the scores
    features: list[FeatureProfile]
    score: ScoreProfile | None


def _sample(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions 0..n-1: all of them, or ``size`` drawn without replacement."""
    if n <= size:
        return np.arange(n, dtype=np.int64)
    return np.sort(rng.choice(n, size=size, replace=False)).astype(np.int64)


@dataclass(frozen=True)
class _Snapshot:
    """What drift reads of a bundle: its version, base feature names and snapshot arrays (memory-mapped)."""

    path: Path
    version: str
    base_features: list[str]
    base: np.ndarray
    users: np.ndarray
    offsets: np.ndarray

    @classmethod
    def of(cls, model: ServingModel | Path) -> _Snapshot:
        if isinstance(model, ServingModel):
            return cls(
                model.path, model.version, list(model.manifest.base_features), model.base, model.users, model.offsets
            )
        path = bundle_dir(Path(model))
        manifest = read_manifest(path)

        def arr(name: str) -> np.ndarray:
            return np.load(path / f"{name}.npy", mmap_mode="r", allow_pickle=False)

        return cls(path, manifest.version, list(manifest.base_features), arr("base"), arr("users"), arr("offsets"))

    def rows_of(self, positions: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
        """Sorted snapshot rows of the users at ``positions`` (sorted): all, or ``size`` drawn from them."""
        starts = np.asarray(self.offsets[positions], dtype=np.int64)
        counts = np.asarray(self.offsets[positions + 1], dtype=np.int64) - starts
        cum = np.cumsum(counts)
        picked = _sample(int(cum[-1]) if cum.size else 0, size, rng)
        owner = np.searchsorted(cum, picked, side="right")
        return starts[owner] + picked - (cum[owner] - counts[owner])

    def values(self, positions: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(one base row per user, a sample of rows) of the users at ``positions``: float32 matrices."""
        with_rows = positions[self.offsets[positions + 1] > self.offsets[positions]]
        users = _sample(with_rows.size, SAMPLE, rng)
        per_user = np.asarray(self.base[np.asarray(self.offsets[with_rows[users]], dtype=np.int64)], np.float32)
        rows = np.asarray(self.base[self.rows_of(with_rows, SAMPLE, rng)], np.float32)
        return per_user.reshape(-1, len(self.base_features)), rows.reshape(-1, len(self.base_features))


def _level(name: str) -> Level:
    return "user" if name in USER_LEVEL else "row"


def build_reference(model: ServingModel, *, source: str = "serving snapshot of the training data") -> DriftReference:
    """The profile of ``model``'s snapshot (every user, a seeded sample of at most SAMPLE users and
    rows) and of its ranker's top-SCORE_RANKS scores (at most SCORE_USERS users) at REFERENCE_CONTEXT."""
    n = int(model.users.size)
    scored = _sample(n, SCORE_USERS, np.random.default_rng(SEED + 1))
    scores, ranks = _top_scores(model, scored, REFERENCE_CONTEXT)
    return profile(model, scores, ranks, source=source)


def profile(
    snapshot: ServingModel | Path,
    scores: np.ndarray | None = None,
    ranks: np.ndarray | None = None,
    *,
    source: str = "serving snapshot of the training data",
) -> DriftReference:
    """The reference of every user of ``snapshot`` (a model, or a run/bundle folder) and of the
    top scores ``scores`` with their ``ranks`` (1..SCORE_RANKS; None: no score part)."""
    snap = _Snapshot.of(snapshot)
    per_user, rows = snap.values(np.arange(snap.users.size, dtype=np.int64), np.random.default_rng(SEED))
    features = []
    for j, name in enumerate(snap.base_features):
        level = _level(name)
        x = per_user[:, j] if level == "user" else rows[:, j]
        bins = fit_bins(x)
        features.append(
            FeatureProfile(
                name=name,
                level=level,
                bins=bins,
                counts=bins.counts(x).tolist(),
                mean=_mean(x),
                missing_share=float(np.isnan(x).mean()) if x.size else 0.0,
            )
        )
    score = None
    if scores is not None and ranks is not None and len(scores):
        scores, ranks = np.asarray(scores, np.float64), np.asarray(ranks)
        bins = fit_bins(scores, categorical=False)
        score = ScoreProfile(
            bins=bins,
            counts_by_rank=[bins.counts(scores[ranks == r]).tolist() for r in range(1, SCORE_RANKS + 1)],
            sums_by_rank=[float(scores[ranks == r].sum()) for r in range(1, SCORE_RANKS + 1)],
            users=int((ranks == 1).sum()),
        )
    return DriftReference(
        schema_version=SCHEMA_VERSION,
        created_at=_now(),
        model_version=snap.version,
        source=source,
        users=int(snap.users.size),
        rows=int(snap.offsets[-1]) if snap.offsets.size else 0,
        sampled_users=int(per_user.shape[0]),
        sampled_rows=int(rows.shape[0]),
        context={"dow": REFERENCE_CONTEXT.dow, "hour": REFERENCE_CONTEXT.hour, "days": REFERENCE_CONTEXT.days},
        features=features,
        score=score,
    )


def _top_scores(model: ServingModel, positions: np.ndarray, ctx: Context) -> tuple[np.ndarray, np.ndarray]:
    """Scores (float32) and ranks (1..SCORE_RANKS) of the top candidates of the users at ``positions``."""
    scores, ranks = [], []
    for lo in range(0, positions.size, CHUNK_USERS):
        chunk = positions[lo : lo + CHUNK_USERS]
        idx, counts = model.gather(chunk)
        if not idx.size:
            continue
        s = model.rank_scores(model.features(idx, ctx))
        groups = np.repeat(np.arange(chunk.size), counts)
        best = top_k_per_group(groups, s, np.asarray(model.products[idx]), SCORE_RANKS)
        g = groups[best]
        first = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
        scores.append(s[best])
        ranks.append(np.arange(g.size) - np.repeat(first, np.diff(np.r_[first, g.size])) + 1)
    if not scores:
        return np.zeros(0, np.float32), np.zeros(0, np.int64)
    return np.concatenate(scores), np.concatenate(ranks)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_reference(path: Path, reference: DriftReference) -> None:
    """Write ``reference`` as JSON to ``path`` (atomically)."""
    atomic_write_bytes(path, reference.model_dump_json(indent=1).encode() + b"\n")


def load_reference(bundle: Path) -> tuple[DriftReference | None, str]:
    """The drift reference of the bundle folder ``bundle`` (a bundle folder itself), or None and why not."""
    path = Path(bundle) / DRIFT_REFERENCE
    if not path.is_file():
        return None, f"{path.parent} has no drift reference ({DRIFT_REFERENCE}; bundles of older versions)"
    try:
        return DriftReference.model_validate_json(path.read_bytes()), ""
    except (ValidationError, OSError) as exc:
        return None, f"{path}: unreadable or from another version ({str(exc).splitlines()[0]})"


# --- the comparison --------------------------------------------------------------------------
class FeatureDrift(BaseModel):
    """One feature (or the scores) in the summary."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    psi: float | None
    status: Status
    level: str
    reference_mean: float | None
    current_mean: float | None
    reference_missing_share: float
    current_missing_share: float


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    stable_below: float = STABLE_BELOW
    drifted_from: float = DRIFTED_FROM
    bins: int = BINS
    max_categories: int = MAX_CATEGORIES
    epsilon: float = EPSILON


class DriftSummary(BaseModel):
    """``drift.json``: the scored users against the training snapshot."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int
    kind: Literal["basketcast drift summary"] = "basketcast drift summary"
    created_at: str
    model_version: str  # of the bundle that scored
    reference_model_version: str  # of the bundle the reference was built in
    reference_created_at: str
    reference_context: dict[str, float | None]
    scores_file: str
    reference_users: int
    reference_rows: int
    scored_users: int  # scored users the snapshot knows (compared)
    scored_rows: int  # their candidate rows in the snapshot
    unknown_users: int  # in the scores file, not in the snapshot: left out
    score_ranks: int  # scores compared on ranks ≤ this
    thresholds: Thresholds
    features: dict[str, FeatureDrift]
    score: FeatureDrift | None
    score_psi: float | None  # score.psi, at the top for readers of drift histories
    flagged: list[str]  # drifted features, largest PSI first
    notes: list[str]


@dataclass(frozen=True)
class _Shares:
    """Reference and current counts per bin of one flagged feature (for the report's bars)."""

    labels: list[str]
    short: list[str]
    reference: np.ndarray
    current: np.ndarray


def compare(
    reference: DriftReference,
    snapshot: ServingModel | Path | _Snapshot,
    user_ids: np.ndarray,
    scores: np.ndarray | None = None,
    ranks: np.ndarray | None = None,
    *,
    scores_file: str = "",
) -> tuple[DriftSummary, dict[str, _Shares]]:
    """Compare the snapshot rows of ``user_ids`` (and their top scores, with ranks) with ``reference``.

    ``scores``/``ranks`` are the scored rows of those users (other users' rows removed before);
    ranks above min(max rank, SCORE_RANKS) are ignored. Returns the summary and, for the report, the
    bin counts of the flagged features and of the scores.
    """
    snap = snapshot if isinstance(snapshot, _Snapshot) else _Snapshot.of(snapshot)
    ids = np.unique(np.asarray(user_ids)).astype(np.uint32)
    pos = index_of(snap.users, ids)
    known = np.sort(pos[pos >= 0]).astype(np.int64)
    per_user, rows = snap.values(known, np.random.default_rng(SEED))
    names = {n: j for j, n in enumerate(snap.base_features)}
    features: dict[str, FeatureDrift] = {}
    shares: dict[str, _Shares] = {}
    notes: list[str] = []
    missing = [p.name for p in reference.features if p.name not in names]
    if missing:
        notes.append(f"not in this bundle, not compared: {', '.join(missing)}")
    for p in reference.features:
        if p.name not in names:
            continue
        x = per_user[:, names[p.name]] if p.level == "user" else rows[:, names[p.name]]
        counts = p.bins.counts(x)
        value = psi(np.asarray(p.counts), counts)
        features[p.name] = FeatureDrift(
            psi=None if math.isnan(value) else value,
            status=status_of(value),
            level=p.level,
            reference_mean=p.mean,
            current_mean=_mean(x),
            reference_missing_share=p.missing_share,
            current_missing_share=float(np.isnan(x).mean()) if x.size else 0.0,
        )
        if features[p.name].status == "drifted":
            shares[p.name] = _Shares(p.bins.labels(), p.bins.short_labels(), np.asarray(p.counts), counts)
    score, k = None, 0
    if reference.score is not None and scores is not None and ranks is not None and len(scores):
        ranks = np.asarray(ranks)
        k = int(min(int(ranks.max()), SCORE_RANKS))
        keep = ranks <= k
        current = np.asarray(scores, np.float64)[keep]
        ref_counts = np.sum(reference.score.counts_by_rank[:k], axis=0)
        counts = reference.score.bins.counts(current)
        value = psi(ref_counts, counts)
        n_ref = int(ref_counts.sum())
        score = FeatureDrift(
            psi=None if math.isnan(value) else value,
            status=status_of(value),
            level=f"top {k} per user",
            reference_mean=sum(reference.score.sums_by_rank[:k]) / n_ref if n_ref else None,
            current_mean=_mean(current),
            reference_missing_share=0.0,
            current_missing_share=0.0,
        )
        shares[SCORE] = _Shares(reference.score.bins.labels(), reference.score.bins.short_labels(), ref_counts, counts)
    if known.size < MIN_USERS:
        noise = (BINS - 1) * (1 / max(known.size, 1) + 1 / max(reference.sampled_users, 1))
        notes.append(
            f"only {known.size} scored users are in the snapshot: with {BINS} bins two samples of one "
            f"distribution differ by a PSI of about {noise:.2f} (user-level features)"
        )
    flagged = sorted((n for n, f in features.items() if f.status == "drifted"), key=lambda n: -(features[n].psi or 0))
    counts_rows = np.asarray(snap.offsets[known + 1], np.int64) - np.asarray(snap.offsets[known], np.int64)
    summary = DriftSummary(
        schema_version=SCHEMA_VERSION,
        created_at=_now(),
        model_version=snap.version,
        reference_model_version=reference.model_version,
        reference_created_at=reference.created_at,
        reference_context=reference.context,
        scores_file=scores_file,
        reference_users=reference.users,
        reference_rows=reference.rows,
        scored_users=int(known.size),
        scored_rows=int(counts_rows.sum()),
        unknown_users=int((pos < 0).sum()),
        score_ranks=k,
        thresholds=Thresholds(),
        features=features,
        score=score,
        score_psi=score.psi if score is not None else None,
        flagged=flagged,
        notes=notes,
    )
    return summary, shares


# --- the outputs -----------------------------------------------------------------------------
def _is_summary(path: Path) -> bool:
    try:
        return json.loads(path.read_bytes()).get("kind") == "basketcast drift summary"  # type: ignore[no-any-return]
    except (OSError, ValueError, AttributeError):
        return False


_HTML_MARK: Final = "<!-- basketcast drift report -->"
_PROM_MARK: Final = "# HELP basketcast_drift_"
SUMMARY_KIND: Final = Kind("drift summary (JSON)", folder=False, recognise=_is_summary)
REPORT_KIND: Final = Kind("drift report (HTML)", folder=False, recognise=text_starting_with(_HTML_MARK))
METRICS_KIND: Final = Kind(
    "drift metrics (Prometheus textfile)", folder=False, recognise=text_starting_with(_PROM_MARK)
)


@dataclass(frozen=True)
class DriftPaths:
    json: Path
    html: Path
    prom: Path


def drift_paths(scores: Path) -> DriftPaths:
    """Where the drift outputs of the scores ``X.parquet`` go (``X.drift.json``, …); for a folder of
    parts (``score --cluster``), ``drift.json``, … inside it."""
    scores = Path(scores)
    if scores.is_dir():
        return DriftPaths(scores / "drift.json", scores / "drift.html", scores / "drift.prom")
    stem = scores.name.removesuffix(".parquet")
    return DriftPaths(*(scores.with_name(f"{stem}.drift.{ext}") for ext in ("json", "html", "prom")))


def prometheus_text(summary: DriftSummary, timestamp: float) -> bytes:
    """The summary as Prometheus gauges (text exposition format, node_exporter textfile collector)."""
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    registry = CollectorRegistry()
    version = summary.model_version
    feature_psi = Gauge(
        "basketcast_drift_psi",
        "Population stability index of a base feature: scored users vs the training snapshot.",
        ["feature", "model_version"],
        registry=registry,
    )
    for name, f in summary.features.items():
        feature_psi.labels(feature=name, model_version=version).set(math.nan if f.psi is None else f.psi)
    gauges = {
        "basketcast_drift_score_psi": (
            "Population stability index of the scores of the top candidates (ranks <= min(k, 20)).",
            math.nan if summary.score_psi is None else summary.score_psi,
        ),
        "basketcast_drift_flagged_features": (
            f"Base features whose PSI is at least {DRIFTED_FROM} (drifted).",
            float(len(summary.flagged)),
        ),
        "basketcast_drift_scored_users": (
            "Scored users compared (those the snapshot knows).",
            float(summary.scored_users),
        ),
        "basketcast_drift_last_run_timestamp_seconds": ("When the drift was last computed (Unix time).", timestamp),
    }
    for name, (doc, value) in gauges.items():
        Gauge(name, doc, ["model_version"], registry=registry).labels(model_version=version).set(value)
    return generate_latest(registry)


def _bars(shares: _Shares) -> str:
    """Inline SVG: per bin, the reference's share (grey) beside the current share (orange)."""
    r = shares.reference / max(shares.reference.sum(), 1)
    c = shares.current / max(shares.current.sum(), 1)
    top = max(float(r.max(initial=0)), float(c.max(initial=0)), 1e-9)
    w, h, pad = 34, 90, 14
    width = w * len(r) + 10
    parts = [
        f'<svg class="bars" width="{width}" height="{h + 3 * pad}" role="img" viewBox="0 0 {width} {h + 3 * pad}">'
    ]
    for i, (a, b) in enumerate(zip(r, c, strict=True)):
        x = 5 + i * w
        ha, hb = h * a / top, h * b / top
        label = html.escape(shares.labels[i])
        parts.append(
            f"<g><title>{label}: reference {a:.1%}, current {b:.1%}</title>"
            f'<rect x="{x + 2}" y="{pad + h - ha:.1f}" width="13" height="{ha:.1f}" fill="#9aa5b1"/>'
            f'<rect x="{x + 16}" y="{pad + h - hb:.1f}" width="13" height="{hb:.1f}" fill="#e8772e"/>'
            f'<text x="{x + 16}" y="{pad + h + 12}" font-size="9" text-anchor="middle">'
            f"{html.escape(shares.short[i])}</text></g>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _fmt(v: float | None, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}" if abs(v) < 1e5 else f"{v:.3g}"


def report_html(summary: DriftSummary, shares: dict[str, _Shares]) -> str:
    """The self-contained HTML report: no script, no external resource."""
    e = html.escape
    rows = []
    order = sorted(summary.features.items(), key=lambda kv: -(kv[1].psi if kv[1].psi is not None else -1))
    for name, f in order:
        width = 0 if f.psi is None else min(f.psi / (2 * DRIFTED_FROM), 1) * 100
        rows.append(
            f'<tr class="{f.status}"><td>{e(name)}</td><td>{e(f.level)}</td>'
            f'<td class="num">{_fmt(f.psi)}<span class="psi"><span style="width:{width:.0f}%"></span></span></td>'
            f"<td>{f.status}</td><td class=num>{_fmt(f.reference_mean)}</td><td class=num>{_fmt(f.current_mean)}</td>"
            f"<td class=num>{f.reference_missing_share:.1%}</td><td class=num>{f.current_missing_share:.1%}</td></tr>"
        )
    charts = []
    if summary.score is not None and SCORE in shares:
        charts.append(
            f"<figure><figcaption>scores, ranks ≤ {summary.score_ranks} — PSI {_fmt(summary.score.psi)} "
            f"({summary.score.status})</figcaption>{_bars(shares[SCORE])}</figure>"
        )
    for name in summary.flagged:
        f = summary.features[name]
        caption = f"{e(name)} ({e(f.level)}) — PSI {_fmt(f.psi)}"
        charts.append(f"<figure><figcaption>{caption}</figcaption>{_bars(shares[name])}</figure>")
    t = summary.thresholds
    notes = "".join(f"<li>{e(n)}</li>" for n in summary.notes)
    score_line = (
        f"scores (ranks ≤ {summary.score_ranks}): PSI {_fmt(summary.score.psi)}, {summary.score.status}"
        if summary.score is not None
        else "scores: not compared"
    )
    return f"""{_HTML_MARK}
<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>basketcast drift — {e(summary.model_version)}</title>
<style>
body{{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#1f2933}}
table{{border-collapse:collapse}} td,th{{padding:2px 8px;border-bottom:1px solid #e4e7eb;text-align:left}}
td.num{{text-align:right;font-variant-numeric:tabular-nums}}
tr.drifted td{{background:#fde8e8}} tr.moderate td{{background:#fff6e0}}
.psi{{display:inline-block;width:80px;height:8px;background:#eef0f2;margin-left:6px}}
.psi span{{display:block;height:8px;background:#e8772e}}
figure{{display:inline-block;margin:1em 1em 0 0;vertical-align:top}} figcaption{{font-weight:600}}
.legend span{{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px}}
</style></head><body>
<h1>Drift of scored users against the training snapshot</h1>
<p>model {e(summary.model_version)}; reference built {e(summary.reference_created_at)}
in {e(summary.reference_model_version)} ({summary.reference_users:,} users, {summary.reference_rows:,} rows);
scored {summary.scored_users:,} known users ({summary.scored_rows:,} rows, {summary.unknown_users:,} unknown
left out) in {e(summary.scores_file)}; {e(summary.created_at)}.</p>
<p><b>{len(summary.flagged)} of {len(summary.features)} features drifted</b> (PSI ≥ {t.drifted_from}; moderate from
{t.stable_below}); {e(score_line)}.</p>
<ul>{notes}</ul>
<p class="legend">bin shares (each bin labelled by its lower edge):
<span style="background:#9aa5b1"></span>reference <span style="background:#e8772e"></span>current</p>
{"".join(charts)}
<h2>Every feature</h2>
<table><thead><tr><th>feature</th><th>level</th><th>PSI</th><th>status</th><th>reference mean</th><th>current mean</th>
<th>reference missing</th><th>current missing</th></tr></thead><tbody>
{"".join(rows)}
</tbody></table>
<p>PSI = Σ (c − r) ln(c / r) over {t.bins} quantile bins of the reference (one bin per value for whole-number
features with at most {t.max_categories} values) and a missing bin; shares smoothed by ε = {t.epsilon}.</p>
</body></html>
"""


@dataclass
class DriftResult:
    """What :func:`drift_of_scores` did: the summary and its files, or why drift was skipped."""

    summary: DriftSummary | None
    paths: DriftPaths | None
    message: str  # the one line for the command line


def _read_scores(path: Path) -> pl.DataFrame:
    source = str(Path(path) / "part-*.parquet") if Path(path).is_dir() else str(path)
    return pl.read_parquet(source, columns=[S.USER, S.SCORE, S.RANK])


def drift_of_scores(
    model: ServingModel | Path,
    scores: Path,
    out: Path | None = None,
    *,
    force: bool = False,
    names_shown: int = 10,
) -> DriftResult:
    """Compare the users of the scores file (or folder of parts) ``scores`` with the training
    reference of ``model`` (a loaded model, or a run/bundle folder) and write ``drift.json``,
    ``drift.html`` and ``drift.prom`` at :func:`drift_paths` of ``out`` (default: ``scores``).

    A bundle without a reference (older versions) or no scored user known to the snapshot: nothing
    is written, ``message`` says why. Each file replaces only an earlier drift output of the same
    kind unless ``force`` (``basketcast.pipeline.data.publish``).
    """
    snap = _Snapshot.of(model)
    reference, why = load_reference(snap.path)
    if reference is None:
        return DriftResult(None, None, f"drift: skipped — {why}; re-export the run (basketcast export) to add one")
    frame = _read_scores(scores)
    pos = index_of(snap.users, frame[S.USER].to_numpy().astype(np.uint32))
    known_rows = frame.filter(pl.Series(pos >= 0))
    if known_rows.is_empty():
        return DriftResult(None, None, "drift: skipped — no scored user is in the snapshot (all cold start)")
    summary, shares = compare(
        reference,
        snap,
        frame[S.USER].unique().to_numpy(),
        known_rows[S.SCORE].to_numpy(),
        known_rows[S.RANK].to_numpy(),
        scores_file=str(scores),
    )
    paths = drift_paths(Path(out) if out is not None else Path(scores))
    inputs = [snap.path]
    with publishing_file(paths.json, SUMMARY_KIND, force=force, inputs=inputs) as tmp:
        tmp.write_text(summary.model_dump_json(indent=1) + "\n")
    with publishing_file(paths.html, REPORT_KIND, force=force, inputs=inputs) as tmp:
        tmp.write_text(report_html(summary, shares))
    with publishing_file(paths.prom, METRICS_KIND, force=force, inputs=inputs) as tmp:
        tmp.write_bytes(prometheus_text(summary, time.time()))
    return DriftResult(summary, paths, _message(summary, paths, names_shown))


def _message(summary: DriftSummary, paths: DriftPaths, names_shown: int) -> str:
    names: Sequence[str] = summary.flagged
    listed = ", ".join(names[:names_shown]) + (f", … (+{len(names) - names_shown})" if len(names) > names_shown else "")
    score = f"scores PSI {summary.score_psi:.3f}; " if summary.score_psi is not None else ""
    return (
        f"drift: {len(names)} of {len(summary.features)} features drifted (PSI ≥ {DRIFTED_FROM})"
        + (f": {listed}" if names else "")
        + f"; {score}report {paths.html}"
    )
