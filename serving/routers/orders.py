"""Orders in (``POST /v1/orders``): the order is recorded durably, then the shopper's recommendations
know it.

The order is appended to the order log (SQLite by default, PostgreSQL in production; see
``basketcast.serving.realtime``) and acknowledged only once recorded: 201 the first time, 200 with
``status: "duplicate"`` for a retry of the same ``order_id`` and content, 409 for the same id with
other content, 503 when the log cannot be reached (nothing recorded: retry). Then the shopper's
candidates and features are recomputed from their whole history with the offline feature code
(``basketcast.serving.online``), so their next recommendation counts this order: its products become
repeats, their purchase cycles restart, a new shopper leaves the popular list.

A plain ``def`` route: it waits on the log's commit and recomputes features (tens of
milliseconds of CPU), so it runs in the thread pool, never on the event loop.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from basketcast.serving.errors import ApiError
from basketcast.serving.metrics import Metrics
from basketcast.serving.model import Context, ServingModel
from basketcast.serving.realtime import Realtime, open_realtime
from basketcast.serving.schemas import BODY_ERROR_RESPONSES, ErrorResponse, OrderRequest, OrderResponse
from basketcast.serving.settings import resolve_settings
from basketcast.serving.state import get_model
from basketcast.serving.stores.base import Append, OrderRecord, StoreUnavailable

router = APIRouter(prefix="/v1", tags=["orders"])

SECONDS_PER_DAY = 86_400.0


def get_realtime(request: Request) -> Realtime:
    """The worker's stores (opened at startup, re-tried while they could not be); 503 with the reason."""
    realtime = open_realtime(request.app, resolve_settings(request.app))
    if realtime is None:
        reason = getattr(request.app.state, "realtime_error", None) or "the server is starting"
        raise ApiError(503, "order_log_unavailable", f"orders cannot be recorded: {reason}")
    return realtime


def same_order(recorded: OrderRecord, body: OrderRequest) -> bool:
    """Whether a recorded order is what ``body`` asks to record (the fields the client gave)."""
    if recorded.user_id != body.user_id or recorded.products != tuple(body.products):
        return False
    if body.placed_at is not None and recorded.placed_at != body.placed_at.astimezone(dt.UTC):
        return False
    if body.order_dow is not None and recorded.dow != body.order_dow:
        return False
    if body.order_hour_of_day is not None and recorded.hour != body.order_hour_of_day:
        return False
    return body.days_since_prior_order is None or recorded.days_since_prior == body.days_since_prior_order


def to_record(body: OrderRequest, earlier: list[OrderRecord], now: dt.datetime) -> OrderRecord:
    """The order as the log keeps it: when it happened and the days since the previous one resolved.

    ``order_dow``/``order_hour_of_day`` win over ``placed_at``, and either comes from the time the
    order was received when not given (as ``basketcast.serving.model.Context.at``).
    """
    placed = body.placed_at.astimezone(dt.UTC) if body.placed_at is not None else None
    ctx = Context.at(placed or now, dow=body.order_dow, hour=body.order_hour_of_day)
    days = body.days_since_prior_order
    previous = earlier[-1] if earlier else None
    if days is None and placed is not None and previous is not None and previous.placed_at is not None:
        days = max(0.0, (placed - previous.placed_at).total_seconds() / SECONDS_PER_DAY)
    return OrderRecord(
        order_id=body.order_id,
        user_id=body.user_id,
        products=tuple(body.products),
        dow=int(ctx.dow),
        hour=int(ctx.hour),
        days_since_prior=days,
        placed_at=placed,
    )


@router.post(
    "/orders",
    status_code=201,
    response_model=OrderResponse,
    summary="Record an order; the shopper's next recommendations include it",
    responses={
        200: {"model": OrderResponse, "description": "Already recorded (a retry with the same order_id)."},
        409: {"model": ErrorResponse, "description": "The order_id is taken by an order with other content."},
        422: {"model": ErrorResponse, "description": "Invalid body (`details` lists each problem)."},
        503: {"model": ErrorResponse, "description": "No model loaded, or the order log cannot record (retry)."},
        **BODY_ERROR_RESPONSES,
    },
)
def post_order(
    body: OrderRequest,
    request: Request,
    response: Response,
    model: Annotated[ServingModel, Depends(get_model)],
    realtime: Annotated[Realtime, Depends(get_realtime)],
) -> OrderResponse:
    """Record the order (idempotent by ``order_id``), then refresh the shopper's online rows."""
    metrics: Metrics = request.app.state.metrics
    start = time.perf_counter()
    try:
        earlier = realtime.order_log.orders_of(body.user_id)
        for recorded in earlier:
            if recorded.order_id == body.order_id:
                if not same_order(recorded, body):
                    metrics.orders.labels(Append.CONFLICT.value).inc()
                    raise _conflict(body.order_id)
                result = realtime.record(model, recorded)  # recorded already: refreshes the rows only
                break
        else:
            result = realtime.record(model, to_record(body, earlier, dt.datetime.now(dt.UTC)), earlier)
    except StoreUnavailable as exc:
        metrics.orders.labels("unavailable").inc()
        raise ApiError(
            503, "order_log_unavailable", f"the order was not recorded ({exc}); retry", headers={"Retry-After": "1"}
        ) from None
    metrics.orders.labels(result.status.value).inc()
    if result.status is Append.CONFLICT:
        raise _conflict(body.order_id)
    metrics.write_path.observe(time.perf_counter() - start)
    duplicate = result.status is Append.DUPLICATE
    if duplicate:
        response.status_code = 200
    unknown = sorted({p for p in body.products if not model.knows_product(p)})
    return OrderResponse(
        order_id=body.order_id,
        user_id=body.user_id,
        status="duplicate" if duplicate else "created",
        model_version=model.version,
        orders=result.orders,
        fresh=result.fresh,
        unknown_products=unknown,
        warnings=list(result.warnings),
    )


def _conflict(order_id: str) -> ApiError:
    return ApiError(
        409,
        "order_id_conflict",
        f"order {order_id!r} is already recorded with other content; a new order needs a new order_id",
    )
