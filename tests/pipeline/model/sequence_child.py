"""A child process of ``test_sequence.py``: train the sequence network and the cart attention on a
data folder and write their ONNX files, so that a test can compare two trainings run in two
processes (``python -m tests.pipeline.model.sequence_child DATA OUT [--core N]``)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from basketcast.features import cutoffs as C
from basketcast.features.history import order_lines
from basketcast.pipeline.config import SequenceConfig
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.storage import read_dataset
from basketcast.pipeline.model.cart_network import train_cart
from basketcast.pipeline.model.sequence import CART_FILE, NETWORK_FILE, train_sequence

# Seconds to train on the real excerpt, and still two intra-op threads with batches large enough
# (512 rows x 32 recent products x 8 = 131,072 elements per gathered tensor) that the backward
# of the gathers by row_user runs PyTorch's multi-threaded CPU kernel.
CONFIG = SequenceConfig(enabled=True, epochs=1, windows=2, hidden=8, embedding=8, heads=2, threads=2)
OLDEST = 1  # the ranker's oldest label window, as in test_sequence.py
MIN_HISTORY = 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data", type=Path, help="canonical data folder")
    parser.add_argument("out", type=Path, help="folder for network.onnx and cart.onnx")
    parser.add_argument("--core", type=int, help="run this process's threads on this CPU core only")
    args = parser.parse_args()
    if args.core is not None:
        os.sched_setaffinity(0, {args.core})
    data = read_dataset(args.data)
    lines = order_lines(data)
    users = C.label_window(data.orders, 0, MIN_HISTORY)[S.USER]
    fit, stop = users.gather_every(2), users.gather_every(2, offset=1)
    model = train_sequence(data, lines, OLDEST, fit, stop, CONFIG, MIN_HISTORY)
    if model is None:
        raise SystemExit("no network trained: the data has no orders older than the ranker's windows")
    cart = train_cart(data, lines, model, fit, stop, MIN_HISTORY)
    if cart is None:
        raise SystemExit("no cart attention trained")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / NETWORK_FILE).write_bytes(model.scorer.onnx_bytes)
    (args.out / CART_FILE).write_bytes(cart.onnx_bytes)


if __name__ == "__main__":
    main()
