"""Experiment tracking: one trained run logged to real MLflow (SQLite store in tmp) and real W&B
(offline), then read back from what each backend wrote."""

from __future__ import annotations

import json
import logging
import struct
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from basketcast.pipeline.config import TrainConfig
from basketcast.pipeline.errors import ConfigError
from basketcast.pipeline.evaluation.report import EvaluationReport
from basketcast.pipeline.progress import Timings
from basketcast.pipeline.workflows.run import TrainResult
from basketcast.pipeline.workflows.run_folder import RunFolder
from basketcast.pipeline.workflows.tracking import (
    TRACKING_ENV,
    TrackedRun,
    chosen_backends,
    report_metrics,
    run_params,
    timing_metrics,
    track_run,
    track_training,
    wandb_dir,
)

pytestmark = pytest.mark.integration

# Known stage timings (as a Timings of a training run holds them): seconds, own peak RSS in MiB.
STAGES = [
    ("load data", 1.25, 300.0),
    ("rankers (LightGBM lambdarank + binary, XGBoost baseline)", 10.5, 812.5),
]
EXPECTED_TIMINGS = {
    "timing.load_data.seconds": 1.25,
    "timing.load_data.peak_rss_mb": 300.0,
    "timing.rankers_lightgbm_lambdarank_binary_xgboost_baseline.seconds": 10.5,
    "timing.rankers_lightgbm_lambdarank_binary_xgboost_baseline.peak_rss_mb": 812.5,
    "timing.total.seconds": 11.75,
}
REPORT_FILES = {"report/report.json", "report/report.md", "report/figures.html"}


# --------------------------------------------------------------------------- reading W&B's run log


def wandb_records(run_dir: Path) -> list[Any]:
    """The protobuf records of an offline run's transaction log ``run-<id>.wandb``.

    wandb ≥ 0.30 ships no Python reader for it (``wandb.sdk.internal.datastore`` is gone) and an
    offline run writes no ``files/wandb-summary.json`` or ``config.yaml``: the log is its record.
    Its format is LevelDB's log: a 7-byte header (``:W&B``, magic, version), then 32 KiB blocks of
    chunks, each ``crc32 (u32 LE) | length (u16 LE) | type (1 full, 2 first, 3 middle, 4 last)``
    followed by the data; whole chunks are serialized ``wandb_internal.Record`` messages."""
    from wandb.proto import wandb_internal_pb2 as pb

    (log_file,) = run_dir.glob("run-*.wandb")
    data = log_file.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:  # zero padding
            continue
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == crc, f"bad checksum at {pos}"
        pending += chunk
        if kind in (1, 4):
            record = pb.Record()  # type: ignore[attr-defined]  # re-exported from the versioned module
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


@dataclass
class WandbRun:
    config: dict[str, Any]
    summary: dict[str, Any]
    artifacts: dict[str, set[str]]  # artifact name → paths in it
    project: str
    name: str
    exit_code: int | None


def read_wandb_run(run_dir: Path) -> WandbRun:
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    artifacts: dict[str, set[str]] = {}
    project = name = ""
    exit_code = None
    for record in wandb_records(run_dir):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            project, name = record.run.project, record.run.display_name
            config.update({u.key: json.loads(u.value_json) for u in record.run.config.update})
        elif kind == "config":
            config.update({u.key: json.loads(u.value_json) for u in record.config.update})
        elif kind == "summary":
            summary.update({u.key: json.loads(u.value_json) for u in record.summary.update if u.key})
        elif kind == "artifact":
            artifacts[record.artifact.name] = {c.path for c in record.artifact.manifest.contents}
        elif kind == "exit":
            exit_code = record.exit.exit_code
    return WandbRun(config, summary, artifacts, project, name, exit_code)


# --------------------------------------------------------------------------- one run, both backends


def client(store: Path) -> Any:
    """An MlflowClient on the module's store."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private MLflow SQLite store (``MLFLOW_TRACKING_URI``) and W&B folder (``WANDB_DIR``)."""
    import mlflow

    root = tmp_path_factory.mktemp("tracking")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.setenv("WANDB_DIR", str(root / "wandb"))
        mp.delenv(TRACKING_ENV, raising=False)
        yield root
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # back to the environment's store


@pytest.fixture(scope="module")
def run(excerpt_run: dict[str, Path]) -> tuple[Path, EvaluationReport]:
    run_dir = excerpt_run["run"]
    return run_dir, EvaluationReport.load(RunFolder(run_dir).report / "report.json")


@pytest.fixture(scope="module")
def tracked(store: Path, run: tuple[Path, EvaluationReport], tmp_path_factory: pytest.TempPathFactory) -> TrackedRun:
    """``basketcast train``'s call: the run's config says no tracking, BASKETCAST_TRACKING both."""
    run_dir, report = run
    assert TrainConfig.model_validate_json(RunFolder(run_dir).config.read_text()).tracking == []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(TRACKING_ENV, "wandb, mlflow")
        mp.chdir(tmp_path_factory.mktemp("cwd"))  # nothing may land in the working directory
        result = track_training(TrainResult(run_dir=run_dir, report=report, timings=Timings(stages=list(STAGES))))
        assert not list(Path.cwd().iterdir())
    assert result is not None
    return result


def test_both_backends_are_logged(tracked: TrackedRun, store: Path) -> None:
    assert tracked.backends == ("mlflow", "wandb")
    assert tracked.mlflow_run_id and tracked.mlflow_model_uri and tracked.wandb_run_dir
    # W&B's run folder is under WANDB_DIR (else the user-level folder), offline.
    assert tracked.wandb_run_dir.is_relative_to(wandb_dir()) and wandb_dir() == store / "wandb"
    assert tracked.wandb_run_dir.name.startswith("offline-run-")


def test_mlflow_holds_params_metrics_timings_and_files(
    tracked: TrackedRun, run: tuple[Path, EvaluationReport], store: Path
) -> None:
    run_dir, report = run
    mlflow = client(store)
    assert tracked.mlflow_run_id is not None
    logged = mlflow.get_run(tracked.mlflow_run_id)
    assert logged.info.status == "FINISHED" and logged.info.run_name == run_dir.name
    assert logged.data.params["lightgbm.n_estimators"] == "150"  # FAST_TRAIN
    assert logged.data.params == {k: str(v) for k, v in run_params(run_dir).items()}
    metrics = report_metrics(report)
    assert metrics["lightgbm.ndcg_at_10"] == report.methods["lightgbm"]["ndcg@10"]
    assert "kaggle_f1.lightgbm_f1_optimal" in metrics and "candidate_recall.all" in metrics
    assert logged.data.metrics == pytest.approx({**metrics, **EXPECTED_TIMINGS})
    assert logged.data.tags["ranking_objective"] == report.ranking_objective
    files = {a.path for a in mlflow.list_artifacts(tracked.mlflow_run_id, "report")}
    assert files >= REPORT_FILES
    top = {a.path for a in mlflow.list_artifacts(tracked.mlflow_run_id)}
    assert {"manifest.json", "timings.json", "report"} <= top
    stages = json.loads(Path(mlflow.download_artifacts(tracked.mlflow_run_id, "timings.json", str(store))).read_text())
    assert [s["stage"] for s in stages["stages"]] == [s[0] for s in STAGES]


def test_mlflow_holds_the_ranker_unregistered(
    tracked: TrackedRun, run: tuple[Path, EvaluationReport], store: Path
) -> None:
    import lightgbm as lgb
    import mlflow
    import numpy as np

    assert tracked.mlflow_model_uri is not None
    info = mlflow.models.get_model_info(tracked.mlflow_model_uri)
    assert info.run_id == tracked.mlflow_run_id and info.name == "ranker"
    loaded = mlflow.lightgbm.load_model(tracked.mlflow_model_uri)
    original = lgb.Booster(model_file=str(RunFolder(run[0]).ranker_model))
    rows = np.random.default_rng(0).normal(size=(20, original.num_feature()))
    np.testing.assert_allclose(loaded.predict(rows), original.predict(rows))
    # Registration and the champion alias belong to basketcast.pipeline.workflows.registry.
    assert client(store).search_registered_models() == []


def test_wandb_holds_the_same_params_metrics_and_files(
    tracked: TrackedRun, run: tuple[Path, EvaluationReport], store: Path
) -> None:
    assert tracked.wandb_run_dir is not None and tracked.mlflow_run_id is not None
    run_dir, report = run
    logged = read_wandb_run(tracked.wandb_run_dir)
    assert (logged.project, logged.name, logged.exit_code) == ("basketcast", run_dir.name, 0)
    params = run_params(run_dir)
    assert {k: logged.config[k] for k in params} == params
    in_mlflow = client(store).get_run(tracked.mlflow_run_id).data.metrics
    in_wandb = {k: logged.summary[k] for k in in_mlflow}
    assert in_wandb == pytest.approx(in_mlflow)  # the same numbers in both
    assert in_wandb["lightgbm.ndcg_at_10"] == report.methods["lightgbm"]["ndcg@10"]
    assert {k: in_wandb[k] for k in EXPECTED_TIMINGS} == EXPECTED_TIMINGS
    assert logged.artifacts["evaluation-report"] >= {*REPORT_FILES, "manifest.json", "timings.json"}


def test_a_wandb_failure_leaves_mlflow_logging_whole(
    store: Path, run: tuple[Path, EvaluationReport], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import wandb

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no W&B today")

    monkeypatch.setattr(wandb, "init", refuse)
    run_dir, report = run
    with caplog.at_level(logging.WARNING, logger="basketcast.pipeline.workflows.tracking"):
        result = track_run(run_dir, report, {"load data": 1.25}, ["wandb", "mlflow"])
    assert result.backends == ("mlflow",) and result.wandb_run_dir is None
    assert "W&B tracking failed" in caplog.text and "no W&B today" in caplog.text
    assert result.mlflow_run_id is not None and result.mlflow_model_uri is not None
    logged = client(store).get_run(result.mlflow_run_id)
    assert logged.info.status == "FINISHED"
    assert logged.data.metrics["timing.load_data.seconds"] == 1.25
    assert logged.data.metrics["lightgbm.ndcg_at_10"] == report.methods["lightgbm"]["ndcg@10"]


def test_wandb_not_installed_is_a_warning(
    store: Path, run: tuple[Path, EvaluationReport], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    run_dir, report = run
    with caplog.at_level(logging.WARNING, logger="basketcast.pipeline.workflows.tracking"):
        result = track_run(run_dir, report, {}, ["wandb"])
    assert result == TrackedRun(backends=())
    assert "W&B tracking failed" in caplog.text and "basketcast[train]" in caplog.text


# --------------------------------------------------------------------------- choosing the backends


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (None, ("mlflow",)),
        ("none", ()),
        ("", ()),
        ("wandb", ("wandb",)),
        ("WandB , mlflow", ("mlflow", "wandb")),
    ],
)
def test_the_environment_overrides_the_config(
    env: str | None, expected: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    if env is None:
        monkeypatch.delenv(TRACKING_ENV, raising=False)
    else:
        monkeypatch.setenv(TRACKING_ENV, env)
    assert chosen_backends(TrainConfig()) == expected


def test_no_tracking_in_the_config_and_no_override_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TRACKING_ENV, raising=False)
    assert chosen_backends(TrainConfig(tracking=[])) == ()
    assert chosen_backends(TrainConfig(tracking=["wandb", "mlflow"])) == ("mlflow", "wandb")


@pytest.mark.parametrize("env", ["neptune", "mlflow,comet", "none,wandb"])
def test_an_unknown_backend_names_the_variable(env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TRACKING_ENV, env)
    with pytest.raises(ConfigError, match=TRACKING_ENV):
        chosen_backends(TrainConfig())


def test_none_tracks_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(TRACKING_ENV, "none")
    RunFolder(tmp_path).save_config(TrainConfig())  # says mlflow
    report = cast(EvaluationReport, None)  # never read: nothing is logged
    assert track_training(TrainResult(run_dir=tmp_path, report=report, timings=Timings())) is None


def test_the_legacy_mlflow_key_maps_to_tracking() -> None:
    assert TrainConfig.model_validate({"mlflow": False}).tracking == []
    assert TrainConfig.model_validate({"mlflow": True}).tracking == ["mlflow"]
    assert TrainConfig.model_validate({"mlflow": False, "tracking": ["wandb"]}).tracking == ["wandb"]
    assert TrainConfig().tracking == ["mlflow"]
    # An old run folder's config.json reads back, and is written in the new shape.
    old = TrainConfig().model_dump(mode="json")
    del old["tracking"]
    again = TrainConfig.model_validate({**old, "mlflow": False}).model_dump(mode="json")
    assert again["tracking"] == [] and "mlflow" not in again
    with pytest.raises(ValueError, match="mlflow"):
        TrainConfig.model_validate({"mlflow": "no"})


def test_timing_metrics_of_a_manifest_have_no_memory() -> None:
    assert timing_metrics([]) == {"timing.total.seconds": 0.0}
    from basketcast.pipeline.workflows.tracking import stage_times

    assert timing_metrics(stage_times({"load data": 2.0})) == {
        "timing.load_data.seconds": 2.0,
        "timing.total.seconds": 2.0,
    }
    assert timing_metrics(stage_times(Timings(stages=list(STAGES)))) == EXPECTED_TIMINGS
