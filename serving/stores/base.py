"""The online stores behind one small interface: the order log and the online rows.

Two roles, each a :class:`typing.Protocol`, chosen by settings (``basketcast.serving.stores.open_order_log`` and
``open_online_store``):

- :class:`OrderLog` — the system of record of orders posted after the published snapshot
  (``POST /v1/orders``, ``basketcast orders load``). Appends are durable once they return
  (committed and synced) and idempotent by the client's ``order_id``: the same order again is a
  :attr:`Append.DUPLICATE`, another order under a used id a :attr:`Append.CONFLICT`.
  Implementations: SQLite (embedded default, WAL) and PostgreSQL.
- :class:`OnlineStore` — each user's fresh feature rows per model version (opaque bytes packed
  by ``basketcast.serving.online``) and a prediction cache, both keyed by model version so that a hot swap
  never mixes versions. Implementations: SQLite (embedded default) and Redis (TTLs, pipelined
  batch reads, hit/miss counts).

Every method may raise :class:`StoreUnavailable` when the server behind it cannot be reached;
callers degrade (the snapshot answers) instead of failing the request.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol, runtime_checkable

from basketcast.pipeline.data.posted import OrderRecord
from basketcast.pipeline.errors import BasketcastError

__all__ = ["Append", "OnlineStore", "OrderLog", "OrderRecord", "StoreUnavailable"]


class StoreUnavailable(BasketcastError, RuntimeError):  # noqa: N818 — reads as a state, like ConnectionRefused
    """The store's server cannot be reached (or answered with a server-side failure)."""


class Append(enum.Enum):
    """What ``OrderLog.append`` did with an order."""

    CREATED = "created"  # recorded now
    DUPLICATE = "duplicate"  # the same order (same id, same content) was already recorded
    CONFLICT = "conflict"  # the id is taken by an order with other content; nothing recorded


@runtime_checkable
class OrderLog(Protocol):
    """The durable, idempotent log of posted orders."""

    url: str  # where it lives, without a password (for /ready and logs)

    def append(self, order: OrderRecord) -> Append:
        """Record ``order`` durably before returning (see :class:`Append`)."""
        ...

    def append_many(self, orders: Iterable[OrderRecord]) -> tuple[int, int]:
        """Record many orders in few transactions (backfills); (created, duplicates).

        Raises ValueError naming the first conflicting order id (nothing of that batch is kept).
        """
        ...

    def orders_of(self, user_id: int) -> list[OrderRecord]:
        """Every recorded order of ``user_id``, in ``seq`` order (with ``seq`` set)."""
        ...

    def users_since(self, seq: int) -> list[int]:
        """Users with an order of ``seq`` greater than ``seq`` (refills after a restart).

        At least these users: on PostgreSQL an order still committing may hold a lower ``seq``
        than one already visible, so a caller polling with the last ``seq`` it saw should re-read
        a margin below it.
        """
        ...

    def scan(self, batch: int = 10_000) -> Iterator[list[OrderRecord]]:
        """Every recorded order in ``seq`` order, ``batch`` at a time (retraining reads this)."""
        ...

    def count(self) -> int:
        """Number of recorded orders."""
        ...

    def ping(self) -> bool:
        """Whether the log answers now (never raises)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class OnlineStore(Protocol):
    """Fresh per-user rows and cached predictions, keyed by model version."""

    url: str
    kind: str  # "embedded" or "redis"

    def get_rows(self, version: str, user_id: int) -> bytes | None: ...

    def get_rows_many(self, version: str, user_ids: Sequence[int]) -> list[bytes | None]:
        """One round trip for many users (the batch route)."""
        ...

    def put_rows(self, version: str, user_id: int, payload: bytes) -> None:
        """Store the user's fresh rows (replacing older ones) and drop their cached predictions."""
        ...

    def get_prediction(self, version: str, user_id: int, key: str) -> bytes | None:
        """A cached answer for (user, request key); counts a hit or a miss."""
        ...

    def put_prediction(self, version: str, user_id: int, key: str, payload: bytes) -> None: ...

    def hits_and_misses(self) -> tuple[int, int]:
        """Prediction-cache lookups of this process so far: (hits, misses)."""
        ...

    def ping(self) -> bool:
        """Whether the store answers now (never raises)."""
        ...

    def close(self) -> None: ...
