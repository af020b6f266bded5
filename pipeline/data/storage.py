"""Reading and atomically publishing the canonical data folder and other artifact folders.

A folder is always written under a temporary sibling name and renamed into place only when
complete, so a reader never sees half of it and a failed write never damages the previous one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.data import schema as S
from pipeline.errors import DataError

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


@contextlib.contextmanager
def publishing_dir(final: Path) -> Iterator[Path]:
    """Yield a fresh temporary folder next to ``final``; on success swap it into place.

    On any exception the temporary folder is removed and ``final`` is left untouched.
    Replacing an existing folder renames the old one aside first and deletes it only after the
    new one is in place, so at every instant ``final`` is either the old or the new complete folder
    (apart from the instant between the two renames, where it is briefly absent).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it 0700; published folders get the usual mode
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old: Path | None = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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


def write_dataset(out: Path, data: Dataset, *, source: str, warnings: int | None = None) -> DataManifest:
    """Publish ``data`` as a canonical data folder at ``out`` (atomically). Returns the manifest."""
    tables = {name: S.conform(name, data.table(name)) for name in S.TABLES}
    manifest = DataManifest(
        schema_version=S.SCHEMA_VERSION,
        source=source,
        fingerprint=fingerprint(tables),
        rows={name: frame.height for name, frame in tables.items()},
        users=int(tables[S.ORDERS][S.USER].n_unique()),
        warnings=warnings,
    )
    with publishing_dir(out) as tmp:
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
