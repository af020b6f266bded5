"""Drift of batch-scored users, end to end with the real CLI: train on synthetic data A, re-export
the run on other shoppers of the same shop (B, seed 2) and on the same shoppers with a deliberate
shift of their last 90 days (B', bigger baskets and purchases moved to the frozen department),
score each and read the drift outputs.

What the control (B) flags: ``als_score`` alone, and it is right to. The re-export folds B's
shoppers into the run's ALS (their factors solved from their own histories), and a shopper the
400-user ALS was not fitted on gets much lower scores than the ones it was fitted on (in-sample
factors overfit their own baskets; PSI ≈ 2.4) — a real train/serve difference that the monitor
exists to show. Every other feature of B stays below the moderate threshold.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from basketcast.serving.bundle import BUNDLE, DRIFT_REFERENCE, MANIFEST
from basketcast.serving.drift import DriftSummary

pytestmark = pytest.mark.integration

USERS = "400"
CONFIG = {
    "mlflow": False,
    "lightgbm": {"n_estimators": 150},
    "xgboost": {"enabled": False},
    "windows": {"extra_windows": 1},
}
SHIFT = ("--shift-days", "90", "--shift-basket-size", "2", "--shift-department", "frozen")
# What the shift changes (basket sizes; the candidates' departments) and what it leaves alone
# (when and how often the shoppers order).
SHIFTED = ("u_basket_mean", "u_basket_last", "u_distinct_products", "p_department")
UNRELATED = (
    "u_orders",
    "u_days_mean",
    "u_days_std",
    "u_days_last",
    "u_span_days",
    "u_hour_mean",
    "u_hour_std",
    "u_weekend_share",
)
LINE = re.compile(
    r"^drift: (?P<n>\d+) of (?P<m>\d+) features drifted \(PSI ≥ 0\.25\)(?:: (?P<names>[^;]+))?; "
    r"scores PSI (?P<score>[\d.]+); report (?P<html>\S+)$",
    re.M,
)


def bc(*args: str | Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("basketcast")
    env = {**os.environ, "BASKETCAST_TRACKING": "none"}
    result = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, env=env, timeout=600)
    if ok:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def summary_of(scores: Path) -> DriftSummary:
    return DriftSummary.model_validate_json(scores.with_name(scores.stem + ".drift.json").read_bytes())


def bundle_version(run: Path) -> str:
    return str(json.loads((run / BUNDLE / MANIFEST).read_text())["version"])


@pytest.fixture(scope="module")
def drift(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Train on A; export on B and score; export on B' and score (the same run folder in turn)."""
    root = tmp_path_factory.mktemp("drift")
    config = root / "config.json"
    config.write_text(json.dumps(CONFIG))
    bc("generate", "--users", USERS, "--seed", "1", "--out", root / "A")
    bc("generate", "--users", USERS, "--seed", "2", "--catalog-seed", "1", "--out", root / "B")
    bc("generate", "--users", USERS, "--seed", "2", "--catalog-seed", "1", *SHIFT, "--out", root / "B-shifted")
    run = root / "run"
    bc("train", "--data", root / "A", "--out", run, "--config", config)
    trained = bundle_version(run)
    shutil.copytree(run, root / "run-as-trained")  # for the test of a bundle without reference
    out: dict[str, object] = {"root": root, "run": run, "trained": trained}
    for name, data in (("control", root / "B"), ("shifted", root / "B-shifted")):
        bc("export", "--model", run, "--data", data)
        scores = root / f"{name}.parquet"
        # a fixed context, so that the scores compare like for like (the reference's: REFERENCE_CONTEXT)
        out[name] = bc("score", "--model", run, "--out", scores, "--dow", "0", "--hour", "10").stdout
        out[f"{name}_summary"] = summary_of(scores)
    return out


def test_the_training_bundle_holds_the_reference(drift: dict[str, object]) -> None:
    reference = json.loads((Path(str(drift["root"])) / "run-as-trained" / BUNDLE / DRIFT_REFERENCE).read_text())
    manifest = json.loads((Path(str(drift["root"])) / "run-as-trained" / BUNDLE / MANIFEST).read_text())
    assert reference["model_version"] == drift["trained"] == manifest["version"]
    assert reference["users"] == int(USERS) and reference["rows"] == manifest["rows"]
    assert [f["name"] for f in reference["features"]] == manifest["base_features"]
    assert sum(reference["score"]["counts_by_rank"][0]) == int(USERS)  # every user's best candidate


def test_other_shoppers_of_the_same_shop_flag_only_als_score(drift: dict[str, object]) -> None:
    s = drift["control_summary"]
    assert isinstance(s, DriftSummary)
    line = LINE.search(str(drift["control"]))
    assert line is not None, drift["control"]
    assert (int(line["n"]), int(line["m"]), line["names"]) == (1, len(s.features), "als_score")
    assert s.flagged == ["als_score"]  # see the module doc
    others = {n: f.psi or 0.0 for n, f in s.features.items() if n != "als_score"}
    assert max(others.values()) < 0.1, sorted(others.items(), key=lambda kv: -kv[1])[:5]
    assert s.score is not None and s.score.status != "drifted"
    # the reference is the training data's, though the bundle was rebuilt on B
    assert s.reference_model_version == drift["trained"] != s.model_version
    assert (s.scored_users, s.reference_users, s.unknown_users, s.score_ranks) == (400, 400, 0, 20)


def test_each_scoring_adds_its_summary_to_the_runs_drift_history(drift: dict[str, object]) -> None:
    history = Path(str(drift["run"])) / "monitoring" / "drift-history.jsonl"
    lines = [DriftSummary.model_validate_json(line) for line in history.read_text().splitlines()]
    # The module's fixture scored the control, then the shifted data (later tests add more lines).
    assert [line.flagged for line in lines[:2]] == [
        drift["control_summary"].flagged,  # type: ignore[attr-defined]
        drift["shifted_summary"].flagged,  # type: ignore[attr-defined]
    ]
    assert lines[0] == drift["control_summary"] and lines[1] == drift["shifted_summary"]


def test_the_shift_is_flagged_and_what_it_does_not_touch_is_not(drift: dict[str, object]) -> None:
    s, control = drift["shifted_summary"], drift["control_summary"]
    assert isinstance(s, DriftSummary) and isinstance(control, DriftSummary)
    line = LINE.search(str(drift["shifted"]))
    assert line is not None and int(line["n"]) == len(s.flagged)
    flagged = set(s.flagged)
    assert set(SHIFTED) <= flagged, {n: s.features[n].psi for n in SHIFTED}
    assert not flagged & set(UNRELATED)
    assert all((s.features[n].psi or 0) < 0.1 for n in UNRELATED), {n: s.features[n].psi for n in UNRELATED}
    basket = s.features["u_basket_mean"]
    assert basket.current_mean is not None and basket.reference_mean is not None
    assert basket.current_mean > 1.3 * basket.reference_mean
    # carried over a second time: still the training reference
    assert s.reference_model_version == drift["trained"]
    assert s.score is not None and control.score is not None and (s.score.psi or 0) > (control.score.psi or 0)


def test_html_and_prom_files_exist_and_parse(drift: dict[str, object]) -> None:
    root = Path(str(drift["root"]))
    s = drift["shifted_summary"]
    assert isinstance(s, DriftSummary)
    page = (root / "shifted.drift.html").read_text()
    assert "<script" not in page and not re.search(r"(src|href)=\"?https?:", page)
    assert page.count("<svg") == len(s.flagged) + 1  # every flagged feature and the scores
    families = {f.name: f for f in text_string_to_metric_families((root / "shifted.drift.prom").read_text())}
    psi = {x.labels["feature"]: x.value for x in families["basketcast_drift_psi"].samples}
    assert set(psi) == set(s.features)
    assert psi["p_department"] == pytest.approx(s.features["p_department"].psi)
    assert families["basketcast_drift_flagged_features"].samples[0].value == len(s.flagged)
    assert families["basketcast_drift_scored_users"].samples[0].value == 400
    assert {x.labels["model_version"] for f in families.values() for x in f.samples} == {s.model_version}
    assert families["basketcast_drift_last_run_timestamp_seconds"].samples[0].value > 1.7e9


def test_rescoring_replaces_the_outputs_and_no_drift_writes_none(drift: dict[str, object]) -> None:
    root, run = Path(str(drift["root"])), Path(str(drift["run"]))
    scores = root / "shifted.parquet"
    files = [root / f"shifted.drift.{ext}" for ext in ("json", "html", "prom")]
    before = {p: p.stat().st_ino for p in files}
    (root / "shifted.drift.html").write_text("not ours")  # --force replaces even a foreign file
    bc("score", "--model", run, "--out", scores, "--dow", "0", "--hour", "10", "--force")
    assert all(p.stat().st_ino != ino for p, ino in before.items())
    assert "basketcast drift report" in (root / "shifted.drift.html").read_text()
    assert not [p.name for p in root.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    result = bc("score", "--model", run, "--out", root / "quiet.parquet", "--no-drift")
    assert not [line for line in result.stdout.splitlines() if line.startswith("drift:")]
    assert not list(root.glob("quiet.drift.*"))


def test_a_bundle_without_reference_scores_with_a_notice(drift: dict[str, object]) -> None:
    root = Path(str(drift["root"]))
    old = root / "run-as-trained"
    (old / BUNDLE / DRIFT_REFERENCE).unlink()  # as a bundle of an older version
    result = bc("score", "--model", old, "--out", root / "old.parquet")
    assert (root / "old.parquet").is_file() and not list(root.glob("old.drift.*"))
    notices = [line for line in result.stdout.splitlines() if line.startswith("drift:")]
    assert len(notices) == 1 and notices[0].startswith("drift: skipped — ") and "no drift reference" in notices[0]
    # Exported on other data it still has none (there is no training reference to carry) …
    result = bc("export", "--model", old, "--data", root / "B")
    assert "no drift reference" in result.stderr and not (old / BUNDLE / DRIFT_REFERENCE).exists()
    # … and exported on its training data it gets one.
    bc("export", "--model", old)
    reference = json.loads((old / BUNDLE / DRIFT_REFERENCE).read_text())
    assert reference["model_version"] == bundle_version(old)


def test_a_folder_of_parts_from_a_cluster_gets_its_outputs_inside(drift: dict[str, object]) -> None:
    root, run = Path(str(drift["root"])), Path(str(drift["run"]))
    out = root / "parts"
    result = bc("score", "--model", run, "--out", out, "--cluster", "local:1", "--partitions", "2", "--dow", "0")
    line = LINE.search(result.stdout)
    assert line is not None and line["html"] == str(out / "drift.html"), result.stdout
    s = DriftSummary.model_validate_json((out / "drift.json").read_bytes())
    assert s.scored_users == 400 and (out / "drift.prom").is_file()


def test_the_generator_shift_changes_only_the_last_days_baskets() -> None:
    import polars as pl

    from basketcast.pipeline.data import schema as S
    from basketcast.pipeline.data.generate import GeneratorConfig, generate
    from basketcast.pipeline.data.storage import Dataset

    plain = generate(300, 5)
    assert generate(300, 5, GeneratorConfig(shift_days=30), catalog_seed=5).orders.equals(plain.orders)  # no-op
    assert generate(300, 6, catalog_seed=5).products.equals(plain.products)  # the shop of seed 5
    shifted = generate(300, 5, GeneratorConfig(shift_days=30, shift_basket_size=2.0, shift_department="frozen"))
    assert shifted.orders.equals(plain.orders)  # the timing is untouched
    day = pl.col(S.DAYS_PRIOR).fill_null(0).cum_sum().over(S.USER)
    window = (
        plain.orders.sort(S.USER, S.ORDER_NUMBER)
        .with_columns(day.alias("day"))
        .select(S.ORDER, (pl.col("day").max().over(S.USER) - pl.col("day") < 30).alias("shifted"))
    )

    def baskets(data: Dataset, in_window: bool) -> pl.DataFrame:
        lines = data.order_products.join(window, on=S.ORDER).filter(pl.col("shifted") == in_window)
        lines = lines.join(data.products.select(S.PRODUCT, S.DEPARTMENT), on=S.PRODUCT)
        return lines.group_by(S.ORDER).agg(pl.col(S.PRODUCT).sort(), (pl.col(S.DEPARTMENT) == 1).sum().alias("frozen"))

    assert baskets(shifted, False).sort(S.ORDER).equals(baskets(plain, False).sort(S.ORDER))
    before, after = baskets(plain, True), baskets(shifted, True)
    n_before, n_after = int(before[S.PRODUCT].list.len().sum()), int(after[S.PRODUCT].list.len().sum())
    assert 1.7 * n_before < n_after < 2.1 * n_before  # twice the products, less the repeats merged
    assert int(after["frozen"].sum()) / n_after > 0.45 > 0.1 > int(before["frozen"].sum()) / n_before
