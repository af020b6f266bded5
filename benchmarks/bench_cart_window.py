"""Ablation: which label window the cart attention learns on, in one process.

    .venv/bin/python benchmarks/bench_cart_window.py --data DATA_DIR [--out DIR]

Trains twice with the sequence network on (MLflow and XGBoost off), the same seed and data:

- **network window** (the earlier rule): the cart attention learns on the network's most recent
  training window, where the network logit it builds on is in-sample for the fit users;
- **window 1** (the default): a ranker window the network never had as a target.

Each run's report carries the cart-completion table on its validation users (the first half of
each held-out basket as the cart, Recall@10/NDCG@10 on the rest, paired bootstrap intervals
against the ranker without the cart) and the weight γ chosen on the stop users' carts. Prints
both tables and the stop-user loss of the cart attention. No assertion: the figures go to
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import basketcast
from basketcast.pipeline.workflows import sequence_stage

CONFIG: dict[str, Any] = {"tracking": [], "xgboost": {"enabled": False}, "sequence": {"enabled": True}}


def run(data: Path, out: Path, network_window: bool) -> tuple[Any, float, dict[str, Any]]:
    """Train into ``out``; with ``network_window`` the cart attention gets ``window=None``."""
    original = sequence_stage.train_cart

    def on_network_window(*args: Any) -> Any:  # fit_network passes (…, seed, window) positionally
        return original(*args[:7])  # window left at None

    if network_window:
        sequence_stage.train_cart = on_network_window  # type: ignore[assignment]
    try:
        started = time.perf_counter()
        trained = basketcast.train(data, out, config=CONFIG, force=True)
        seconds = time.perf_counter() - started
    finally:
        sequence_stage.train_cart = original  # type: ignore[assignment]
    meta = json.loads((out / "sequence" / "meta.json").read_text())
    return trained.evaluation, seconds, meta.get("cart_attention") or {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=None, help="folder for the two runs (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        for name, network_window in (("network window", True), ("window 1", False)):
            report, seconds, cart = run(args.data, root / name.replace(" ", "_"), network_window)
            epochs = cart.get("epochs", [])
            losses = ", ".join(f"{e['stop_loss']:.4f}" for e in epochs)
            print(f"\n## cart attention on the {name} ({seconds:.0f} s)")
            print(f"stop-user loss by epoch (0 = the network alone): {losses}")
            print(f"γ = {report.cart_attention_weight}, β = {report.cart_weight}")
            print(report.cart_completion.markdown() if report.cart_completion else "no cart-completion table")


if __name__ == "__main__":
    main()
