"""The sequence network on the real excerpt: ONNX export and parity, determinism, its features,
and leakage — it never learns from an order a ranker window or the evaluation predicts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import polars as pl
import pytest

from basketcast.features import cutoffs as C
from basketcast.features.build import FeatureTables
from basketcast.features.history import as_of, order_lines
from basketcast.features.sequence import (
    FEATURES,
    SEQ_LOGIT,
    SEQ_NONE,
    SequenceBatch,
    UserSequences,
    Vocabulary,
    encode_rows,
    with_none_rows,
)
from basketcast.pipeline.config import SequenceConfig, TrainConfig
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.ingest import ingest
from basketcast.pipeline.data.storage import Dataset
from basketcast.pipeline.errors import ExportError
from basketcast.pipeline.model.candidates import ALSModel, candidates
from basketcast.pipeline.model.sequence import (
    CART_FILE,
    NETWORK_FILE,
    TOLERANCE,
    OnnxScorer,
    SequenceModel,
    _loss,
    _torch,
    parity,
    train_sequence,
    training_set,
)
from tests.conftest import EXCERPT
from tests.features.test_leakage import _rewrite_future, real  # noqa: F401 (the fixture)
from tests.stores import REPO, child_env

CONFIG = TrainConfig(tracking=[], sequence=SequenceConfig(epochs=2, threads=1))
OLDEST = 1  # the ranker's oldest label window in these tests


def _users(data: Dataset) -> tuple[pl.Series, pl.Series]:
    users = C.label_window(data.orders, 0, 2)[S.USER]
    return users.gather_every(2), users.gather_every(2, offset=1)


def _train(data: Dataset) -> SequenceModel:
    fit, stop = _users(data)
    model = train_sequence(data, order_lines(data), OLDEST, fit, stop, CONFIG.sequence, CONFIG.windows.min_history)
    assert model is not None
    return model


@pytest.fixture(scope="module")
def trained(real: Dataset) -> SequenceModel:  # noqa: F811
    return _train(real)


def test_export_is_a_gru_with_linear_before_reset_and_matches_pytorch(trained: SequenceModel) -> None:
    model = onnx.load_from_string(trained.scorer.onnx_bytes)
    grus = [n for n in model.graph.node if n.op_type == "GRU"]
    assert len(grus) == 1
    assert [a.i for a in grus[0].attribute if a.name == "linear_before_reset"] == [1]
    assert trained.parity.rows > 1000
    assert max(trained.parity.max_abs_diff_logit, trained.parity.max_abs_diff_state) <= TOLERANCE
    assert trained.windows[0] == OLDEST + 1 and trained.windows == list(
        range(OLDEST + 1, OLDEST + 1 + len(trained.windows))
    )


def test_parity_fails_for_a_different_network(real: Dataset, trained: SequenceModel) -> None:  # noqa: F811
    """The check can fail: another seed's network against this one's ONNX."""
    fit, stop = _users(real)
    other_config = CONFIG.sequence.model_copy(update={"seed": 7})
    other = train_sequence(real, order_lines(real), OLDEST, fit, stop, other_config, 2)
    assert other is not None
    from basketcast.pipeline.model.sequence import training_set

    data = training_set(
        real, order_lines(real), [OLDEST + 1], stop, trained.scorer.vocabulary, CONFIG.sequence, 2, sample=False
    )
    assert data is not None
    with pytest.raises(ExportError):
        parity(other.fit.module, trained.scorer, data)


def test_training_is_deterministic(real: Dataset, trained: SequenceModel) -> None:  # noqa: F811
    again = _train(real)
    assert again.scorer.onnx_bytes == trained.scorer.onnx_bytes
    assert [e["stop_loss"] for e in again.fit.history] == [e["stop_loss"] for e in trained.fit.history]


def test_training_is_reproducible_across_processes(tmp_path: Path) -> None:
    """Two processes train the network and the cart attention (``sequence_child``: two intra-op
    threads, batches large enough for PyTorch's multi-threaded kernels) at the same time on one
    CPU core, so the OS interleaves their threads differently; their ONNX files must be the same
    bytes. The test above trains with one thread, where those kernels are not used."""
    ingest(EXCERPT, tmp_path / "data")
    core = ["--core", str(min(os.sched_getaffinity(0)))] if hasattr(os, "sched_getaffinity") else []
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.pipeline.model.sequence_child", str(tmp_path / "data"), str(out), *core],
            cwd=REPO,
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for out in (tmp_path / "a", tmp_path / "b")
    ]
    try:
        for child in children:
            _, err = child.communicate(timeout=120)
            assert child.returncode == 0, err[-3000:]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    for name in (NETWORK_FILE, CART_FILE):
        a, b = (tmp_path / "a" / name).read_bytes(), (tmp_path / "b" / name).read_bytes()
        assert a == b, f"{name}: weights apart by up to {_max_weight_diff(a, b):.3e}"


def _max_weight_diff(a: bytes, b: bytes) -> float:
    """max |difference| between the initializers (weights) of two ONNX models of one graph."""
    weights = [
        {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load_from_string(m).graph.initializer} for m in (a, b)
    ]
    return max(
        (float(np.abs(v.astype(np.float64) - weights[1][k]).max(initial=0.0)) for k, v in weights[0].items()),
        default=0.0,
    )


def test_save_and_load(trained: SequenceModel, tmp_path: pytest.TempPathFactory) -> None:
    folder = tmp_path / "sequence"  # type: ignore[operator]
    trained.scorer.save(folder, trained.meta())
    loaded = OnnxScorer.load(folder)
    assert loaded is not None and loaded.onnx_bytes == trained.scorer.onnx_bytes
    assert loaded.steps == trained.scorer.steps
    assert OnnxScorer.load(folder / "absent") is None
    assert (folder / NETWORK_FILE).stat().st_size > 1000


def _window0_features(data: Dataset, scorer: OnnxScorer) -> pl.DataFrame:
    lines = order_lines(data)
    h = as_of(data, C.label_window(data.orders, 0, 2), lines)
    als = ALSModel.fit(h.lines, CONFIG.als)
    cands = candidates(h, als, h.cutoffs[S.USER], CONFIG.candidates)
    frame = FeatureTables.of(h, CONFIG.features, scorer).base_frame(cands)
    return frame.select(S.USER, S.PRODUCT, S.IS_REPEAT, *FEATURES)


def test_features_cover_past_products_and_one_none_per_user(trained: SequenceModel, real: Dataset) -> None:  # noqa: F811
    frame = _window0_features(real, trained.scorer)
    repeat = frame.filter(pl.col(S.IS_REPEAT))
    new = frame.filter(~pl.col(S.IS_REPEAT))
    assert repeat[SEQ_LOGIT].is_nan().sum() == 0 and new.height > 0 and new[SEQ_LOGIT].is_nan().all()
    per_user = frame.group_by(S.USER).agg(pl.col(SEQ_NONE).n_unique().alias("n"), pl.col(SEQ_NONE).first())
    assert (per_user["n"] == 1).all()
    assert per_user[SEQ_NONE].is_between(0, 1).all()


def test_none_row_reads_orders_without_reorders(real: Dataset) -> None:  # noqa: F811
    lines = order_lines(real)
    h = as_of(real, C.label_window(real.orders, 0, 2), lines)
    vocab = Vocabulary.of(h, 5)
    seqs = UserSequences.of(h, 32, vocab)
    user = int(h.cutoffs[S.USER][0])
    rows = with_none_rows(
        pl.DataFrame({S.USER: [user], S.PRODUCT: [0]}, schema={S.USER: pl.UInt32, S.PRODUCT: pl.UInt32})
    )
    encoded = encode_rows(h, seqs, rows.unique(), vocab)
    orders = h.orders.filter(pl.col(S.USER) == user).sort(S.ORDER_NUMBER).tail(32)
    shares = (
        h.lines.filter(pl.col(S.USER) == user)
        .group_by(S.ORDER_NUMBER)
        .agg(pl.col(S.REORDERED).sum().alias("r"))
        .join(orders.select(S.ORDER_NUMBER), on=S.ORDER_NUMBER, how="right")
        .sort(S.ORDER_NUMBER)
    )
    first = int(h.orders.filter(pl.col(S.USER) == user)[S.ORDER_NUMBER].min())  # type: ignore[arg-type]
    expected = ((shares["r"].fill_null(0) == 0) & (shares[S.ORDER_NUMBER] != first)).cast(pl.UInt8).to_numpy()
    assert np.array_equal(encoded.bought[0, 32 - expected.size :], expected)


def test_network_never_learns_from_ranker_targets(real: Dataset, trained: SequenceModel) -> None:  # noqa: F811
    """Rewrite every target of the ranker's windows 0..OLDEST and everything after them: the
    network's training set, weights and window-0 features must not change."""
    cutoffs = C.label_window(real.orders, OLDEST, 2)
    rewritten = _rewrite_future(real, cutoffs, seed=3)
    assert not rewritten.order_products.equals(real.order_products)
    again = _train(rewritten)
    assert again.scorer.onnx_bytes == trained.scorer.onnx_bytes
    # The inputs at window 0 still see the (rewritten) recent orders; the network applied to the
    # same inputs gives the same features whichever data it was trained on.
    a = _window0_features(real, trained.scorer)
    b = _window0_features(real, again.scorer)
    assert a.equals(b)


def test_the_leakage_test_can_fail(real: Dataset, trained: SequenceModel) -> None:  # noqa: F811
    """Rewriting the network's own (older) targets changes it: the comparison above has teeth."""
    cutoffs = C.label_window(real.orders, OLDEST + 2, 2)
    again = _train(_rewrite_future(real, cutoffs, seed=3))
    assert again.scorer.onnx_bytes != trained.scorer.onnx_bytes


def test_rows_of_new_products_only_get_missing_features(trained: SequenceModel, real: Dataset) -> None:  # noqa: F811
    """A chunk holding only products new to their users (ALS proposals): every column NaN, no error."""
    from basketcast.features.sequence import sequence_features

    h = as_of(real, C.label_window(real.orders, 0, 2), order_lines(real))
    users = UserSequences.of(h, trained.scorer.steps, trained.scorer.vocabulary)
    user = int(h.cutoffs[S.USER][0])
    cands = pl.DataFrame(
        {S.USER: [user, user], S.PRODUCT: [999_991, 999_992], S.IS_REPEAT: [False, False]},
        schema={S.USER: pl.UInt32, S.PRODUCT: pl.UInt32, S.IS_REPEAT: pl.Boolean},
    )
    out = sequence_features(h, users, cands, trained.scorer)
    assert out.height == 2 and all(out[c].is_nan().all() for c in FEATURES)


def test_every_step_of_a_row_carries_the_row_weight(real: Dataset, trained: SequenceModel) -> None:  # noqa: F811
    """The auxiliary every-step loss weighs a row's steps like its final step (the rows were kept by
    the final label's negative sampling): a row of weight 0 adds nothing, whatever its history."""
    torch = _torch()
    fit_users, _ = _users(real)
    train = training_set(
        real,
        order_lines(real),
        trained.windows,
        fit_users,
        trained.fit.vocabulary,
        CONFIG.sequence,
        CONFIG.windows.min_history,
        sample=False,
    )
    assert train is not None
    idx = np.arange(min(256, len(train)))
    batch = train.rows.batch(train.users, idx)
    label, weight = train.label[idx], train.weight[idx].copy()
    bought = batch.row_steps[:, :, 0]
    r = int(np.flatnonzero(bought[:, :-1].sum(axis=1) >= 2)[0])  # a row whose earlier steps count
    other = SequenceBatch(**{**batch.__dict__, "row_steps": batch.row_steps.copy()})
    other.row_steps[r, :, 0] = 1.0 - other.row_steps[r, :, 0]  # another history for row r only

    def loss(b: SequenceBatch, w: np.ndarray) -> float:
        with torch.no_grad():
            return float(_loss(trained.fit.module, b, label, w, CONFIG.sequence.aux_weight))

    assert loss(batch, weight) != loss(other, weight)  # row r's history counts at its weight…
    weight[r] = 0.0
    assert loss(batch, weight) == pytest.approx(loss(other, weight), abs=1e-7)  # …and not at all at 0
