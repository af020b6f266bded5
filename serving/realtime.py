"""Orders in, fresh recommendations out: the order log, the online store and the served model.

:class:`Realtime` is what the routes call (one per worker process, opened in the app's lifespan
from the settings ``order_log`` and ``online_store``):

- :meth:`Realtime.record` — ``POST /v1/orders``: the order is appended to the order log (durable
  and idempotent by ``order_id``: nothing is acknowledged that is not recorded), then the
  user's rows are recomputed from their whole history (``basketcast.serving.online``) and written to the
  online store under the served model version, which also drops their cached predictions.
- :meth:`Realtime.rows_for` — every read: the user's fresh rows from the online store. A miss
  (a new model version after a hot swap, an emptied Redis, an expired entry) looks the user up
  in the order log and recomputes their rows when they have posted orders — so the online rows
  of a new version are rebuilt lazily and a restarted Redis refills itself; a user without posted
  orders gets an empty marker, so the next read costs one store lookup and no log query.

When the online store (or the order log, on a miss) cannot be reached, reads degrade to the
snapshot and say so (``freshness: "degraded"`` in the answer, a warning in ``/ready``); they
never fail. A write whose order is recorded but whose rows could not be stored is still
acknowledged (the order is safe in the log; the rows are recomputed on a later read).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from basketcast.serving.model import ServingModel
from basketcast.serving.online import UserRows
from basketcast.serving.settings import Settings
from basketcast.serving.stores import open_online_store, open_order_log
from basketcast.serving.stores.base import Append, OnlineStore, OrderLog, OrderRecord, StoreUnavailable

log = logging.getLogger(__name__)

Freshness = Literal["fresh", "snapshot", "degraded"]
NO_POSTED_ORDERS = b""  # the online store's marker: this user has no posted order (the snapshot is current)
REFRESH_ATTEMPTS = 3  # a concurrent order of the same user makes the refresh run again
BREAKER_SECONDS = 1.0


@dataclass(frozen=True)
class RecordResult:
    """What ``Realtime.record`` did: the log's verdict and whether fresh rows were stored."""

    status: Append
    orders: int  # orders in the user's history now (snapshot + posted); 0 when unknown
    fresh: bool  # the online store holds rows that include this order
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class UserState:
    """The rows a read uses for one user and where they come from."""

    rows: UserRows | None  # None: the snapshot's rows (or the popular list for an unknown user)
    freshness: Freshness


SNAPSHOT = UserState(None, "snapshot")  # the snapshot is current for the user (or no store is used)
DEGRADED = UserState(None, "degraded")  # the stores did not answer: the snapshot did, posted orders may be missing


class Realtime:
    """The order log and the online store of one worker process (thread-safe)."""

    def __init__(self, order_log: OrderLog, online_store: OnlineStore, *, prediction_cache: bool = True) -> None:
        self.order_log = order_log
        self.online_store = online_store
        self.prediction_cache = prediction_cache
        self._lock = threading.Lock()
        self._last_failure: tuple[float, str] | None = None
        # After a failure the online store is left alone for BREAKER_SECONDS: reads answer from
        # the snapshot at once instead of each waiting for a connection to time out.
        self._down_until = 0.0

    @classmethod
    def open(cls, settings: Settings) -> Realtime:
        """The stores the settings name ('embedded' → SQLite files in ``state_dir``)."""
        order_log = open_order_log(settings.order_log_url())
        online_store = open_online_store(
            settings.online_store,
            state_dir=settings.state_dir,
            ttl_seconds=settings.online_ttl_seconds,
            cache_ttl_seconds=settings.cache_ttl_seconds,
        )
        return cls(order_log, online_store, prediction_cache=settings.prediction_cache)

    def close(self) -> None:
        self.order_log.close()
        self.online_store.close()

    # --- writes -------------------------------------------------------------------------
    def record(
        self, model: ServingModel, order: OrderRecord, earlier: Sequence[OrderRecord] | None = None
    ) -> RecordResult:
        """Append ``order`` to the log, then refresh the user's rows for ``model``.

        ``earlier``: the user's recorded orders read just before (saves reading them again).
        Raises StoreUnavailable when the order log cannot record it (nothing acknowledged).
        A CONFLICT is returned as is (nothing recorded, nothing refreshed).
        """
        status = self.order_log.append(order)
        if status is Append.CONFLICT:
            return RecordResult(status, 0, False)
        warnings: list[str] = []
        posted = None if earlier is None or status is not Append.CREATED else [*earlier, order]
        try:
            rows = self.refresh(model, order.user_id, posted)
        except StoreUnavailable as exc:
            self._failed(str(exc))
            warnings.append(f"recorded, but the online store is unavailable ({exc}); answers use the snapshot")
            return RecordResult(status, 0, False, tuple(warnings))
        if model.online is None:
            warnings.append("recorded; the served model predates fresh online rows (re-export it to use them)")
        return RecordResult(status, rows.orders if rows is not None else 0, rows is not None, tuple(warnings))

    def refresh(
        self, model: ServingModel, user_id: int, posted: Sequence[OrderRecord] | None = None
    ) -> UserRows | None:
        """Recompute the user's rows from the snapshot's history + their posted orders (``posted``,
        else read from the log), store them, return them (None: no posted order).

        Re-run when the log then holds other orders of the user (another worker recorded one
        meanwhile), so the stored rows never fall behind an acknowledged order.
        """
        if model.online is None:
            return None
        rows: UserRows | None = None
        for _ in range(REFRESH_ATTEMPTS):
            if posted is None:
                posted = self.order_log.orders_of(user_id)
            # No posted order: the snapshot's rows are current (nothing to recompute).
            rows = model.online.rows(user_id, posted) if posted else None
            payload = NO_POSTED_ORDERS if rows is None else rows.pack()
            self.online_store.put_rows(model.version, user_id, payload)
            latest = self.order_log.orders_of(user_id)
            if [o.order_id for o in latest] == [o.order_id for o in posted]:
                break
            posted = latest
        return rows

    # --- reads --------------------------------------------------------------------------
    def rows_for(self, model: ServingModel, user_id: int) -> UserState:
        """The rows a read of ``user_id`` uses (see the module doc)."""
        state = self.lookup(model, user_id)
        return state if state is not None else self.rebuild(model, user_id)

    def lookup(self, model: ServingModel, user_id: int) -> UserState | None:
        """``rows_for`` from the online store alone (one fast lookup); None when the store does not
        know the user, so their rows must be rebuilt from the log (:meth:`rebuild`: a log query and
        maybe a recomputation, tens of milliseconds — async routes run it in a thread)."""
        if model.online is None:
            return SNAPSHOT
        if self.store_down():
            return DEGRADED
        try:
            return _state_of(self.online_store.get_rows(model.version, user_id))
        except StoreUnavailable as exc:
            return self._degraded(exc)

    def rebuild(self, model: ServingModel, user_id: int) -> UserState:
        """A user unknown to the store (a new model version after a hot swap, an emptied Redis, an
        expired entry): their rows from the log's orders, stored for the next reads."""
        try:
            rows = self.refresh(model, user_id)
        except StoreUnavailable as exc:
            return self._degraded(exc)
        return UserState(rows, "fresh") if rows is not None else SNAPSHOT

    def rows_for_many(self, model: ServingModel, user_ids: Sequence[int]) -> list[UserState]:
        """``rows_for`` of many users with one round trip to the store (misses rebuilt one by one)."""
        if model.online is None:
            return [SNAPSHOT] * len(user_ids)
        if self.store_down():
            return [DEGRADED] * len(user_ids)
        try:
            payloads = self.online_store.get_rows_many(model.version, list(user_ids))
        except StoreUnavailable as exc:
            return [self._degraded(exc)] * len(user_ids)
        states = [_state_of(payload) for payload in payloads]
        return [
            state if state is not None else self.rebuild(model, user_id)
            for user_id, state in zip(user_ids, states, strict=True)
        ]

    # --- the prediction cache -----------------------------------------------------------
    def cached(self, model: ServingModel, user_id: int, key: str) -> bytes | None:
        if not self.prediction_cache or self.store_down():
            return None
        try:
            return self.online_store.get_prediction(model.version, user_id, key)
        except StoreUnavailable as exc:
            self._failed(str(exc))
            return None

    def cache(self, model: ServingModel, user_id: int, key: str, payload: bytes) -> None:
        if not self.prediction_cache or self.store_down():
            return
        try:
            self.online_store.put_prediction(model.version, user_id, key, payload)
        except StoreUnavailable as exc:
            self._failed(str(exc))

    # --- health -------------------------------------------------------------------------
    def warnings(self, *, log_up: bool, store_up: bool) -> list[str]:
        """What /ready reports about stores that do not answer now (``ping`` results)."""
        out = []
        if not store_up:
            out.append(
                f"online store {self.online_store.url} unavailable: answers use the snapshot (freshness 'degraded')"
            )
        if not log_up:
            out.append(f"order log {self.order_log.url} unavailable: POST /v1/orders answers 503")
        return out

    def _degraded(self, exc: StoreUnavailable) -> UserState:
        self._failed(str(exc))
        return DEGRADED

    def store_down(self) -> bool:
        """Whether the online store failed less than BREAKER_SECONDS ago."""
        return time.monotonic() < self._down_until

    def _failed(self, message: str) -> None:
        with self._lock:
            now = time.monotonic()
            self._down_until = now + BREAKER_SECONDS
            # One log line per 10 s, not one per request, while a store is down.
            if self._last_failure is None or now - self._last_failure[0] > 10:
                log.warning("online store failure: %s", message)
                self._last_failure = (now, message)


def _state_of(payload: bytes | None) -> UserState | None:
    """What a stored payload says: the user's fresh rows, the no-posted-order marker, or None (not stored)."""
    if payload is None:
        return None
    if payload == NO_POSTED_ORDERS:
        return SNAPSHOT
    return UserState(UserRows.unpack(payload), "fresh")


def prediction_key(*parts: object) -> str:
    """A short, stable cache key of a request's parameters."""
    return hashlib.blake2b(repr(parts).encode(), digest_size=12).hexdigest()


REOPEN_SECONDS = 5.0  # while the stores could not be opened, try again at most this often
_OPEN_LOCK = threading.Lock()


def open_realtime(app: Any, settings: Settings) -> Realtime | None:
    """The app's stores: opened at startup, and re-tried (every REOPEN_SECONDS, by the request that
    finds them missing) when a server was down then, so a PostgreSQL or Redis that comes up after
    the API does not need the API restarted. ``app.state.realtime_error`` keeps the last failure."""
    state = app.state
    realtime: Realtime | None = getattr(state, "realtime", None)
    if realtime is not None:
        return realtime
    with _OPEN_LOCK:
        realtime = getattr(state, "realtime", None)
        if realtime is not None or time.monotonic() < getattr(state, "realtime_retry_at", 0.0):
            return realtime
        try:
            state.realtime = Realtime.open(settings)
            state.realtime_error = None
        except (StoreUnavailable, ValueError, OSError) as exc:
            if getattr(state, "realtime_error", None) != str(exc):
                log.error("order log / online store not opened: %s", exc)
            state.realtime, state.realtime_error = None, str(exc)
            state.realtime_retry_at = time.monotonic() + REOPEN_SECONDS
        return state.realtime  # type: ignore[no-any-return]
