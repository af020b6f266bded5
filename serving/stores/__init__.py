"""Open the order log and the online store named by a URL (settings), behind ``basketcast.serving.stores.base``.

- Order log: ``sqlite:///ABSOLUTE/PATH.sqlite`` or ``sqlite:RELATIVE/PATH.sqlite`` (the embedded
  default, :class:`~basketcast.serving.stores.sqlite.SqliteOrderLog`) or ``postgresql://…`` / ``postgres://…``
  (:class:`~basketcast.serving.stores.postgres.PostgresOrderLog`).
- Online store: ``embedded`` (SQLite in ``STATE_DIR/online.sqlite``), ``sqlite:…`` (SQLite at that
  path) or ``redis://…`` / ``rediss://…`` (:class:`~basketcast.serving.stores.redis_store.RedisOnlineStore`).

The drivers of the servers (psycopg, redis) are imported inside the functions that need them, so
``import basketcast.serving.stores`` works in an install without them (the embedded default needs neither).
"""

from __future__ import annotations

from pathlib import Path

from basketcast.serving.stores.base import Append, OnlineStore, OrderLog, OrderRecord, StoreUnavailable
from basketcast.serving.stores.urls import redact_url, sqlite_path

__all__ = [
    "Append",
    "OnlineStore",
    "OrderLog",
    "OrderRecord",
    "StoreUnavailable",
    "open_online_store",
    "open_order_log",
    "redact_url",
    "sqlite_path",
]

ORDER_LOG_FORMS = "sqlite:///ABSOLUTE/PATH.sqlite, sqlite:RELATIVE/PATH.sqlite or postgresql://USER@HOST:PORT/DB"
ONLINE_STORE_FORMS = "embedded, sqlite:///ABSOLUTE/PATH.sqlite, sqlite:RELATIVE/PATH.sqlite or redis://HOST:PORT/DB"


def open_order_log(url: str) -> OrderLog:
    """The order log at ``url`` (see the module docstring for the forms).

    Raises ValueError for a URL of no known form, StoreUnavailable when its server cannot be reached.
    """
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        from basketcast.serving.stores.sqlite import SqliteOrderLog

        return SqliteOrderLog(sqlite_path(url))
    if scheme in ("postgresql", "postgres"):
        from basketcast.serving.stores.postgres import PostgresOrderLog

        return PostgresOrderLog(url)
    raise ValueError(f"unsupported order log URL {redact_url(url)!r}: use {ORDER_LOG_FORMS}")


def open_online_store(url: str, *, state_dir: Path, ttl_seconds: float, cache_ttl_seconds: float) -> OnlineStore:
    """The online store at ``url``: ``embedded`` puts SQLite in ``state_dir / "online.sqlite"``.

    ``ttl_seconds`` bounds how long a user's fresh rows live, ``cache_ttl_seconds`` how long cached
    predictions live (both stores also drop a user's predictions when their rows change). Raises
    ValueError for a URL of no known form or a TTL that is not positive.
    """
    stripped = url.strip()
    scheme = stripped.split(":", 1)[0].lower() if ":" in stripped else ""
    if stripped.lower() == "embedded":
        from basketcast.serving.stores.sqlite import SqliteOnlineStore

        return SqliteOnlineStore(Path(state_dir) / "online.sqlite", ttl_seconds, cache_ttl_seconds=cache_ttl_seconds)
    if scheme == "sqlite":
        from basketcast.serving.stores.sqlite import SqliteOnlineStore

        return SqliteOnlineStore(sqlite_path(stripped), ttl_seconds, cache_ttl_seconds=cache_ttl_seconds)
    if scheme in ("redis", "rediss"):
        from basketcast.serving.stores.redis_store import RedisOnlineStore

        return RedisOnlineStore(stripped, ttl_seconds, cache_ttl_seconds)
    raise ValueError(f"unsupported online store URL {redact_url(url)!r}: use {ONLINE_STORE_FORMS}")
