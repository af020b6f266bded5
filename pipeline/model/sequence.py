"""The sequence network: a PyTorch GRU + attention model of each shopper, exported to ONNX.

For every (user, past product) row — and one "None" row per user — the network reads
(``basketcast.features.sequence``):

* a GRU (``hidden``) over the user's last ``steps`` orders: was the product bought, where in the
  cart, the order's days since the previous one, size, share reordered, day and hour (the
  per-(user, product) recurrent input of the 3rd-place Kaggle Instacart solution and ReCANet);
  its initial state is a projection of the product's embedding;
* product relationships: the product's embedding (product + aisle + department rows, summed as in
  RecTools' item net) attends, with ``heads`` heads, over the products of the user's last three
  baskets (each with a "baskets ago" embedding) plus a learned "nothing relevant" key;
* a fusion MLP → an ``STATE_SIZE``-number state → a logit: the probability that the product is
  in the next order (for the None row: that the next order has no reordered product).

No user embedding: a user is their sequences, so a trained network scores users it never saw.

**Honest features.** :func:`fit` trains only on target orders *older than every label window the
ranker uses* (``training_windows``) — the final step's target — plus, as an auxiliary loss, every
earlier order of those sequences as the target of the step before it. So no ranker label, no
validation order and no held-out fold's order was ever a network target, and its outputs are
out-of-sample features for every ranker window, the evaluation and the serving snapshot
(``tests/pipeline/model/test_sequence.py`` proves it by rewriting those orders).

**Serving without PyTorch.** :func:`to_onnx` exports with the legacy TorchScript exporter (the
dynamo exporter writes ``nn.GRU`` with ``linear_before_reset=0``, pytorch/pytorch#189225; the
export asserts 1), :func:`parity` compares onnxruntime with PyTorch on real rows, and every bulk
inference after training runs :class:`OnnxScorer` — the class the serving snapshot, ``predict``
and the evaluation use. PyTorch is imported lazily, only to train and export.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import polars as pl

from basketcast.features import cutoffs as C
from basketcast.features.history import History, as_of
from basketcast.features.sequence import (
    N_INPUTS,
    RECENT_BASKETS,
    STATE_SIZE,
    RowSequences,
    SequenceBatch,
    UserSequences,
    Vocabulary,
    encode_rows,
    with_none_rows,
)
from basketcast.pipeline.config import SequenceConfig
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.storage import Dataset
from basketcast.pipeline.errors import ExportError

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

INPUT_NAMES: Final = (
    "row_steps",
    "user_steps",
    "product",
    "aisle",
    "department",
    "row_user",
    "recent_product",
    "recent_aisle",
    "recent_department",
    "recent_ago",
    "recent_pad",
)
OUTPUT_NAMES: Final = ("logit", "state")
OPSET: Final = 17
MAX_STOP_USERS: Final = 2_000  # early-stopping users at most (a seeded sample beyond)
PARITY_ROWS: Final = 10_000  # real rows the ONNX export is compared on, at least (all when fewer)
TOLERANCE: Final = 1e-4
NETWORK_FILE: Final = "network.onnx"
VOCABULARY_FILE: Final = "vocabulary.npz"
META_FILE: Final = "meta.json"
CART_FILE: Final = "cart.onnx"  # the cart attention (basketcast.pipeline.model.cart_network), beside the network


def _torch() -> Any:
    import torch

    return torch


@contextmanager
def deterministic_algorithms() -> Iterator[None]:
    """PyTorch's deterministic algorithms while the block (or decorated function) runs; the
    caller's mode is restored after.

    The backward of ``tensor[row_user]`` (the attention keys and values gathered per row, here and
    in the cart attention) is ``index_put_(accumulate=True)``. With more than one intra-op thread,
    PyTorch's CPU kernel sums into rows shared by two threads with atomic float adds, in whichever
    order the threads reach them, so two trainings on the same data round differently (300
    synthetic users, two threads, two epochs: weights apart by up to 1.6e-5, the network's
    features by up to 9.5e-7, hence another ranker). In deterministic mode the kernel adds in
    index order: the weights are the same bytes run to run (here also the bytes of one thread).
    """
    torch = _torch()
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def _module_class() -> type:
    """The ``nn.Module`` class, defined on first use so that importing this module needs no torch."""
    torch = _torch()
    nn = torch.nn

    class SequenceNet(nn.Module):  # type: ignore[misc, name-defined]
        def __init__(self, sizes: tuple[int, int, int], config: SequenceConfig) -> None:
            super().__init__()
            d, hidden = config.embedding, config.hidden
            self.product = nn.Embedding(sizes[0], d)
            self.aisle = nn.Embedding(sizes[1], d)
            self.department = nn.Embedding(sizes[2], d)
            self.ago = nn.Embedding(RECENT_BASKETS, d)
            self.null_key = nn.Parameter(torch.zeros(1, 1, d))
            self.init = nn.Linear(d, hidden)
            self.gru = nn.GRU(N_INPUTS, hidden, batch_first=True)
            self.step_head = nn.Linear(hidden + d, 1)
            # Multi-head attention, written out so that keys and values are projected once per
            # user (all of a user's candidates attend over the same recent baskets).
            self.heads = config.heads
            self.query = nn.Linear(d, d)
            self.key = nn.Linear(d, d)
            self.value = nn.Linear(d, d)
            self.attended = nn.Linear(d, d)
            self.fuse = nn.Sequential(nn.Linear(hidden + 2 * d, 32), nn.ReLU(), nn.Linear(32, STATE_SIZE))
            self.out = nn.Linear(STATE_SIZE, 1)
            for emb in (self.product, self.aisle, self.department, self.ago):
                nn.init.normal_(emb.weight, std=0.05)

        def embed(self, product: Any, aisle: Any, department: Any) -> Any:
            return self.product(product) + self.aisle(aisle) + self.department(department)

        def encode(self, steps: Any, product: Any, aisle: Any, department: Any) -> tuple[Any, Any, Any]:
            """``steps``: the joined (n, T, N_INPUTS) step inputs (see :func:`joined_steps`)."""
            q = self.embed(product, aisle, department)
            h0 = torch.tanh(self.init(q)).unsqueeze(0)
            every, last = self.gru(steps, h0)
            return q, every, last[0]

        def forward(
            self,
            row_steps: Any,
            user_steps: Any,
            product: Any,
            aisle: Any,
            department: Any,
            row_user: Any,
            recent_product: Any,
            recent_aisle: Any,
            recent_department: Any,
            recent_ago: Any,
            recent_pad: Any,
        ) -> tuple[Any, Any]:
            steps = joined_steps(row_steps, user_steps, row_user)
            q, _, last = self.encode(steps, product, aisle, department)
            return self.head(q, last, row_user, recent_product, recent_aisle, recent_department, recent_ago, recent_pad)

        def head(
            self,
            q: Any,
            last: Any,
            row_user: Any,
            recent_product: Any,
            recent_aisle: Any,
            recent_department: Any,
            recent_ago: Any,
            recent_pad: Any,
        ) -> tuple[Any, Any]:
            n, d = q.shape
            heads, dh = self.heads, d // self.heads
            context = self.embed(recent_product, recent_aisle, recent_department) + self.ago(recent_ago)
            u, r = context.shape[0], context.shape[1]
            keys = self.key(context).reshape(u, r, heads, dh)[row_user]  # (n, r, heads, dh)
            values = self.value(context).reshape(u, r, heads, dh)[row_user]
            query = self.query(q).reshape(n, 1, heads, dh)
            null_key = self.key(self.null_key[0]).reshape(1, heads, dh)
            null_value = self.value(self.null_key[0]).reshape(1, 1, heads, dh)
            scale = 1.0 / math.sqrt(dh)
            scores = (keys * query).sum(3) * scale  # (n, r, heads)
            scores = scores.masked_fill(recent_pad[row_user].unsqueeze(2), -1e9)
            null_score = (null_key * query[:, 0]).sum(2).unsqueeze(1) * scale  # (n, 1, heads)
            weights = torch.softmax(torch.cat([null_score, scores], dim=1), dim=1).unsqueeze(3)
            mixed = weights[:, :1] * null_value + (weights[:, 1:] * values).sum(1, keepdim=True)
            att = self.attended(mixed.reshape(n, d))
            state = self.fuse(torch.cat([last, att, q], dim=1))
            return self.out(state).squeeze(1), state

        def step_logits(self, q: Any, every: Any) -> Any:
            """Per-step logits (the auxiliary loss): step t predicts the order after t."""
            qq = q.unsqueeze(1).expand(-1, every.shape[1], -1)
            return self.step_head(torch.cat([every, qq], dim=2)).squeeze(2)

    return SequenceNet


def joined_steps(row_steps: Any, user_steps: Any, row_user: Any) -> Any:
    """(n, T, N_INPUTS) in STEP_INPUTS order: the user's "present", the row's bought and cart
    position, the user's order context (the user part gathered inside the graph)."""
    torch = _torch()
    per_row = user_steps[row_user]
    return torch.cat([per_row[:, :, :1], row_steps, per_row[:, :, 1:]], dim=2)


def _tensors(batch: SequenceBatch) -> tuple[Any, ...]:
    torch = _torch()
    return (
        torch.from_numpy(batch.row_steps),
        torch.from_numpy(batch.user_steps),
        torch.from_numpy(batch.product),
        torch.from_numpy(batch.aisle),
        torch.from_numpy(batch.department),
        torch.from_numpy(batch.row_user),
        torch.from_numpy(batch.recent_product),
        torch.from_numpy(batch.recent_aisle),
        torch.from_numpy(batch.recent_department),
        torch.from_numpy(batch.recent_ago),
        torch.from_numpy(batch.recent_pad),
    )


def _feeds(batch: SequenceBatch) -> dict[str, np.ndarray]:
    return dict(zip(INPUT_NAMES, (np.ascontiguousarray(getattr(batch, name)) for name in INPUT_NAMES), strict=True))


# ---------------------------------------------------------------------------------------------
# Training data


@dataclass
class TrainingSet:
    """Encoded rows of the network's target orders, their labels and weights."""

    users: UserSequences
    rows: RowSequences
    label: np.ndarray  # float32 (n,)
    weight: np.ndarray  # float32 (n,)
    groups: int
    windows: list[int]  # the label windows the rows come from

    def __len__(self) -> int:
        return len(self.rows)


def training_windows(oldest_ranker_window: int, config: SequenceConfig) -> list[int]:
    """The label windows the network learns from: the ``config.windows`` just older than the
    oldest window the ranker trains or is evaluated on."""
    return [oldest_ranker_window + 1 + i for i in range(config.windows)]


def _window_rows(
    data: Dataset, lines: pl.DataFrame, window: int, users: pl.Series, min_history: int
) -> tuple[History, pl.DataFrame] | None:
    """History at label window ``window`` and the rows (USER, PRODUCT, LABEL) of ``users``: every
    past product of the user and one None row (product 0, label = no reordered product)."""
    cutoffs = C.label_window(data.orders, window, min_history)
    cutoffs = cutoffs.filter(pl.col(S.USER).is_in(users.cast(pl.UInt32).implode()))
    if cutoffs.height == 0:
        return None
    h = as_of(data, cutoffs, lines)
    truth = C.labels(lines, h.cutoffs)
    pairs = h.user_products.select(pl.col(S.USER).cast(pl.UInt32), pl.col(S.PRODUCT).cast(pl.UInt32)).sort(
        S.USER, S.PRODUCT
    )
    rows = with_none_rows(pairs.with_columns(pl.lit(True).alias(S.IS_REPEAT)))
    reordered = truth.group_by(S.USER).agg((pl.col(S.REORDERED).sum() == 0).alias("_none"))
    labelled = (
        rows.join(
            truth.select(pl.col(S.USER).cast(pl.UInt32), pl.col(S.PRODUCT).cast(pl.UInt32), pl.lit(1.0).alias("_y")),
            on=[S.USER, S.PRODUCT],
            how="left",
            maintain_order="left",
        )
        .join(reordered.with_columns(pl.col(S.USER).cast(pl.UInt32)), on=S.USER, how="left", maintain_order="left")
        .with_columns(
            pl.when(pl.col(S.PRODUCT) == 0)
            .then(pl.col("_none").cast(pl.Float32))
            .otherwise(pl.col("_y").fill_null(0.0))
            .alias(S.LABEL)
        )
        .select(S.USER, S.PRODUCT, S.LABEL)
    )
    return h, labelled


def training_set(
    data: Dataset,
    lines: pl.DataFrame,
    windows: list[int],
    users: pl.Series,
    vocab: Vocabulary,
    config: SequenceConfig,
    min_history: int,
    *,
    sample: bool,
) -> TrainingSet | None:
    """Rows of ``users`` at ``windows`` (up to ``max_training_groups`` (window, user) groups, the
    users of each window a seeded sample); with ``sample`` negatives are kept at
    ``negative_sample_rate`` and reweighted by its inverse (every positive and None row kept)."""
    rng = np.random.default_rng(config.seed)
    budget = config.max_training_groups
    parts: list[tuple[UserSequences, RowSequences, np.ndarray, np.ndarray]] = []
    groups = 0
    used: list[int] = []
    for w in windows:
        if budget <= 0:
            break
        chosen = users.sort()
        if chosen.len() > budget:
            keep = np.sort(rng.choice(chosen.len(), size=budget, replace=False))
            chosen = chosen.gather(keep)
        got = _window_rows(data, lines, w, chosen, min_history)
        if got is None:
            continue
        h, rows = got
        n_users = h.cutoffs.height
        budget -= n_users
        groups += n_users
        label = rows[S.LABEL].to_numpy().astype(np.float32)
        weight = np.ones(rows.height, dtype=np.float32)
        if sample and config.negative_sample_rate < 1:
            is_none = rows[S.PRODUCT].to_numpy() == 0
            keep_row = (label > 0) | is_none | (rng.random(rows.height) < config.negative_sample_rate)
            weight = np.where((label > 0) | is_none, 1.0, 1.0 / config.negative_sample_rate).astype(np.float32)
            rows, label, weight = rows.filter(pl.Series(keep_row)), label[keep_row], weight[keep_row]
        seqs = UserSequences.of(h, config.steps, vocab)
        parts.append((seqs, encode_rows(h, seqs, rows, vocab), label, weight))
        used.append(w)
        log.info("sequence network: window %d, %d users, %d rows", w, n_users, rows.height)
    if not parts:
        return None
    return _concat(parts, groups, used)


def _concat(
    parts: list[tuple[UserSequences, RowSequences, np.ndarray, np.ndarray]], groups: int, windows: list[int]
) -> TrainingSet:
    """One training set from the windows' parts (user indices shifted to the stacked user arrays)."""
    offsets = np.cumsum([0, *(p[0].users.size for p in parts)])
    first = parts[0][0]
    users = UserSequences(
        users=np.concatenate([p[0].users for p in parts]),
        steps=first.steps,
        orders=np.concatenate([p[0].orders for p in parts]),
        no_reorder=np.concatenate([p[0].no_reorder for p in parts]),
        recent=np.concatenate([p[0].recent for p in parts]),
        recent_ago=np.concatenate([p[0].recent_ago for p in parts]),
        recent_rows=tuple(np.concatenate([p[0].recent_rows[i] for p in parts]) for i in range(3)),  # type: ignore[arg-type]
    )
    rows = RowSequences(
        user_index=np.concatenate([p[1].user_index + off for p, off in zip(parts, offsets, strict=False)]),
        bought=np.concatenate([p[1].bought for p in parts]),
        cart=np.concatenate([p[1].cart for p in parts]),
        product=np.concatenate([p[1].product for p in parts]),
        aisle=np.concatenate([p[1].aisle for p in parts]),
        department=np.concatenate([p[1].department for p in parts]),
    )
    return TrainingSet(
        users, rows, np.concatenate([p[2] for p in parts]), np.concatenate([p[3] for p in parts]), groups, windows
    )


# ---------------------------------------------------------------------------------------------
# Fit


@dataclass
class FitResult:
    """The trained network (a torch module), its vocabulary and the training record."""

    module: Any
    vocabulary: Vocabulary
    config: SequenceConfig
    history: list[dict[str, float]]  # per epoch: train loss, stop loss, seconds
    best_epoch: int
    rows: int
    groups: int


def _loss(net: Any, batch: SequenceBatch, label: np.ndarray, weight: np.ndarray, aux: float) -> Any:
    """Weighted BCE of the final step + ``aux`` × weighted BCE of every earlier step of repeat rows.

    A row's earlier steps carry the row's weight too: the rows were kept by the final label's
    negative sampling (``weight`` = 1 / rate for a kept negative), so unweighted, the steps would
    over-represent products that were bought again."""
    torch = _torch()
    F = torch.nn.functional
    t = _tensors(batch)
    steps = joined_steps(t[0], t[1], t[5])
    q, every, last = net.encode(steps, *t[2:5])
    logit, _ = net.head(q, last, *t[5:])
    w = torch.from_numpy(weight)
    main = (F.binary_cross_entropy_with_logits(logit, torch.from_numpy(label), reduction="none") * w).sum() / w.sum()
    if aux <= 0:
        return main
    present, bought = steps[:, :, 0], steps[:, :, 1]
    # Step t predicts order t+1 for a product already bought by step t (a repeat candidate then).
    seen = torch.cummax(bought, dim=1).values
    mask = (present[:, 1:] * seen[:, :-1]) > 0
    if not bool(mask.any()):
        return main
    step = net.step_logits(q, every)[:, :-1]
    step_w = mask.to(step.dtype) * w.unsqueeze(1)
    bce = F.binary_cross_entropy_with_logits(step, bought[:, 1:], reduction="none")
    aux_loss = (bce * step_w).sum() / step_w.sum()
    return main + aux * aux_loss


def _minibatches(
    n: int, size: int, rng: np.random.Generator | None, groups: np.ndarray | None = None
) -> Iterator[np.ndarray]:
    """Row indices, ``size`` at a time: in order, or — with ``rng`` and ``groups`` (the row's user
    index, rows of a user contiguous) — whole users in a random order, so that a batch holds few
    users and their shared attention context is projected once per user."""
    if rng is None or groups is None:
        for start in range(0, n, size):
            yield np.arange(start, min(start + size, n))
        return
    bounds = np.flatnonzero(np.diff(groups)) + 1
    starts = np.concatenate([[0], bounds])
    stops = np.concatenate([bounds, [n]])
    order = rng.permutation(starts.size)
    taken: list[np.ndarray] = []
    count = 0
    for g in order:
        taken.append(np.arange(starts[g], stops[g]))
        count += int(stops[g] - starts[g])
        if count >= size:
            yield np.concatenate(taken)
            taken, count = [], 0
    if taken:
        yield np.concatenate(taken)


@deterministic_algorithms()
def fit(train: TrainingSet, stop: TrainingSet | None, vocab: Vocabulary, config: SequenceConfig) -> FitResult:
    """Adam on ``train`` with early stopping on ``stop``'s loss (patience ``config.patience``);
    the best epoch's weights are kept. The same bytes for a seed, run to run and whatever the
    thread count (fixed batch order; :func:`deterministic_algorithms`)."""
    torch = _torch()
    from basketcast.pipeline.progress import bar

    threads = config.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    net = _module_class()(vocab.sizes, config)
    # Start from the base rate (the weighted share of positive rows): no epochs spent learning it.
    rate = float(np.average(train.label, weights=train.weight))
    with torch.no_grad():
        net.out.bias.fill_(math.log(max(rate, 1e-6) / max(1 - rate, 1e-6)))
    opt = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    history: list[dict[str, float]] = []
    best, best_state, best_epoch, waited = math.inf, None, 0, 0
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        net.train()
        total, seen = 0.0, 0
        with bar(len(train), f"sequence network epoch {epoch}/{config.epochs}") as progress:
            for idx in _minibatches(len(train), config.batch_size, rng, train.rows.user_index):
                opt.zero_grad(set_to_none=True)
                loss = _loss(
                    net, train.rows.batch(train.users, idx), train.label[idx], train.weight[idx], config.aux_weight
                )
                loss.backward()
                opt.step()
                total += float(loss.detach()) * idx.size
                seen += idx.size
                progress(idx.size, f"loss {total / seen:.4f}")
        stop_loss = _evaluate_loss(net, stop or train)
        history.append(
            {
                "epoch": epoch,
                "train_loss": total / max(seen, 1),
                "stop_loss": stop_loss,
                "seconds": time.perf_counter() - started,
            }
        )
        log.info(
            "sequence network epoch %d: train loss %.4f, stop-user loss %.4f", epoch, total / max(seen, 1), stop_loss
        )
        if stop_loss < best - 1e-5:
            best, best_epoch, waited = stop_loss, epoch, 0
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
            waited += 1
            if waited > config.patience:
                break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return FitResult(net, vocab, config, history, best_epoch, len(train), train.groups)


def _evaluate_loss(net: Any, data: TrainingSet, size: int = 8192) -> float:
    """The final-step weighted BCE over a whole set (no gradient)."""
    torch = _torch()
    net.eval()
    num, den = 0.0, 0.0
    with torch.inference_mode():
        for idx in _minibatches(len(data), size, None):
            logit, _ = net(*_tensors(data.rows.batch(data.users, idx)))
            w = torch.from_numpy(data.weight[idx])
            y = torch.from_numpy(data.label[idx])
            num += float((torch.nn.functional.binary_cross_entropy_with_logits(logit, y, reduction="none") * w).sum())
            den += float(w.sum())
    return num / max(den, 1e-12)


def torch_scores(module: Any, batch: SequenceBatch) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's (logit, state) for a batch (the parity reference)."""
    torch = _torch()
    with torch.inference_mode():
        logit, state = module(*_tensors(batch))
    return logit.numpy(), state.numpy()


# ---------------------------------------------------------------------------------------------
# ONNX


def to_onnx(module: Any, sample: SequenceBatch) -> bytes:
    """Export with the legacy exporter (dynamic rows, steps and users) and check the GRU nodes."""
    import onnx

    dynamic = {
        "row_steps": {0: "rows", 1: "time"},
        "user_steps": {0: "users", 1: "time"},
        "product": {0: "rows"},
        "aisle": {0: "rows"},
        "department": {0: "rows"},
        "row_user": {0: "rows"},
        **{name: {0: "users", 1: "recent"} for name in INPUT_NAMES[6:]},
        "logit": {0: "rows"},
        "state": {0: "rows"},
    }
    exported = export_legacy(module, _tensors(sample), INPUT_NAMES, OUTPUT_NAMES, dynamic)
    model = onnx.load_from_string(exported)
    grus = [n for n in model.graph.node if n.op_type == "GRU"]
    flags = [a.i for n in grus for a in n.attribute if a.name == "linear_before_reset"]
    if not grus or flags != [1] * len(grus):
        raise ExportError(f"the exported GRU must have linear_before_reset=1 (nn.GRU's form), got {flags}")
    return exported


def export_legacy(
    module: Any,
    args: tuple[Any, ...],
    input_names: tuple[str, ...],
    output_names: tuple[str, ...],
    dynamic_axes: dict[str, dict[int, str]],
) -> bytes:
    """ONNX bytes of ``module`` (in eval mode) by the legacy TorchScript exporter at OPSET — the one
    that writes ``nn.GRU`` correctly (``linear_before_reset=1``; the dynamo exporter does not)."""
    torch = _torch()
    buffer = io.BytesIO()
    module.eval()
    torch.onnx.export(
        module,
        args,
        buffer,
        dynamo=False,
        opset_version=OPSET,
        input_names=list(input_names),
        output_names=list(output_names),
        dynamic_axes=dynamic_axes,
    )
    return buffer.getvalue()


class OnnxScorer:
    """The network in onnxruntime: a :class:`basketcast.features.sequence.SequenceScorer`."""

    def __init__(self, onnx_bytes: bytes, vocabulary: Vocabulary, steps: int, threads: int = 0) -> None:
        import onnxruntime as ort

        # Measured on the 5,000-user snapshot (315,108 rows): 2 intra-op threads 4.3 s, 1 thread
        # 5.0 s, 2 single-threaded calls side by side 4.9 s.
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        self.vocabulary = vocabulary
        self.steps = steps
        self.onnx_bytes = onnx_bytes
        self.threads = threads

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as what builds it (a session is not picklable): a Dask worker gets the same
        network with the same thread count, hence the same outputs."""
        return (OnnxScorer, (self.onnx_bytes, self.vocabulary, self.steps, self.threads))

    def score(self, batch: SequenceBatch) -> tuple[np.ndarray, np.ndarray]:
        logit, state = self.session.run(list(OUTPUT_NAMES), _feeds(batch))
        return np.asarray(logit, dtype=np.float32), np.asarray(state, dtype=np.float32)

    def save(self, folder: Path, meta: dict[str, Any], cart_onnx: bytes | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        if cart_onnx is not None:
            (folder / CART_FILE).write_bytes(cart_onnx)
        (folder / NETWORK_FILE).write_bytes(self.onnx_bytes)
        self.vocabulary.save(folder / VOCABULARY_FILE)
        (folder / META_FILE).write_text(json.dumps({"steps": self.steps, **meta}, indent=2, default=float))

    @classmethod
    def load(cls, folder: Path, threads: int = 0) -> OnnxScorer | None:
        """The saved scorer, or None when the run has no network (trained with it disabled)."""
        if not (folder / NETWORK_FILE).exists():
            return None
        meta = json.loads((folder / META_FILE).read_text())
        return cls(
            (folder / NETWORK_FILE).read_bytes(), Vocabulary.load(folder / VOCABULARY_FILE), int(meta["steps"]), threads
        )


@dataclass(frozen=True)
class SequenceParity:
    rows: int
    max_abs_diff_logit: float
    max_abs_diff_state: float


def parity(module: Any, scorer: OnnxScorer, data: TrainingSet, rows: int = PARITY_ROWS) -> SequenceParity:
    """onnxruntime vs PyTorch on ``rows`` real rows (all when fewer); raises above TOLERANCE."""
    n = min(rows, len(data))
    worst_logit, worst_state = 0.0, 0.0
    for idx in _minibatches(n, 4096, None):
        batch = data.rows.batch(data.users, idx)
        ref_logit, ref_state = torch_scores(module, batch)
        logit, state = scorer.score(batch)
        worst_logit = max(worst_logit, float(np.abs(logit - ref_logit).max(initial=0.0)))
        worst_state = max(worst_state, float(np.abs(state - ref_state).max(initial=0.0)))
    result = SequenceParity(n, worst_logit, worst_state)
    if not (worst_logit <= TOLERANCE and worst_state <= TOLERANCE):
        raise ExportError(f"sequence network ONNX differs from PyTorch on real rows: {result}")
    return result


# ---------------------------------------------------------------------------------------------
# The stage


@dataclass
class SequenceModel:
    """What ``basketcast train`` keeps: the ONNX scorer and how it was trained and checked."""

    scorer: OnnxScorer
    windows: list[int]
    fit: FitResult
    parity: SequenceParity
    seconds: float
    cart: Any = None  # basketcast.pipeline.model.cart_network.CartModel, trained after the network

    def meta(self) -> dict[str, Any]:
        cart = self.cart
        return {
            "cart_attention": None
            if cart is None
            else {
                "parity_rows": cart.parity_rows,
                "max_abs_diff": cart.max_abs_diff,
                "epochs": cart.history,
                "seconds": cart.seconds,
            },
            "windows": self.windows,
            "rows": self.fit.rows,
            "groups": self.fit.groups,
            "best_epoch": self.fit.best_epoch,
            "epochs": self.fit.history,
            "parity": self.parity.__dict__,
            "seconds": self.seconds,
            "config": self.fit.config.model_dump(),
        }


def train_sequence(
    data: Dataset,
    lines: pl.DataFrame,
    oldest_ranker_window: int,
    fit_users: pl.Series,
    stop_users: pl.Series,
    config: SequenceConfig,
    min_history: int,
) -> SequenceModel | None:
    """Train, export and parity-check the network on windows older than ``oldest_ranker_window``.

    ``fit_users`` give the gradient, ``stop_users`` the early stopping; returns None when no user
    has an order that old (too little history for the network: its features stay missing).
    """
    started = time.perf_counter()
    windows = training_windows(oldest_ranker_window, config)
    # The vocabulary and its rare-product rule come from the history before the most recent
    # training window's targets (older than every ranker window).
    cutoffs = C.label_window(data.orders, windows[0], min_history)
    if cutoffs.height == 0:
        log.info("sequence network: no user has orders older than window %d; skipped", oldest_ranker_window)
        return None
    vocab = Vocabulary.of(as_of(data, cutoffs, lines), config.min_product_buyers)
    train = training_set(data, lines, windows, fit_users, vocab, config, min_history, sample=True)
    stop_config = config.model_copy(update={"max_training_groups": MAX_STOP_USERS})
    stop = training_set(data, lines, windows[:1], stop_users, vocab, stop_config, min_history, sample=False)
    if train is None:
        log.info("sequence network: no fit user has orders older than window %d; skipped", oldest_ranker_window)
        return None
    result = fit(train, stop, vocab, config)
    check = stop if stop is not None and len(stop) >= min(PARITY_ROWS, len(train)) else train
    onnx_bytes = to_onnx(result.module, check.rows.batch(check.users, slice(0, min(64, len(check)))))
    scorer = OnnxScorer(onnx_bytes, vocab, config.steps, config.threads)
    checked = parity(result.module, scorer, check)
    log.info(
        "sequence network: %d rows, %d groups, best epoch %d, parity max|diff| %.2e over %d rows",
        result.rows,
        result.groups,
        result.best_epoch,
        max(checked.max_abs_diff_logit, checked.max_abs_diff_state),
        checked.rows,
    )
    return SequenceModel(scorer, train.windows, result, checked, time.perf_counter() - started)
