"""What goes in the cart next: attention from each candidate over the products already in the cart.

A residual on top of the sequence network (``basketcast.pipeline.model.sequence``): for a user's past
product c and the products already in the cart, c's embedding (the network's product + aisle +
department rows, copied and fine-tuned) attends, with ``heads`` heads, over the cart's embeddings
and a learned "nothing relevant" key; an MLP of [c's embedding, the attended vector, c's
8-number network state] gives a logit delta g. It is trained on the baskets of label window 1
(``basketcast.pipeline.workflows.sequence_stage``): orders the network never had as targets, so
the network logit it builds on is out-of-sample there as at serving time, and never a validated
order (those are window 0). Each basket is cut at a random point of ``add_to_cart_order`` (a new
cut every epoch): the first part is the cart, the label is "c is in the rest", and the loss is
BCE(network logit + g) with the network logit a fixed offset, so g learns only what the cart adds.

At request time the bundle's ``cart.onnx`` runs over the user's past products with the state
read from the snapshot (``seq_state_*``), and the served score is ranker score + γ · g (γ chosen
on the stop users' real carts). PyTorch only trains and exports; serving runs onnxruntime.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import polars as pl

from basketcast.features import cutoffs as C
from basketcast.features.history import as_of
from basketcast.features.sequence import MAX_CART, STATE_SIZE, UserSequences, Vocabulary, score_rows
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.storage import Dataset
from basketcast.pipeline.errors import ExportError
from basketcast.pipeline.model.sequence import (
    TOLERANCE,
    OnnxScorer,
    SequenceModel,
    _torch,
    deterministic_algorithms,
    export_legacy,
)

log = logging.getLogger(__name__)

INPUT_NAMES: Final = (
    "cand_product",
    "cand_aisle",
    "cand_department",
    "row_user",
    "cart_product",
    "cart_aisle",
    "cart_department",
    "cart_pad",
    "state",
)
EPOCHS: Final = 2
BATCH_USERS: Final = 64
# Users whose baskets train (and early-stop) the cart attention at most: a seeded sample beyond.
MAX_FIT_USERS: Final = 2_000
MAX_STOP_USERS: Final = 1_000


def _module_class() -> type:
    torch = _torch()
    nn = torch.nn

    class CartNet(nn.Module):  # type: ignore[misc, name-defined]
        def __init__(self, network: Any, heads: int) -> None:
            super().__init__()
            self.product = nn.Embedding.from_pretrained(network.product.weight.detach().clone(), freeze=False)
            self.aisle = nn.Embedding.from_pretrained(network.aisle.weight.detach().clone(), freeze=False)
            self.department = nn.Embedding.from_pretrained(network.department.weight.detach().clone(), freeze=False)
            d = self.product.embedding_dim
            self.heads = heads
            self.query = nn.Linear(d, d)
            self.key = nn.Linear(d, d)
            self.value = nn.Linear(d, d)
            self.null_key = nn.Parameter(torch.zeros(1, d))
            self.mix = nn.Sequential(nn.Linear(2 * d + STATE_SIZE, 32), nn.ReLU(), nn.Linear(32, 1))
            nn.init.zeros_(self.mix[2].weight)  # start at g = 0: the network's own logit
            nn.init.zeros_(self.mix[2].bias)

        def forward(
            self,
            cand_product: Any,
            cand_aisle: Any,
            cand_department: Any,
            row_user: Any,
            cart_product: Any,
            cart_aisle: Any,
            cart_department: Any,
            cart_pad: Any,
            state: Any,
        ) -> Any:
            q = self.product(cand_product) + self.aisle(cand_aisle) + self.department(cand_department)
            cart = self.product(cart_product) + self.aisle(cart_aisle) + self.department(cart_department)
            n, d = q.shape
            u, m = cart.shape[0], cart.shape[1]
            heads, dh = self.heads, d // self.heads
            keys = self.key(cart).reshape(u, m, heads, dh)[row_user]
            values = self.value(cart).reshape(u, m, heads, dh)[row_user]
            query = self.query(q).reshape(n, 1, heads, dh)
            scale = 1.0 / math.sqrt(dh)
            scores = ((keys * query).sum(3) * scale).masked_fill(cart_pad[row_user].unsqueeze(2), -1e9)
            null_key = self.key(self.null_key).reshape(1, heads, dh)
            null_value = self.value(self.null_key).reshape(1, 1, heads, dh)
            null_score = (null_key * query[:, 0]).sum(2).unsqueeze(1) * scale
            weights = torch.softmax(torch.cat([null_score, scores], dim=1), dim=1).unsqueeze(3)
            att = (weights[:, :1] * null_value + (weights[:, 1:] * values).sum(1, keepdim=True)).reshape(n, d)
            return self.mix(torch.cat([q, att, state], dim=1)).squeeze(1)

    return CartNet


@dataclass
class CartExamples:
    """The network's target orders of some users: their past products (rows) with the network's
    logit and state, and each target basket's products in cart order."""

    users: np.ndarray  # uint32 (U,)
    row_user: np.ndarray  # int64 (n,)
    product: np.ndarray  # uint32 (n,) product ids
    rows: tuple[np.ndarray, np.ndarray, np.ndarray]  # vocabulary rows (product, aisle, department)
    offset: np.ndarray  # float32 (n,): the network's logit
    state: np.ndarray  # float32 (n, STATE_SIZE)
    baskets: list[np.ndarray]  # per user, the target basket's product ids by add_to_cart_order

    def cut(self, rng: np.random.Generator | None, vocab: Vocabulary) -> CartBatch:
        """Every user's basket cut at a random point (``rng``) or in half (None): the cart, the
        rows not in it, and their labels (in the rest of the basket)."""
        carts = np.zeros((self.users.size, MAX_CART), dtype=np.int64)
        keep = np.ones(self.product.size, dtype=bool)
        label = np.zeros(self.product.size, dtype=np.float32)
        has_cart = np.zeros(self.users.size, dtype=bool)
        bounds = np.searchsorted(self.row_user, np.arange(self.users.size + 1))
        for u, basket in enumerate(self.baskets):
            if basket.size < 2:
                continue
            m = int(rng.integers(1, basket.size)) if rng is not None else basket.size // 2
            cart, rest = basket[:m], basket[m:]
            carts[u, : min(m, MAX_CART)] = cart[:MAX_CART]
            has_cart[u] = True
            lo, hi = bounds[u], bounds[u + 1]
            products = self.product[lo:hi]
            keep[lo:hi] = ~np.isin(products, cart)
            label[lo:hi] = np.isin(products, rest)
        keep &= has_cart[self.row_user]
        return CartBatch.of(self, carts, keep, label, vocab)


@dataclass
class CartBatch:
    feeds: dict[str, np.ndarray]
    offset: np.ndarray
    label: np.ndarray
    row_user: np.ndarray

    @classmethod
    def of(
        cls, ex: CartExamples, carts: np.ndarray, keep: np.ndarray, label: np.ndarray, vocab: Vocabulary
    ) -> CartBatch:
        cart_rows = vocab.rows(carts)
        feeds = {
            "cand_product": ex.rows[0][keep],
            "cand_aisle": ex.rows[1][keep],
            "cand_department": ex.rows[2][keep],
            "row_user": ex.row_user[keep],
            "cart_product": cart_rows[0],
            "cart_aisle": cart_rows[1],
            "cart_department": cart_rows[2],
            "cart_pad": carts == 0,
            "state": ex.state[keep],
        }
        return cls(feeds, ex.offset[keep], label[keep], ex.row_user[keep])

    def take(self, users: np.ndarray) -> dict[str, np.ndarray]:
        """The feeds of the rows of ``users`` (sorted user indices), re-indexed to them."""
        rows = np.isin(self.row_user, users)
        out = {
            k: v[rows]
            for k, v in self.feeds.items()
            if k not in ("cart_product", "cart_aisle", "cart_department", "cart_pad")
        }
        out["row_user"] = np.searchsorted(users, self.row_user[rows])
        for k in ("cart_product", "cart_aisle", "cart_department", "cart_pad"):
            out[k] = self.feeds[k][users]
        return out


def examples(
    data: Dataset, lines: pl.DataFrame, window: int, users: pl.Series, scorer: OnnxScorer, min_history: int
) -> CartExamples | None:
    """The cart examples of ``users`` at label window ``window``."""
    cutoffs = C.label_window(data.orders, window, min_history).filter(
        pl.col(S.USER).is_in(users.cast(pl.UInt32).implode())
    )
    if cutoffs.height == 0:
        return None
    h = as_of(data, cutoffs, lines)
    target = lines.join(
        h.cutoffs.select(
            S.USER, pl.col(S.TARGET_ORDER_NUMBER).cast(lines.schema[S.ORDER_NUMBER]).alias(S.ORDER_NUMBER)
        ),
        on=[S.USER, S.ORDER_NUMBER],
        how="semi",
    ).sort(S.USER, S.CART_POS)
    pairs = h.user_products.select(pl.col(S.USER).cast(pl.UInt32), pl.col(S.PRODUCT).cast(pl.UInt32)).sort(
        S.USER, S.PRODUCT
    )
    seqs = UserSequences.of(h, scorer.steps, scorer.vocabulary)
    rows = pairs  # the user's past products (no None row: a cart holds products)
    logit, state = score_rows(h, seqs, rows, scorer)
    user_ids = h.cutoffs[S.USER].to_numpy().astype(np.uint32)
    per_user = target.group_by(S.USER, maintain_order=True).agg(pl.col(S.PRODUCT))
    basket_of = dict(zip(per_user[S.USER].to_list(), per_user[S.PRODUCT].to_list(), strict=True))
    products = rows[S.PRODUCT].to_numpy().astype(np.uint32)
    return CartExamples(
        users=user_ids,
        row_user=np.searchsorted(user_ids, rows[S.USER].to_numpy()).astype(np.int64),
        product=products,
        rows=scorer.vocabulary.rows(products),
        offset=logit,
        state=state,
        baskets=[np.asarray(basket_of.get(int(u), []), dtype=np.uint32) for u in user_ids],
    )


def _tensors(feeds: dict[str, np.ndarray]) -> tuple[Any, ...]:
    torch = _torch()
    return tuple(torch.from_numpy(np.ascontiguousarray(feeds[name])) for name in INPUT_NAMES)


@dataclass
class CartModel:
    onnx_bytes: bytes
    max_abs_diff: float
    parity_rows: int
    history: list[dict[str, float]]
    seconds: float


@deterministic_algorithms()  # the attention's gathers by row_user, as in the network
def train_cart(
    data: Dataset,
    lines: pl.DataFrame,
    sequence: SequenceModel,
    fit_users: pl.Series,
    stop_users: pl.Series,
    min_history: int,
    seed: int = 42,
    window: int | None = None,
) -> CartModel | None:
    """Fit the cart residual on label window ``window`` (at most MAX_FIT_USERS fit and
    MAX_STOP_USERS stop users, seeded samples); export and parity-check it. The same bytes for a
    seed, run to run (:func:`basketcast.pipeline.model.sequence.deterministic_algorithms`).

    ``window`` should be one whose orders the network never had as targets (a ranker window, see
    ``basketcast.pipeline.workflows.sequence_stage``): there the offset it learns on top of — the
    network's logit and state — is as good as at serving time. None takes the network's most
    recent training window, where that offset is in-sample for the fit users (over-confident)."""
    torch = _torch()
    started = time.perf_counter()
    window = sequence.windows[0] if window is None else window
    pick = np.random.default_rng(seed)

    def sample(users: pl.Series, n: int) -> pl.Series:
        users = users.sort()
        return users if users.len() <= n else users.gather(np.sort(pick.choice(users.len(), size=n, replace=False)))

    train = examples(data, lines, window, sample(fit_users, MAX_FIT_USERS), sequence.scorer, min_history)
    stop = examples(data, lines, window, sample(stop_users, MAX_STOP_USERS), sequence.scorer, min_history)
    if train is None or stop is None:
        return None
    torch.manual_seed(seed)
    torch.set_num_threads(sequence.fit.config.threads or os.cpu_count() or 1)
    rng = np.random.default_rng(seed)
    vocab = sequence.scorer.vocabulary
    net = _module_class()(sequence.fit.module, sequence.fit.config.heads)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    F = torch.nn.functional
    stop_batch = stop.cut(None, vocab)
    history: list[dict[str, float]] = []

    def stop_loss() -> float:
        net.eval()
        with torch.inference_mode():
            g = net(*_tensors(stop_batch.feeds))
            return float(
                F.binary_cross_entropy_with_logits(
                    torch.from_numpy(stop_batch.offset) + g, torch.from_numpy(stop_batch.label)
                )
            )

    best, best_state = stop_loss(), {k: v.detach().clone() for k, v in net.state_dict().items()}
    history.append({"epoch": 0, "stop_loss": best})
    for epoch in range(1, EPOCHS + 1):
        batch = train.cut(rng, vocab)
        net.train()
        order = rng.permutation(train.users.size)
        for start in range(0, order.size, BATCH_USERS):
            users = np.sort(order[start : start + BATCH_USERS])
            feeds = batch.take(users)
            if feeds["state"].shape[0] == 0:
                continue
            rows = np.isin(batch.row_user, users)
            opt.zero_grad(set_to_none=True)
            g = net(*_tensors(feeds))
            loss = F.binary_cross_entropy_with_logits(
                torch.from_numpy(batch.offset[rows]) + g, torch.from_numpy(batch.label[rows])
            )
            loss.backward()
            opt.step()
        current = stop_loss()
        history.append({"epoch": epoch, "stop_loss": current})
        log.info(
            "cart attention epoch %d: stop-user loss %.4f (no-cart network %.4f)",
            epoch,
            current,
            history[0]["stop_loss"],
        )
        if current < best:
            best, best_state = current, {k: v.detach().clone() for k, v in net.state_dict().items()}
    net.load_state_dict(best_state)
    net.eval()
    onnx_bytes = to_onnx(net, stop_batch.feeds)
    # Parity on every fit and stop user's basket cut in half (real rows, ≥ 10,000 when there are).
    diff_stop, n_stop = parity(net, onnx_bytes, stop_batch.feeds)
    diff_fit, n_fit = parity(net, onnx_bytes, train.cut(None, vocab).feeds)
    diff, n = max(diff_stop, diff_fit), n_stop + n_fit
    return CartModel(onnx_bytes, diff, n, history, time.perf_counter() - started)


def to_onnx(net: Any, feeds: dict[str, np.ndarray]) -> bytes:
    """``cart.onnx``: rows, users and cart length dynamic, traced on (a few) real rows."""
    sample = {
        k: v[: min(64, v.shape[0])] if k not in ("cart_product", "cart_aisle", "cart_department", "cart_pad") else v
        for k, v in feeds.items()
    }
    sample["row_user"] = np.minimum(sample["row_user"], feeds["cart_pad"].shape[0] - 1)
    return export_legacy(
        net,
        _tensors(sample),
        INPUT_NAMES,
        ("delta",),
        {
            **{name: {0: "rows"} for name in ("cand_product", "cand_aisle", "cand_department", "row_user", "state")},
            **{name: {0: "users", 1: "cart"} for name in ("cart_product", "cart_aisle", "cart_department", "cart_pad")},
            "delta": {0: "rows"},
        },
    )


def session(onnx_bytes: bytes, threads: int = 1) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def parity(net: Any, onnx_bytes: bytes, feeds: dict[str, np.ndarray]) -> tuple[float, int]:
    """max |ONNX − PyTorch| of g over the given real rows (raises above TOLERANCE)."""
    torch = _torch()
    with torch.inference_mode():
        ref = net(*_tensors(feeds)).numpy()
    got = session(onnx_bytes, os.cpu_count() or 1).run(None, {k: np.ascontiguousarray(feeds[k]) for k in INPUT_NAMES})[
        0
    ]
    diff = float(np.abs(got - ref).max(initial=0.0))
    if diff > TOLERANCE:
        raise ExportError(f"cart attention ONNX differs from PyTorch by {diff:.2e} on {ref.size} real rows")
    return diff, int(ref.size)
