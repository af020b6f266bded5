"""Customer segments: k-means on standardised behavioural features, k chosen by silhouette.

``segment_users(data)`` describes every user by how they shop — how many orders and how often,
basket size, reorder ratio, weekend and time-of-day habits, and their department mix (shares of
the largest departments) — standardises those features (counts on a log scale first), fits
k-means for every k of a range and keeps the k with the best silhouette (on a seeded subsample;
every score is reported). Segments are numbered 1..k by size, largest first, and each gets a name
and a sentence generated from the data: the features where its centroid lies furthest from the
average user, in standard deviations, turned into words that state each measurement ("Big
baskets, few orders so far, more produce"). Everything is seeded: the same data and config give the same labels.

``write_labels`` publishes the labels (user_id, segment, segment_name) as Parquet, atomically.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from basketcast.pipeline.dashboard.insights import WEEKEND_DOWS
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.describe import reorder_rate
from basketcast.pipeline.data.publish import Kind, parquet_with_columns, publish_bytes
from basketcast.pipeline.data.storage import Dataset
from basketcast.pipeline.errors import DataError

log = logging.getLogger(__name__)

# Output columns.
SEGMENT: Final = "segment"  # 1..k, 1 = the largest segment
SEGMENT_NAME: Final = "segment_name"
USERS: Final = "users"
SHARE: Final = "share"
DESCRIPTION: Final = "description"

# Behavioural features (one row per user).
ORDERS: Final = "orders"  # orders placed (test orders included)
DAYS_BETWEEN: Final = "days_between"  # mean days since the previous order
BASKET: Final = "basket_size"  # mean products per order with known contents
REORDER_RATIO: Final = "reorder_ratio"  # reordered share of the lines of orders after the first
WEEKEND_SHARE: Final = "weekend_share"  # share of orders on the weekend-like peak days (insights.WEEKEND_DOWS)
MEAN_HOUR: Final = "mean_hour"  # mean hour of day of the orders
DEPT_PREFIX: Final = "dept:"  # + department name: share of the user's lines in that department
BASE_FEATURES: Final = (ORDERS, DAYS_BETWEEN, BASKET, REORDER_RATIO, WEEKEND_SHARE, MEAN_HOUR)
LOG_FEATURES: Final = (ORDERS, BASKET)  # heavy right tails: clustered as log1p
DEPT_LIFT: Final = 1.25  # a profile names the department most over-represented if at least this much

# What a segment's name says when its mean is above / below the average user on a feature (None:
# nothing). Each phrase states the measurement itself ("few orders so far", not "new"), and a name
# holds at most one phrase per feature, so no two words of a name can contradict each other.
TRAITS: Final[dict[str, tuple[str | None, str | None]]] = {
    ORDERS: ("many orders", "few orders so far"),
    DAYS_BETWEEN: ("long gaps between orders", "short gaps between orders"),
    BASKET: ("big baskets", "small baskets"),
    REORDER_RATIO: ("mostly rebuys", "mostly new items"),
    WEEKEND_SHARE: ("more weekend orders", "fewer weekend orders"),
    MEAN_HOUR: ("later in the day", "earlier in the day"),
}
FEATURE_LABELS: Final[dict[str, str]] = {
    ORDERS: "orders placed",
    DAYS_BETWEEN: "days between orders",
    BASKET: "basket size",
    REORDER_RATIO: "share of items rebought",
    WEEKEND_SHARE: "orders on Sun/Mon",
    MEAN_HOUR: "usual hour",
}


class SegmentConfig(BaseModel):
    """How users are segmented (defaults suit 100 to 200,000 users)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Silhouette nearly always prefers k = 2 on behavioural data (a "regulars vs the rest" split);
    # three or more segments are what a business can act on, so the search starts at 3.
    k_min: int = Field(default=3, ge=2, description="smallest number of segments tried")
    k_max: int = Field(default=8, ge=2, description="largest number of segments tried")
    top_departments: int = Field(default=6, ge=0, description="department-share features: the largest departments")
    fit_users: int = Field(default=50_000, ge=10, description="k-means is fitted on at most this many users (seeded)")
    silhouette_users: int = Field(default=4_000, ge=10, description="silhouette scored on at most this many users")
    n_init: int = Field(default=10, ge=1, description="k-means restarts per k")
    department_weight: float = Field(
        default=2.0, ge=0, description="the department shares together weigh as this many features"
    )
    trait_threshold: float = Field(default=0.4, gt=0, description="|z| from which a feature is named in a profile")
    seed: int = 42

    @model_validator(mode="after")
    def _k_range(self) -> SegmentConfig:
        if self.k_max < self.k_min:
            raise ValueError(f"k_max ({self.k_max}) is below k_min ({self.k_min})")
        return self


@dataclass(frozen=True)
class Segmentation:
    """The result of :func:`segment_users`.

    - ``features``: USER + the behavioural features (raw values, one row per user, sorted by user);
    - ``labels``: USER, SEGMENT (UInt8, 1..k), SEGMENT_NAME; one row per user, sorted by user;
    - ``profiles``: one row per segment (1..k): SEGMENT, SEGMENT_NAME, USERS, SHARE, DESCRIPTION and
      the segment's mean of every feature (raw units);
    - ``zscores``: SEGMENT + every feature: the segment's mean in standard deviations from the mean
      user, on the scale the clustering saw (log for LOG_FEATURES);
    - ``k``: the number of segments; ``silhouette``: the score of every k tried.
    """

    features: pl.DataFrame
    labels: pl.DataFrame
    profiles: pl.DataFrame
    zscores: pl.DataFrame
    k: int
    silhouette: dict[int, float]
    feature_names: tuple[str, ...]


def department_feature(name: str) -> str:
    return f"{DEPT_PREFIX}{name}"


def behaviour(data: Dataset, top_departments: int = 6) -> pl.DataFrame:
    """One row per user with at least one order: USER + BASE_FEATURES + department shares.

    Department shares are added for the ``top_departments`` departments with the most lines, and
    only when the lines span at least two departments (a placeholder catalogue has one). A
    statistic a user lacks (days between orders with a single order, reorder ratio without a second
    order with products) is filled with the median user's value.
    """
    orders = data.orders
    per_order = orders.group_by(S.USER).agg(
        pl.len().cast(pl.Float64).alias(ORDERS),
        pl.col(S.DAYS_PRIOR).cast(pl.Float64).mean().alias(DAYS_BETWEEN),
        pl.col(S.DOW).is_in(list(WEEKEND_DOWS)).cast(pl.Float64).mean().alias(WEEKEND_SHARE),
        pl.col(S.HOUR).cast(pl.Float64).mean().alias(MEAN_HOUR),
    )
    lines = data.order_products.select(S.ORDER, S.PRODUCT, S.REORDERED).join(
        orders.select(S.ORDER, S.USER, S.ORDER_NUMBER), on=S.ORDER, how="inner"
    )
    per_line = lines.group_by(S.USER).agg(
        (pl.len() / pl.col(S.ORDER).n_unique()).cast(pl.Float64).alias(BASKET),
        # The user's first order cannot hold a reorder: left out, so few orders do not read as "exploring".
        reorder_rate(where=pl.col(S.ORDER_NUMBER) > 1).alias(REORDER_RATIO),
    )
    frame = per_order.join(per_line, on=S.USER, how="left")
    dept_lines = lines.join(data.products.select(S.PRODUCT, S.DEPARTMENT), on=S.PRODUCT, how="left").join(
        data.departments, on=S.DEPARTMENT, how="left"
    )
    volume = (
        dept_lines.group_by(S.DEPARTMENT_NAME)
        .len()
        .drop_nulls()
        .sort(["len", S.DEPARTMENT_NAME], descending=[True, False])
    )
    if volume.height >= 2 and top_departments > 0:
        top = volume[S.DEPARTMENT_NAME].head(top_departments).to_list()
        shares = dept_lines.group_by(S.USER).agg(
            [
                (pl.col(S.DEPARTMENT_NAME) == name).cast(pl.Float64).mean().alias(department_feature(name))
                for name in top
            ]
        )
        frame = frame.join(shares, on=S.USER, how="left")
    features = [c for c in frame.columns if c != S.USER]
    frame = frame.with_columns(
        [pl.col(c).fill_nan(None).fill_null(pl.col(c).median()).fill_null(0.0) for c in features]
    )
    return frame.select(pl.col(S.USER), *features).sort(S.USER)


def _design(features: pl.DataFrame) -> tuple[np.ndarray, tuple[str, ...]]:
    """The clustering matrix (log1p on LOG_FEATURES) before scaling, and its column names."""
    names = tuple(c for c in features.columns if c != S.USER)
    X = np.column_stack(
        [np.log1p(features[c].to_numpy()) if c in LOG_FEATURES else features[c].to_numpy() for c in names]
    ).astype(np.float64)
    return X, names


def segment_users(data: Dataset, config: SegmentConfig | None = None) -> Segmentation:
    """Segment every user of ``data`` (see the module doc). Raises DataError with fewer than 3 users."""
    from sklearn.preprocessing import StandardScaler

    config = config or SegmentConfig()
    features = behaviour(data, config.top_departments)
    n = features.height
    if n < 3:
        raise DataError(f"segmenting needs at least 3 users with orders, the data has {n}")
    X_raw, names = _design(features)
    X = StandardScaler().fit_transform(X_raw)
    # The department shares are one block: weighted so that, together, they count as
    # ``department_weight`` features, and a many-department catalogue does not drown the behaviour.
    dept = np.array([c.startswith(DEPT_PREFIX) for c in names])
    weights = np.ones(len(names))
    if dept.any():
        weights[dept] = math.sqrt(config.department_weight / dept.sum())
    Xw = X * weights
    model, scores = _best_kmeans(Xw, config)
    segment, k = _number_by_size(model.predict(Xw), model.n_clusters)
    profiles, zscores = _profiles(features, X, names, segment, k, config.trait_threshold)
    labels = (
        pl.DataFrame({S.USER: features[S.USER], SEGMENT: pl.Series(segment, dtype=pl.UInt8)})
        .join(profiles.select(SEGMENT, SEGMENT_NAME), on=SEGMENT, how="left")
        .sort(S.USER)
    )
    return Segmentation(
        features=features,
        labels=labels,
        profiles=profiles,
        zscores=zscores,
        k=k,
        silhouette=scores,
        feature_names=names,
    )


def _best_kmeans(Xw: np.ndarray, config: SegmentConfig) -> tuple[Any, dict[int, float]]:
    """k-means for every k of the config's range on a seeded subsample of the (weighted, standardised)
    rows, each scored by silhouette on a smaller subsample: the model of the best k (ties: the smaller
    k) and every score."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score
    from threadpoolctl import threadpool_limits

    n = Xw.shape[0]
    rng = np.random.default_rng(config.seed)
    fit_idx = np.sort(rng.permutation(n)[: config.fit_users])
    sil_idx = np.sort(rng.permutation(fit_idx.size)[: config.silhouette_users])
    X_fit = Xw[fit_idx]
    ks = [k for k in range(config.k_min, config.k_max + 1) if k < min(fit_idx.size, sil_idx.size)]
    if not ks:
        raise DataError(f"segmenting {n} users: no k in {config.k_min}..{config.k_max} is below the number of users")
    scores: dict[int, float] = {}
    models = {}
    for k in ks:
        # One thread: sklearn's OpenMP k-means on small data is ~100x slower with two (oversubscription).
        with threadpool_limits(1):
            model = KMeans(n_clusters=k, n_init=config.n_init, random_state=config.seed).fit(X_fit)
        sample_labels = model.labels_[sil_idx]
        if np.unique(sample_labels).size < 2:
            scores[k] = -1.0  # a subsample inside one cluster scores nothing
        else:
            scores[k] = float(silhouette_score(X_fit[sil_idx], sample_labels))
        models[k] = model
        log.debug("k=%d: silhouette %.4f", k, scores[k])
    best = max(ks, key=lambda c: (round(scores[c], 6), -c))  # ties: the smaller k
    return models[best], scores


def _number_by_size(raw_labels: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    """Segments numbered by size (largest = 1), ties by k-means label: deterministic and readable.
    Returns the segment of every row (UInt8) and the number of segments that won a row (a centroid
    fitted on a subsample could, in principle, win none)."""
    sizes = np.bincount(raw_labels, minlength=k)
    order = sorted((c for c in range(k) if sizes[c] > 0), key=lambda c: (-sizes[c], c))
    relabel = np.zeros(k, dtype=np.uint8)
    relabel[order] = np.arange(1, len(order) + 1, dtype=np.uint8)
    return relabel[raw_labels], len(order)


def _profiles(
    features: pl.DataFrame, X: np.ndarray, names: tuple[str, ...], segment: np.ndarray, k: int, threshold: float
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(profiles, zscores) of the segments 1..k (see :class:`Segmentation`)."""
    n = features.height
    zscores = pl.DataFrame({SEGMENT: np.arange(1, k + 1, dtype=np.uint8)}).with_columns(
        [pl.Series(name, [float(X[segment == s, j].mean()) for s in range(1, k + 1)]) for j, name in enumerate(names)]
    )
    means = (
        features.with_columns(pl.Series(SEGMENT, segment))
        .group_by(SEGMENT)
        .agg(pl.len().cast(pl.UInt32).alias(USERS), *[pl.col(c).mean() for c in names])
        .sort(SEGMENT)
    )
    overall = {c: float(features[c].mean()) for c in names}  # type: ignore[arg-type]
    texts = [
        _describe(row, zrow, overall, n, threshold)
        for row, zrow in zip(means.iter_rows(named=True), zscores.iter_rows(named=True), strict=True)
    ]
    profiles = means.with_columns(
        pl.Series(SEGMENT_NAME, _unique([t[0] for t in texts])),
        (pl.col(USERS) / n).alias(SHARE),
        pl.Series(DESCRIPTION, [t[1] for t in texts]),
    ).select(SEGMENT, SEGMENT_NAME, USERS, SHARE, DESCRIPTION, *names)
    return profiles, zscores


def _traits(z: dict[str, float], threshold: float, most: int = 3) -> list[str]:
    """Words for the features furthest from the average user (|z| ≥ threshold), strongest first."""
    out: list[str] = []
    for name, value in sorted(((c, v) for c, v in z.items() if c != SEGMENT), key=lambda cv: (-abs(cv[1]), cv[0])):
        if abs(value) < threshold or len(out) == most:
            break
        if name.startswith(DEPT_PREFIX):
            word = f"more {name.removeprefix(DEPT_PREFIX)}" if value > 0 else None
        else:
            high, low = TRAITS[name]
            word = high if value > 0 else low
        if word:
            out.append(word)
    return out


def _describe(
    means: dict[str, float], z: dict[str, float], overall: dict[str, float], n_users: int, threshold: float
) -> tuple[str, str]:
    """(name, one-sentence profile) of a segment, from its means, z-scores and the overall means."""
    traits = _traits(z, threshold)
    name = ", ".join(traits) if traits else "close to the average shopper"
    name = name[0].upper() + name[1:]
    parts = [
        f"{means[USERS] / n_users:.0%} of users ({means[USERS]:,})",
        f"basket {means[BASKET]:.1f} items",
        f"an order every {means[DAYS_BETWEEN]:.1f} days",
        f"{means[ORDERS]:.0f} orders on average",
        f"{means[REORDER_RATIO]:.0%} of items rebought",
        f"{means[WEEKEND_SHARE]:.0%} of orders on Sunday or Monday (the weekend peak)",
        f"ordering at {means[MEAN_HOUR]:.0f}h on average",
    ]
    depts = [c for c in means if c.startswith(DEPT_PREFIX)]
    if depts:
        lift = {c: means[c] / overall[c] if overall[c] > 0 else math.nan for c in depts}
        best = max(depts, key=lambda c: (np.nan_to_num(lift[c], nan=-1.0), c))
        if lift[best] >= DEPT_LIFT:
            parts.append(
                f"{best.removeprefix(DEPT_PREFIX)} {means[best]:.0%} of items (vs {overall[best]:.0%} for all users)"
            )
    return name, f"{name}: " + ", ".join(parts) + "."


def _unique(names: list[str]) -> list[str]:
    """Distinct names: a repeated one gets its segment number."""
    seen: dict[str, int] = {}
    for name in names:
        seen[name] = seen.get(name, 0) + 1
    return [f"{name} ({i})" if seen[name] > 1 else name for i, name in enumerate(names, start=1)]


def labels_bytes(labels: pl.DataFrame) -> bytes:
    """The labels as Parquet bytes (USER, SEGMENT, SEGMENT_NAME)."""
    buf = io.BytesIO()
    labels.select(S.USER, SEGMENT, SEGMENT_NAME).write_parquet(buf, compression="zstd")
    return buf.getvalue()


SEGMENT_LABELS = Kind(
    "segment labels file (Parquet)", folder=False, recognise=parquet_with_columns((S.USER, SEGMENT, SEGMENT_NAME))
)


def write_labels(segmentation: Segmentation, path: Path, *, force: bool = False, inputs: Iterable[Path] = ()) -> None:
    """Publish the labels as Parquet at ``path`` (temporary file + rename: never half-written;
    see ``basketcast.pipeline.data.publish`` for ``force`` and ``inputs``)."""
    publish_bytes(Path(path), labels_bytes(segmentation.labels), SEGMENT_LABELS, force=force, inputs=inputs)
