"""basketcast: next-basket recommendations for grocery e-commerce — the notebook API.

A thin face over the project's packages (``pipeline``, ``features``, ``serving``): the same
functions the ``basketcast`` command line calls, returning Polars tables.

Example:
    >>> import basketcast
    >>> data = basketcast.generate(500, "data/synthetic")  # doctest: +SKIP
    >>> run = basketcast.train(data, "artifacts/demo", config={"tracking": []})  # doctest: +SKIP
    >>> run.report.select("method", "ndcg@10")  # doctest: +SKIP
    >>> rec = run.recommender()  # doctest: +SKIP
    >>> rec.recommend([1, 2], k=5)  # doctest: +SKIP
    >>> rec.basket(1)  # doctest: +SKIP
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from basketcast._data import DataFolder, from_transactions, generate, ingest
from basketcast._recommender import Recommender, load
from basketcast._run import Run, train

try:
    __version__ = version("basketcast")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "DataFolder",
    "Recommender",
    "Run",
    "__version__",
    "from_transactions",
    "generate",
    "ingest",
    "load",
    "train",
]
