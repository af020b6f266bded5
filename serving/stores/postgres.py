"""The order log in PostgreSQL (psycopg 3): for deployments whose workers span several machines.

Why it is built this way:

- **Schema by migrations**: plain SQL files ``migrations/postgres/NNN_name.sql`` (package data,
  read with :mod:`importlib.resources`), applied in order when a log opens and recorded in
  ``basketcast_schema_migrations``. All pending files run in one transaction that first takes
  ``pg_advisory_xact_lock``: workers starting together queue on the lock, and each one after the
  first finds nothing left to do. A migration file must therefore be transactional (no
  ``CREATE INDEX CONCURRENTLY``).
- **Idempotent, durable appends**: one transaction with ``INSERT … ON CONFLICT (order_id) DO
  NOTHING RETURNING seq``; when nothing was inserted the stored ``content_key`` tells a duplicate
  from a conflict. A returned append has been committed (PostgreSQL's ``synchronous_commit``, on
  by default, makes that durable). Because appends are idempotent, a statement interrupted by a
  lost connection is simply run again once on a new connection: at worst it reports DUPLICATE
  for an order whose first commit made it.
- **Threads**: one connection per process guarded by a lock (sync routes run in a thread pool);
  no pool dependency. A connection inherited through ``fork`` is never used.
- **Failures**: a server that cannot be reached, or that fails on its side (shutdown, disk
  full), raises :class:`~basketcast.serving.stores.base.StoreUnavailable` with the URL (password hidden).

The table is ``basketcast_orders`` (not ``orders``) so that the log can live in a database shared
with other applications.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg

from basketcast.serving.stores.base import Append, OrderRecord, StoreUnavailable
from basketcast.serving.stores.urls import redact_url

T = TypeVar("T")

MIGRATIONS_PACKAGE = "basketcast.serving.stores"
MIGRATIONS_DIR = ("migrations", "postgres")
MIGRATIONS_TABLE = "basketcast_schema_migrations"
# pg_advisory_xact_lock's key for migrations: b"bcastmig" as a signed 64-bit integer, so that
# no other application's lock is likely to collide with it.
MIGRATION_LOCK_KEY = int.from_bytes(b"bcastmig", "big", signed=True)
CONNECT_TIMEOUT_S = 3  # libpq's minimum useful value is 2
STATEMENT_TIMEOUT = "30s"  # a hung server fails the request instead of holding the lock forever
CHUNK = 1_000  # orders per statement group in append_many
ORDER_COLUMNS = "seq, order_id, user_id, products, dow, hour, days_since_prior, placed_at"
INSERT = (
    "INSERT INTO basketcast_orders (order_id, user_id, products, dow, hour, days_since_prior, placed_at, "
    "content_key) VALUES (%s, %s, %s::bigint[], %s, %s, %s, %s, %s) ON CONFLICT (order_id) DO NOTHING "
)
_MIGRATION_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One SQL file of ``migrations/postgres``."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations() -> list[Migration]:
    """The migration files shipped with the package, in version order.

    Raises RuntimeError when two files share a number or a ``.sql`` file is misnamed: that is a
    packaging mistake, to be caught by the tests rather than half-applied in production.
    """
    folder = importlib.resources.files(MIGRATIONS_PACKAGE)
    for part in MIGRATIONS_DIR:
        folder = folder / part
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _MIGRATION_NAME.match(entry.name)
        if match is None:
            raise RuntimeError(f"migration file {entry.name!r} is not named NNN_name.sql")
        version = int(match.group(1))
        if version in found:
            raise RuntimeError(f"two migration files have the number {version:03d}")
        found[version] = Migration(version, match.group(2), entry.read_text(encoding="utf-8"))
    if not found:
        raise RuntimeError("no PostgreSQL migration file found: is serving/stores/migrations/postgres packaged?")
    return [found[v] for v in sorted(found)]


def _record(row: tuple[Any, ...]) -> OrderRecord:
    seq, order_id, user_id, products, dow, hour, days, placed_at = row
    return OrderRecord(
        order_id=order_id,
        user_id=int(user_id),
        products=tuple(int(p) for p in products),
        dow=int(dow),
        hour=int(hour),
        days_since_prior=None if days is None else float(days),
        placed_at=placed_at,
        seq=int(seq),
    )


def _params(order: OrderRecord, key: str) -> tuple[Any, ...]:
    return (
        order.order_id,
        order.user_id,
        list(order.products),
        order.dow,
        order.hour,
        order.days_since_prior,
        order.placed_at,
        key,
    )


def _conflict(order_id: str) -> ValueError:
    return ValueError(
        f"order {order_id!r} conflicts with a recorded order of the same id and other content; "
        "nothing of this batch was recorded"
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class PostgresOrderLog:
    """The durable, idempotent order log in PostgreSQL at ``dsn`` (a URL or a libpq conninfo string).

    Opening connects and applies pending migrations; it raises StoreUnavailable when the server
    cannot be reached. Placed-at times come back in UTC (the session's time zone): the same
    instant as given.
    """

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self.url = redact_url(dsn)
        self._lock = threading.RLock()
        self._conn: psycopg.Connection[Any] | None = None
        self._pid = -1
        self._closed = False
        self._inherited: list[psycopg.Connection[Any]] = []  # kept referenced, never closed, after a fork
        with self._lock:
            self._connection()

    # --- connection -------------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(
                self._dsn,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_S,
                keepalives=1,
                keepalives_idle=10,
                keepalives_interval=5,
                keepalives_count=3,
                application_name="basketcast",
            )
        except psycopg.Error as e:
            raise StoreUnavailable(f"PostgreSQL at {self.url} is unreachable: {_first_line(e)}") from e
        try:
            conn.execute("SET TIME ZONE 'UTC'")
            self._migrate(conn)
            conn.execute(f"SET statement_timeout = '{STATEMENT_TIMEOUT}'")
        except psycopg.Error as e:  # server gone, or a failing migration (privileges, a broken file)
            conn.close()
            raise StoreUnavailable(
                f"PostgreSQL at {self.url} failed while preparing the order log (migrations): {_first_line(e)}"
            ) from e
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _migrate(conn: psycopg.Connection[Any]) -> None:
        """Apply the pending migrations, once, however many workers open the log together."""
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                "checksum TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            applied = {int(row[0]) for row in conn.execute(f"SELECT version FROM {MIGRATIONS_TABLE}")}
            for migration in migrations():
                if migration.version in applied:
                    continue
                conn.execute(migration.sql.encode())  # several statements, no parameters
                conn.execute(
                    f"INSERT INTO {MIGRATIONS_TABLE} (version, name, checksum) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.checksum),
                )

    def _connection(self) -> psycopg.Connection[Any]:
        """This process's open connection (caller holds the lock), connecting when there is none."""
        if self._closed:
            raise StoreUnavailable(f"the order log at {self.url} is closed")
        if self._conn is not None and self._pid != os.getpid():
            self._inherited.append(self._conn)
            self._conn = None
        if self._conn is not None and (self._conn.closed or self._conn.broken):
            self._drop()
        if self._conn is None:
            self._conn = self._connect()
            self._pid = os.getpid()
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        self._conn = None

    def _run(self, action: str, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """``work`` on the connection; a connection found broken is replaced and ``work`` run once more.

        Safe to repeat because every write is idempotent and every read has no side effect.
        """
        with self._lock:
            for attempt in (1, 2):
                conn = self._connection()
                try:
                    return work(conn)
                except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                    lost = conn.closed or conn.broken
                    if lost:
                        self._drop()
                        if attempt == 1:
                            continue
                    what = "lost the connection" if lost else "failed"
                    raise StoreUnavailable(f"PostgreSQL at {self.url} {what} to {action}: {_first_line(e)}") from e
            raise AssertionError("unreachable")  # pragma: no cover

    # --- the log ------------------------------------------------------------------------------

    def append(self, order: OrderRecord) -> Append:
        key = order.content_key()

        def work(conn: psycopg.Connection[Any]) -> Append:
            with conn.transaction():
                if conn.execute(INSERT + "RETURNING seq", _params(order, key)).fetchone() is not None:
                    return Append.CREATED
                row = conn.execute(
                    "SELECT content_key FROM basketcast_orders WHERE order_id = %s", (order.order_id,)
                ).fetchone()
            return Append.DUPLICATE if row is not None and row[0] == key else Append.CONFLICT

        return self._run(f"record order {order.order_id!r}", work)

    def append_many(self, orders: Iterable[OrderRecord]) -> tuple[int, int]:
        """All of ``orders`` in one transaction, ``CHUNK`` at a time: a conflict keeps none of them.

        The transaction holds this process's connection for the whole batch: backfills should
        call this in chunks of some tens of thousands of orders.
        """
        batch = list(orders)

        def work(conn: psycopg.Connection[Any]) -> tuple[int, int]:
            created = duplicates = 0
            with conn.transaction():
                for start in range(0, len(batch), CHUNK):
                    c, d = self._append_chunk(conn, batch[start : start + CHUNK])
                    created += c
                    duplicates += d
            return created, duplicates

        return self._run(f"record a batch of {len(batch)} orders", work)

    @staticmethod
    def _append_chunk(conn: psycopg.Connection[Any], chunk: list[OrderRecord]) -> tuple[int, int]:
        """Known ids compared first (one query), the rest inserted in one pipelined executemany."""
        keys = [order.content_key() for order in chunk]
        ids = list(dict.fromkeys(order.order_id for order in chunk))
        stored: dict[str, str] = dict(
            conn.execute(  # type: ignore[arg-type]
                "SELECT order_id, content_key FROM basketcast_orders WHERE order_id = ANY(%s)", (ids,)
            ).fetchall()
        )
        duplicates = 0
        pending: dict[str, tuple[OrderRecord, str]] = {}
        for order, key in zip(chunk, keys, strict=True):
            known = stored.get(order.order_id)
            if known is None and order.order_id in pending:
                known = pending[order.order_id][1]
            if known is None:
                pending[order.order_id] = (order, key)
            elif known == key:
                duplicates += 1
            else:
                raise _conflict(order.order_id)
        if not pending:
            return 0, duplicates
        inserted: set[str] = set()
        with conn.cursor() as cursor:
            cursor.executemany(
                INSERT + "RETURNING order_id", [_params(o, k) for o, k in pending.values()], returning=True
            )
            while True:
                row = cursor.fetchone()
                if row is not None:
                    inserted.add(row[0])
                if not cursor.nextset():
                    break
        raced = [order_id for order_id in pending if order_id not in inserted]
        if raced:  # recorded meanwhile by another transaction: compare with what it stored
            stored = dict(
                conn.execute(  # type: ignore[arg-type]
                    "SELECT order_id, content_key FROM basketcast_orders WHERE order_id = ANY(%s)", (raced,)
                ).fetchall()
            )
            for order_id in raced:
                if stored.get(order_id) != pending[order_id][1]:
                    raise _conflict(order_id)
                duplicates += 1
        return len(inserted), duplicates

    def orders_of(self, user_id: int) -> list[OrderRecord]:
        def work(conn: psycopg.Connection[Any]) -> list[OrderRecord]:
            rows = conn.execute(
                f"SELECT {ORDER_COLUMNS} FROM basketcast_orders WHERE user_id = %s ORDER BY seq", (user_id,)
            ).fetchall()
            return [_record(row) for row in rows]

        return self._run(f"read the orders of user {user_id}", work)

    def users_since(self, seq: int) -> list[int]:
        def work(conn: psycopg.Connection[Any]) -> list[int]:
            rows = conn.execute(
                "SELECT DISTINCT user_id FROM basketcast_orders WHERE seq > %s ORDER BY user_id", (seq,)
            ).fetchall()
            return [int(row[0]) for row in rows]

        return self._run("read the users with new orders", work)

    def scan(self, batch: int = 10_000) -> Iterator[list[OrderRecord]]:
        """Keyset pages (``seq > last``): the lock is held per page, never while the caller works."""
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        last = 0
        while True:
            after = last

            def work(conn: psycopg.Connection[Any], after: int = after) -> list[OrderRecord]:
                rows = conn.execute(
                    f"SELECT {ORDER_COLUMNS} FROM basketcast_orders WHERE seq > %s ORDER BY seq LIMIT %s",
                    (after, batch),
                ).fetchall()
                return [_record(row) for row in rows]

            records = self._run("scan the orders", work)
            if not records:
                return
            last = int(records[-1].seq or 0)
            yield records
            if len(records) < batch:
                return

    def count(self) -> int:
        def work(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute("SELECT count(*) FROM basketcast_orders").fetchone()
            return 0 if row is None else int(row[0])

        return self._run("count the orders", work)

    def ping(self) -> bool:
        try:
            self._run("answer a ping", lambda conn: conn.execute("SELECT 1").fetchone())
            return True
        except Exception:
            return False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None and self._pid == os.getpid():
                self._drop()
            self._conn = None

    def __repr__(self) -> str:
        return f"PostgresOrderLog({self.url!r})"
