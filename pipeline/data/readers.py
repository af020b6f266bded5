"""How a source file becomes a raw frame; every reader problem becomes a DataError naming the file.

This module owns the file layer of ingest and nothing else:

- :func:`find_source` — which file holds a table: ``NAME.csv``, ``NAME.csv.zip`` (as Kaggle
  distributes them) or ``NAME.csv.gz`` (:data:`SUFFIXES`); more than one is an error.
- :func:`open_source` — the bytes to parse: the single ``.csv`` member of a zip, or the path
  itself (plain CSV, or gzip, which Polars decompresses).
- :func:`read_header` and :func:`read_csv_table` — CSV text into a Polars frame with the
  requested columns (numbers as Float64, text as String) plus the 1-based :data:`ROW` column
  that every error message uses to point at offending rows.

Validation rules (ranges, keys, references between tables) live in :mod:`pipeline.data.ingest`.
Both layers report problems through :class:`Failures`, so a value the reader cannot parse is
reported exactly like a value that breaks a rule: file, column, how many rows, the first few.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import polars as pl

from pipeline.errors import DataError

ROW = "row"  # 1-based data row number (file line minus the header) added to every raw frame
SUFFIXES = (".csv", ".csv.zip", ".csv.gz")
SHOW = 5  # offending rows shown per message

ColumnKind = Literal["int", "float", "str"]
CsvInput = Path | io.BytesIO  # what Polars parses: a file path, or a zip member's bytes


# --- reporting problems -----------------------------------------------------------------------
def describe_rows(file: str, column: str, rule: str, bad: pl.DataFrame) -> str:
    """One problem message: file, column, how many rows break ``rule`` and the first few."""
    rows = bad.head(SHOW).to_dicts()
    shown = "; ".join(", ".join(f"{k}={v}" for k, v in row.items()) for row in rows)
    return f"{file}, column {column}: {bad.height} row{'s' * (bad.height > 1)} {rule} (first: {shown})"


class Failures:
    """Collects rule failures; ``raise_if_any`` turns them into one DataError."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def check(self, file: str, column: str, rule: str, bad: pl.DataFrame) -> None:
        """Record a failure when ``bad`` (the offending rows) is not empty."""
        if bad.height:
            self.messages.append(describe_rows(file, column, rule, bad))

    def raise_if_any(self) -> None:
        """Raise every recorded failure as one DataError (nothing has been written yet)."""
        if self.messages:
            n = len(self.messages)
            raise DataError(
                f"ingest: {n} problem{'s' * (n > 1)} found, nothing written:\n- " + "\n- ".join(self.messages)
            )


# --- finding and opening files ----------------------------------------------------------------
def find_source(folder: Path, stem: str) -> Path | None:
    """The path of table ``stem`` in ``folder`` under any accepted suffix, or None."""
    found = [folder / f"{stem}{suffix}" for suffix in SUFFIXES if (folder / f"{stem}{suffix}").exists()]
    if len(found) > 1:
        raise DataError(f"{folder}: {stem} is present more than once ({', '.join(p.name for p in found)}); keep one")
    return found[0] if found else None


def open_source(path: Path) -> CsvInput:
    """What to hand Polars for ``path``: a zip's single ``.csv`` member in memory, else the path."""
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path) as zf:
            members = [m for m in zf.namelist() if m.endswith(".csv") and not m.startswith("__MACOSX")]
            if len(members) != 1:
                raise DataError(f"{path}: expected exactly one .csv inside the zip, found {members}")
            return io.BytesIO(zf.read(members[0]))
    return path  # plain or .gz (Polars decompresses gzip itself)


def _rewind(data: CsvInput) -> CsvInput:
    """``data`` ready to be read again from the start."""
    if isinstance(data, io.BytesIO):
        data.seek(0)
    return data


# --- reading CSV ------------------------------------------------------------------------------
def read_header(path: Path, data: CsvInput) -> list[str]:
    """The column names of ``data`` (opened from ``path``); DataError when it is not CSV."""
    try:
        return pl.read_csv(data, n_rows=0).columns
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path.name}: cannot be read as CSV ({exc})") from exc


def read_csv_table(path: Path, columns: Mapping[str, ColumnKind]) -> pl.DataFrame:
    """Read ``columns`` (name -> "int" | "float" | "str") of the CSV file at ``path``.

    Numeric columns come back as Float64 (so "7.0" and "7" both parse), strings as String, plus
    :data:`ROW`. Raises DataError naming the file, a missing column or the first unparsable values.
    """
    data = open_source(path)
    header = read_header(path, data)
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(f"{path.name}, column {missing[0]}: missing (required columns {list(columns)}; found {header})")
    dtypes = {c: (pl.String if t == "str" else pl.Float64) for c, t in columns.items()}
    try:
        frame = pl.read_csv(_rewind(data), columns=list(columns), schema_overrides=dtypes, null_values=[""])
    except pl.exceptions.PolarsError:
        _raise_unparsable(path, _rewind(data), columns)
        raise  # pragma: no cover - the fast path failed for a reason the slow path cannot see
    return frame.with_row_index(ROW, offset=1)


def _raise_unparsable(path: Path, data: CsvInput, columns: Mapping[str, ColumnKind]) -> None:
    """Slow path, only to name the offending rows: read as text and report what does not parse.

    Raises DataError when a numeric column holds a value that is not a number; returns when it
    finds none (the caller then re-raises the original error).
    """
    raw = pl.read_csv(data, columns=list(columns), infer_schema=False).with_row_index(ROW, offset=1)
    failures = Failures()
    for column, kind in columns.items():
        if kind == "str":
            continue
        parsed = raw[column].str.strip_chars().cast(pl.Float64, strict=False)
        bad = raw.filter(raw[column].is_not_null() & (raw[column] != "") & parsed.is_null())
        failures.check(path.name, column, "are not numbers", bad.select(ROW, column))
    failures.raise_if_any()
