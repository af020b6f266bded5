"""Data folders for the notebook API: ingest the Kaggle layout or a transaction log, or generate
synthetic shoppers.

Each writes a canonical data folder (Parquet tables + ``manifest.json``, published atomically by
``basketcast.pipeline.data.storage``) and return a :class:`DataFolder` describing it, which can be passed
wherever a path to the data is expected (``basketcast.train(data, ...)``).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.storage import DataManifest

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class DataFolder:
    """A canonical data folder that :func:`ingest`, :func:`from_transactions` or :func:`generate` wrote.

    It is path-like (``os.fspath(folder)`` is its path), so it can be passed to
    :func:`basketcast.train` or to any function that takes a data folder.

    Attributes:
        path: the folder.
        manifest: its ``manifest.json`` (source, fingerprint, rows per table, users).
        warnings: what ingest repaired (empty for generated data); each one was also logged.

    Example:
        >>> data = basketcast.generate(200, "data/synthetic")  # doctest: +SKIP
        >>> data.users, data.orders  # doctest: +SKIP
        (200, 3151)
    """

    path: Path
    manifest: DataManifest
    warnings: list[str] = field(default_factory=list)

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def users(self) -> int:
        """Number of shoppers."""
        return self.manifest.users

    @property
    def orders(self) -> int:
        """Number of orders (prior, train and test)."""
        return self.manifest.rows[S.ORDERS]

    @property
    def lines(self) -> int:
        """Number of order lines (one per product of an order)."""
        return self.manifest.rows[S.ORDER_PRODUCTS]

    @property
    def fingerprint(self) -> str:
        """The content fingerprint a run records (``basketcast evaluate`` checks it)."""
        return self.manifest.fingerprint


def ingest(source: PathLike, out: PathLike, *, strict: bool = False, force: bool = False) -> DataFolder:
    """Validate a folder in the Kaggle Instacart layout and write the canonical data folder ``out``.

    Same as ``basketcast ingest --source SOURCE --out OUT``: ``orders``, ``order_products__prior``,
    ``order_products__train`` (and optionally ``products``, ``aisles``, ``departments``) as CSV,
    ``.csv.gz`` or ``.csv.zip``. What can be repaired is repaired with a warning (logged, and kept in
    ``DataFolder.warnings``); anything else raises :class:`basketcast.pipeline.errors.DataError` naming the
    file, column and an offending row.

    Args:
        source: the folder with the Kaggle CSV files.
        out: the data folder to write (replaced only when it is a data folder, or with ``force``).
        strict: refuse what would be repaired with a warning.
        force: replace ``out`` whatever it holds (the old content is moved aside until the new one
            is complete).

    Returns:
        The written :class:`DataFolder`.

    Example:
        >>> from basketcast.pipeline.data.sample import write_sample  # doctest: +SKIP
        >>> write_sample(Path("sample-csv"))  # the real Instacart sample, 592 shoppers  # doctest: +SKIP
        >>> data = basketcast.ingest("sample-csv", "data/sample")  # doctest: +SKIP
        >>> data.users  # doctest: +SKIP
        592
    """
    from basketcast.pipeline.data.ingest import ingest as run_ingest

    report = run_ingest(Path(source), Path(out), strict=strict, force=force)
    return DataFolder(Path(out), report.manifest, list(report.warnings))


def generate(users: int, out: PathLike, seed: int = 42, *, force: bool = False) -> DataFolder:
    """Simulate ``users`` shoppers of a synthetic grocery shop into the data folder ``out``.

    Same as ``basketcast generate --users USERS --seed SEED --out OUT`` (the default generator
    configuration, no shift): the same ``(users, seed)`` always gives the same data.

    Args:
        users: number of shoppers (at least 1; training needs at least 3 with enough orders).
        out: the data folder to write (replaced only when it is a data folder, or with ``force``).
        seed: seed of everything (catalogue, shoppers, orders).
        force: replace ``out`` whatever it holds.

    Returns:
        The written :class:`DataFolder`.

    Example:
        >>> data = basketcast.generate(500, "data/synthetic", seed=7)  # doctest: +SKIP
        >>> data.manifest.source  # doctest: +SKIP
        'synthetic:users=500,seed=7'
    """
    from basketcast.pipeline.data.generate import generate as run_generate
    from basketcast.pipeline.data.publish import check_output
    from basketcast.pipeline.data.storage import DATA_FOLDER, write_dataset

    if isinstance(users, bool) or not isinstance(users, int) or users < 1:
        raise ValueError(f"users must be a positive integer, got {users!r}")
    out_path = Path(out)
    check_output(out_path, DATA_FOLDER, force)  # a refused output fails before the simulation
    data = run_generate(users, seed)
    manifest = write_dataset(out_path, data, source=f"synthetic:users={users},seed={seed}", force=force)
    return DataFolder(out_path, manifest)


def from_transactions(
    source: PathLike | pl.DataFrame,
    out: PathLike,
    *,
    catalog: PathLike | pl.DataFrame | None = None,
    **options: Any,
) -> DataFolder:
    """Derive the Kaggle tables from a shop's transaction log and write the canonical data folder ``out``.

    Same as ``basketcast ingest --format transactions``
    (:func:`basketcast.pipeline.data.transactions.ingest_transactions`, whose module docstring
    states every rule): one row per product bought with ``user_id``, ``order_id``, ``product_id``
    and ``timestamp``; order numbers, weekdays, hours, days since the prior order, cart positions
    and reordered flags are derived; each user's last order is the ``train`` order.

    Args:
        source: the log, a CSV (plain, ``.gz``, ``.zip``) or Parquet file, or a Polars DataFrame
            with those columns (written to a temporary Parquet file first; the manifest's
            ``source`` then names that file).
        out: the data folder to write (replaced only when it is a data folder, or with ``force``).
        catalog: optional products file or DataFrame (``product_id`` and any of ``product_name``,
            ``aisle_id``/``aisle``, ``department_id``/``department``); without one products get
            placeholder names.
        **options: passed on to ``ingest_transactions``: ``columns``
            (:class:`basketcast.pipeline.data.transactions.LogColumns`, the log's column names), ``sep``,
            ``last_order`` (``"train"`` or ``"test"``), ``timezone``, ``strict``, ``force``.

    Returns:
        The written :class:`DataFolder`.

    Example:
        >>> log = pl.DataFrame({"user_id": [1, 1], "order_id": [10, 11], "product_id": [5, 5],
        ...                     "timestamp": ["2024-03-01T09:30", "2024-03-08T10:00"]})  # doctest: +SKIP
        >>> basketcast.from_transactions(log, "data/shop").users  # doctest: +SKIP
        1
    """
    from basketcast.pipeline.data.transactions import ingest_transactions

    with tempfile.TemporaryDirectory(prefix="basketcast-transactions-") as tmp:
        source_path = _as_file(source, Path(tmp) / "transactions.parquet")
        catalog_path = None if catalog is None else _as_file(catalog, Path(tmp) / "catalogue.parquet")
        report = ingest_transactions(source_path, Path(out), catalog=catalog_path, **options)
    return DataFolder(Path(out), report.manifest, list(report.warnings))


def _as_file(value: PathLike | pl.DataFrame, spill: Path) -> Path:
    """``value``'s path, or the DataFrame ``value`` written to ``spill`` as Parquet."""
    if isinstance(value, pl.DataFrame):
        value.write_parquet(spill)
        return spill
    return Path(value)
