"""Per-stage timings: long work logs each stage as it ends and keeps the figures for a summary."""

from __future__ import annotations

import contextlib
import logging
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

log = logging.getLogger("basketcast")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class Timings:
    """Wall time and peak RSS (after the stage) of each named stage, in order."""

    stages: list[tuple[str, float, float]] = field(default_factory=list)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        log.info("▶ %s …", name)
        start = time.perf_counter()
        yield
        elapsed = time.perf_counter() - start
        rss = peak_rss_mb()
        self.stages.append((name, elapsed, rss))
        log.info("✔ %s: %.1f s (peak RSS %.0f MiB)", name, elapsed, rss)

    @property
    def total(self) -> float:
        return sum(s[1] for s in self.stages)

    def table(self) -> str:
        width = max([len(s[0]) for s in self.stages] + [5])
        rows = [f"{'stage':<{width}}  {'seconds':>8}  {'peak RSS MiB':>12}"]
        rows += [f"{name:<{width}}  {sec:8.1f}  {rss:12.0f}" for name, sec, rss in self.stages]
        rows.append(f"{'total':<{width}}  {self.total:8.1f}  {peak_rss_mb():12.0f}")
        return "\n".join(rows)

    def as_dict(self) -> dict[str, float]:
        return {name: round(sec, 3) for name, sec, _ in self.stages}
