"""Publishing outputs: never half-written, never over something that is not ours.

Every command that writes an output the user named (``--out``, ``--submission``,
``--segments-out``…) goes through :func:`publishing_dir` (folders) or :func:`publishing_file`
(files):

- The output is built under a temporary sibling name (``.NAME.tmp-PID-…``) and swapped into place
  only when complete: a reader sees the old output or the new one, never a mix. On Linux the swap
  is one ``renameat2(RENAME_EXCHANGE)``; elsewhere two renames, the old output restored if the
  second fails.
- An existing output is replaced only when it is a basketcast artifact of the same :class:`Kind`
  (its own ``recognise`` says so) or an empty folder. Anything else — a folder of the user's
  files, another kind of artifact, a file where a folder goes — is refused with a
  :class:`~basketcast.pipeline.errors.OutputError` unless ``force``; even then the old content is moved
  aside and deleted only once the new output is in place.
- An output may not be or contain one of the command's inputs, nor be the current directory or
  one of its parents, whatever ``force`` says.
- Interrupted runs (Ctrl-C, an exception) remove their temporary copy; a ``kill -9`` leaves one,
  which the next publication of the same output removes (its process is gone). An output left
  missing between the two renames of the fallback path is restored from its aside copy then.

Modes follow the process umask (folders are created with ``os.mkdir(path, 0o777)``, files with
``os.open(…, 0o666)``); the umask itself is never changed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from basketcast.pipeline.errors import BasketcastError, OutputError

_TMP = "tmp"
_OLD = "old"
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<what>tmp|old)-(?P<pid>\d+)-[0-9a-f]{8}$")
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


@dataclass(frozen=True)
class Kind:
    """A kind of output: its name in messages, whether it is a folder, and how to recognise one.

    ``recognise(path)`` answers whether an existing ``path`` is a basketcast artifact of this kind
    (for example: its manifest parses); only such an output is replaced without ``force``.
    """

    name: str
    folder: bool
    recognise: Callable[[Path], bool]


def _sibling(final: Path, what: str) -> Path:
    return final.parent / f".{final.name}.{what}-{os.getpid()}-{secrets.token_hex(4)}"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def clean_leftovers(final: Path) -> list[Path]:
    """Remove the temporary and aside copies of ``final`` left by processes that no longer run.

    An aside copy (``.NAME.old-…``) is the previous output; when ``final`` itself is missing (a
    crash between two renames) it is renamed back instead of removed. Returns what was removed
    or restored.
    """
    final = Path(final)
    if not final.parent.is_dir():
        return []
    done: list[Path] = []
    for entry in sorted(final.parent.iterdir()):
        m = _LEFTOVER.match(entry.name)
        if not m or m["name"] != final.name or _alive(int(m["pid"])):
            continue
        if m["what"] == _OLD and not final.exists() and not final.is_symlink():
            entry.rename(final)
        else:
            _remove(entry)
        done.append(entry)
    return done


def check_output(final: Path, kind: Kind, force: bool = False, inputs: Iterable[Path] = ()) -> None:
    """Refuse an output that would destroy something that is not an artifact of ``kind``.

    Publishing checks again at the end; commands call this first too, so that a refused output
    fails before any work is done.
    """
    here = final.resolve()
    cwd = Path.cwd().resolve()
    if here == cwd or here in cwd.parents:
        raise OutputError(f"{final}: is the current directory (or one of its parents); name a new {kind.name}")
    for given in inputs:
        src = Path(given).resolve()
        if here == src or here in src.parents:
            raise OutputError(f"{final}: would overwrite the input {given}; write the {kind.name} somewhere else")
    if not final.exists() and not final.is_symlink():
        return
    if force:
        return
    if kind.folder and final.is_dir() and not final.is_symlink():
        entries = sorted(p.name for p in final.iterdir())
        if not entries or kind.recognise(final):
            return
        shown = ", ".join(entries[:5]) + (", …" if len(entries) > 5 else "")
        raise OutputError(
            f"{final}: exists and is not a basketcast {kind.name} ({len(entries)} entries: {shown}); "
            "choose another path, or pass --force to replace it"
        )
    if not kind.folder and final.is_file() and kind.recognise(final):
        return
    what = "a folder" if final.is_dir() else "a file" if final.is_file() else "something else"
    raise OutputError(
        f"{final}: exists and is {what}, not a basketcast {kind.name}; choose another path, or pass --force to "
        "replace it"
    )


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux renameat2); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _swap_into_place(tmp: Path, final: Path) -> None:
    """Put the complete ``tmp`` at ``final``; whatever was at ``final`` is removed afterwards."""
    if not final.exists() and not final.is_symlink():
        os.rename(tmp, final)
        return
    if _exchange(tmp, final):
        _remove(tmp)  # now holds the previous output
        return
    old = _sibling(final, _OLD)
    os.rename(final, old)
    try:
        os.rename(tmp, final)
    except BaseException:
        os.rename(old, final)  # the previous output goes back where it was
        raise
    _remove(old)


# Errors of the disk the output goes to (full, over quota, file too large, read-only).
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
_NO_SPACE = re.compile(r"no space left|os error 28|disk quota|file too large|read-only file system", re.I)


def write_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (from any library writing a file) says the disk refused the write."""
    if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
        return True
    return bool(_NO_SPACE.search(str(exc)))


def _failed(exc: BaseException, final: Path) -> OutputError:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).strip().splitlines()[0]
    return OutputError(f"{final}: could not be written ({reason}); the previous content is unchanged")


@contextlib.contextmanager
def _publishing(final: Path, kind: Kind, force: bool, inputs: Iterable[Path], folder: bool) -> Iterator[Path]:
    """The one publication protocol behind :func:`publishing_dir` and :func:`publishing_file`."""
    final = Path(final)
    check_output(final, kind, force, inputs)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(final)
    tmp = _sibling(final, _TMP)
    if folder:
        os.mkdir(tmp, 0o777)
    else:
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        try:
            yield tmp
        except Exception as exc:
            if write_failure(exc):
                raise _failed(exc, final) from exc
            raise
        try:
            if folder or (final.is_dir() and not final.is_symlink()):
                _swap_into_place(tmp, final)  # a file over a folder (--force): moved aside, then removed
            else:
                os.replace(tmp, final)
        except OSError as exc:
            raise _failed(exc, final) from exc
    except BaseException:
        _remove(tmp)
        raise


def publishing_dir(
    final: Path, kind: Kind, *, force: bool = False, inputs: Iterable[Path] = ()
) -> contextlib.AbstractContextManager[Path]:
    """Yield a fresh empty folder; when the block ends without an exception it becomes ``final``.

    See the module doc for what may be replaced. On an exception the temporary folder is removed
    and ``final`` is untouched; a write the disk refuses (full, say) becomes an OutputError naming
    ``final``.
    """
    return _publishing(final, kind, force, inputs, folder=True)


def publishing_file(
    final: Path, kind: Kind, *, force: bool = False, inputs: Iterable[Path] = ()
) -> contextlib.AbstractContextManager[Path]:
    """Yield a temporary file path (created empty) to write; on success it replaces ``final``.

    Same rules as :func:`publishing_dir`.
    """
    return _publishing(final, kind, force, inputs, folder=False)


def publish_bytes(final: Path, data: bytes, kind: Kind, *, force: bool = False, inputs: Iterable[Path] = ()) -> None:
    """Write ``data`` as the file ``final`` through :func:`publishing_file`."""
    with publishing_file(final, kind, force=force, inputs=inputs) as tmp:
        tmp.write_bytes(data)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write; renamed onto ``path`` when the block ends, removed
    when it raises (no kind check). For files inside a folder being published and for our own
    files; a user-named output goes through :func:`publishing_file`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, _TMP)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        _remove(tmp)
        if isinstance(exc, Exception) and write_failure(exc):
            raise _failed(exc, path) from exc
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)


def loads(load: Callable[[Path], object]) -> Callable[[Path], bool]:
    """A ``recognise`` for outputs that our own reader validates: ``load(path)`` raises no
    BasketcastError (a manifest or report of this basketcast, say)."""

    def recognise(path: Path) -> bool:
        try:
            load(path)
        except BasketcastError:
            return False
        return True

    return recognise


def parquet_with_columns(columns: Iterable[str]) -> Callable[[Path], bool]:
    """A ``recognise`` for Parquet outputs: the file's columns are exactly ``columns``, in order."""
    expected = list(columns)

    def recognise(path: Path) -> bool:
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(path).names) == expected
        except Exception:  # not Parquet at all (pyarrow raises its own types)
            return False

    return recognise


def text_starting_with(prefix: str, limit: int = 4096) -> Callable[[Path], bool]:
    """A ``recognise`` for text outputs: ``prefix`` occurs in the first ``limit`` bytes."""

    def recognise(path: Path) -> bool:
        try:
            with path.open("rb") as fh:
                return prefix.encode() in fh.read(limit)
        except OSError:
            return False

    return recognise
