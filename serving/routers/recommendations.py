"""The recommendation API (``/v1``): one user's top-k, many users' top-k, one user's basket.

The single-user routes are ``async def`` and return their JSON already serialised: scoring one
user costs well under a millisecond of CPU, less than FastAPI's thread-pool hand-off and
response re-validation would add (measured: 1.4-1.6 ms of server CPU per request as plain
``def`` routes, most of it framework overhead); with one worker process per core nothing is
gained by a thread. The batch route (up to 1,000 users, tens of milliseconds) stays a plain
``def`` so it never blocks the event loop for long. Every route gets the model once, at its
start, through ``get_model``: a reload during the request does not affect it.

An unknown user is not an error: the answer is the popular list, flagged
``strategy="popular"`` (cold start).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, BeforeValidator, Field, ValidationError, field_validator

from basketcast.pipeline.data import schema as S
from basketcast.pipeline.model.cooccurrence import LIFT, PMI, SUPPORT
from basketcast.serving.metrics import Metrics
from basketcast.serving.model import POPULAR_STRATEGY, RANKER_STRATEGY, Context, Recommendation, ServingModel
from basketcast.serving.realtime import DEGRADED, SNAPSHOT, Realtime, UserState, open_realtime, prediction_key
from basketcast.serving.schemas import (
    BODY_ERROR_RESPONSES,
    DEFAULT_K,
    ERROR_RESPONSES,
    ID_LIST_PATTERN,
    ID_LIST_RE,
    MAX_DAYS,
    MAX_EXCLUDE,
    MAX_K,
    UINT32_MAX,
    UINT32_PATTERN,
    BasketItem,
    BasketResponse,
    BatchRequest,
    BatchResponse,
    ContextOut,
    ErrorResponse,
    Item,
    RecommendationResponse,
    RelatedItem,
    RelatedResponse,
    UserRecommendations,
    not_null,
)
from basketcast.serving.settings import resolve_settings
from basketcast.serving.state import get_model

router = APIRouter(prefix="/v1", tags=["recommendations"], responses=ERROR_RESPONSES)


def realtime_of(request: Request) -> Realtime | None:
    """The worker's order log and online store; None when they could not be opened (re-tried
    every few seconds by ``open_realtime``)."""
    app = request.app
    if getattr(app.state, "realtime", None) is None and getattr(app.state, "realtime_error", None) is None:
        return None  # a test app without its lifespan, or the server starting
    return open_realtime(app, resolve_settings(app))


def no_store_state(request: Request) -> UserState:
    """Without stores: "degraded" when they failed to open (posted orders may be missing)."""
    return DEGRADED if getattr(request.app.state, "realtime_error", None) is not None else SNAPSHOT


async def user_state(request: Request, realtime: Realtime | None, model: ServingModel, user_id: int) -> UserState:
    """The rows a read uses: one store lookup on the event loop; a rebuild from the order log (a
    user the store does not know yet: after a hot swap or a Redis restart) in the thread pool, so
    it never holds up the other requests of the worker."""
    if realtime is None:
        return no_store_state(request)
    state = realtime.lookup(model, user_id)
    return state if state is not None else await run_in_threadpool(realtime.rebuild, model, user_id)


_ID = re.compile(r"[0-9]{1,10}", re.ASCII)
_UINT32 = re.compile(f"(?:{UINT32_PATTERN})", re.ASCII)
# A JSON number, as the query string spells one (leading zeros tolerated): what the documented
# `integer`/`number` query parameters accept — not "+1", "1_000", " 1", "nan" or "inf".
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?", re.ASCII)


def digits_only(value: object) -> object:
    """Refuse the spellings lax int parsing would take ("+1", "1_000", "1.0", non-ASCII digits)."""
    if isinstance(value, str) and not _ID.fullmatch(value):
        raise ValueError("an id is a plain integer 0-4294967295")
    return value


def query_number(value: object) -> object:
    """A query value spelled as a JSON number → float; anything else is refused (422)."""
    if isinstance(value, str):
        if not _NUMBER.fullmatch(value):
            raise ValueError("not a number (digits, optionally with a minus, a fraction and an exponent: 3, 2.5, 1e1)")
        return float(value)
    return value


def query_integer(value: object) -> object:
    """A query value spelled as a JSON number with no fraction (``5``, ``5.0``) → int; else 422."""
    number = query_number(value)
    if isinstance(number, float):
        if not number.is_integer():
            raise ValueError("not an integer")
        return int(number)
    return number


ModelDep = Annotated[ServingModel, Depends(get_model)]
UserId = Annotated[
    int,
    Path(ge=0, le=UINT32_MAX, description="The user's id (unknown ids get the popular list)."),
    BeforeValidator(digits_only),
]
# Query(...) first, then the validator: pydantic then keeps the bounds in the documented schema.
Dow = Annotated[
    int | None,
    Query(ge=0, le=6, description="Day of week 0-6 of the order; default: today (UTC)."),
    BeforeValidator(query_integer),
]
Hour = Annotated[
    int | None,
    Query(ge=0, le=23, description="Hour 0-23 of the order; default: now (UTC)."),
    BeforeValidator(query_integer),
]
Days = Annotated[
    float | None,
    Query(
        ge=0,
        le=MAX_DAYS,
        allow_inf_nan=False,
        description=f"Days since the user's last order, 0-{MAX_DAYS:g}; default: the user's usual gap.",
    ),
    BeforeValidator(query_number),
]


class RecommendQuery(BaseModel):
    """The query of GET /v1/users/{user_id}/recommendations, validated as one model.

    Unknown parameters are ignored; ``exclude`` and ``cart`` may repeat.
    """

    k: int = Field(DEFAULT_K, ge=1, le=MAX_K, description=f"Number of products, 1-{MAX_K}.")
    exclude: list[str] | None = Field(
        None,
        description="Product ids to leave out: comma-separated (`1,2`) and/or repeated (`?exclude=1&exclude=2`); "
        f"ids 0-{UINT32_MAX}, at most {MAX_EXCLUDE} per request.",
    )
    cart: list[str] | None = Field(None, description="Products already in the cart (same format as `exclude`).")
    dow: int | None = Field(None, ge=0, le=6, description="Day of week 0-6 of the order; default: today (UTC).")
    hour: int | None = Field(None, ge=0, le=23, description="Hour 0-23 of the order; default: now (UTC).")
    days_since_last_order: float | None = Field(
        None,
        ge=0,
        le=MAX_DAYS,
        allow_inf_nan=False,
        description=f"Days since the user's last order, 0-{MAX_DAYS:g}; default: the user's usual gap.",
    )

    # Validators rather than annotated types: pydantic then keeps the bounds in the documented schema.
    @field_validator("k", "dow", "hour", mode="before")
    @classmethod
    def _integer(cls, value: object) -> object:
        return query_integer(value)

    @field_validator("days_since_last_order", mode="before")
    @classmethod
    def _number(cls, value: object) -> object:
        return query_number(value)


_LISTS = ("exclude", "cart")


def read_query(request: Request) -> RecommendQuery:
    """Validate the query string as one RecommendQuery (422 with ``("query", name)`` locations).

    Read by hand rather than declared as FastAPI parameters: FastAPI's per-request parameter
    handling cost ~0.2 ms of CPU here, as much as scoring a user with a small model.
    """
    params = request.query_params
    raw: dict[str, object] = {key: value for key, value in params.items() if key not in _LISTS}
    for name in _LISTS:
        if values := params.getlist(name):
            raw[name] = values
    try:
        return RecommendQuery.model_validate(raw)
    except ValidationError as exc:
        errors = [{**e, "loc": ("query", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def _query_parameters() -> list[dict[str, object]]:
    """OpenAPI entries of RecommendQuery's fields (the route reads them by hand, see read_query).

    A query parameter is absent or a string, never null: the ``null`` branch pydantic adds for an
    optional field is dropped. The id lists get the pattern the server checks them with.
    """
    schema = RecommendQuery.model_json_schema()
    params: list[dict[str, object]] = []
    for name, prop in schema["properties"].items():
        description = prop.pop("description", "")
        prop = not_null(prop)
        if name in _LISTS:
            prop["items"] = {"type": "string", "pattern": ID_LIST_PATTERN}
        params.append({"name": name, "in": "query", "required": False, "description": description, "schema": prop})
    return params


def parse_ids(values: Iterable[str] | None, name: str) -> list[int]:
    """Product ids from repeated and/or comma-separated query values; 422 for anything malformed.

    Each value must match ID_LIST_PATTERN, the pattern the OpenAPI document gives.
    """
    ids: list[int] = []
    errors = []
    for raw in values or ():
        if ID_LIST_RE.search(raw):
            ids.extend(int(part) for part in re.findall(r"[0-9]+", raw))
            continue
        bad = [p.strip(" ") for p in raw.split(",") if p.strip(" ") and not _UINT32.fullmatch(p.strip(" "))]
        for part in bad or [raw]:
            errors.append(
                {
                    "type": "id_parsing",
                    "loc": ("query", name),
                    "msg": f"{part[:40]!r} is not a product id (integers 0-{UINT32_MAX}, comma-separated)",
                }
            )
    if len(ids) > MAX_EXCLUDE:
        errors.append({"type": "too_long", "loc": ("query", name), "msg": f"more than {MAX_EXCLUDE} ids"})
    if errors:
        raise RequestValidationError(errors)
    return ids


def order_context(dow: int | None, hour: int | None, days: float | None) -> tuple[Context, ContextOut]:
    """The model's Context and its echo; dow/hour default to the current UTC time (see ``Context.at``)."""
    ctx = Context.at(datetime.now(UTC), dow=dow, hour=hour, days=days)
    return ctx, ContextOut(dow=int(ctx.dow), hour=int(ctx.hour), days_since_last_order=days)


def count_strategy(request: Request, strategy: str, users: int = 1) -> None:
    """``basketcast_recommendations_total{route, strategy}`` += ``users`` (route: the template)."""
    metrics: Metrics = request.app.state.metrics
    metrics.observe_strategy(request.scope["route"].path, strategy, users)


def _json(body: BaseModel) -> Response:
    """The response model serialised once (the route's ``response_model`` still documents it)."""
    return Response(content=body.model_dump_json(), media_type="application/json")


def items(model: ServingModel, rec: Recommendation) -> list[Item]:
    """A Recommendation's products with their catalogue names, best first."""
    out = []
    for rank, (product, score, repeat, reason) in enumerate(
        zip(rec.products.tolist(), rec.scores.tolist(), rec.repeat.tolist(), rec.reasons, strict=True), start=1
    ):
        name, aisle, department = model.product_info(product)
        out.append(
            Item(
                product_id=product,
                name=name,
                aisle=aisle,
                department=department,
                score=score,
                rank=rank,
                repeat=repeat,
                reason=reason,
            )
        )
    return out


@router.get(
    "/users/{user_id}/recommendations",
    response_model=RecommendationResponse,
    summary="Top-k products for one user (what will they add next)",
    openapi_extra={"parameters": _query_parameters()},
)
async def recommend(user_id: UserId, model: ModelDep, request: Request) -> Response:
    """The user's top-``k`` without the ``exclude`` and ``cart`` products (still ``k`` when possible).

    The ``cart`` also re-ranks: each past product gains γ × the cart attention's delta and every
    candidate β × its mean PMI with the cart's products (often bought together); γ and β were
    chosen at training. Unknown users get the popular list with ``strategy="popular"``.
    """
    query = read_query(request)
    exclude = set(parse_ids(query.exclude, "exclude"))
    cart = list(dict.fromkeys(parse_ids(query.cart, "cart")))  # as added (the attention reads the first 32)
    ctx, ctx_out = order_context(query.dow, query.hour, query.days_since_last_order)
    realtime = realtime_of(request)
    metrics: Metrics = request.app.state.metrics
    state = await user_state(request, realtime, model, user_id)
    metrics.reads.labels(state.freshness).inc()
    # The key names the rows it was computed from (how many orders they include): an answer cached
    # from older rows, even one written just after a new order cleared the cache, is never read
    # for newer ones.
    orders = state.rows.orders if state.rows is not None else -1
    key = prediction_key("recommendations", orders, query.k, sorted(exclude), cart, ctx.dow, ctx.hour, ctx.days)
    if realtime is not None and realtime.prediction_cache and state.freshness != "degraded":
        if (cached := realtime.cached(model, user_id, key)) is not None:
            metrics.cache.labels("hit").inc()
            # What model.recommend would have said: popular only for a user without any rows.
            known = state.rows is not None or model.rows(user_id) is not None
            count_strategy(request, RANKER_STRATEGY if known else POPULAR_STRATEGY)
            return Response(content=cached, media_type="application/json")
        metrics.cache.labels("miss").inc()
    rec = model.recommend(user_id, query.k, ctx, exclude=exclude, cart=cart, fresh=state.rows)
    count_strategy(request, rec.strategy)
    body = RecommendationResponse(
        user_id=user_id,
        model_version=model.version,
        strategy=rec.strategy,  # type: ignore[arg-type]
        context=ctx_out,
        items=items(model, rec),
        freshness=state.freshness,
    ).model_dump_json()
    if realtime is not None and state.freshness != "degraded":
        realtime.cache(model, user_id, key, body.encode())
    return Response(content=body, media_type="application/json")


ProductId = Annotated[
    int,
    Path(ge=0, le=UINT32_MAX, description="The product's id."),
    BeforeValidator(digits_only),
]
RelatedK = Annotated[int, Query(ge=1, le=50, description="How many related products (1-50).")]


@router.get(
    "/products/{product_id}/related",
    response_model=RelatedResponse,
    summary="Products often bought together with this one",
    responses={404: {"model": ErrorResponse, "description": "Unknown product."}},
)
async def related(product_id: ProductId, model: ModelDep, k: RelatedK = 10) -> Response:
    """The products with the highest PMI with ``product_id`` over the training baskets (pairs seen
    in at least 5 baskets); empty when none is. A product not in the catalogue is a 404."""
    if not model.knows_product(product_id):
        raise HTTPException(status_code=404, detail=f"product {product_id} is not in the model's catalogue")
    table = model.related_products(product_id, k)
    out = []
    for rank, row in enumerate(table.iter_rows(named=True), start=1):
        name, aisle, department = model.product_info(int(row[S.PRODUCT]))
        out.append(
            RelatedItem(
                product_id=int(row[S.PRODUCT]),
                name=name,
                aisle=aisle,
                department=department,
                pmi=float(row[PMI]),
                lift=float(row[LIFT]),
                support=int(row[SUPPORT]),
                rank=rank,
            )
        )
    return _json(RelatedResponse(product_id=product_id, model_version=model.version, items=out))


@router.post(
    "/recommendations",
    response_model=BatchResponse,
    summary="Top-k products for up to 1000 users in one call",
    responses=BODY_ERROR_RESPONSES,
)
def recommend_many(body: BatchRequest, model: ModelDep, request: Request) -> BatchResponse:
    """One result per id of ``user_ids`` (same order, duplicates kept), scored in one model call.

    Users with fresh rows (orders posted since the snapshot) are looked up in the online store in
    one round trip and scored on those rows; everyone else in one call on the snapshot.
    """
    ctx, ctx_out = order_context(body.dow, body.hour, body.days_since_last_order)
    realtime = realtime_of(request)
    metrics: Metrics = request.app.state.metrics
    if realtime is not None:
        states = realtime.rows_for_many(model, body.user_ids)
    else:
        states = [no_store_state(request)] * len(body.user_ids)
    # One model call for the users the snapshot answers; each user with fresh rows on their own.
    from_snapshot = [u for u, s in zip(body.user_ids, states, strict=True) if s.rows is None]
    snapshot_recs = iter(model.recommend_many(from_snapshot, body.k, ctx) if from_snapshot else [])
    results = []
    for user_id, state in zip(body.user_ids, states, strict=True):
        metrics.reads.labels(state.freshness).inc()
        if state.rows is None:
            rec = next(snapshot_recs)
        else:
            rec = model.recommend(user_id, body.k, ctx, fresh=state.rows)
        results.append(
            UserRecommendations(
                user_id=rec.user_id,
                strategy=rec.strategy,  # type: ignore[arg-type]
                items=items(model, rec),
                freshness=state.freshness,
            )
        )
    for strategy, n in Counter(r.strategy for r in results).items():
        count_strategy(request, strategy, n)
    return BatchResponse(model_version=model.version, k=body.k, context=ctx_out, results=results)


@router.get(
    "/users/{user_id}/basket",
    response_model=BasketResponse,
    summary="The F1-optimal next basket of one user",
)
async def basket(
    user_id: UserId,
    model: ModelDep,
    request: Request,
    dow: Dow = None,
    hour: Hour = None,
    days_since_last_order: Days = None,
) -> Response:
    """The products (may be none) that maximise the expected F1, and whether "None" is predicted.

    Unknown users get an empty basket with ``none=true`` and ``strategy="popular"``.
    """
    ctx, ctx_out = order_context(dow, hour, days_since_last_order)
    realtime = realtime_of(request)
    state = await user_state(request, realtime, model, user_id)
    request.app.state.metrics.reads.labels(state.freshness).inc()
    b = model.basket(user_id, ctx, fresh=state.rows)
    count_strategy(request, b.strategy)
    products = []
    for product, probability in zip(b.products.tolist(), b.probabilities.tolist(), strict=True):
        name, aisle, department = model.product_info(product)
        products.append(
            BasketItem(product_id=product, name=name, aisle=aisle, department=department, probability=probability)
        )
    return _json(
        BasketResponse(
            user_id=user_id,
            model_version=model.version,
            strategy=b.strategy,  # type: ignore[arg-type]
            none=b.none,
            expected_f1=None if math.isnan(b.expected_f1) else b.expected_f1,
            products=products,
            context=ctx_out,
            freshness=state.freshness,
        )
    )
