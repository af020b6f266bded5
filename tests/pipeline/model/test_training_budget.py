"""The training budget: label windows are built only while fit users are needed, on real rows."""

from __future__ import annotations

import polars as pl
import pytest

from basketcast.features.history import order_lines
from basketcast.pipeline.config import TrainConfig
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.ingest import ingest
from basketcast.pipeline.data.storage import Dataset, read_dataset
from basketcast.pipeline.model.windows import FIT, STOP, build_windows, evaluation_users, roles_of
from basketcast.pipeline.progress import Timings
from tests.conftest import EXCERPT


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    out = tmp_path_factory.mktemp("budget") / "data"
    ingest(EXCERPT, out)
    return read_dataset(out)


def _config(budget: int | None) -> TrainConfig:
    return TrainConfig.model_validate(
        {"mlflow": False, "max_training_groups": budget, "windows": {"extra_windows": 3}, "valid_share": 0.2}
    )


def test_budget_fills_windows_from_the_most_recent_and_skips_the_rest(data: Dataset) -> None:
    config = _config(100)  # window 0 has 72 fit users: all of them, then 28 sampled from window 1
    roles = roles_of(data, config)
    fit = roles.filter(pl.col(S.ROLE) == FIT)[S.USER]
    windows = build_windows(data, order_lines(data), config, Timings(), roles)
    assert [w.window for w in windows] == [0, 1]
    fit_groups = [w.frame.filter(pl.col(S.USER).is_in(fit.implode()))[S.USER].n_unique() for w in windows]
    assert fit_groups[0] == fit.len() == 72
    assert fit_groups[1] == 100 - 72
    # Window 0 also holds every stop user and the evaluated validation users, window 1 only fit users.
    w0_users = windows[0].frame[S.USER].unique()
    assert roles.filter(pl.col(S.ROLE) == STOP)[S.USER].is_in(w0_users.implode()).all()
    assert evaluation_users(roles, config).is_in(w0_users.implode()).all()
    assert windows[1].frame[S.USER].unique().is_in(fit.implode()).all()
    # Labels exist only for the users with rows; the history still holds everyone.
    assert windows[1].truth[S.USER].unique().is_in(windows[1].frame[S.USER].unique().implode()).all()
    assert windows[1].history.cutoffs.height > windows[1].frame[S.USER].n_unique()


def test_no_budget_builds_every_window_for_every_fit_user(data: Dataset) -> None:
    config = _config(None)
    roles = roles_of(data, config)
    windows = build_windows(data, order_lines(data), config, Timings(), roles)
    assert [w.window for w in windows] == [0, 1, 2, 3]
    fit = roles.filter(pl.col(S.ROLE) == FIT)[S.USER]
    for w in windows[1:]:
        eligible = w.history.cutoffs.filter(pl.col(S.USER).is_in(fit.implode())).height
        assert w.frame[S.USER].n_unique() == eligible
