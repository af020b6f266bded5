"""Tests of the online stores, and the contracts every implementation must pass.

The contracts are classes of ``test_*`` methods written against the Protocols of
``basketcast.serving.stores.base``; each backend's module subclasses them and supplies the store as a
fixture (``log`` / ``log_url`` for :class:`OrderLogContract`, ``make_store`` for
:class:`OnlineStoreContract`). They live here, not in a ``test_`` module, so that pytest
collects them only through the subclasses. Helpers that start child processes live here too.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from basketcast.serving.stores.base import Append, OnlineStore, OrderLog, OrderRecord

REPO = Path(__file__).resolve().parents[2]
MakeStore = Callable[..., OnlineStore]


def order(
    order_id: str,
    user_id: int = 1,
    products: tuple[int, ...] = (11, 12, 13),
    *,
    dow: int = 2,
    hour: int = 9,
    days: float | None = 7.0,
    placed_at: dt.datetime | None = None,
) -> OrderRecord:
    """An order with plausible defaults."""
    return OrderRecord(order_id, user_id, products, dow, hour, days, placed_at)


def child_env() -> dict[str, str]:
    """The environment of a child Python that imports the repo's packages from the repo."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def start_python(code: str, *args: str) -> subprocess.Popen[str]:
    """``python -c code args…`` from the repo, stdin/stdout/stderr piped (text)."""
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env=child_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_together(children: list[subprocess.Popen[str]], timeout: float = 60) -> list[tuple[str, str]]:
    """Release children that print "ready" and wait for a line on stdin all at once (so they race),
    then their (stdout, stderr); any still running on failure is killed."""
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline() == "ready\n", child.stderr.read() if child.stderr else ""
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        return [child.communicate(timeout=timeout) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()


def run_in_threads(worker: Callable[[int], None], n: int) -> list[BaseException]:
    """``worker(0..n-1)`` in ``n`` threads at once; the exceptions they raised (none: [])."""
    errors: list[BaseException] = []

    def guarded(k: int) -> None:
        try:
            worker(k)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


APPENDER = """
import sys
from basketcast.serving.stores import open_order_log
from basketcast.serving.stores.base import OrderRecord

log = open_order_log(sys.argv[1])
print("ready", flush=True)
i = 0
while True:
    order_id = f"durable-{i}"
    log.append(OrderRecord(order_id, i % 13, (i, i + 1, 7), i % 7, i % 24, None, None))
    print(order_id, flush=True)  # only after append returned: acknowledged
    i += 1
"""


def append_until_killed(url: str, acknowledged: int = 150, timeout: float = 30.0) -> list[str]:
    """A child appends orders to the log at ``url`` forever, printing each id once its append
    returned; kill -9 it once ``acknowledged`` ids are printed. Every complete line it printed
    (those read after the kill too) is an acknowledged id: all of them must be in the log."""
    child = start_python(APPENDER, url)
    assert child.stdout is not None and child.stderr is not None
    watchdog = threading.Timer(timeout, child.kill)  # a hung child ends the test, not the suite
    watchdog.start()
    acked: list[str] = []
    try:
        if child.stdout.readline() != "ready\n":
            child.kill()
            pytest.fail(f"the appender did not start:\n{child.stderr.read()}")
        while len(acked) < acknowledged:
            line = child.stdout.readline()
            if not line.endswith("\n"):
                child.kill()
                pytest.fail(f"the appender stopped after {len(acked)} orders:\n{child.stderr.read()}")
            acked.append(line.strip())
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        acked += [line.strip() for line in child.stdout.read().splitlines(keepends=True) if line.endswith("\n")]
    finally:
        watchdog.cancel()
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    return acked


class OrderLogContract:
    """What every OrderLog promises (fixtures ``log`` and ``log_url`` come from the subclass)."""

    def test_is_an_order_log(self, log: OrderLog) -> None:
        assert isinstance(log, OrderLog)
        assert log.ping()
        assert log.count() == 0
        assert log.orders_of(1) == []
        assert list(log.scan()) == []
        assert log.users_since(0) == []

    def test_same_order_twice_is_a_duplicate(self, log: OrderLog) -> None:
        first = order("o-1", products=(3, 1, 2))
        assert log.append(first) is Append.CREATED
        assert log.append(order("o-1", products=(3, 1, 2))) is Append.DUPLICATE
        assert log.count() == 1
        assert log.orders_of(1) == [first]

    def test_same_id_other_content_is_a_conflict_and_changes_nothing(self, log: OrderLog) -> None:
        first = order("o-1", products=(3, 1, 2))
        assert log.append(first) is Append.CREATED
        for other in (
            order("o-1", products=(1, 2, 3)),  # same products, another cart order
            order("o-1", user_id=2, products=(3, 1, 2)),
            order("o-1", products=(3, 1, 2), days=None),
            order("o-1", products=(3, 1, 2), hour=10),
        ):
            assert log.append(other) is Append.CONFLICT
        assert log.count() == 1
        assert log.orders_of(1) == [first]
        assert log.orders_of(2) == []

    def test_orders_of_keeps_seq_order_and_content(self, log: OrderLog) -> None:
        placed = dt.datetime(2024, 3, 5, 17, 45, 12, 123456, tzinfo=dt.UTC)
        mine = [
            order("a", 7, (5, 3, 9, 1), dow=0, hour=0, days=None, placed_at=placed),
            order("b", 7, (42,), dow=6, hour=23, days=0.5),
            order("c", 7, (), dow=3, hour=12, days=30.0),
        ]
        log.append(mine[0])
        log.append(order("x", 8))
        log.append(mine[1])
        log.append(order("y", 9))
        log.append(mine[2])
        got = log.orders_of(7)
        assert got == mine  # seq is left out of equality: everything else round-trips
        assert [o.products for o in got] == [(5, 3, 9, 1), (42,), ()]
        assert got[0].days_since_prior is None and got[1].days_since_prior == 0.5
        assert got[0].placed_at == placed and got[0].placed_at is not None
        assert got[0].placed_at.utcoffset() == dt.timedelta(0)
        assert got[0].content_key() == mine[0].content_key()  # a retry after a read is still a duplicate
        assert all(isinstance(o.seq, int) for o in got)
        seqs = [o.seq or 0 for o in got]
        assert seqs == sorted(seqs) and len(set(seqs)) == 3

    def test_placed_at_with_another_offset_is_the_same_instant(self, log: OrderLog) -> None:
        paris = dt.timezone(dt.timedelta(hours=2))
        placed = dt.datetime(2024, 6, 1, 8, 30, tzinfo=paris)
        log.append(order("p", placed_at=placed))
        (got,) = log.orders_of(1)
        assert got.placed_at == placed
        assert log.append(order("p", placed_at=placed)) is Append.DUPLICATE

    def test_append_many_counts_duplicates(self, log: OrderLog) -> None:
        log.append(order("old"))
        batch = [order("a"), order("b", 2), order("a"), order("old"), order("c", 3)]
        assert log.append_many(batch) == (3, 2)
        assert log.count() == 4
        assert log.append_many(iter(batch)) == (0, 5)  # any iterable
        assert log.append_many([]) == (0, 0)
        assert [o.order_id for batch_ in log.scan() for o in batch_] == ["old", "a", "b", "c"]

    def test_append_many_with_a_conflict_keeps_nothing(self, log: OrderLog) -> None:
        log.append(order("taken", products=(1,)))
        batch = [order("new-1"), order("new-2", 2), order("taken", products=(2,)), order("new-3", 3)]
        with pytest.raises(ValueError, match="'taken'"):
            log.append_many(batch)
        assert log.count() == 1
        assert log.orders_of(2) == [] and log.orders_of(3) == []
        with pytest.raises(ValueError, match="'twice'"):  # a conflict inside the batch itself
            log.append_many([order("twice", products=(1,)), order("twice", products=(2,))])
        assert log.count() == 1
        assert log.append_many(batch[:2]) == (2, 0)  # the log still works

    def test_scan_reads_everything_in_seq_order_in_batches(self, log: OrderLog) -> None:
        log.append_many(order(f"s-{i:02d}", i % 4) for i in range(25))
        batches = list(log.scan(batch=10))
        assert [len(b) for b in batches] == [10, 10, 5]
        flat = [o for b in batches for o in b]
        assert [o.order_id for o in flat] == [f"s-{i:02d}" for i in range(25)]
        seqs = [o.seq or 0 for o in flat]
        assert seqs == sorted(seqs) and len(set(seqs)) == 25
        assert [len(b) for b in log.scan(batch=5)] == [5, 5, 5, 5, 5]
        assert [len(b) for b in log.scan(batch=100)] == [25]
        with pytest.raises(ValueError):
            next(iter(log.scan(batch=0)))

    def test_users_since(self, log: OrderLog) -> None:
        for i, user in enumerate([5, 3, 5, 9, 3]):
            log.append(order(f"u-{i}", user))
        seqs = [o.seq or 0 for b in log.scan() for o in b]
        assert log.users_since(0) == [3, 5, 9]
        assert sorted(log.users_since(seqs[2])) == [3, 9]
        assert log.users_since(seqs[-1]) == []

    def test_threads_share_one_log(self, log: OrderLog) -> None:
        def worker(n: int) -> None:
            for i in range(25):
                assert log.append(order(f"t{n}-{i}", n)) is Append.CREATED
                log.orders_of(n)
            log.append(order(f"t{n}-0", n))  # duplicate under contention

        assert run_in_threads(worker, 8) == []
        assert log.count() == 200
        assert all(len(log.orders_of(n)) == 25 for n in range(8))

    def test_acknowledged_appends_survive_kill_9(self, log: OrderLog, log_url: str) -> None:
        acked = append_until_killed(log_url)
        assert len(acked) >= 150
        recorded = {o.order_id for b in log.scan() for o in b}
        missing = [i for i in acked if i not in recorded]
        assert missing == []

    def test_closed_log_does_not_answer(self, log: OrderLog) -> None:
        log.close()
        assert not log.ping()


class OnlineStoreContract:
    """What every OnlineStore promises (fixture ``make_store(ttl_seconds=…, cache_ttl_seconds=…)``)."""

    def test_is_an_online_store(self, make_store: MakeStore) -> None:
        store = make_store()
        assert isinstance(store, OnlineStore)
        assert store.ping()
        assert store.kind in ("embedded", "redis")
        assert store.hits_and_misses() == (0, 0)

    def test_rows_are_kept_per_version(self, make_store: MakeStore) -> None:
        store = make_store()
        assert store.get_rows("A", 1) is None
        store.put_rows("A", 1, b"\x00rows-a\xff")
        assert store.get_rows("A", 1) == b"\x00rows-a\xff"
        assert store.get_rows("B", 1) is None  # version A's rows are invisible to version B
        assert store.get_rows("A", 2) is None
        store.put_rows("B", 1, b"rows-b")
        store.put_rows("A", 1, b"rows-a2")  # replaces
        assert store.get_rows("A", 1) == b"rows-a2"
        assert store.get_rows("B", 1) == b"rows-b"

    def test_get_rows_many_answers_in_the_order_asked(self, make_store: MakeStore) -> None:
        store = make_store()
        store.put_rows("A", 1, b"one")
        store.put_rows("A", 3, b"three")
        store.put_rows("B", 2, b"two-of-b")
        assert store.get_rows_many("A", [3, 2, 1, 3, 4]) == [b"three", None, b"one", b"three", None]
        assert store.get_rows_many("A", []) == []
        many = list(range(1200))
        for u in many[::100]:
            store.put_rows("M", u, str(u).encode())
        got = store.get_rows_many("M", many)
        assert got == [str(u).encode() if u % 100 == 0 else None for u in many]

    def test_rows_expire(self, make_store: MakeStore) -> None:
        store = make_store(ttl_seconds=0.4)
        store.put_rows("A", 1, b"soon gone")
        assert store.get_rows("A", 1) == b"soon gone"
        time.sleep(0.6)
        assert store.get_rows("A", 1) is None
        assert store.get_rows_many("A", [1]) == [None]

    def test_predictions_are_cached_and_counted(self, make_store: MakeStore) -> None:
        store = make_store()
        assert store.get_prediction("A", 1, "k10") is None
        store.put_prediction("A", 1, "k10", b"answer")
        assert store.get_prediction("A", 1, "k10") == b"answer"
        assert store.get_prediction("A", 1, "k20") is None
        assert store.get_prediction("B", 1, "k10") is None
        assert store.get_prediction("A", 2, "k10") is None
        store.put_prediction("A", 1, "k10", b"answer2")  # replaces
        assert store.get_prediction("A", 1, "k10") == b"answer2"
        assert store.hits_and_misses() == (2, 4)

    def test_put_rows_drops_only_that_users_predictions_of_that_version(self, make_store: MakeStore) -> None:
        store = make_store()
        for version, user, key in [("A", 1, "x"), ("A", 1, "y"), ("A", 2, "x"), ("B", 1, "x")]:
            store.put_prediction(version, user, key, f"{version}{user}{key}".encode())
        store.put_rows("A", 1, b"fresh")
        assert store.get_prediction("A", 1, "x") is None
        assert store.get_prediction("A", 1, "y") is None
        assert store.get_prediction("A", 2, "x") == b"A2x"
        assert store.get_prediction("B", 1, "x") == b"B1x"
        assert store.get_rows("A", 1) == b"fresh"

    def test_predictions_expire(self, make_store: MakeStore) -> None:
        store = make_store(cache_ttl_seconds=0.4)
        store.put_prediction("A", 1, "k", b"soon gone")
        assert store.get_prediction("A", 1, "k") == b"soon gone"
        time.sleep(0.6)
        assert store.get_prediction("A", 1, "k") is None

    def test_ttl_must_be_positive(self, make_store: MakeStore) -> None:
        with pytest.raises(ValueError, match="ttl_seconds"):
            make_store(ttl_seconds=0)
        with pytest.raises(ValueError, match="cache_ttl_seconds"):
            make_store(cache_ttl_seconds=-1)

    def test_threads_share_one_store(self, make_store: MakeStore) -> None:
        store = make_store()

        def worker(n: int) -> None:
            for i in range(40):
                store.put_rows("A", n, f"{n}-{i}".encode())
                store.put_prediction("A", n, "k", b"p")
                store.get_prediction("A", n, "k")
                assert store.get_rows("A", n) == f"{n}-{i}".encode()

        assert run_in_threads(worker, 8) == []
        hits, misses = store.hits_and_misses()
        assert (hits, misses) == (320, 0)

    def test_closed_store_does_not_answer(self, make_store: MakeStore) -> None:
        store = make_store()
        store.close()
        assert not store.ping()
