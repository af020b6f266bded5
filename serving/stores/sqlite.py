"""The embedded stores: the order log and the online store in one SQLite file (the default).

Why SQLite and how it is made safe to share:

- **Several processes** (uvicorn workers) and **several threads** (FastAPI runs sync routes in a
  thread pool) use one file. Each store object holds one connection guarded by a lock (SQLite
  serialises writers anyway), opened with ``check_same_thread=False``; each process opens its own
  connection (a connection inherited through ``fork`` is never used: it is re-opened in the child).
  The file is in WAL mode, so readers never block the writer, and every write transaction starts
  with ``BEGIN IMMEDIATE`` so that waiting for another process's write goes through the busy
  timeout (a deferred transaction upgraded to a write can fail at once with "database is locked").
- **Durability**: the order log's connection uses ``synchronous=FULL``: in WAL mode every commit
  syncs the WAL before it returns, so an acknowledged append survives kill -9 and power loss. The
  online store holds only derived data (rows recomputed from the log, cached answers), so its
  connection uses ``synchronous=NORMAL`` (synced at checkpoints). Sharing the file is safe: a
  ``FULL`` commit syncs the whole WAL, including any ``NORMAL`` frames before it.
- **One schema** for both roles (tables ``orders``, ``online_rows``, ``predictions``) versioned by
  ``PRAGMA user_version`` and created by whichever store opens the file first, inside a write
  transaction, so two processes opening a new file at once do not race.

Expired online entries read as missing and are deleted now and then (at open and every
``PURGE_EVERY`` writes of a process). Failures of SQLite itself (disk full, I/O error, the busy
timeout elapsed) raise :class:`~basketcast.serving.stores.base.StoreUnavailable`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from basketcast.serving.stores.base import Append, OrderRecord, StoreUnavailable

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 10_000  # how long a writer waits for another process's write transaction
PURGE_EVERY = 1_000  # online writes between two deletions of expired entries
IN_CHUNK = 500  # ids per "IN (…)" query (well under SQLite's bound on parameters)

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS orders (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        order_id TEXT UNIQUE NOT NULL,
        user_id INTEGER NOT NULL,
        products TEXT NOT NULL,
        dow INTEGER NOT NULL,
        hour INTEGER NOT NULL,
        days_since_prior REAL NULL,
        placed_at TEXT NULL,
        content_key TEXT NOT NULL,
        received_at TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS orders_user_seq ON orders (user_id, seq)",
    """CREATE TABLE IF NOT EXISTS online_rows (
        version TEXT NOT NULL,
        user_id INTEGER NOT NULL,
        payload BLOB NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (version, user_id)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS online_rows_expiry ON online_rows (expires_at)",
    """CREATE TABLE IF NOT EXISTS predictions (
        version TEXT NOT NULL,
        user_id INTEGER NOT NULL,
        key TEXT NOT NULL,
        payload BLOB NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (version, user_id, key)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS predictions_expiry ON predictions (expires_at)",
)

ORDER_COLUMNS = "seq, order_id, user_id, products, dow, hour, days_since_prior, placed_at"
OrderRow = tuple[int, str, int, str, int, int, float | None, str | None]


class _SqliteFile:
    """One process's connection to the SQLite file, with its lock, its pragmas and the schema.

    Opened lazily per process: ``connection()`` re-opens after a ``fork`` (SQLite forbids using a
    connection across one) and raises StoreUnavailable after ``close()``.
    """

    def __init__(self, path: Path, synchronous: str, what: str) -> None:
        self.path = Path(path).expanduser().absolute()
        self.url = f"sqlite://{self.path}"
        self.what = what
        self.lock = threading.RLock()
        self._synchronous = synchronous
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self._closed = False
        self._inherited: list[sqlite3.Connection] = []  # kept referenced, never closed, after a fork
        with self.guard("open"):
            self.connection()

    def connection(self) -> sqlite3.Connection:
        """This process's connection (caller holds ``lock``)."""
        if self._closed:
            raise StoreUnavailable(f"the {self.what} at {self.path} is closed")
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        if self._conn is not None:
            self._inherited.append(self._conn)
        self._conn = self._connect()
        self._pid = os.getpid()
        return self._conn

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreUnavailable(f"cannot create the folder of the {self.what} {self.path}: {e}") from e
        conn = sqlite3.connect(
            str(self.path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._wal(conn)
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _wal(conn: sqlite3.Connection) -> None:
        """Switch the file to WAL (persistent; a no-op once done), retrying while another opener holds it."""
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
                continue
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"cannot switch to WAL mode (journal_mode is {mode})")
            return

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Create the schema once, in a write transaction (concurrent openers wait, then see it done)."""
        if conn.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
            self._check_version(conn)
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                for statement in SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _check_version(self, conn: sqlite3.Connection) -> None:
        found = conn.execute("PRAGMA user_version").fetchone()[0]
        if found > SCHEMA_VERSION:
            raise StoreUnavailable(
                f"{self.path} has schema version {found}, newer than this basketcast's {SCHEMA_VERSION}: "
                "upgrade basketcast or point it at another file"
            )

    @contextlib.contextmanager
    def guard(self, action: str) -> Iterator[None]:
        """SQLite's own failures (I/O, disk full, busy timeout) as StoreUnavailable, with the file named."""
        try:
            yield
        except sqlite3.OperationalError as e:
            raise StoreUnavailable(f"the {self.what} at {self.path} failed to {action}: {e}") from e

    @contextlib.contextmanager
    def read(self, action: str) -> Iterator[sqlite3.Connection]:
        """The connection for reads (each statement is its own consistent snapshot)."""
        with self.lock, self.guard(action):
            yield self.connection()

    @contextlib.contextmanager
    def write(self, action: str) -> Iterator[sqlite3.Connection]:
        """A write transaction: committed (and, for the log, synced) when the block ends, rolled back on error."""
        with self.lock, self.guard(action):
            conn = self.connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def ping(self) -> bool:
        try:
            with self.read("answer a ping") as conn:
                conn.execute("SELECT 1").fetchone()
            return True
        except Exception:
            return False

    def close(self) -> None:
        with self.lock:
            self._closed = True
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None


def _record(row: OrderRow) -> OrderRecord:
    seq, order_id, user_id, products, dow, hour, days, placed_at = row
    return OrderRecord(
        order_id=order_id,
        user_id=int(user_id),
        products=tuple(int(p) for p in json.loads(products)),
        dow=int(dow),
        hour=int(hour),
        days_since_prior=None if days is None else float(days),
        placed_at=None if placed_at is None else dt.datetime.fromisoformat(placed_at),
        seq=int(seq),
    )


def _insert_order(conn: sqlite3.Connection, order: OrderRecord, key: str, received_at: str) -> bool:
    """Insert unless the id is taken; whether it was inserted."""
    cursor = conn.execute(
        "INSERT INTO orders (order_id, user_id, products, dow, hour, days_since_prior, placed_at, content_key, "
        "received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (order_id) DO NOTHING",
        (
            order.order_id,
            order.user_id,
            json.dumps(list(order.products)),
            order.dow,
            order.hour,
            order.days_since_prior,
            None if order.placed_at is None else order.placed_at.isoformat(),
            key,
            received_at,
        ),
    )
    return cursor.rowcount == 1


def _stored_key(conn: sqlite3.Connection, order_id: str) -> str:
    row = conn.execute("SELECT content_key FROM orders WHERE order_id = ?", (order_id,)).fetchone()
    return str(row[0])


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


class SqliteOrderLog:
    """The durable, idempotent order log in a SQLite file (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self._file = _SqliteFile(path, "FULL", "order log")
        self.path = self._file.path
        self.url = self._file.url

    def append(self, order: OrderRecord) -> Append:
        key = order.content_key()
        with self._file.write(f"record order {order.order_id!r}") as conn:
            if _insert_order(conn, order, key, _now_iso()):
                return Append.CREATED
            return Append.DUPLICATE if _stored_key(conn, order.order_id) == key else Append.CONFLICT

    def append_many(self, orders: Iterable[OrderRecord]) -> tuple[int, int]:
        """All of ``orders`` in one transaction: on a conflict nothing of them is kept (ValueError).

        The orders are read (and their keys computed) before the transaction starts, so a slow
        iterable never holds the file's write lock; still, other processes' writes wait for the
        whole batch (up to the busy timeout), so backfills should call this in chunks of at most
        some tens of thousands of orders.
        """
        keyed = [(order, order.content_key()) for order in orders]
        created = duplicates = 0
        received_at = _now_iso()
        with self._file.write(f"record a batch of {len(keyed)} orders") as conn:
            for order, key in keyed:
                if _insert_order(conn, order, key, received_at):
                    created += 1
                elif _stored_key(conn, order.order_id) == key:
                    duplicates += 1
                else:
                    raise ValueError(
                        f"order {order.order_id!r} conflicts with a recorded order of the same id and other "
                        "content; nothing of this batch was recorded"
                    )
        return created, duplicates

    def orders_of(self, user_id: int) -> list[OrderRecord]:
        with self._file.read(f"read the orders of user {user_id}") as conn:
            rows = conn.execute(
                f"SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = ? ORDER BY seq", (user_id,)
            ).fetchall()
        return [_record(row) for row in rows]

    def users_since(self, seq: int) -> list[int]:
        with self._file.read("read the users with new orders") as conn:
            rows = conn.execute("SELECT DISTINCT user_id FROM orders WHERE seq > ? ORDER BY user_id", (seq,)).fetchall()
        return [int(row[0]) for row in rows]

    def scan(self, batch: int = 10_000) -> Iterator[list[OrderRecord]]:
        """Keyset pages (``seq > last``): the lock is held per page, never while the caller works."""
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        last = 0
        while True:
            with self._file.read("scan the orders") as conn:
                rows = conn.execute(
                    f"SELECT {ORDER_COLUMNS} FROM orders WHERE seq > ? ORDER BY seq LIMIT ?", (last, batch)
                ).fetchall()
            if not rows:
                return
            records = [_record(row) for row in rows]
            last = int(rows[-1][0])
            yield records
            if len(rows) < batch:
                return

    def count(self) -> int:
        with self._file.read("count the orders") as conn:
            return int(conn.execute("SELECT count(*) FROM orders").fetchone()[0])

    def ping(self) -> bool:
        return self._file.ping()

    def close(self) -> None:
        self._file.close()

    def __repr__(self) -> str:
        return f"SqliteOrderLog({str(self.path)!r})"


def _expiry(ttl_seconds: float) -> float:
    return math.inf if math.isinf(ttl_seconds) else time.time() + ttl_seconds


def _check_ttl(name: str, value: float) -> float:
    value = float(value)
    if not value > 0:
        raise ValueError(f"{name} must be positive (math.inf for no expiry), got {value}")
    return value


class SqliteOnlineStore:
    """Fresh rows and cached predictions per (model version, user) in a SQLite file.

    Rows and predictions live ``ttl_seconds`` (predictions ``cache_ttl_seconds`` when given, else
    the same); ``math.inf`` keeps them until replaced. ``put_rows`` drops the user's cached
    predictions of that version in the same transaction, so a cached answer never outlives the
    rows it was computed from.
    """

    kind = "embedded"

    def __init__(self, path: Path, ttl_seconds: float, *, cache_ttl_seconds: float | None = None) -> None:
        self.ttl_seconds = _check_ttl("ttl_seconds", ttl_seconds)
        self.cache_ttl_seconds = _check_ttl(
            "cache_ttl_seconds", self.ttl_seconds if cache_ttl_seconds is None else cache_ttl_seconds
        )
        self._file = _SqliteFile(path, "NORMAL", "online store")
        self.path = self._file.path
        self.url = self._file.url
        self._counts_lock = threading.Lock()
        self._hits = 0
        self._misses = 0
        self._writes = 0
        self._purge()

    def get_rows(self, version: str, user_id: int) -> bytes | None:
        with self._file.read(f"read the rows of user {user_id}") as conn:
            row = conn.execute(
                "SELECT payload FROM online_rows WHERE version = ? AND user_id = ? AND expires_at > ?",
                (version, user_id, time.time()),
            ).fetchone()
        return None if row is None else bytes(row[0])

    def get_rows_many(self, version: str, user_ids: Sequence[int]) -> list[bytes | None]:
        found: dict[int, bytes] = {}
        wanted = list(dict.fromkeys(int(u) for u in user_ids))
        now = time.time()
        with self._file.read(f"read the rows of {len(wanted)} users") as conn:
            for start in range(0, len(wanted), IN_CHUNK):
                chunk = wanted[start : start + IN_CHUNK]
                marks = ", ".join("?" * len(chunk))
                for user_id, payload in conn.execute(
                    f"SELECT user_id, payload FROM online_rows WHERE version = ? AND user_id IN ({marks}) "
                    "AND expires_at > ?",
                    (version, *chunk, now),
                ):
                    found[int(user_id)] = bytes(payload)
        return [found.get(int(u)) for u in user_ids]

    def put_rows(self, version: str, user_id: int, payload: bytes) -> None:
        with self._file.write(f"store the rows of user {user_id}") as conn:
            conn.execute(
                "INSERT INTO online_rows (version, user_id, payload, expires_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (version, user_id) DO UPDATE "
                "SET payload = excluded.payload, expires_at = excluded.expires_at",
                (version, user_id, bytes(payload), _expiry(self.ttl_seconds)),
            )
            conn.execute("DELETE FROM predictions WHERE version = ? AND user_id = ?", (version, user_id))
        self._wrote()

    def get_prediction(self, version: str, user_id: int, key: str) -> bytes | None:
        with self._file.read(f"read a cached prediction of user {user_id}") as conn:
            row = conn.execute(
                "SELECT payload FROM predictions WHERE version = ? AND user_id = ? AND key = ? AND expires_at > ?",
                (version, user_id, key, time.time()),
            ).fetchone()
        with self._counts_lock:
            if row is None:
                self._misses += 1
            else:
                self._hits += 1
        return None if row is None else bytes(row[0])

    def put_prediction(self, version: str, user_id: int, key: str, payload: bytes) -> None:
        with self._file.write(f"cache a prediction of user {user_id}") as conn:
            conn.execute(
                "INSERT OR REPLACE INTO predictions (version, user_id, key, payload, expires_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (version, user_id, key, bytes(payload), _expiry(self.cache_ttl_seconds)),
            )
        self._wrote()

    def hits_and_misses(self) -> tuple[int, int]:
        with self._counts_lock:
            return self._hits, self._misses

    def ping(self) -> bool:
        return self._file.ping()

    def close(self) -> None:
        self._file.close()

    def _wrote(self) -> None:
        with self._counts_lock:
            self._writes += 1
            due = self._writes % PURGE_EVERY == 0
        if due:
            self._purge()

    def _purge(self) -> None:
        """Delete expired entries (they already read as missing; this only reclaims the space)."""
        now = time.time()
        with self._file.write("delete expired entries") as conn:
            conn.execute("DELETE FROM online_rows WHERE expires_at <= ?", (now,))
            conn.execute("DELETE FROM predictions WHERE expires_at <= ?", (now,))

    def __repr__(self) -> str:
        return f"SqliteOnlineStore({str(self.path)!r}, ttl_seconds={self.ttl_seconds})"
