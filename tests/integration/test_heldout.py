"""Held-out users stay held out, and the ranker against TIFU-KNN on real shoppers.

On the committed real excerpt (100 Instacart users), with spies on what the rankers are fitted
on (``Matrix.of``: the training and the early-stopping rows of every ``fit_rankers``) and on what
they score:

- ``basketcast train``: no validation user in the rows the rankers learn or early-stop from;
  the report is computed on validation users only.
- ``basketcast evaluate --folds`` (``cross_validate``): the rankers that predict a fold never saw
  a user of that fold; every user is predicted exactly once.
- Model quality with the default configuration over the 5 folds (every user predicted once):
  the per-user NDCG@10 of the ranker against TIFU-KNN's, with a paired bootstrap confidence
  interval of the difference.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

import basketcast.pipeline.workflows.run as run_module
import basketcast.pipeline.workflows.validation as validation
from basketcast.features.history import order_lines
from basketcast.pipeline.config import TrainConfig
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.storage import read_dataset
from basketcast.pipeline.evaluation.report import EvaluationReport
from basketcast.pipeline.model import training
from basketcast.pipeline.model.windows import FIT, STOP, VALID
from basketcast.pipeline.progress import Timings
from basketcast.pipeline.workflows.run_folder import RunFolder, load_run
from tests.conftest import FAST_TRAIN

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bootstrap_ci

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FOLDS = 5


@dataclass
class Spy:
    """What the rankers were fitted on and what they scored."""

    matrices: list[set[int]] = field(default_factory=list)  # users of each Matrix.of, in call order
    fits: list[tuple[training.Rankers, set[int], set[int]]] = field(default_factory=list)  # rankers, train, stop
    scored: list[tuple[training.Rankers, set[int]]] = field(default_factory=list)
    evaluated: dict[str, Any] = field(default_factory=dict)  # evaluation_report's arguments

    def take(self) -> Spy:
        """What was recorded so far; the record starts again empty."""
        taken = Spy(list(self.matrices), list(self.fits), list(self.scored), dict(self.evaluated))
        self.matrices.clear()
        self.fits.clear()
        self.scored.clear()
        self.evaluated.clear()
        return taken


def _users(frame: pl.DataFrame) -> set[int]:
    return set(frame[S.USER].unique().to_list())


@pytest.fixture(scope="module")
def spy() -> Iterator[Spy]:
    """Spies on Matrix.of, Rankers.score and both workflows' fit_rankers / evaluation_report."""
    seen = Spy()
    of, score = training.Matrix.of.__func__, training.Rankers.score  # type: ignore[attr-defined]

    def spy_of(cls: type, rows: pl.DataFrame, equal_user_weight: bool) -> training.Matrix:
        seen.matrices.append(_users(rows))
        return of(cls, rows, equal_user_weight)  # type: ignore[no-any-return]

    def spy_score(self: training.Rankers, frame: pl.DataFrame) -> dict[str, np.ndarray]:
        seen.scored.append((self, _users(frame)))
        return score(self, frame)

    def spying_fit(real: Any) -> Any:
        def fit(windows: Any, roles: pl.DataFrame, config: TrainConfig) -> training.Rankers:
            seen.matrices.clear()
            rankers = real(windows, roles, config)
            train_users, stop_users = seen.matrices  # exactly two row sets: training, early stopping
            seen.fits.append((rankers, train_users, stop_users))
            return rankers

        return fit

    def spying_report(real: Any) -> Any:
        def report(window: Any, users: pl.Series, rows: pl.DataFrame, scores: Any, config: TrainConfig) -> Any:
            seen.evaluated.update(window=window, users=users, rows=rows, scores=scores, config=config)
            return real(window, users, rows, scores, config)

        return report

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training.Matrix, "of", classmethod(spy_of))
        mp.setattr(training.Rankers, "score", spy_score)
        for module in (run_module, validation):
            mp.setattr(module, "fit_rankers", spying_fit(module.fit_rankers))
            mp.setattr(module, "evaluation_report", spying_report(module.evaluation_report))
        yield seen


@pytest.fixture(scope="module")
def trained(spy: Spy, excerpt_run: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Spy, Path]:
    """The excerpt trained (suite config, ≈2 s) under the spies."""
    spy.take()
    out = tmp_path_factory.mktemp("heldout") / "run"
    run_module.train(excerpt_run["data"], out, TrainConfig.model_validate(FAST_TRAIN))
    return spy.take(), out


@pytest.fixture(scope="module")
def cross_validated(spy: Spy, excerpt_run: dict[str, Path]) -> tuple[Spy, EvaluationReport]:
    """5-fold cross-validation of the excerpt with the DEFAULT config (≈10 s) under the spies.

    MLflow and XGBoost are off (``bootstrap_ci.config_of``): XGBoost is fitted after, and
    independently of, the LightGBM ranker, and only adds time here.
    """
    spy.take()
    data = read_dataset(excerpt_run["data"])
    run = replace(load_run(excerpt_run["run"]), config=bootstrap_ci.config_of(None))
    report = validation.cross_validate(data, order_lines(data), run, FOLDS, Timings())
    return spy.take(), report


def test_rankers_never_see_a_validation_user(trained: tuple[Spy, Path]) -> None:
    seen, run_dir = trained
    roles = pl.read_parquet(RunFolder(run_dir).roles)
    role = {r: set(roles.filter(pl.col(S.ROLE) == r)[S.USER].to_list()) for r in (FIT, STOP, VALID)}
    assert all(role.values()) and len(roles) == 100
    [(_, train_users, stop_users)] = seen.fits
    assert train_users == role[FIT]  # every fit user, nobody else
    assert stop_users == role[STOP]
    evaluated = set(seen.evaluated["users"].to_list())
    assert evaluated and evaluated <= role[VALID]
    assert not evaluated & (train_users | stop_users)


def test_cross_validation_predicts_each_fold_with_rankers_that_never_saw_it(
    cross_validated: tuple[Spy, EvaluationReport],
) -> None:
    seen, report = cross_validated
    assert len(seen.fits) == len(seen.scored) == FOLDS
    predicted: list[int] = []
    for (fitted, train_users, stop_users), (scorer, held) in zip(seen.fits, seen.scored, strict=True):
        assert scorer is fitted  # each fold is scored by the rankers fitted for it
        assert held and train_users and stop_users
        assert not held & (train_users | stop_users), sorted(held & (train_users | stop_users))
        predicted += held
    assert len(predicted) == len(set(predicted)) == report.users == 100  # every user once


def test_ranker_against_tifu_knn_on_real_users(cross_validated: tuple[Spy, EvaluationReport]) -> None:
    """What 100 real users support, with the default config (5 folds, each user predicted once).

    Observed: NDCG@10 0.4745 (ranker) vs 0.4697 (TIFU-KNN) and 0.4359 (top-frequency); per-user
    difference to TIFU-KNN +0.0048, 95% CI [-0.0097, +0.0187]; to top-frequency +0.0385, CI
    [+0.0115, +0.0632]. The data do not show the ranker better than TIFU-KNN (the interval holds 0);
    they show it not worse by more than 0.02 NDCG@10, and better than top-frequency. The 0.02
    margin leaves 0.01 for the cross-machine drift of these figures (BENCHMARKS.md).
    """
    seen, report = cross_validated
    per_user = bootstrap_ci.per_user(seen.evaluated)
    for method, frame in per_user.items():  # the per-user values behind the report's means
        assert frame.height == 100 and frame[S.USER].to_list() == per_user["lightgbm"][S.USER].to_list()
        assert frame["ndcg@10"].mean() == pytest.approx(report.methods[method]["ndcg@10"], abs=1e-12)
    ndcg = {method: frame["ndcg@10"].to_numpy() for method, frame in per_user.items()}

    lo, hi = bootstrap_ci.paired_bootstrap(ndcg["lightgbm"] - ndcg["tifu_knn"])
    assert lo > -0.02, (lo, hi)  # not worse than TIFU-KNN by more than 0.02 (observed lo -0.0097)
    lo, hi = bootstrap_ci.paired_bootstrap(ndcg["lightgbm"] - ndcg["top_frequency"])
    assert lo > 0, (lo, hi)  # better than top-frequency (observed lo +0.0115)
