"""Where the dashboard's numbers are weak, it says so: one sentence per caveat, by page section.

A shop reading the page should not take a chance difference for a result, a ranker that loses to
a simple method for a win, or overlapping segments for distinct customer types. ``caveats`` finds
those cases from the run's own numbers:

- **model**: the held-out set is small (under ``SMALL_HELD_OUT`` users); the ranker's lead over
  the best baseline is not distinguishable from chance (its paired bootstrap interval, over the
  same held-out users, includes 0); a baseline scores at least as high as the ranker;
- **segments**: the best silhouette is under ``WEAK_SILHOUETTE`` (Kaufman and Rousseeuw's bar for
  "no substantial structure"); a segment holds fewer than ``FEW_IN_SEGMENT`` held-out users, so
  its model quality bar is noisy.

The page shows each as a highlighted note at the top of its section (``sections.caveat_box``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import polars as pl

from basketcast.pipeline.dashboard import segments as G
from basketcast.pipeline.evaluation.bootstrap import Difference
from basketcast.pipeline.evaluation.evaluate import BASELINES, RANKER
from basketcast.pipeline.evaluation.figures import method_label

SMALL_HELD_OUT: Final = 1_000  # fewer held-out users than this: differences of ~0.01 NDCG@10 are noise
WEAK_SILHOUETTE: Final = 0.25  # below this, k-means found no substantial structure (Kaufman & Rousseeuw)
FEW_IN_SEGMENT: Final = 50  # held-out users of a segment below this: its quality bar is noisy
METRIC: Final = "ndcg@10"


def model_caveats(
    methods: Mapping[str, Mapping[str, float]], users: int, lead: Difference | None, baseline: str
) -> list[str]:
    """Caveats of the model section: ``methods`` the report's method → metric → mean, ``users`` the
    held-out users, ``lead`` the paired bootstrap of ranker − ``baseline`` NDCG@10 per held-out user
    (None when it could not be computed)."""
    out: list[str] = []
    if users < SMALL_HELD_OUT:
        out.append(
            f"Only {users:,} held-out shoppers: differences between methods of about 0.01 may be chance. "
            "Read the ranking of methods with care."
        )
    ranker = methods[RANKER][METRIC]
    level = {b: methods[b][METRIC] for b in BASELINES if b in methods}
    better = sorted((b for b, v in level.items() if v >= ranker), key=lambda b: -level[b])
    if better:
        names = ", ".join(f"{method_label(b)} ({level[b]:.3f})" for b in better)
        out.append(
            f"The ranker does not beat every simple method: {names} scores at least as high as the ranker "
            f"({ranker:.3f} NDCG@10). On this data the ranker adds nothing over it."
        )
    elif lead is not None and lead.low <= 0.0:
        out.append(
            f"The ranker's lead over {method_label(baseline)} ({lead.mean:+.4f} NDCG@10, 95% interval "
            f"{lead.low:+.4f} to {lead.high:+.4f} over the same held-out shoppers) is not distinguishable "
            "from chance."
        )
    return out


def segment_caveats(seg: G.Segmentation, quality: pl.DataFrame | None) -> list[str]:
    """Caveats of the segments section: weak structure, and segments with few held-out users
    (``quality``: ``report.segment_quality``, None when it is left out)."""
    out: list[str] = []
    best = seg.silhouette[seg.k]
    if best < WEAK_SILHOUETTE:
        out.append(
            f"The segments overlap: silhouette {best:.2f} (1 = clearly separate groups, 0 = none; below "
            f"{WEAK_SILHOUETTE:.2f} the structure is weak). Read them as rough tendencies, not distinct "
            "customer types."
        )
    if quality is not None:
        few = [(int(s), int(n)) for s, n in quality.select(G.SEGMENT, G.USERS).iter_rows() if n < FEW_IN_SEGMENT]
        if few:
            listed = ", ".join(f"segment {s} ({n})" for s, n in few)
            out.append(
                f"Few held-out shoppers in {listed}: the model quality shown for "
                f"{'it' if len(few) == 1 else 'them'} is noisy."
            )
    return out
