"""Features of the target order known only when predicting it: day, hour, days since the
previous order — and the user × product features that depend on them.

Written once, in NumPy, and used by training, batch prediction and the online server alike, so
request-time features cannot drift from the ones the ranker was trained on. Unknown context
is NaN, and so is everything derived from it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from basketcast.pipeline.data import schema as S

FEATURES = (
    "ctx_dow",
    "ctx_hour",
    "ctx_days_prior",
    "ctx_days_ratio",
    "ctx_hour_gap",
    "up_days_since_last",
    "up_gap_ratio",
)
# Columns of the base feature rows that the context features are derived from.
INPUTS = (S.U_DAYS_MEAN, S.U_HOUR_MEAN, S.UP_DAYS_BEFORE_LAST, S.UP_MEAN_GAP_DAYS)


def context_features(
    base: Mapping[str, np.ndarray], dow: npt.ArrayLike, hour: npt.ArrayLike, days: npt.ArrayLike
) -> dict[str, np.ndarray]:
    """Compute FEATURES for n candidate rows.

    ``base`` maps each name in INPUTS to a float32 array of n values; ``dow``, ``hour``,
    ``days`` are the target order's context per row (float32, n values, NaN when unknown;
    scalars broadcast). Returns FEATURES → float32 arrays of n values.
    """
    n = len(base[INPUTS[0]])
    dow_ = np.broadcast_to(np.asarray(dow, dtype=np.float32), (n,))
    hour_ = np.broadcast_to(np.asarray(hour, dtype=np.float32), (n,))
    days_ = np.broadcast_to(np.asarray(days, dtype=np.float32), (n,))
    with np.errstate(divide="ignore", invalid="ignore"):
        since_last = base[S.UP_DAYS_BEFORE_LAST] + days_
        out = {
            "ctx_dow": dow_,
            "ctx_hour": hour_,
            "ctx_days_prior": days_,
            "ctx_days_ratio": days_ / np.maximum(base[S.U_DAYS_MEAN], 1.0),
            "ctx_hour_gap": np.abs(hour_ - base[S.U_HOUR_MEAN]),
            "up_days_since_last": since_last,
            "up_gap_ratio": since_last / np.maximum(base[S.UP_MEAN_GAP_DAYS], 1.0),
        }
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}
