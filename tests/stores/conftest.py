"""Fixtures of the store tests: real Redis and PostgreSQL servers (tests/services.py).

Session-scoped servers keep the suite fast; each test still gets a clean slate (a flushed Redis,
a new PostgreSQL database). Tests that kill or restart a server take a private one
(``fresh_redis``, ``fresh_postgres``) so a failure there cannot break the others.

Missing server programs fail the tests with what to install (``.ci/run`` installs them), or skip
them when ``BASKETCAST_SKIP_SERVICES=1``: a machine without them must not pass silently.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from tests.services import (
    MissingServiceError,
    PostgresServer,
    RedisServer,
    ServiceStartError,
    postgres_bindir,
    postgres_server,
    redis_binary,
    redis_server,
    skip_services,
)

T = TypeVar("T")


def _require(check: Callable[[], object]) -> None:
    """Fail (or skip, when asked) with the installer's message when a server's programs are missing."""
    try:
        check()
        return
    except MissingServiceError as e:
        message = str(e)  # reported outside the except block: no chained traceback, just the advice
    if skip_services():
        pytest.skip(message)
    pytest.fail(message, pytrace=False)


@contextlib.contextmanager
def _started(server: contextlib.AbstractContextManager[T]) -> Iterator[T]:
    """Enter ``server``; a server that does not start fails the test with its log, not a traceback."""
    with contextlib.ExitStack() as stack:
        failure = None
        try:
            running = stack.enter_context(server)
        except ServiceStartError as e:
            failure = str(e)
        if failure is not None:
            pytest.fail(failure, pytrace=False)
        yield running


@pytest.fixture
def redis_program() -> None:
    """Requires redis-server (for tests that run their own RedisServer)."""
    _require(redis_binary)


@pytest.fixture(scope="session")
def redis_service() -> Iterator[RedisServer]:
    """One Redis for the session (loopback, free port, no persistence)."""
    _require(redis_binary)
    with _started(redis_server()) as server:
        yield server


@pytest.fixture
def redis_url(redis_service: RedisServer) -> str:
    """The session's Redis, emptied (FLUSHALL) for this test."""
    if not redis_service.running:
        redis_service.start()
    with socket.create_connection(("127.0.0.1", redis_service.port), timeout=2) as s:
        s.sendall(b"FLUSHALL\r\n")
        assert s.recv(64).startswith(b"+OK")
    return redis_service.url


@pytest.fixture
def fresh_redis() -> Iterator[RedisServer]:
    """A private Redis for a test that kills and restarts it."""
    _require(redis_binary)
    with _started(redis_server()) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_service() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the session (loopback, free port, fsync on)."""
    _require(postgres_bindir)
    with _started(postgres_server()) as server:
        yield server


@pytest.fixture
def postgres_dsn(postgres_service: PostgresServer) -> str:
    """A new, empty database of the session's cluster, for this test alone."""
    return postgres_service.new_database()


@pytest.fixture
def fresh_postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL cluster for a test that crashes or restarts it."""
    _require(postgres_bindir)
    with _started(postgres_server()) as server:
        yield server
