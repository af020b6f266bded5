"""Per-stage timings: long work logs each stage as it ends and keeps the figures for a summary.

Each stage's peak RSS is its own: on Linux the kernel's high-water mark (VmHWM) is reset when a
stage starts (``/proc/self/clear_refs``) and read when it ends. Elsewhere the figure is the
process's peak so far. ``overall_peak_rss_mb`` is the peak of the whole process either way.
"""

from __future__ import annotations

import contextlib
import logging
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("basketcast")

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_max_seen_mb = 0.0  # the highest high-water mark read before any reset


def _hwm_mb() -> float | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """Peak resident memory since the last :func:`reset_peak_rss` (or process start), in MiB."""
    global _max_seen_mb
    hwm = _hwm_mb()
    if hwm is None:
        hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    _max_seen_mb = max(_max_seen_mb, hwm)
    return hwm


def reset_peak_rss() -> None:
    """Start a new peak-RSS window (Linux ≥ 4.0); a no-op where the kernel does not offer it."""
    peak_rss_mb()  # remember the peak so far for overall_peak_rss_mb
    with contextlib.suppress(OSError):
        _CLEAR_REFS.write_text("5")


def overall_peak_rss_mb() -> float:
    """Peak resident memory of the whole process so far, in MiB."""
    return max(peak_rss_mb(), _max_seen_mb)


@dataclass
class Timings:
    """Wall time and peak RSS of each named stage, in order."""

    stages: list[tuple[str, float, float]] = field(default_factory=list)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        log.info("▶ %s …", name)
        reset_peak_rss()
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
        rows.append(f"{'total':<{width}}  {self.total:8.1f}  {overall_peak_rss_mb():12.0f}")
        return "\n".join(rows)

    def as_dict(self) -> dict[str, float]:
        return {name: round(sec, 3) for name, sec, _ in self.stages}


@contextlib.contextmanager
def bar(total: int, desc: str) -> Iterator[Callable[[int, str], None]]:
    """A progress bar on stderr (shown on a terminal only); yields ``advance(n, status)``."""
    import sys

    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit="rows", leave=False, disable=None, file=sys.stderr) as progress:

        def advance(n: int, status: str) -> None:
            progress.update(n)
            progress.set_postfix_str(status, refresh=False)

        yield advance
