"""The model registry: one registered model per data set, and promotion only on evidence.

**Registration** (``register``, after ``basketcast train`` tracked the run in MLflow): the run's
serving bundle is logged as the run's ``serving/`` artifacts (what a server following an alias
fetches, ``basketcast.serving.registry``), and the ranker the tracker logged becomes a new version of the
registered model named after the training data: ``basketcast-<data fingerprint>`` unless a name
is given (``--name``). A run on other data therefore never competes with this data's champion
under the default names. The version is tagged with its run folder, bundle version and data.

**Promotion** (``promote``; ``basketcast promote RUN``, and after each train unless
``--no-promote``) moves the alias (``champion``) to a version only when every check passes:

1. *parity* — its bundle's ONNX scores equal LightGBM's (the export's check is recorded, within
   ``export.TOLERANCE``);
2. *enough users* — it was validated on at least ``min_users`` users (default 50);
3. *beats the baselines* — its ranker beats every baseline on NDCG@10 on those users;
4. *not worse than the champion on the same users* — when the alias names another version, both
   versions' per-user metrics (``report/per_user.parquet``: NDCG@10 and Recall@10 per validation
   user and target order) are joined on (user, target order); at least ``min_users`` pairs must be
   shared (otherwise the two were validated on different users or data and cannot be compared),
   and the candidate's mean NDCG@10 minus the champion's on those pairs must be ≥ ``margin``
   (default 0: not worse). The paired bootstrap interval of the difference is reported beside it.

``force`` moves the alias whatever the checks say (a rollback to an older version), and the
version is tagged with the decision either way.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import polars as pl

from basketcast.pipeline.data import schema as S
from basketcast.pipeline.errors import BasketcastError
from basketcast.pipeline.evaluation.bootstrap import paired_bootstrap
from basketcast.pipeline.evaluation.report import BASELINES, RANKER, REPORT_JSON
from basketcast.pipeline.workflows.export import TOLERANCE as PARITY_TOLERANCE
from basketcast.pipeline.workflows.run_folder import PER_USER, REPORT, RunFolder, RunManifest
from basketcast.pipeline.workflows.tracking import CHAMPION, tracking_uri
from basketcast.serving.bundle import BUNDLE, MANIFEST, BundleManifest, Parity, read_manifest
from basketcast.serving.registry import NAME_PATTERN

log = logging.getLogger(__name__)

NAME_PREFIX: Final = "basketcast-"
MIN_USERS: Final = 50
MARGIN: Final = 0.0
METRIC: Final = "ndcg@10"
TAG_RUN_DIR: Final = "basketcast.run_dir"
TAG_BUNDLE: Final = "basketcast.bundle_version"
TAG_RANKER: Final = "basketcast.ranker_sha256"  # the ranking model's file: the same after a re-export
TAG_DATA: Final = "basketcast.data_fingerprint"
TAG_DECISION: Final = "basketcast.promotion"


class RegistryError(BasketcastError):
    """The registry cannot do what was asked (no such version, no MLflow run, ...)."""


@dataclass(frozen=True)
class Registered:
    """A version of a registered model."""

    name: str
    version: str
    run_id: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class Check:
    """One promotion check: its name, whether it passed, and the evidence in words."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Decision:
    """What ``promote`` decided for ``candidate``."""

    candidate: Registered
    alias: str
    promoted: bool
    forced: bool
    previous: str | None  # the version the alias named before
    checks: list[Check] = field(default_factory=list)

    def summary(self) -> str:
        """A few lines for the terminal."""
        head = (
            f"{self.candidate.name} version {self.candidate.version} is now '{self.alias}'"
            f"{' (forced)' if self.forced else ''} — serve it: "
            f"basketcast serve --model models:/{self.candidate.name}@{self.alias}"
            if self.promoted
            else f"{self.candidate.name} version {self.candidate.version} NOT promoted; '{self.alias}' stays on "
            f"{self.previous or 'no version'}"
        )
        return "\n".join([head, *(f"  [{'ok' if c.passed else 'FAIL'}] {c.name}: {c.detail}" for c in self.checks)])

    def to_json(self) -> str:
        return json.dumps(
            {
                "alias": self.alias,
                "promoted": self.promoted,
                "forced": self.forced,
                "previous": self.previous,
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in self.checks],
            }
        )


def registered_name(fingerprint: str) -> str:
    """The default registered model of a data set: ``basketcast-<data fingerprint>``."""
    return f"{NAME_PREFIX}{fingerprint}"


def _client() -> Any:
    # Promotion downloads a few small files: no progress bars in the command's output.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri())
    return MlflowClient()


def _missing(exc: Exception) -> bool:
    return "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")) or "not found" in str(exc).lower()


def check_name(name: str) -> str:
    """``name`` if a server can serve it (``models:/NAME@ALIAS``); RegistryError otherwise."""
    if not NAME_PATTERN.fullmatch(name):
        raise RegistryError(
            f"{name!r}: not a registered model name basketcast can serve (letters, digits, '.', '_', '-'; "
            "starting with a letter or digit; at most 255 characters)"
        )
    return name


def _ranker_hash(folder: RunFolder) -> str:
    return hashlib.sha256(folder.ranker_model.read_bytes()).hexdigest()


def _run_parts(run_dir: Path) -> tuple[RunFolder, RunManifest, BundleManifest]:
    """The run folder, its manifest and its bundle's manifest; RegistryError naming what is missing."""
    folder = RunFolder(Path(run_dir))
    try:
        manifest = RunManifest.load(folder.manifest)
        bundle = read_manifest(folder.path / BUNDLE)
    except (OSError, ValueError, BasketcastError) as exc:
        raise RegistryError(
            f"{run_dir}: not a run folder with a serving bundle (`basketcast train --out` writes one): {exc}"
        ) from None
    return folder, manifest, bundle


def register(run_id: str, model_uri: str, run_dir: Path, name: str | None = None) -> Registered:
    """Log ``run_dir``'s serving bundle with the MLflow run and register its ranker as a new version.

    ``model_uri`` is the ranker the tracker logged (``TrackedRun.mlflow_model_uri``); ``name``
    defaults to :func:`registered_name` of the run's data. The bundle logged is the one the run
    holds now; a later ``basketcast export`` of the run does not change what the registry serves.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    folder, manifest, bundle = _run_parts(run_dir)
    name = check_name(name or registered_name(manifest.data.fingerprint))
    client = _client()
    client.log_artifacts(run_id, str(folder.path / BUNDLE), artifact_path=BUNDLE)
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if not _missing(exc):
            raise
        client.create_registered_model(
            name,
            tags={TAG_DATA: manifest.data.fingerprint, "basketcast.data_source": manifest.data.source},
            description=f"basketcast rankers of {manifest.data.source} (data fingerprint {manifest.data.fingerprint})",
        )
    tags = {
        TAG_RUN_DIR: str(Path(run_dir).resolve()),
        TAG_BUNDLE: bundle.version,
        TAG_RANKER: _ranker_hash(folder),
        TAG_DATA: manifest.data.fingerprint,
        "basketcast.validation_users": str(manifest.evaluated_users),
    }
    version = mlflow.register_model(model_uri, name, tags=tags)
    if version.run_id != run_id:  # the serving bundle a server fetches is looked up by the version's run
        raise RegistryError(f"{name} version {version.version}: registered with run {version.run_id}, not {run_id}")
    log.info("MLflow: registered %s version %s (run %s)", name, version.version, run_id)
    return Registered(name, str(version.version), run_id)


def find_version(run_dir: Path, name: str | None = None) -> Registered:
    """The registered version of ``run_dir``: the one with its serving bundle, else (the run was
    re-exported since) the one with its ranking model file; RegistryError if none."""
    folder, manifest, bundle = _run_parts(run_dir)
    name = check_name(name or registered_name(manifest.data.fingerprint))
    ranker = _ranker_hash(folder)
    versions = _client().search_model_versions(f"name='{name}'")
    here = str(Path(run_dir).resolve())
    # The same bundle; else (re-exported since) the same ranking model from the same folder; else the
    # same ranking model — the latest of those.
    for match in (
        lambda v: v.tags.get(TAG_BUNDLE) == bundle.version,
        lambda v: v.tags.get(TAG_RANKER) == ranker and v.tags.get(TAG_RUN_DIR) == here,
        lambda v: v.tags.get(TAG_RANKER) == ranker,
    ):
        mine = [v for v in versions if match(v)]
        if mine:
            v = max(mine, key=lambda v: int(v.version))
            return Registered(name, str(v.version), str(v.run_id))
    raise RegistryError(
        f"{run_dir}: its model is not a version of {name!r} in {tracking_uri(create=False)} "
        f"({len(versions)} versions there); train it with MLflow tracking on, or pass --name"
    )


def get_version(name: str, version: str) -> Registered:
    """A version by number; RegistryError if it does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        v = _client().get_model_version(name, version)
    except MlflowException as exc:
        raise RegistryError(f"{name} version {version}: {exc.message}") from None
    return Registered(name, str(v.version), str(v.run_id))


def _artifact(client: Any, run_id: str, path: str, into: Path) -> Path | None:
    from mlflow.exceptions import MlflowException

    try:
        return Path(client.download_artifacts(run_id, path, str(into)))
    except (MlflowException, OSError):
        return None


@dataclass(frozen=True)
class _Evidence:
    report: dict[str, Any] | None
    per_user: pl.DataFrame | None
    parity: Parity | None  # the export's parity check, from the bundle manifest


def _evidence(client: Any, run_id: str, into: Path) -> _Evidence:
    """What a version's run logged: its report, its per-user metrics and its bundle manifest."""
    into.mkdir(parents=True, exist_ok=True)
    report = _artifact(client, run_id, f"{REPORT}/{REPORT_JSON}", into / "r")
    per_user = _artifact(client, run_id, f"{REPORT}/{PER_USER}", into / "p")
    bundle = _artifact(client, run_id, f"{BUNDLE}/{MANIFEST}", into / "b")
    return _Evidence(
        json.loads(report.read_text()) if report is not None else None,
        pl.read_parquet(per_user) if per_user is not None else None,
        BundleManifest.model_validate_json(bundle.read_text()).parity if bundle is not None else None,
    )


def _checks(candidate: _Evidence, champion: _Evidence | None, min_users: int, margin: float) -> list[Check]:
    checks = []
    parity = candidate.parity
    if parity is None:
        checks.append(Check("parity", False, "no parity check recorded with the serving bundle"))
    else:
        worst = max(parity.max_abs_diff_ranking, parity.max_abs_diff_basket)
        checks.append(
            Check(
                "parity",
                worst <= PARITY_TOLERANCE and parity.users_with_different_top10 == 0,
                f"ONNX vs LightGBM max |diff| {worst:.1e} on {parity.rows:,} rows (tolerance {PARITY_TOLERANCE:g}), "
                f"{parity.users_with_different_top10} users with another top-10",
            )
        )
    users = candidate.per_user.height if candidate.per_user is not None else 0
    checks.append(Check("enough users", users >= min_users, f"{users} validation users (minimum {min_users})"))
    report = candidate.report or {}
    methods = report.get("methods", {})
    ranker = methods.get(RANKER, {}).get(METRIC)
    baselines = {m: v.get(METRIC) for m, v in methods.items() if m in BASELINES}
    if ranker is None or not baselines:
        checks.append(Check("beats the baselines", False, "no evaluation report logged with the run"))
    else:
        best = max(baselines, key=lambda m: baselines[m] or 0.0)
        checks.append(
            Check(
                "beats the baselines",
                bool(report.get("ranker_beats_all_baselines")),
                f"{METRIC} {ranker:.4f} vs the best baseline {best} {baselines[best]:.4f}",
            )
        )
    if champion is None:
        return checks
    if candidate.per_user is None or champion.per_user is None:
        checks.append(Check("not worse than the champion", False, "per-user metrics missing for a comparison"))
        return checks
    key = [S.USER, S.TARGET_ORDER_NUMBER]
    pairs = candidate.per_user.join(champion.per_user, on=key, how="inner", suffix="_champion")
    if pairs.height < min_users:
        checks.append(
            Check(
                "not worse than the champion",
                False,
                f"only {pairs.height} validation (user, order) pairs in common with the champion (minimum "
                f"{min_users}): validated on other users or other data, not comparable",
            )
        )
        return checks
    a, b = pairs[METRIC].to_numpy(), pairs[f"{METRIC}_champion"].to_numpy()
    diff = paired_bootstrap(a, b, resamples=2_000, seed=0)
    recall = float(np.mean(pairs["recall@10"].to_numpy() - pairs["recall@10_champion"].to_numpy()))
    checks.append(
        Check(
            "not worse than the champion",
            diff.mean >= margin,
            f"{METRIC} {a.mean():.4f} vs {b.mean():.4f} on the same {pairs.height} users: difference "
            f"{diff.mean:+.4f} (95% CI {diff.low:+.4f} to {diff.high:+.4f}; margin {margin:+.4f}); "
            f"recall@10 {recall:+.4f}",
        )
    )
    return checks


def _alias_version(client: Any, name: str, alias: str) -> tuple[str | None, str | None]:
    """(version, run id) the alias names now; (None, None) when it names none."""
    from mlflow.exceptions import MlflowException

    try:
        current = client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if not _missing(exc):
            raise
        return None, None
    return str(current.version), str(current.run_id)


def promote(
    candidate: Registered,
    *,
    alias: str = CHAMPION,
    min_users: int = MIN_USERS,
    margin: float = MARGIN,
    force: bool = False,
) -> Decision:
    """Move ``alias`` to ``candidate`` if every check passes (or ``force``); tag the version with the decision.

    The champion is read again right before the alias moves: if another promotion moved it
    meanwhile, the checks run again against the new champion (MLflow has no compare-and-set, so a
    window of one request remains).
    """
    client = _client()
    with tempfile.TemporaryDirectory(prefix="basketcast-promote-") as tmp:
        mine = _evidence(client, candidate.run_id, Path(tmp) / "candidate")
        for attempt in range(3):
            previous, previous_run = _alias_version(client, candidate.name, alias)
            theirs = (
                _evidence(client, previous_run, Path(tmp) / f"champion-{attempt}")
                if previous_run is not None and previous != candidate.version
                else None
            )
            checks = _checks(mine, theirs, min_users, margin)
            passed = all(c.passed for c in checks)
            decision = Decision(candidate, alias, passed or force, force and not passed, previous, checks)
            if _alias_version(client, candidate.name, alias)[0] == previous:
                break
            log.info("'%s' of %s moved during the checks: checking again", alias, candidate.name)
    if decision.promoted:
        client.set_registered_model_alias(candidate.name, alias, candidate.version)
        log.info("MLflow: %s version %s is now '%s' (was %s)", candidate.name, candidate.version, alias, previous)
    client.set_model_version_tag(candidate.name, candidate.version, TAG_DECISION, decision.to_json())
    return decision


@contextlib.contextmanager
def mlflow_errors(what: str) -> Iterator[None]:
    """MLflow's own errors and unreachable servers as a RegistryError saying what failed and where."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (MlflowException, OSError) as exc:
        message = getattr(exc, "message", None) or str(exc)
        raise RegistryError(f"{what}: MLflow at {tracking_uri(create=False)} failed: {message}") from None


def publish(run_id: str, model_uri: str, run_dir: Path, name: str | None, promote_it: bool) -> list[str]:
    """After ``basketcast train`` tracked ``run_dir``: register it and, when ``promote_it``, try to
    promote it; returns the lines to print. A failure names the step and says the run folder is
    published all the same."""
    lines = []
    after = f"the run folder {run_dir} is published; "
    with mlflow_errors(after + "registering it"):
        registered = register(run_id, model_uri, run_dir, name)
    lines.append(f"registered {registered.name} version {registered.version} in MLflow")
    if promote_it:
        with mlflow_errors(after + f"promoting it (retry: basketcast promote {run_dir})"):
            lines.append(promote(registered).summary())
    return lines
