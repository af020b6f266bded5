"""The CI version of ``make soak`` (benchmarks/soak.py): 60 s of load on a real 2-worker server
with a hot reload every 15 s and one broken bundle published half way."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import soak

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_sixty_seconds_of_load_with_reloads_and_a_broken_bundle_lose_no_request(
    excerpt_run: dict[str, Path],
) -> None:
    result = soak.soak(excerpt_run["run"], duration=60, reload_every=15, workers=2, concurrency=8, loadgen="auto")
    print(soak.report(result))
    assert result.requests > 1000
    assert result.failed == 0
    assert [r.broken for r in result.reloads] == [False, True, False]
    for r in result.reloads:
        assert r.as_expected, r
    assert result.final_version == result.reloads[-1].version_after != result.reloads[0].version_before
