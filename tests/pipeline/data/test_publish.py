"""Publishing outputs (pipeline/data/publish.py): atomic, never over something that is not ours."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from basketcast.pipeline.data import publish as P
from basketcast.pipeline.data.publish import Kind, clean_leftovers, publish_bytes, publishing_dir, publishing_file
from basketcast.pipeline.errors import OutputError

MARKER = "ours.json"
FOLDER = Kind("test folder", folder=True, recognise=lambda p: (p / MARKER).is_file())
FILE = Kind("test file", folder=False, recognise=lambda p: p.read_bytes().startswith(b"ours"))


def make(folder: Path, content: str) -> None:
    with publishing_dir(folder, FOLDER) as tmp:
        (tmp / MARKER).write_text(content)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "x.txt").write_text(content)


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if P._LEFTOVER.match(p.name))


@pytest.fixture
def in_tmp(tmp_path: Path) -> Iterator[Path]:
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(cwd)


def test_publishes_and_replaces_its_own_kind(tmp_path: Path) -> None:
    out = tmp_path / "out"
    make(out, "v1")
    assert (out / MARKER).read_text() == "v1" and (out / "sub" / "x.txt").read_text() == "v1"
    make(out, "v2")
    assert (out / MARKER).read_text() == "v2"
    assert leftovers(tmp_path) == []


def test_an_exception_inside_the_block_leaves_the_old_output_and_no_leftovers(tmp_path: Path) -> None:
    out = tmp_path / "out"
    make(out, "v1")
    with pytest.raises(RuntimeError), publishing_dir(out, FOLDER) as tmp:
        (tmp / MARKER).write_text("half")
        raise RuntimeError("boom")
    assert (out / MARKER).read_text() == "v1"
    assert leftovers(tmp_path) == []


def test_keyboard_interrupt_cleans_up_too(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt), publishing_dir(out, FOLDER) as tmp:
        (tmp / MARKER).write_text("half")
        raise KeyboardInterrupt
    assert not out.exists() and leftovers(tmp_path) == []


def test_a_folder_of_the_users_files_is_refused_and_kept(tmp_path: Path) -> None:
    out = tmp_path / "mydocs"
    out.mkdir()
    (out / "thesis.txt").write_text("years of work")
    with pytest.raises(
        OutputError, match=r"mydocs: exists and is not a basketcast test folder \(1 entries: thesis.txt\)"
    ):
        make(out, "v1")
    assert (out / "thesis.txt").read_text() == "years of work"
    assert leftovers(tmp_path) == []


def test_force_replaces_a_foreign_folder_only_once_the_new_one_is_complete(tmp_path: Path) -> None:
    out = tmp_path / "mydocs"
    out.mkdir()
    (out / "thesis.txt").write_text("years of work")
    with pytest.raises(RuntimeError), publishing_dir(out, FOLDER, force=True):
        raise RuntimeError("failed half way")
    assert (out / "thesis.txt").read_text() == "years of work"  # a failed --force run keeps it
    with publishing_dir(out, FOLDER, force=True) as tmp:
        (tmp / MARKER).write_text("new")
    assert sorted(p.name for p in out.iterdir()) == [MARKER]
    assert leftovers(tmp_path) == []


def test_an_empty_folder_is_replaced(tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    make(out, "v1")
    assert (out / MARKER).read_text() == "v1"


def test_a_regular_file_where_a_folder_goes_is_refused_then_forced(tmp_path: Path) -> None:
    out = tmp_path / "notes"
    out.write_text("keep me")
    with pytest.raises(OutputError, match="exists and is a file, not a basketcast test folder"):
        make(out, "v1")
    assert out.read_text() == "keep me"
    with publishing_dir(out, FOLDER, force=True) as tmp:
        (tmp / MARKER).write_text("new")
    assert (out / MARKER).read_text() == "new" and leftovers(tmp_path) == []


def test_a_folder_where_a_file_goes_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "scores.parquet"
    out.mkdir()
    (out / "a").write_text("x")
    with pytest.raises(OutputError, match="exists and is a folder, not a basketcast test file"):
        publish_bytes(out, b"ours", FILE)
    publish_bytes(out, b"ours", FILE, force=True)
    assert out.read_bytes() == b"ours" and leftovers(tmp_path) == []


def test_files_replace_their_own_kind_and_refuse_others(tmp_path: Path) -> None:
    out = tmp_path / "preds.bin"
    publish_bytes(out, b"ours 1", FILE)
    publish_bytes(out, b"ours 2", FILE)
    assert out.read_bytes() == b"ours 2"
    foreign = tmp_path / "report.docx"
    foreign.write_bytes(b"PK...")
    with pytest.raises(OutputError, match=r"report\.docx: exists and is a file, not a basketcast test file"):
        publish_bytes(foreign, b"ours", FILE)
    assert foreign.read_bytes() == b"PK..."
    with pytest.raises(ValueError), publishing_file(out, FILE) as tmp:
        tmp.write_bytes(b"ours half")
        raise ValueError
    assert out.read_bytes() == b"ours 2" and leftovers(tmp_path) == []


def test_the_current_directory_and_the_inputs_are_never_outputs(in_tmp: Path) -> None:
    with pytest.raises(OutputError, match="is the current directory"):
        make(Path("."), "v1")
    with pytest.raises(OutputError, match="is the current directory"):
        make(Path(".."), "v1")
    source = in_tmp / "src"
    source.mkdir()
    (source / "orders.csv").write_text("a")
    for out in (source, in_tmp):  # the input itself, a folder holding it
        with (
            pytest.raises(OutputError, match=r"would overwrite the input|current directory"),
            publishing_dir(out, FOLDER, force=True, inputs=[source]),
        ):
            pass
    assert (source / "orders.csv").read_text() == "a"
    make(source / "inside", "v1")  # an output inside an input folder destroys nothing
    assert (source / "inside" / MARKER).is_file()


def test_when_the_second_rename_fails_the_old_output_is_restored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    make(out, "v1")
    monkeypatch.setattr(P, "_exchange", lambda a, b: False)  # the two-rename path
    real_rename = os.rename
    calls: list[tuple[str, str]] = []

    def rename(src: str | Path, dst: str | Path) -> None:
        calls.append((str(src), str(dst)))
        if len(calls) == 2:  # old aside done; the new one into place fails
            raise OSError(5, "Input/output error")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OutputError, match="could not be written"):
        make(out, "v2")
    assert (out / MARKER).read_text() == "v1"
    monkeypatch.setattr(os, "rename", real_rename)
    assert leftovers(tmp_path) == []


def test_when_the_first_rename_fails_nothing_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    make(out, "v1")
    monkeypatch.setattr(P, "_exchange", lambda a, b: False)

    def rename(src: str | Path, dst: str | Path) -> None:
        raise OSError(13, "Permission denied")

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OutputError, match="Permission denied"):
        make(out, "v2")
    monkeypatch.undo()
    assert (out / MARKER).read_text() == "v1" and leftovers(tmp_path) == []


def test_the_two_rename_path_replaces_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(P, "_exchange", lambda a, b: False)
    out = tmp_path / "out"
    make(out, "v1")
    make(out, "v2")
    assert (out / MARKER).read_text() == "v2" and leftovers(tmp_path) == []


def test_the_exchange_swaps_atomically(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.write_text("b")
    if not P._exchange(a, b):
        pytest.skip("this kernel/file system has no renameat2(RENAME_EXCHANGE)")
    assert a.read_text() == "b" and b.is_dir()


def test_modes_follow_the_umask_which_is_never_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = f"""
import os, sys
from pathlib import Path
os.umask(0o027)
def no_umask(mask):
    raise AssertionError("the umask was touched")
os.umask = no_umask
sys.path.insert(0, {str(Path.cwd())!r})
from basketcast.pipeline.data.publish import Kind, publishing_dir, publish_bytes
k = Kind("k", True, lambda p: True)
f = Kind("f", False, lambda p: True)
with publishing_dir(Path({str(tmp_path / "d")!r}), k) as tmp:
    (tmp / "x").write_text("x")
publish_bytes(Path({str(tmp_path / "f.bin")!r}), b"x", f)
print(oct(os.stat({str(tmp_path / "d")!r}).st_mode & 0o777), oct(os.stat({str(tmp_path / "f.bin")!r}).st_mode & 0o777))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0o750", "0o640"]


def test_leftovers_of_dead_processes_are_removed_and_a_stranded_old_output_restored(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    out = tmp_path / "out"
    tmp_left = tmp_path / f".out.tmp-{pid}-0123abcd"
    tmp_left.mkdir()
    (tmp_left / "half").write_text("x")
    old_left = tmp_path / f".out.old-{pid}-89abcdef"  # a crash between the two renames
    old_left.mkdir()
    (old_left / MARKER).write_text("v1")
    mine = tmp_path / f".out.tmp-{os.getpid()}-00000000"  # a live process's: untouched
    mine.mkdir()
    cleaned = clean_leftovers(out)
    assert sorted(p.name for p in cleaned) == sorted([tmp_left.name, old_left.name])
    assert (out / MARKER).read_text() == "v1"  # restored, not deleted
    assert not tmp_left.exists() and mine.exists()
    mine.rmdir()
    make(out, "v2")  # the next publication cleans up the same way, then replaces
    assert (out / MARKER).read_text() == "v2" and leftovers(tmp_path) == []


def test_a_full_disk_is_a_clear_error_and_the_old_output_stays(tmp_path: Path) -> None:
    """RLIMIT_FSIZE (``ulimit -f``) in a child process: writes past 64 KiB fail with EFBIG."""
    out = tmp_path / "out"
    make(out, "v1")
    script = f"""
import resource, signal, sys
from pathlib import Path
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
sys.path.insert(0, {str(Path.cwd())!r})
from basketcast.pipeline.data.publish import Kind, publishing_dir
from basketcast.pipeline.errors import OutputError
k = Kind("test folder", True, lambda p: (p / "ours.json").is_file())
try:
    with publishing_dir(Path({str(out)!r}), k) as tmp:
        (tmp / "ours.json").write_text("v2")
        (tmp / "big.bin").write_bytes(b"x" * 1_000_000)
except OutputError as exc:
    print(exc)
"""
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert "could not be written (File too large)" in res.stdout
    assert (out / MARKER).read_text() == "v1" and leftovers(tmp_path) == []
