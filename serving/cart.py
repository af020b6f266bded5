"""The cart attention at request time: onnxruntime over a user's past products and their cart.

``cart.onnx`` (trained by ``basketcast.pipeline.model.cart_network``) gives each candidate the user bought
before a logit delta g from the products already in the cart; the served score is ranker score +
γ · g. Candidates new to the user get no delta (the network has no state for them). The same
class scores many users at once for the offline evaluation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import numpy as np

from basketcast.features.sequence import MAX_CART, Vocabulary

CART_FILE: Final = "cart.onnx"
ROWS_PER_CALL: Final = 65_536  # beyond this many rows, users are scored USERS_PER_CALL at a time
USERS_PER_CALL: Final = 512
VOCABULARY_FILE: Final = "vocabulary.npz"


class CartScorer:
    """``cart.onnx`` + the network's vocabulary (product id → embedding row)."""

    def __init__(self, onnx_bytes: bytes, vocabulary: Vocabulary, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session: Any = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        self.vocabulary = vocabulary

    @classmethod
    def load(cls, folder: Path, threads: int = 1) -> CartScorer | None:
        """The scorer saved in ``folder``, or None when it has none."""
        if not (folder / CART_FILE).is_file() or not (folder / VOCABULARY_FILE).is_file():
            return None
        return cls((folder / CART_FILE).read_bytes(), Vocabulary.load(folder / VOCABULARY_FILE), threads)

    def deltas(
        self, row_user: np.ndarray, products: np.ndarray, states: np.ndarray, carts: list[np.ndarray]
    ) -> np.ndarray:
        """g for every row (float32; 0 where the state is NaN: products new to the user).

        ``row_user``: each row's index into ``carts`` (one cart of product ids per user);
        ``products``: the rows' product ids; ``states``: (n, 8) network states (``seq_state_*``).
        """
        out = np.zeros(products.size, dtype=np.float32)
        known = ~np.isnan(states).any(axis=1)
        if not known.any() or not carts:
            return out
        row_user = np.asarray(row_user, dtype=np.int64)
        if products.size > ROWS_PER_CALL:
            # Whole users at a time: the attention holds (rows × cart × embedding) floats per call.
            bounds = np.searchsorted(row_user, np.arange(0, len(carts) + USERS_PER_CALL, USERS_PER_CALL))
            if not np.all(np.diff(row_user) >= 0):
                raise ValueError("rows must be grouped by user (row_user ascending) beyond ROWS_PER_CALL rows")
            for i in range(bounds.size - 1):
                lo, hi = int(bounds[i]), int(bounds[i + 1])
                if hi > lo:
                    first = i * USERS_PER_CALL
                    out[lo:hi] = self._deltas(
                        row_user[lo:hi] - first, products[lo:hi], states[lo:hi], carts[first : first + USERS_PER_CALL]
                    )
            return out
        return self._deltas(row_user, products, states, carts)

    def _deltas(
        self, row_user: np.ndarray, products: np.ndarray, states: np.ndarray, carts: list[np.ndarray]
    ) -> np.ndarray:
        """One onnxruntime call for these rows (see :meth:`deltas`)."""
        out = np.zeros(products.size, dtype=np.float32)
        known = ~np.isnan(states).any(axis=1)
        if not known.any():
            return out
        width = max(1, min(MAX_CART, max(c.size for c in carts)))
        cart = np.zeros((len(carts), width), dtype=np.int64)
        for u, c in enumerate(carts):
            cart[u, : min(c.size, width)] = c[:width]
        cp, ca, cd = self.vocabulary.rows(cart)
        p, a, d = self.vocabulary.rows(products[known])
        feeds = {
            "cand_product": p,
            "cand_aisle": a,
            "cand_department": d,
            "row_user": np.asarray(row_user, dtype=np.int64)[known],
            "cart_product": cp,
            "cart_aisle": ca,
            "cart_department": cd,
            "cart_pad": cart == 0,
            "state": np.ascontiguousarray(states[known], dtype=np.float32),
        }
        out[known] = self.session.run(None, feeds)[0]
        return out
