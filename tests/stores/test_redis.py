"""The online store in Redis, against a real redis-server (tests/services.py): the contract, plus
the key layout and TTLs, failing fast when Redis dies and recovering by itself when it is back.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest
import redis

from basketcast.serving.stores import open_online_store
from basketcast.serving.stores.base import OnlineStore, StoreUnavailable
from basketcast.serving.stores.redis_store import RedisOnlineStore, predictions_key, rows_key
from tests.services import RedisServer, free_port
from tests.stores import MakeStore, OnlineStoreContract

pytestmark = pytest.mark.integration


class TestRedisOnlineStore(OnlineStoreContract):
    @pytest.fixture
    def make_store(self, redis_url: str, tmp_path: Path) -> Iterator[MakeStore]:
        opened: list[OnlineStore] = []

        def make(ttl_seconds: float = 60.0, cache_ttl_seconds: float = 60.0) -> OnlineStore:
            store = open_online_store(
                redis_url, state_dir=tmp_path, ttl_seconds=ttl_seconds, cache_ttl_seconds=cache_ttl_seconds
            )
            opened.append(store)
            return store

        yield make
        for store in opened:
            store.close()


def pttl(raw: redis.Redis, key: str) -> int:
    """Milliseconds ``key`` has left (-1: no expiry, -2: no such key)."""
    return int(cast(int, raw.pttl(key)))


def test_key_layout_and_ttls(redis_url: str) -> None:
    store = RedisOnlineStore(redis_url, ttl_seconds=30, cache_ttl_seconds=5)
    raw = redis.Redis.from_url(redis_url)
    store.put_rows("v1", 42, b"rows")
    store.put_prediction("v1", 42, "k", b"p")
    assert rows_key("v1", 42) == "basketcast:v1:rows:42"
    assert predictions_key("v1", 42) == "basketcast:v1:pred:42"
    assert raw.get("basketcast:v1:rows:42") == b"rows"
    assert raw.hgetall("basketcast:v1:pred:42") == {b"k": b"p"}
    assert 25_000 < pttl(raw, "basketcast:v1:rows:42") <= 30_000
    first_ttl = pttl(raw, "basketcast:v1:pred:42")
    assert 0 < first_ttl <= 5_000
    time.sleep(0.2)
    store.put_prediction("v1", 42, "k2", b"p2")  # the hash's TTL is not extended by later answers
    assert pttl(raw, "basketcast:v1:pred:42") <= first_ttl - 100
    store.put_rows("v1", 42, b"rows2")
    assert raw.exists("basketcast:v1:pred:42") == 0
    store.close()
    raw.close()


def test_infinite_ttl_sets_no_expiry(redis_url: str) -> None:
    store = RedisOnlineStore(redis_url, ttl_seconds=math.inf, cache_ttl_seconds=math.inf)
    raw = redis.Redis.from_url(redis_url)
    store.put_rows("v1", 1, b"rows")
    store.put_prediction("v1", 1, "k", b"p")
    assert pttl(raw, "basketcast:v1:rows:1") == -1 and pttl(raw, "basketcast:v1:pred:1") == -1
    raw.close()


def test_url_hides_the_password_and_a_bad_url_is_clear(redis_service: RedisServer) -> None:
    store = RedisOnlineStore(f"redis://:hunter2@127.0.0.1:{redis_service.port}/0", 60, 60)
    assert "hunter2" not in store.url and "hunter2" not in repr(store)
    with pytest.raises(ValueError, match="invalid Redis URL") as info:
        RedisOnlineStore("redis://:hunter2@127.0.0.1:notaport/0", 60, 60)
    assert "hunter2" not in str(info.value)


def timed(call: Callable[[], object]) -> float:
    """Seconds ``call`` took to raise StoreUnavailable."""
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"Redis at redis://127\.0\.0\.1"):
        call()
    return time.monotonic() - started


def test_dead_redis_fails_fast_then_the_same_store_recovers(fresh_redis: RedisServer) -> None:
    store = RedisOnlineStore(fresh_redis.url, ttl_seconds=60, cache_ttl_seconds=60)
    store.put_rows("v1", 1, b"rows")
    store.put_prediction("v1", 1, "k", b"p")
    assert store.get_prediction("v1", 1, "k") == b"p"
    fresh_redis.kill()  # kill -9
    calls: list[Callable[[], object]] = [
        lambda: store.get_rows("v1", 1),
        lambda: store.get_rows_many("v1", [1, 2]),
        lambda: store.put_rows("v1", 1, b"x"),
        lambda: store.get_prediction("v1", 1, "k"),
        lambda: store.put_prediction("v1", 1, "k", b"x"),
    ]
    for call in calls:
        assert timed(call) < 2.0
    started = time.monotonic()
    assert store.ping() is False
    assert time.monotonic() - started < 2.0
    fresh_redis.start()  # same port, empty: it kept nothing
    assert store.ping() is True
    assert store.get_rows("v1", 1) is None
    assert store.get_prediction("v1", 1, "k") is None
    store.put_rows("v1", 1, b"again")
    assert store.get_rows_many("v1", [1]) == [b"again"]
    store.put_prediction("v1", 1, "k", b"p2")  # its script is loaded again into the new Redis
    assert store.get_prediction("v1", 1, "k") == b"p2"
    assert store.hits_and_misses() == (2, 1)


def test_hung_redis_costs_one_socket_timeout(fresh_redis: RedisServer) -> None:
    """A Redis that accepts connections but never answers: each call gives up after about the
    1 s socket timeout (timeouts are not retried), and the store works again once it answers."""
    store = RedisOnlineStore(fresh_redis.url, ttl_seconds=60, cache_ttl_seconds=60)
    store.put_rows("v1", 1, b"rows")
    fresh_redis.pause()
    try:
        assert timed(lambda: store.get_rows("v1", 1)) < 1.6
        assert timed(lambda: store.put_prediction("v1", 1, "k", b"p")) < 1.6
        started = time.monotonic()
        assert store.ping() is False
        assert time.monotonic() - started < 1.6
    finally:
        fresh_redis.resume()
    assert store.get_rows("v1", 1) == b"rows"


def test_redis_killed_mid_load_then_restarted(fresh_redis: RedisServer) -> None:
    """Writes and reads in a loop while Redis dies and comes back: every failure is StoreUnavailable,
    none takes long, and the loop's store works again after the restart without being re-opened."""
    store = RedisOnlineStore(fresh_redis.url, ttl_seconds=60, cache_ttl_seconds=60)
    outcomes: list[str] = []
    slowest = 0.0
    for i in range(300):
        if i == 100:
            fresh_redis.kill()
        if i == 150:
            fresh_redis.start()
        started = time.monotonic()
        try:
            store.put_rows("v1", i % 20, str(i).encode())
            assert store.get_rows("v1", i % 20) == str(i).encode()
            outcomes.append("ok")
        except StoreUnavailable:
            outcomes.append("down")
        slowest = max(slowest, time.monotonic() - started)
    assert outcomes[:100] == ["ok"] * 100
    assert outcomes[100:150] == ["down"] * 50
    assert outcomes[150:] == ["ok"] * 150
    assert slowest < 2.0


@pytest.mark.usefixtures("redis_program")
def test_redis_down_at_start(tmp_path: Path) -> None:
    """Opening does not need Redis up; calls fail fast until it is."""
    server = RedisServer(tmp_path, port=free_port())
    store = open_online_store(server.url, state_dir=tmp_path, ttl_seconds=60, cache_ttl_seconds=60)
    assert isinstance(store, RedisOnlineStore) and store.kind == "redis"
    assert not store.ping()
    assert timed(lambda: store.get_rows("v1", 1)) < 2.0
    server.start()
    try:
        assert store.ping()
        store.put_rows("v1", 1, b"rows")
        assert store.get_rows("v1", 1) == b"rows"
    finally:
        server.stop()


def test_closed_store_raises_unavailable(redis_url: str) -> None:
    store = RedisOnlineStore(redis_url, 60, 60)
    store.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        store.get_rows("v1", 1)
