"""The embedded stores (SQLite): the contracts, plus what only a shared file can get wrong.

Several uvicorn worker processes append to one file at once (no "database is locked"), the
order log and the online store share that file, and acknowledged appends survive kill -9.
Also the URL forms of ``basketcast.serving.stores.open_order_log`` / ``open_online_store``.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from basketcast.serving.stores import open_online_store, open_order_log, redact_url, sqlite_path
from basketcast.serving.stores.base import Append, OnlineStore, OrderLog, StoreUnavailable
from basketcast.serving.stores.sqlite import SCHEMA_VERSION, SqliteOnlineStore, SqliteOrderLog
from tests.stores import MakeStore, OnlineStoreContract, OrderLogContract, order, run_together, start_python


class TestSqliteOrderLog(OrderLogContract):
    @pytest.fixture
    def log_url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path / 'state' / 'orders.sqlite'}"

    @pytest.fixture
    def log(self, log_url: str) -> Iterator[OrderLog]:
        log = open_order_log(log_url)
        yield log
        log.close()


class TestSqliteOnlineStore(OnlineStoreContract):
    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Iterator[MakeStore]:
        opened: list[OnlineStore] = []

        def make(ttl_seconds: float = 60.0, cache_ttl_seconds: float = 60.0) -> OnlineStore:
            store = open_online_store(
                "embedded", state_dir=tmp_path / "state", ttl_seconds=ttl_seconds, cache_ttl_seconds=cache_ttl_seconds
            )
            opened.append(store)
            return store

        yield make
        for store in opened:
            store.close()


def test_file_is_wal_synced_and_versioned(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "online.sqlite"
    log = SqliteOrderLog(path)  # creates the folders
    store = SqliteOnlineStore(path, 60)  # the same file, its own connection
    assert log.url == store.url == f"sqlite://{path}"
    log.append(order("o"))
    store.put_rows("A", 1, b"rows")
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"orders", "online_rows", "predictions"} <= tables
        assert raw.execute("SELECT order_id, content_key FROM orders").fetchall() == [("o", order("o").content_key())]
    with log._file.read("test") as conn:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: every commit synced
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000
    log.close()
    store.close()


def test_reopening_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "online.sqlite"
    log = SqliteOrderLog(path)
    store = SqliteOnlineStore(path, 60)
    log.append(order("o", products=(9, 8)))
    store.put_rows("A", 1, b"rows")
    log.close()
    store.close()
    log, store = SqliteOrderLog(path), SqliteOnlineStore(path, 60)
    assert log.append(order("o", products=(9, 8))) is Append.DUPLICATE
    assert [o.products for o in log.orders_of(1)] == [(9, 8)]
    assert store.get_rows("A", 1) == b"rows"


def test_newer_schema_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "online.sqlite"
    SqliteOrderLog(path).close()
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreUnavailable, match="newer than this basketcast"):
        SqliteOrderLog(path)


def test_unusable_path_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(StoreUnavailable, match="a-file"):
        SqliteOrderLog(tmp_path / "a-file" / "orders.sqlite")


def test_closed_log_raises_unavailable(tmp_path: Path) -> None:
    log = SqliteOrderLog(tmp_path / "o.sqlite")
    log.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        log.append(order("o"))


def test_no_expiry_with_infinite_ttl(tmp_path: Path) -> None:
    store = SqliteOnlineStore(tmp_path / "o.sqlite", math.inf)
    store.put_rows("A", 1, b"kept")
    store.put_prediction("A", 1, "k", b"p")
    store._purge()
    assert store.get_rows("A", 1) == b"kept"
    assert store.get_prediction("A", 1, "k") == b"p"


def test_expired_entries_are_purged(tmp_path: Path) -> None:
    store = SqliteOnlineStore(tmp_path / "o.sqlite", 0.05)
    store.put_rows("A", 1, b"old")
    store.put_prediction("A", 2, "k", b"old")
    time.sleep(0.1)
    store._purge()
    with store._file.read("test") as conn:
        assert conn.execute("SELECT count(*) FROM online_rows").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM predictions").fetchone()[0] == 0


WORKER = """
import sys
from basketcast.serving.stores.base import OrderRecord
from basketcast.serving.stores.sqlite import SqliteOnlineStore, SqliteOrderLog

path, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
log = SqliteOrderLog(path)            # both roles in one file, as the default has it
store = SqliteOnlineStore(path, 60.0)
print("ready", flush=True)
sys.stdin.readline()                  # start together
for i in range(n):
    assert log.append(OrderRecord(f"{name}-{i}", i % 10, (i, 1), i % 7, i % 24)).value == "created"
    store.put_rows("v1", i % 10, f"{name}-{i}".encode())
    store.put_prediction("v1", i % 10, "k", b"p")
    if i % 20 == 0:
        log.orders_of(i % 10)
        store.get_rows_many("v1", list(range(10)))
print("done", flush=True)
"""


def test_two_processes_share_one_file(tmp_path: Path) -> None:
    """Two worker processes × 200 orders (and online writes) on one new file: 400 rows, no lock error."""
    path = tmp_path / "shared" / "online.sqlite"
    workers = [start_python(WORKER, str(path), name, "200") for name in ("w1", "w2")]
    outputs = run_together(workers)
    for w, (out, err) in zip(workers, outputs, strict=True):
        assert w.returncode == 0, err
        assert "locked" not in err and out.strip() == "done"
    log = SqliteOrderLog(path)
    assert log.count() == 400
    ids = {o.order_id for batch in log.scan(batch=150) for o in batch}
    assert ids == {f"{name}-{i}" for name in ("w1", "w2") for i in range(200)}
    seqs = [o.seq for batch in log.scan() for o in batch]
    assert len(set(seqs)) == 400
    assert sum(len(log.orders_of(u)) for u in range(10)) == 400


def test_a_forked_child_opens_its_own_connection(tmp_path: Path) -> None:
    """A store object inherited through fork re-opens its connection in the child (SQLite forbids sharing)."""
    import multiprocessing

    log = SqliteOrderLog(tmp_path / "o.sqlite")
    log.append(order("parent"))
    context = multiprocessing.get_context("fork")
    child = context.Process(target=_append_in_child, args=(log,))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert {o.order_id for b in log.scan() for o in b} == {"parent", "child"}
    assert log.append(order("parent-again")) is Append.CREATED


def _append_in_child(log: SqliteOrderLog) -> None:
    assert log.append(order("child")) is Append.CREATED


# --- URLs -------------------------------------------------------------------------------------


def test_sqlite_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert sqlite_path("sqlite:///abs/path.sqlite") == Path("/abs/path.sqlite")
    assert sqlite_path("sqlite:////abs/path.sqlite") == Path("/abs/path.sqlite")
    assert sqlite_path("sqlite:rel/path.sqlite") == Path("rel/path.sqlite")
    for bad in ("sqlite://host/x.sqlite", "sqlite:", "sqlite:///"):
        with pytest.raises(ValueError, match="sqlite"):
            sqlite_path(bad)
    monkeypatch.chdir(tmp_path)
    log = open_order_log("sqlite:state/orders.sqlite")
    assert isinstance(log, SqliteOrderLog) and log.path == tmp_path / "state" / "orders.sqlite"
    store = open_online_store(
        f"sqlite:///{tmp_path}/x/online.sqlite", state_dir=tmp_path / "unused", ttl_seconds=5, cache_ttl_seconds=1
    )
    assert isinstance(store, SqliteOnlineStore) and store.path == tmp_path / "x" / "online.sqlite"
    assert store.kind == "embedded" and store.cache_ttl_seconds == 1
    embedded = open_online_store("embedded", state_dir=tmp_path / "st", ttl_seconds=5, cache_ttl_seconds=5)
    assert isinstance(embedded, SqliteOnlineStore) and embedded.path == tmp_path / "st" / "online.sqlite"


@pytest.mark.parametrize("url", ["mysql://u:secret@h/db", "orders.sqlite", "", "redis://localhost"])
def test_unknown_order_log_url_is_a_clear_error(url: str) -> None:
    with pytest.raises(ValueError, match="unsupported order log URL") as info:
        open_order_log(url)
    assert "secret" not in str(info.value)


@pytest.mark.parametrize("url", ["memcached://h", "postgresql://h/db", "", "embeded"])
def test_unknown_online_store_url_is_a_clear_error(url: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unsupported online store URL"):
        open_online_store(url, state_dir=tmp_path, ttl_seconds=1, cache_ttl_seconds=1)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:s3cr%40t@db:5432/basketcast", "postgresql://app:***@db:5432/basketcast"),
        ("postgresql://app@db/basketcast?sslmode=require", "postgresql://app@db/basketcast?sslmode=require"),
        ("postgresql://db/basketcast?user=app&password=secret", "postgresql://db/basketcast?user=app&password=***"),
        ("host=db user=app password=secret dbname=b", "host=db user=app password=*** dbname=b"),
        ("host=db password='se cret' dbname=b", "host=db password=*** dbname=b"),
        ("redis://:secret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("redis://cache:6379/0", "redis://cache:6379/0"),
    ],
)
def test_redact_url_hides_passwords(url: str, shown: str) -> None:
    assert redact_url(url) == shown
