"""How a source file becomes a raw frame; every reader problem becomes a DataError naming the file.

This module owns the file layer of ingest and nothing else:

- :func:`find_source` — which file holds a table: ``NAME.csv``, ``NAME.csv.zip`` (as Kaggle
  distributes them) or ``NAME.csv.gz`` (:data:`SUFFIXES`); more than one is an error, and so is
  a folder, a pipe or a broken link under that name.
- :func:`open_source` — the bytes to parse: the single ``.csv`` member of a zip, or the path
  itself (plain CSV, or gzip, which Polars decompresses).
- :func:`read_csv_table` — CSV text into a Polars frame with the requested columns (numbers as
  Float64, text as String) plus the 1-based :data:`ROW` column that every error message uses to
  point at offending rows.

What a reader refuses, always as ``FILE: …`` (the path as found) and before anything is written:
a file that cannot be opened (permission, a folder), a corrupt or truncated zip or gzip, an
empty file, UTF-16/UTF-32 or binary content, a separator other than a comma (``;``, tab,
``|``), line ends that are carriage returns only, and a record Polars cannot split (more values
than the header, a stray or unclosed quote: row and line named). What it accepts: a UTF-8
byte-order mark, CRLF line ends, quoted values with commas, quotes or line breaks, blank lines
(skipped), and text that is not UTF-8 — those lines are read as Windows-1252 (a superset of
Latin-1 for printable text) and reported in ``notes`` (ingest turns a note into a warning, or
an error when strict).

Validation rules (ranges, keys, references between tables) live in :mod:`basketcast.pipeline.data.ingest`.
Both layers report problems through :class:`Failures`, so a value the reader cannot parse is
reported exactly like a value that breaks a rule: file, column, how many rows, the first few.
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import io
import itertools
import os
import stat
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import polars as pl

from basketcast.pipeline.errors import DataError

ROW = "row"  # 1-based data row number (file line minus the header) added to every raw frame
# The Kaggle layout's two order-line files (stems of NAME.csv / .csv.zip / .csv.gz).
PRIOR_LINES = "order_products__prior"
TRAIN_LINES = "order_products__train"
SUFFIXES = (".csv", ".csv.zip", ".csv.gz")
SHOW = 5  # offending rows shown per message
HEAD_BYTES = 64 * 1024  # the start of each file sniffed for emptiness, encoding and separator
DECODE_BLOCK = 1 << 20  # bytes checked for UTF-8 at once when a file is not all UTF-8
LEGACY_ENCODING = "cp1252"  # what non-UTF-8 lines are read as (Windows-1252; Latin-1 where it has no character)
SEPARATORS = {b";": "';'", b"\t": "a tab", b"|": "'|'"}  # separators recognised in a header without commas
GZIP_MAGIC = b"\x1f\x8b"
QUOTE, COMMA = b'"', b","
BOMS = (  # longest first: the UTF-32 LE mark starts with the UTF-16 LE one
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)

ColumnKind = Literal["int", "float", "str"]
CsvInput = Path | io.BytesIO  # what Polars parses: a file path, or a zip member's bytes


# --- reporting problems -----------------------------------------------------------------------
def describe_rows(file: str, column: str, rule: str, bad: pl.DataFrame, noun: str = "row") -> str:
    """One problem message: file, column, how many ``noun``s break ``rule`` and the first few."""
    rows = bad.head(SHOW).to_dicts()
    shown = "; ".join(", ".join(f"{k}={v}" for k, v in row.items()) for row in rows)
    return f"{file}, column {column}: {bad.height:,} {noun}{'s' * (bad.height > 1)} {rule} (first: {shown})"


class Failures:
    """Collects rule failures; ``raise_if_any`` turns them into one DataError."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def check(self, file: str, column: str, rule: str, bad: pl.DataFrame, noun: str = "row") -> None:
        """Record a failure when ``bad`` (the offending rows) is not empty."""
        if bad.height:
            self.messages.append(describe_rows(file, column, rule, bad, noun))

    def raise_if_any(self) -> None:
        """Raise every recorded failure as one DataError (nothing has been written yet)."""
        if self.messages:
            n = len(self.messages)
            raise DataError(
                f"ingest: {n} problem{'s' * (n > 1)} found, nothing written:\n- " + "\n- ".join(self.messages)
            )


# --- finding and opening files ----------------------------------------------------------------
def find_source(folder: Path, stem: str) -> Path | None:
    """The path of table ``stem`` in ``folder`` under any accepted suffix, or None.

    DataError when the table is present more than once, or its name is taken by something that
    is not a readable regular file (a folder, a pipe, a broken link, a folder we may not search).
    """
    found = []
    for suffix in SUFFIXES:
        path = folder / f"{stem}{suffix}"
        try:
            if not path.exists():
                if path.is_symlink():
                    raise DataError(f"{path}: a broken symbolic link (its target {os.readlink(path)} does not exist)")
                continue
            mode = path.stat().st_mode
        except PermissionError as exc:
            raise DataError(f"{folder}: cannot be read: permission denied (check the folder's permissions)") from exc
        if stat.S_ISDIR(mode):
            raise DataError(f"{path}: is a folder, expected a CSV file")
        if not stat.S_ISREG(mode):
            raise DataError(f"{path}: is not a regular file (a pipe or a device?), expected a CSV file")
        found.append(path)
    if len(found) > 1:
        raise DataError(f"{folder}: {stem} is present more than once ({', '.join(p.name for p in found)}); keep one")
    return found[0] if found else None


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn what opening, decompressing or parsing ``path`` can raise into a DataError naming it."""
    try:
        yield
    except PermissionError as exc:
        raise DataError(f"{path}: cannot be read: permission denied (check the file's permissions)") from exc
    except IsADirectoryError as exc:
        raise DataError(f"{path}: is a folder, expected a CSV file") from exc
    except (zipfile.BadZipFile, zlib.error, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(_corrupt(path, exc)) from exc
    except OSError as exc:
        if exc.strerror is None:  # not a system call's error: Polars' decompression (truncated or damaged gzip)
            raise DataError(_corrupt(path, exc)) from exc
        raise DataError(f"{path}: cannot be read ({exc.strerror})") from exc


def _corrupt(path: Path, exc: BaseException) -> str:
    kind = "zip archive" if path.name.endswith(".zip") else "gzip file"
    return f"{path}: not a valid {kind}, it is truncated or damaged ({exc}); download or compress it again"


def open_source(path: Path) -> CsvInput:
    """What to hand Polars for ``path``: a zip's single ``.csv`` member in memory, else the path.

    Opens the file once, so that a file that cannot be read fails here with a DataError.
    """
    with _reading(path):
        if path.stat().st_size == 0:
            raise DataError(f"{path}: is empty (0 bytes)")
        if not path.name.endswith(".zip"):
            with path.open("rb"):
                return path  # plain or .gz (Polars decompresses gzip itself)
        with zipfile.ZipFile(path) as zf:
            names = [m for m in zf.namelist() if not m.startswith("__MACOSX") and not m.endswith("/")]
            members = [m for m in names if m.endswith(".csv")]
            if len(members) != 1:
                raise DataError(
                    f"{path}: expected exactly one .csv inside the zip, found {len(members)} (it holds: "
                    f"{', '.join(names[:10]) or 'nothing'}{', …' if len(names) > 10 else ''})"
                )
            try:
                return io.BytesIO(zf.read(members[0]))
            except NotImplementedError as exc:  # e.g. Deflate64, which Windows uses for members over 2 GB
                raise DataError(
                    f"{path}: {exc}; unzip it and keep the .csv, or zip it again with standard deflate"
                ) from exc
            except RuntimeError as exc:  # encrypted members
                raise DataError(f"{path}: {exc}; unzip it and keep the .csv") from exc


@dataclass(frozen=True)
class _Source:
    path: Path  # the file as found (named in every message)
    data: CsvInput  # what Polars reads


def _rewind(data: CsvInput) -> CsvInput:
    """``data`` ready to be read again from the start."""
    if isinstance(data, io.BytesIO):
        data.seek(0)
    return data


@contextlib.contextmanager
def _binary_stream(src: _Source) -> Iterator[BinaryIO]:
    """The decompressed bytes of ``src`` as a stream (for the checks Python does itself)."""
    if isinstance(src.data, io.BytesIO):
        src.data.seek(0)
        yield src.data  # not closed: Polars reads it again
        return
    with src.data.open("rb") as fh:
        compressed = fh.read(2) == GZIP_MAGIC
    with gzip.open(src.data, "rb") if compressed else src.data.open("rb") as stream:
        yield stream  # type: ignore[misc]


# --- sniffing the start of a file -------------------------------------------------------------
def _check_head(path: Path, head: bytes, columns: Mapping[str, ColumnKind]) -> None:
    """Refuse what is not comma-separated UTF-8 text, from the first bytes of the (decompressed) file."""
    for bom, name in BOMS:
        if head.startswith(bom):
            raise DataError(
                f"{path}: is {name} text (byte-order mark {bom.hex(' ').upper()}), basketcast reads UTF-8: "
                f"save it as UTF-8 (e.g. `iconv -f {name} -t UTF-8`, or Excel's 'CSV UTF-8')"
            )
    body = head.removeprefix(codecs.BOM_UTF8)
    expected = ",".join(columns)
    if not body.strip():
        raise DataError(f"{path}: is empty, expected a header line ({expected}) and data rows")
    if head.startswith(b"PK\x03\x04"):
        raise DataError(
            f"{path}: is a zip archive (an Excel .xlsx workbook?), not CSV text: export it as CSV "
            "(a zipped CSV must be named NAME.csv.zip)"
        )
    if b"\x00" in head:
        odd, even = head[1:1024:2], head[0:1024:2]
        if odd.count(0) > 0.8 * len(odd) or even.count(0) > 0.8 * len(even):
            raise DataError(
                f"{path}: looks like UTF-16 text (no byte-order mark), basketcast reads UTF-8: save it as UTF-8"
            )
        raise DataError(f"{path}: holds binary data (NUL bytes), not CSV text")
    if b"\n" not in body and b"\r" in body:
        raise DataError(
            f"{path}: its lines end with carriage returns only (classic Mac); save it with LF or CRLF line ends"
        )
    header = body.split(b"\n", 1)[0].rstrip(b"\r")
    if b"," not in header:
        for separator, name in SEPARATORS.items():
            if separator in header:
                shown = header[:100].decode("utf-8", errors="replace")
                raise DataError(
                    f"{path}: the separator looks like {name}, not a comma (header: {shown!r}); "
                    f"basketcast reads comma-separated files: export with commas (expected header: {expected})"
                )


# --- reading CSV ------------------------------------------------------------------------------
class _NotUtf8Error(Exception):
    """Polars met bytes that are not UTF-8."""


def read_header(path: Path, data: CsvInput) -> list[str]:
    """The column names of ``data`` (opened from ``path``); DataError when it is not CSV."""
    try:
        return pl.read_csv(_rewind(data), n_rows=0).columns
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path.name}: cannot be read as CSV ({_first_line(exc)})") from exc


def read_csv_table(path: Path, columns: Mapping[str, ColumnKind], *, notes: list[str] | None = None) -> pl.DataFrame:
    """Read ``columns`` (name -> "int" | "float" | "str") of the CSV file at ``path``.

    Numeric columns come back as Float64 (so "7.0" and "7" both parse), strings as String, plus
    :data:`ROW`; blank rows (every requested column empty) are skipped. Raises DataError naming
    the file and, where it applies, the column or row (see the module docstring). Lines that are
    not UTF-8 are read as Windows-1252 and described in one message appended to ``notes``.
    """
    src = _Source(path, open_source(path))
    with _reading(path), _binary_stream(src) as stream:
        head = stream.read(HEAD_BYTES)
    _check_head(path, head, columns)
    try:
        frame = _parse(src, columns)
    except _NotUtf8Error:
        data, message = _decode_legacy(src)
        frame = _parse(_Source(path, data), columns)
        if notes is not None:
            notes.append(message)
    blank = pl.all_horizontal(pl.col(list(columns)).is_null())
    if frame.select(blank.any()).item():
        frame = frame.filter(~blank)
    return frame


def _parse(src: _Source, columns: Mapping[str, ColumnKind]) -> pl.DataFrame:
    """The frame of ``columns`` with :data:`ROW`; raises _NotUtf8Error for Windows-1252 to be tried."""
    path = src.path
    with _reading(path):
        try:
            header = pl.read_csv(_rewind(src.data), n_rows=0).columns
        except pl.exceptions.PolarsError as exc:
            if _is_utf8_error(exc):
                raise _NotUtf8Error from exc
            raise DataError(f"{path.name}: cannot be read as CSV ({_first_line(exc)})") from exc
        missing = [c for c in columns if c not in header]
        if missing:
            raise DataError(
                f"{path.name}, column {missing[0]}: missing (required columns {list(columns)}; found {header})"
            )
        dtypes = {c: (pl.String if t == "str" else pl.Float64) for c, t in columns.items()}
        try:
            frame = pl.read_csv(_rewind(src.data), columns=list(columns), schema_overrides=dtypes, null_values=[""])
        except pl.exceptions.PolarsError as exc:
            if _is_utf8_error(exc):
                raise _NotUtf8Error from exc
            malformed = _find_malformed(src)
            if malformed:
                raise DataError(malformed) from exc
            try:
                _raise_unparsable(path, _rewind(src.data), columns)
            except pl.exceptions.PolarsError as slow_exc:
                if _is_utf8_error(slow_exc):  # a number column with bytes that are not UTF-8
                    raise _NotUtf8Error from exc
            raise DataError(f"{path}: cannot be read as CSV ({_first_line(exc)})") from exc
    return frame.with_row_index(ROW, offset=1)


def _is_utf8_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "utf-8" in text or "utf8" in text


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().split("\n", 1)[0]


def _raise_unparsable(path: Path, data: CsvInput, columns: Mapping[str, ColumnKind]) -> None:
    """Slow path, only to name the offending rows: read as text and report what does not parse.

    Raises DataError when a numeric column holds a value that is not a number; returns when it
    finds none (the caller then reports the original error).
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


def _find_malformed(src: _Source) -> str | None:
    """The first record that cannot be split into the header's columns, as a message; None if none."""
    scan = _CsvScan(src.path)
    with _reading(src.path), _binary_stream(src) as stream:
        for block in _line_blocks(stream):
            problem = scan.block(block)
            if problem:
                return problem
    return scan.end()


def _line_blocks(stream: BinaryIO) -> Iterator[bytes]:
    """``stream`` in blocks of about :data:`DECODE_BLOCK` bytes, each ending at a line end (but the last)."""
    pending = b""
    while True:
        chunk = stream.read(DECODE_BLOCK)
        data = pending + chunk
        cut = len(data) if not chunk else data.rfind(b"\n") + 1
        if cut:
            yield data[:cut]
        pending = data[cut:]
        if not chunk:
            return


class _CsvScan:
    """Splits CSV records as RFC 4180 does (a value is quoted only when its first character is a
    quote; ``""`` is a quote inside a quoted value; a quoted value may span lines) and finds the
    first record with more values than the header, a stray quote, or a quote never closed.

    Blocks without quotes are checked with ``bytes.count`` (C speed); only blocks holding a quote
    are walked character by character, so this stays fast on large files.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.width = 0  # values in the header (0 until the header is read)
        self.row = 0  # data rows seen (blank lines count: Polars reads them as rows)
        self.line_no = 0
        self.values, self.in_quotes, self.at_start, self.closed, self.start_line = 1, False, True, False, 1

    def block(self, block: bytes) -> str | None:
        if self.width and not self.in_quotes and QUOTE not in block:
            lines = block.split(b"\n")
            if not lines[-1]:
                lines.pop()  # the block's final line end
            commas = list(map(bytes.count, lines, itertools.repeat(COMMA)))
            if max(commas, default=0) + 1 > self.width:
                first = next(i for i, n in enumerate(commas) if n + 1 > self.width)
                return self._too_many(self.row + first + 1, self.line_no + first + 1, commas[first] + 1)
            self.row += len(lines)
            self.line_no += len(lines)
            return None
        for line in io.BytesIO(block):
            problem = self.line(line.rstrip(b"\r\n"))
            if problem:
                return problem
        return None

    def line(self, line: bytes) -> str | None:
        self.line_no += 1
        if not self.in_quotes:
            self.values, self.at_start, self.closed, self.start_line = 1, True, False, self.line_no
            if not self.width:
                line = line.removeprefix(codecs.BOM_UTF8)
        i = 0
        while i < len(line):
            char = line[i : i + 1]
            if self.in_quotes:
                if char == QUOTE and line[i + 1 : i + 2] == QUOTE:
                    i += 1  # a doubled quote: one quote inside the value
                elif char == QUOTE:
                    self.in_quotes, self.closed = False, True
            elif char == COMMA:
                self.values, self.at_start, self.closed = self.values + 1, True, False
            elif char == QUOTE and self.at_start:
                self.in_quotes, self.at_start = True, False
            elif char == QUOTE or self.closed:
                where = f"row {self.row + 1} (line {self.start_line})" if self.width else "the header (line 1)"
                shown = line.decode("utf-8", errors="replace")[:100]
                return (
                    f"{self.path}: {where}: a '\"' inside a value that is not quoted as a whole ({shown!r}); "
                    'quote the whole value and double the quotes inside it, e.g. "12"" Pizza"'
                )
            else:
                self.at_start = False
            i += 1
        if self.in_quotes:
            return None  # the quoted value goes on in the next line
        if not self.width:
            self.width = self.values
            return None
        self.row += 1
        return self._too_many(self.row, self.start_line, self.values) if self.values > self.width else None

    def _too_many(self, row: int, line: int, values: int) -> str:
        return (
            f"{self.path}: row {row} (line {line}): {values} values, the header has {self.width} "
            "(a value with a comma must be in quotes)"
        )

    def end(self) -> str | None:
        if self.in_quotes:
            where = f"row {self.row + 1} (line {self.start_line})"
            return f"{self.path}: {where}: a quoted value is never closed (a missing '\"')"
        return None


def _decode_legacy(src: _Source) -> tuple[io.BytesIO, str]:
    """``src`` as UTF-8 bytes, its non-UTF-8 lines read as Windows-1252; and the note saying so.

    Blocks of whole lines that are valid UTF-8 (all of them but a few, usually) are copied as they
    are; only a block that fails is decoded line by line.
    """
    out = io.BytesIO()
    decoded: list[str] = []
    count = line_no = 0
    with _reading(src.path), _binary_stream(src) as stream:
        for block in _line_blocks(stream):
            try:
                block.decode("utf-8")
                out.write(block)
                line_no += block.count(b"\n")
                continue
            except UnicodeDecodeError:
                pass
            for line in io.BytesIO(block):
                line_no += 1
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError:
                    try:
                        text = line.decode(LEGACY_ENCODING)
                    except UnicodeDecodeError:  # the five bytes Windows-1252 leaves undefined
                        text = line.decode("latin-1")
                    count += 1
                    if len(decoded) < SHOW:
                        decoded.append(f"line {line_no}: {text.strip()[:80]!r}")
                    line = text.encode("utf-8")
                out.write(line)
    out.seek(0)
    message = (
        f"{src.path.name}: {count:,} line{'s' * (count > 1)} not UTF-8, read as Windows-1252/Latin-1 "
        f"(first: {'; '.join(decoded)}); check these names and save the file as UTF-8"
    )
    return out, message
