"""The online store in Redis (redis-py): fresh rows and the prediction cache shared by every worker.

Why it is built this way:

- **Keys carry the model version** (``basketcast:{version}:rows:{user_id}`` and
  ``basketcast:{version}:pred:{user_id}``), so a hot swap never reads rows or answers of another
  version; the old version's keys simply expire.
- **Rows** are one string per user with a TTL of ``ttl_seconds``. **Predictions** are one hash
  per user (request key → answer) whose TTL, ``cache_ttl_seconds``, is set when the hash is
  created (a small Lua script: ``PEXPIRE … NX`` needs Redis 7, this works on any Redis), so no
  cached answer lives longer than that, however busy the user.
  ``put_rows`` writes the rows and deletes the hash in one ``MULTI`` transaction, so no reader
  sees new rows next to answers computed from the old ones.
- **Fail fast**: short socket timeouts (connect 0.5 s, command 1 s) and one immediate retry, of
  a dropped connection only (redis-py's default retries timeouts too, three times, with backoff
  of up to seconds), so a dead or hung Redis costs a request about a second at most before it
  degrades to the snapshot. Every Redis error raises
  :class:`~basketcast.serving.stores.base.StoreUnavailable`; ``ping()`` never raises.
- **Reconnects by itself**: redis-py drops a connection that failed and opens a new one on the
  next command, so the same store object works again once Redis is back (with empty keys if
  Redis kept no persistence: every read is then a miss, which only costs recomputation).
- Hits and misses of the prediction cache are counted in this process (under a lock: sync
  routes run in a thread pool).
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from basketcast.serving.stores.base import StoreUnavailable
from basketcast.serving.stores.urls import redact_url

T = TypeVar("T")

CONNECT_TIMEOUT_S = 0.5
SOCKET_TIMEOUT_S = 1.0
HEALTH_CHECK_INTERVAL_S = 15  # an idle pooled connection is PINGed before reuse after this long
RETRIES = 1  # one immediate retry on a new connection (e.g. the first command after a Redis restart)
PREFIX = "basketcast"
# HSET, and a TTL only on a hash that has none yet (a new one): atomic, one round trip. redis-py
# runs it by EVALSHA and loads it again when Redis lost its script cache (after a restart).
PUT_PREDICTION = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('PTTL', KEYS[1]) == -1 then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1
"""


def rows_key(version: str, user_id: int) -> str:
    """The string holding ``user_id``'s fresh rows under model ``version``."""
    return f"{PREFIX}:{version}:rows:{int(user_id)}"


def predictions_key(version: str, user_id: int) -> str:
    """The hash of ``user_id``'s cached answers (request key → payload) under model ``version``."""
    return f"{PREFIX}:{version}:pred:{int(user_id)}"


def _ttl_ms(name: str, seconds: float) -> int | None:
    """A TTL in milliseconds (None: no expiry, for ``math.inf``); ValueError unless positive."""
    seconds = float(seconds)
    if not seconds > 0:
        raise ValueError(f"{name} must be positive (math.inf for no expiry), got {seconds}")
    if math.isinf(seconds):
        return None
    return max(1, round(seconds * 1000))


def _as_bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


class RedisOnlineStore:
    """Fresh rows and cached predictions per (model version, user) in Redis at ``url``.

    Opening does not connect (redis-py connects on the first command): a Redis that is down at
    start-up only makes the calls raise StoreUnavailable until it is up.
    """

    kind = "redis"

    def __init__(self, url: str, ttl_seconds: float, cache_ttl_seconds: float) -> None:
        self.url = redact_url(url)
        self._rows_ttl_ms = _ttl_ms("ttl_seconds", ttl_seconds)
        self._cache_ttl_ms = _ttl_ms("cache_ttl_seconds", cache_ttl_seconds)
        try:
            self._client = redis.Redis.from_url(
                url,
                socket_timeout=SOCKET_TIMEOUT_S,
                socket_connect_timeout=CONNECT_TIMEOUT_S,
                health_check_interval=HEALTH_CHECK_INTERVAL_S,
                # Retry only a dropped connection (at once, on a new one), never a timeout: a hung
                # Redis then costs one socket timeout, not one per attempt.
                retry=Retry(NoBackoff(), RETRIES, supported_errors=(redis.exceptions.ConnectionError,)),
            )
        except ValueError as e:  # a malformed URL: say which (without its password)
            raise ValueError(f"invalid Redis URL {self.url!r}: {e}") from e
        self._put_prediction = self._client.register_script(PUT_PREDICTION)
        self._counts_lock = threading.Lock()
        self._hits = 0
        self._misses = 0
        self._closed = False

    def _call(self, action: str, work: Callable[[redis.Redis], T]) -> T:
        if self._closed:  # redis-py would silently reconnect: a closed store stays closed
            raise StoreUnavailable(f"the online store at {self.url} is closed")
        try:
            return work(self._client)
        except redis.RedisError as e:
            raise StoreUnavailable(f"Redis at {self.url} failed to {action}: {e}") from e

    def get_rows(self, version: str, user_id: int) -> bytes | None:
        return self._call(f"read the rows of user {user_id}", lambda r: _as_bytes(r.get(rows_key(version, user_id))))

    def get_rows_many(self, version: str, user_ids: Sequence[int]) -> list[bytes | None]:
        """One ``MGET`` for all the users."""
        if not user_ids:
            return []
        keys = [rows_key(version, u) for u in user_ids]
        values = self._call(f"read the rows of {len(keys)} users", lambda r: cast(list[Any], r.mget(keys)))
        return [_as_bytes(v) for v in values]

    def put_rows(self, version: str, user_id: int, payload: bytes) -> None:
        def work(r: redis.Redis) -> None:
            with r.pipeline(transaction=True) as pipe:
                pipe.set(rows_key(version, user_id), bytes(payload), px=self._rows_ttl_ms)
                pipe.delete(predictions_key(version, user_id))
                pipe.execute()

        self._call(f"store the rows of user {user_id}", work)

    def get_prediction(self, version: str, user_id: int, key: str) -> bytes | None:
        value = self._call(
            f"read a cached prediction of user {user_id}",
            lambda r: _as_bytes(r.hget(predictions_key(version, user_id), key)),
        )
        with self._counts_lock:
            if value is None:
                self._misses += 1
            else:
                self._hits += 1
        return value

    def put_prediction(self, version: str, user_id: int, key: str, payload: bytes) -> None:
        def work(r: redis.Redis) -> None:
            name = predictions_key(version, user_id)
            if self._cache_ttl_ms is None:
                r.hset(name, mapping={key: bytes(payload)})
            else:
                self._put_prediction(keys=[name], args=[key, bytes(payload), self._cache_ttl_ms], client=r)

        self._call(f"cache a prediction of user {user_id}", work)

    def hits_and_misses(self) -> tuple[int, int]:
        with self._counts_lock:
            return self._hits, self._misses

    def ping(self) -> bool:
        if self._closed:
            return False
        try:
            return bool(self._client.ping())
        except Exception:
            return False

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(redis.RedisError):
            self._client.close()

    def __repr__(self) -> str:
        return f"RedisOnlineStore({self.url!r})"
