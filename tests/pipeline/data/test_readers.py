"""Reader errors: a source that cannot be read is one ``FILE: …`` DataError, never a traceback.

Every case breaks one file of the tiny valid layout. Through ``ingest()`` and through the real
command line (``basketcast ingest`` as a subprocess: exit status 2, ``error: …`` on stderr, no
traceback) nothing may be written. Valid variants (UTF-8 byte-order mark, CRLF, quoted values
with commas, quotes and line breaks, blank lines) must ingest to the same data.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.ingest import ingest
from basketcast.pipeline.data.storage import read_dataset
from basketcast.pipeline.errors import DataError
from tests.conftest import ORDERS, PRIOR, PRODUCTS, TINY, write_kaggle

BASKETCAST = Path(sys.executable).with_name("basketcast")


def _replace(folder: Path, name: str, data: bytes) -> None:
    """Replace table ``name`` of ``folder`` by the file ``name`` holding ``data`` (the suffix decides)."""
    stem = name.split(".", 1)[0]
    for old in folder.glob(f"{stem}.csv*"):
        old.unlink()
    (folder / name).write_bytes(data)


def _zip(text: bytes, member: str = "orders.csv") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(member, text)
    return buffer.getvalue()


def _zip_patched(text: bytes, *, flags: int = 0, method: int | None = None) -> bytes:
    """A zip whose central directory claims ``flags`` (1 = encrypted) or another compression ``method``."""
    data = bytearray(_zip(text))
    central = data.index(b"PK\x01\x02")
    data[central + 8] |= flags
    if method is not None:
        data[central + 10 : central + 12] = method.to_bytes(2, "little")
    return bytes(data)


# Big enough that a cut lands inside the deflate stream.
LONG_PRIOR = PRIOR + "".join(f"{order},{100 + i},{i},0\n" for order in (11, 12) for i in range(3, 2000))


def _truncated_gzip(folder: Path) -> None:
    data = gzip.compress(LONG_PRIOR.encode())
    _replace(folder, "order_products__prior.csv.gz", data[: len(data) // 2])


def _damaged_gzip(folder: Path) -> None:
    data = bytearray(gzip.compress(LONG_PRIOR.encode()))
    data[-6] ^= 0xFF  # the CRC-32 of the trailer
    _replace(folder, "order_products__prior.csv.gz", bytes(data))


def _folder_for_file(folder: Path) -> None:
    (folder / "orders.csv").unlink()
    (folder / "orders.csv").mkdir()


def _broken_link(folder: Path) -> None:
    (folder / "products.csv").unlink()
    (folder / "products.csv").symlink_to(folder / "nowhere.csv")


def _sep(separator: str) -> Callable[[Path], None]:
    return lambda folder: _replace(folder, "orders.csv", ORDERS.replace(",", separator).encode())


Case = tuple[Callable[[Path], None], tuple[str, ...]]
# name → (how the valid tiny layout is broken, fragments the message must contain)
READER_ERRORS: dict[str, Case] = {
    "a .csv.zip that is not a zip": (
        lambda d: _replace(d, "orders.csv.zip", b"order_id,user_id\nthis is not a zip\n"),
        ("orders.csv.zip: not a valid zip archive", "download or compress it again"),
    ),
    "a truncated zip": (
        lambda d: _replace(d, "orders.csv.zip", _zip(ORDERS.encode())[:60]),
        ("orders.csv.zip: not a valid zip archive",),
    ),
    "a zip without a .csv inside": (
        lambda d: _replace(d, "orders.csv.zip", _zip(ORDERS.encode(), member="orders.txt")),
        ("orders.csv.zip: expected exactly one .csv inside the zip, found 0 (it holds: orders.txt)",),
    ),
    "a zip member in a method Python lacks (Deflate64)": (
        lambda d: _replace(d, "orders.csv.zip", _zip_patched(ORDERS.encode(), method=9)),
        ("orders.csv.zip:", "compression method", "zip it again with standard deflate"),
    ),
    "an encrypted zip": (
        lambda d: _replace(d, "orders.csv.zip", _zip_patched(ORDERS.encode(), flags=1)),
        ("orders.csv.zip:", "encrypted", "unzip it"),
    ),
    "a truncated gzip": (
        _truncated_gzip,
        ("order_products__prior.csv.gz: not a valid gzip file", "truncated or damaged"),
    ),
    "a gzip with a wrong checksum": (
        _damaged_gzip,
        ("order_products__prior.csv.gz: not a valid gzip file", "truncated or damaged"),
    ),
    "UTF-16 with a byte-order mark": (
        lambda d: _replace(d, "products.csv", PRODUCTS.encode("utf-16")),
        ("products.csv: is UTF-16 text (byte-order mark FF FE)", "save it as UTF-8"),
    ),
    "UTF-16 without a byte-order mark": (
        lambda d: _replace(d, "products.csv", PRODUCTS.encode("utf-16-le")),
        ("products.csv: looks like UTF-16 text", "save it as UTF-8"),
    ),
    "an Excel workbook named .csv": (
        lambda d: _replace(d, "products.csv", b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00" + b"\x00" * 64),
        ("products.csv: is a zip archive (an Excel .xlsx workbook?)", "export it as CSV"),
    ),
    "a folder where a file should be": (_folder_for_file, ("orders.csv: is a folder, expected a CSV file",)),
    "a broken symbolic link": (_broken_link, ("products.csv: a broken symbolic link",)),
    "an empty file (0 bytes)": (
        lambda d: _replace(d, "orders.csv", b""),
        ("orders.csv: is empty (0 bytes)",),
    ),
    "an empty gzip": (
        lambda d: _replace(d, "order_products__train.csv.gz", gzip.compress(b"")),
        ("order_products__train.csv.gz: is empty, expected a header line (order_id,product_id,",),
    ),
    "only blank lines": (
        lambda d: _replace(d, "orders.csv", b"\r\n\r\n"),
        ("orders.csv: is empty, expected a header line",),
    ),
    "orders.csv with a header only": (
        lambda d: _replace(d, "orders.csv", ORDERS.split("\n", 1)[0].encode() + b"\n"),
        ("orders.csv: has a header but no data rows",),
    ),
    "prior lines with a header only": (
        lambda d: _replace(d, "order_products__prior.csv", PRIOR.split("\n", 1)[0].encode() + b"\n"),
        ("order_products__prior.csv: has a header but no data rows",),
    ),
    "train lines with a header only while orders.csv has train orders": (
        lambda d: _replace(d, "order_products__train.csv", PRIOR.split("\n", 1)[0].encode() + b"\n"),
        ("order_products__train.csv: has a header but no data rows, while orders.csv has 1 train order",),
    ),
    "products.csv with a header only": (
        lambda d: _replace(d, "products.csv", PRODUCTS.split("\n", 1)[0].encode() + b"\n"),
        ("products.csv: has a header but no data rows (remove it to use placeholder names)",),
    ),
    "';' as the separator": (
        _sep(";"),
        ("orders.csv: the separator looks like ';', not a comma", "export with commas"),
    ),
    "a tab as the separator": (_sep("\t"), ("orders.csv: the separator looks like a tab, not a comma",)),
    "'|' as the separator": (_sep("|"), ("orders.csv: the separator looks like '|', not a comma",)),
    "carriage returns only as line ends": (
        lambda d: _replace(d, "orders.csv", ORDERS.replace("\n", "\r").encode()),
        ("orders.csv: its lines end with carriage returns only",),
    ),
    "a row with more values than the header": (
        lambda d: _replace(d, "products.csv", PRODUCTS.replace("102,Milk,84,16", "102,Milk, 2%,84,16").encode()),
        ("products.csv: row 2 (line 3): 5 values, the header has 4", "must be in quotes"),
    ),
    "a stray quote inside a value": (
        lambda d: _replace(d, "products.csv", PRODUCTS.replace("102,Milk,84,16", '102,12" Pizza,84,16').encode()),
        ("products.csv: row 2 (line 3): a '\"' inside a value that is not quoted as a whole", '"12"" Pizza"'),
    ),
    "a quote that is never closed": (
        lambda d: _replace(d, "products.csv", PRODUCTS.replace("102,Milk,84,16", '102,"Milk,84,16').encode()),
        ("products.csv: row 2 (line 3): a quoted value is never closed",),
    ),
    "NaN and infinity as numbers": (
        lambda d: _replace(d, "order_products__prior.csv", PRIOR.replace("12,103,2,0", "nan,103,inf,0").encode()),
        ("column order_id: 1 row are not finite numbers (first: row=4, order_id=nan)", "column add_to_cart_order"),
    ),
}


def _tiny(tmp_path: Path) -> Path:
    return write_kaggle(tmp_path / "src", TINY)


@pytest.mark.parametrize("case", list(READER_ERRORS))
def test_reader_error_names_the_file_and_writes_nothing(case: str, tmp_path: Path) -> None:
    break_it, fragments = READER_ERRORS[case]
    source = _tiny(tmp_path)
    break_it(source)
    out = tmp_path / "out"
    with pytest.raises(DataError) as info:
        ingest(source, out)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert not out.exists()


def _cli_ingest(source: Path, out: Path, *prefix: str) -> subprocess.CompletedProcess[str]:
    command = [*prefix, str(BASKETCAST), "ingest", "--source", str(source), "--out", str(out)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def _assert_cli_refused(result: subprocess.CompletedProcess[str], out: Path, fragments: tuple[str, ...]) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, f"{fragment!r} not in {result.stderr!r}"
    assert not out.exists()
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


@pytest.mark.parametrize("case", list(READER_ERRORS))
def test_reader_error_through_the_cli_is_exit_2_without_traceback(case: str, tmp_path: Path) -> None:
    break_it, fragments = READER_ERRORS[case]
    source = _tiny(tmp_path)
    break_it(source)
    out = tmp_path / "out"
    _assert_cli_refused(_cli_ingest(source, out), out, fragments)


def test_source_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "orders.csv").write_text(ORDERS)
    with pytest.raises(DataError, match=r"orders\.csv: is a file, expected the folder holding the CSV files"):
        ingest(tmp_path / "orders.csv", tmp_path / "out")


# --- permissions ---------------------------------------------------------------------------------
def _without_file_permission_bypass() -> list[str] | None:
    """A command prefix under which chmod 000 stops reading: none for a normal user; for root, setpriv
    dropping CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (root bypasses file modes otherwise); None if neither."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    probe = subprocess.run(
        [setpriv, "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search", "true"], capture_output=True
    )
    return (
        [setpriv, "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search"] if not probe.returncode else None
    )


@pytest.mark.parametrize(
    ("target", "fragment"),
    [
        ("orders.csv", "orders.csv: cannot be read: permission denied (check the file's permissions)"),
        ("", "src: cannot be read: permission denied (check the folder's permissions)"),
    ],
)
def test_unreadable_file_or_folder_for_real_through_the_cli(target: str, fragment: str, tmp_path: Path) -> None:
    prefix = _without_file_permission_bypass()
    if prefix is None:
        pytest.skip("running as root without setpriv: file modes cannot be enforced")
    source = _tiny(tmp_path)
    locked = source / target if target else source
    locked.chmod(0 if target else 0o444)  # a folder we may list but not search (click refuses mode 0 itself)
    try:
        out = tmp_path / "out"
        _assert_cli_refused(_cli_ingest(source, out, *prefix), out, (fragment,))
    finally:
        locked.chmod(0o755)


def test_permission_error_on_open_is_a_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same case in process (as root, the file is made unreadable by making ``open`` refuse it)."""
    source = _tiny(tmp_path)
    real_open = Path.open

    def refusing_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self.name == "orders.csv":
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refusing_open)
    with pytest.raises(DataError, match=r"orders\.csv: cannot be read: permission denied"):
        ingest(source, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- valid variants ------------------------------------------------------------------------------
NEWLINE = "<newline inside a value>"
QUOTED_PRODUCTS = PRODUCTS.replace("102,Milk,84,16", '102,"Milk, 2% ""organic""",84,16').replace(
    "103,Bread,112,3", f'103,"Bread{NEWLINE}sliced",112,3'
)


def _encode(text: str, *, bom: bool, crlf: bool, blank_lines: bool) -> bytes:
    if blank_lines:
        text = text + "\n\n"
    if crlf:
        text = text.replace("\n", "\r\n")
    return (b"\xef\xbb\xbf" if bom else b"") + text.replace(NEWLINE, "\n").encode()


@pytest.mark.parametrize("compression", ["csv", "gz", "zip"])
def test_bom_crlf_quotes_and_blank_lines_ingest_to_the_same_data(compression: str, tmp_path: Path) -> None:
    plain = write_kaggle(tmp_path / "plain", {**TINY, "products": QUOTED_PRODUCTS.replace(NEWLINE, "\n")})
    expected = ingest(plain, tmp_path / "plain-out").manifest.fingerprint
    variant = tmp_path / "variant"
    variant.mkdir()
    for name, text in {**TINY, "products": QUOTED_PRODUCTS}.items():
        data = _encode(text, bom=True, crlf=True, blank_lines=True)
        if compression == "csv":
            (variant / f"{name}.csv").write_bytes(data)
        elif compression == "gz":
            (variant / f"{name}.csv.gz").write_bytes(gzip.compress(data))
        else:
            (variant / f"{name}.csv.zip").write_bytes(_zip(data, member=f"{name}.csv"))
    report = ingest(variant, tmp_path / "variant-out")
    assert report.warnings == []
    assert report.manifest.fingerprint == expected
    names = dict(read_dataset(tmp_path / "variant-out").products.select(S.PRODUCT, S.PRODUCT_NAME).iter_rows())
    assert names[102] == 'Milk, 2% "organic"' and names[103] == "Bread\nsliced"


def test_windows_1252_names_are_decoded_with_a_warning_or_refused_when_strict(tmp_path: Path) -> None:
    text = PRODUCTS.replace("Milk", "Crème fraîche").replace("Bread", "Baker’s bread")
    source = _tiny(tmp_path)
    _replace(source, "products.csv", text.encode("cp1252"))
    report = ingest(source, tmp_path / "out")
    names = read_dataset(tmp_path / "out").products.filter(pl.col(S.PRODUCT).is_in([102, 103]))
    assert names[S.PRODUCT_NAME].to_list() == ["Crème fraîche", "Baker’s bread"]
    assert len(report.warnings) == 1
    warning = report.warnings[0]
    assert "products.csv: 2 lines not UTF-8, read as Windows-1252/Latin-1" in warning
    assert "line 3: '102,Crème fraîche,84,16'" in warning and "save the file as UTF-8" in warning
    with pytest.raises(DataError, match="not UTF-8, read as Windows-1252"):
        ingest(source, tmp_path / "strict", strict=True)
    assert not (tmp_path / "strict").exists()


def test_only_the_lines_that_are_not_utf8_are_decoded(tmp_path: Path) -> None:
    """A file mixing UTF-8 and Latin-1 lines keeps its UTF-8 lines as they are (no mojibake)."""
    source = _tiny(tmp_path)
    text = PRODUCTS.replace("Milk", "Crème").encode().replace(b"Bread", "Brød".encode("latin-1"))
    _replace(source, "products.csv", text)
    report = ingest(source, tmp_path / "out")
    names = read_dataset(tmp_path / "out").products.filter(pl.col(S.PRODUCT).is_in([102, 103]))
    assert names[S.PRODUCT_NAME].to_list() == ["Crème", "Brød"]
    assert "1 line not UTF-8" in report.warnings[0]
