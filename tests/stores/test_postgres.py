"""The order log in PostgreSQL, against a real server (tests/services.py): the contract, plus
migrations racing between processes, reconnection after a server restart, a server that is
down, and acknowledged appends that survive both a killed client and a crashed server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from basketcast.serving.stores import open_order_log
from basketcast.serving.stores.base import Append, OrderLog, StoreUnavailable
from basketcast.serving.stores.postgres import MIGRATIONS_TABLE, PostgresOrderLog, migrations
from tests.services import PostgresServer, free_port
from tests.stores import OrderLogContract, append_until_killed, order, run_together, start_python

pytestmark = pytest.mark.integration


class TestPostgresOrderLog(OrderLogContract):
    @pytest.fixture
    def log_url(self, postgres_dsn: str) -> str:
        return postgres_dsn

    @pytest.fixture
    def log(self, log_url: str) -> Iterator[OrderLog]:
        log = open_order_log(log_url)
        yield log
        log.close()


def applied(dsn: str) -> list[tuple[int, str, object]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f"SELECT version, name, applied_at FROM {MIGRATIONS_TABLE} ORDER BY version").fetchall()
    return [(int(r[0]), str(r[1]), r[2]) for r in rows]


def test_migration_files_are_found_in_order() -> None:
    found = migrations()
    assert [m.version for m in found] == sorted(m.version for m in found)
    assert found[0].version == 1 and "CREATE TABLE basketcast_orders" in found[0].sql


OPENER = """
import sys
from basketcast.serving.stores.postgres import PostgresOrderLog

print("ready", flush=True)
sys.stdin.readline()  # open together
log = PostgresOrderLog(sys.argv[1])
log.append_many([])
print("opened", flush=True)
"""


def test_migrations_run_once_when_processes_open_together(postgres_dsn: str) -> None:
    openers = [start_python(OPENER, postgres_dsn) for _ in range(4)]
    results = run_together(openers)
    for p, (out, err) in zip(openers, results, strict=True):
        assert p.returncode == 0, err
        assert out.strip() == "opened"
    first = applied(postgres_dsn)
    assert [(v, n) for v, n, _ in first] == [(m.version, m.name) for m in migrations()]
    PostgresOrderLog(postgres_dsn).close()  # re-opening is a no-op
    assert applied(postgres_dsn) == first


def test_url_hides_the_password(postgres_service: PostgresServer, postgres_dsn: str) -> None:
    with_password = postgres_dsn.replace("postgres@", "postgres:hunter2@")  # trust auth ignores it
    log = PostgresOrderLog(with_password)
    assert "hunter2" not in log.url and "postgres:***@" in log.url
    assert "hunter2" not in repr(log)
    assert log.ping()
    log.close()


def test_postgres_scheme_alias(postgres_dsn: str) -> None:
    log = open_order_log(postgres_dsn.replace("postgresql://", "postgres://", 1))
    assert isinstance(log, PostgresOrderLog)
    assert log.append(order("o")) is Append.CREATED
    log.close()


def test_unreachable_server_is_unavailable_quickly() -> None:
    port = free_port()  # nothing listens there
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="unreachable") as info:
        PostgresOrderLog(f"postgresql://app:topsecret@127.0.0.1:{port}/basketcast")
    assert time.monotonic() - started < 5
    assert "topsecret" not in str(info.value) and f":{port}/" in str(info.value)


def test_reconnects_after_a_server_restart(fresh_postgres: PostgresServer) -> None:
    log = PostgresOrderLog(fresh_postgres.dsn())
    assert log.append(order("before")) is Append.CREATED
    fresh_postgres.restart()  # immediate: the connection is cut, as by a crash or failover
    assert log.append(order("after")) is Append.CREATED  # one reconnect, transparently
    assert log.count() == 2
    fresh_postgres.stop()
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"127\.0\.0\.1"):
        log.append(order("while down"))
    assert not log.ping()
    assert time.monotonic() - started < 10
    fresh_postgres.start()
    assert log.ping()
    assert log.append(order("back")) is Append.CREATED
    assert [o.order_id for b in log.scan() for o in b] == ["before", "after", "back"]
    log.close()


def test_acknowledged_appends_survive_a_killed_client_and_a_crashed_server(fresh_postgres: PostgresServer) -> None:
    dsn = fresh_postgres.dsn()
    PostgresOrderLog(dsn).close()  # migrate first, so the child's time goes to appends
    acked = append_until_killed(dsn, acknowledged=200)
    fresh_postgres.restart()  # immediate shutdown: no checkpoint, the WAL is replayed at start
    log = PostgresOrderLog(dsn)
    recorded = {o.order_id for b in log.scan(batch=64) for o in b}
    assert [i for i in acked if i not in recorded] == []
    assert log.count() >= len(acked)
    log.close()


def test_append_many_large_batch(postgres_dsn: str) -> None:
    log = PostgresOrderLog(postgres_dsn)
    log.append(order("b-0500", 0, (500, 501)))
    batch = [order(f"b-{i:04d}", i % 50, (i, i + 1)) for i in range(2500)]
    assert log.append_many(batch + batch[:10]) == (2499, 11)
    assert log.count() == 2500
    assert sum(len(b) for b in log.scan(batch=1000)) == 2500
    log.close()
