"""The canonical data folder: its tables, its manifest, and reading/publishing it.

Publishing (atomic, never over something that is not ours) is :mod:`basketcast.pipeline.data.publish`;
:data:`DATA_FOLDER` is the kind of output a data folder is.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, ValidationError

from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.publish import Kind, atomic_write_bytes, loads, publishing_dir
from basketcast.pipeline.errors import DataError

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Dataset:
    """The five canonical tables of a data folder, already validated at ingest."""

    orders: pl.DataFrame
    order_products: pl.DataFrame
    products: pl.DataFrame
    aisles: pl.DataFrame
    departments: pl.DataFrame

    def table(self, name: str) -> pl.DataFrame:
        return getattr(self, name)  # type: ignore[no-any-return]


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())  # type: ignore[no-any-return]
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc


def fingerprint(tables: Mapping[str, pl.DataFrame]) -> str:
    """A content hash of the tables: equal data gives an equal fingerprint, whatever the path."""
    h = hashlib.sha256()
    for name in sorted(tables):
        frame = tables[name]
        h.update(name.encode())
        h.update(str(frame.schema).encode())
        # Order-independent: a wrapping sum of the row hashes (stable within one Polars version).
        row_hashes = frame.hash_rows(seed=0).to_numpy()
        h.update(str(frame.height).encode())
        h.update(str(int(np.add.reduce(row_hashes, dtype=np.uint64))).encode())
    return h.hexdigest()[:16]


class DataManifest(BaseModel):
    """``manifest.json`` of a data folder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int
    source: str  # where the data came from (the ingested folder, the generator's arguments, …)
    fingerprint: str  # content hash of the tables (equal data, equal fingerprint)
    rows: dict[str, int]  # table → rows
    users: int
    warnings: int | None = None  # warnings raised by ingest (absent for generated data)


def write_dataset(
    out: Path,
    data: Dataset,
    *,
    source: str,
    warnings: int | None = None,
    force: bool = False,
    inputs: Iterable[Path] = (),
) -> DataManifest:
    """Publish ``data`` as a canonical data folder at ``out`` (atomically; see
    :func:`~basketcast.pipeline.data.publish.publishing_dir` for ``force`` and ``inputs``). Returns the manifest."""
    tables = {name: S.conform(name, data.table(name)) for name in S.TABLES}
    manifest = DataManifest(
        schema_version=S.SCHEMA_VERSION,
        source=source,
        fingerprint=fingerprint(tables),
        rows={name: frame.height for name, frame in tables.items()},
        users=int(tables[S.ORDERS][S.USER].n_unique()),
        warnings=warnings,
    )
    with publishing_dir(out, DATA_FOLDER, force=force, inputs=inputs) as tmp:
        for name, frame in tables.items():
            frame.write_parquet(tmp / f"{name}.parquet", compression="zstd", statistics=True)
        write_json(tmp / MANIFEST, manifest.model_dump(exclude_none=True))
    return manifest


def read_manifest(data_dir: Path) -> DataManifest:
    """The manifest of a data folder; DataError when it is not one of this basketcast's."""
    path = Path(data_dir) / MANIFEST
    if not path.exists():
        raise DataError(
            f"{data_dir}: not a basketcast data folder (no {MANIFEST}); "
            "create one with `basketcast ingest` or `basketcast generate`"
        )
    raw = read_json(path)
    version = raw.get("schema_version")
    if version != S.SCHEMA_VERSION:
        raise DataError(f"{path}: schema_version {version!r}, this basketcast reads {S.SCHEMA_VERSION}; re-run ingest")
    try:
        return DataManifest.model_validate(raw)
    except ValidationError as exc:
        raise DataError(f"{path}: not a data manifest of this basketcast ({exc.errors()[0]['msg']})") from exc


DATA_FOLDER = Kind("data folder", folder=True, recognise=loads(read_manifest))


def read_dataset(data_dir: Path) -> Dataset:
    """Load a canonical data folder written by :func:`write_dataset`."""
    data_dir = Path(data_dir)
    read_manifest(data_dir)
    frames: dict[str, pl.DataFrame] = {}
    for name, expected in S.TABLE_SCHEMAS.items():
        path = data_dir / f"{name}.parquet"
        if not path.exists():
            raise DataError(f"{path}: file not found (data folder incomplete)")
        frame = pl.read_parquet(path)
        got = dict(frame.schema)
        if got != expected:
            raise DataError(f"{path}: columns {got} differ from the canonical schema {expected}")
        frames[name] = frame
    return Dataset(**frames)
