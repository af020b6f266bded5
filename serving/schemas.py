"""Request and response bodies of the HTTP API (pydantic), and the API's limits.

Ids are unsigned 32-bit integers (the snapshot stores them as uint32): anything else is a 422.
Numbers follow JSON Schema, so that the OpenAPI document tells the truth about what is accepted:
an integer field takes ``43`` and ``43.0`` (JSON Schema counts both as integers) but never
``true``, ``"43"`` or ``43.5``; a number field takes integers and decimals, never a boolean or a
string. The query string's id lists (``exclude``, ``cart``) are documented by the regular
expression :data:`ID_LIST_PATTERN`, which is also what the server checks them with.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from basketcast.serving.model import MAX_DAYS

UINT32_MAX = 2**32 - 1
MAX_K = 100
DEFAULT_K = 10
MAX_BATCH_USERS = 1000
MAX_EXCLUDE = 1000  # ids per `exclude` (and per `cart`) parameter of one request

# One id 0..4294967295 as a regular expression (1-10 digits, leading zeros allowed): digit by digit
# below 4294967295, so that the documented pattern is exactly the accepted range.
UINT32_PATTERN = (
    "[0-9]{1,9}|[0-3][0-9]{9}|4[01][0-9]{8}|42[0-8][0-9]{7}|429[0-3][0-9]{6}|4294[0-8][0-9]{5}"
    "|42949[0-5][0-9]{4}|429496[0-6][0-9]{3}|4294967[01][0-9]{2}|42949672[0-8][0-9]|429496729[0-5]"
)
# A value of `exclude`/`cart`: comma-separated ids, spaces around them and empty entries allowed
# ("", "1", "1,2", "1, 2,"). JSON Schema patterns are unanchored searches: hence ^...$, and the
# server matches with re.search too (the same semantics as the validators schemathesis uses).
ID_LIST_PATTERN = f"^ *(?:(?:{UINT32_PATTERN}) *)?(?:, *(?:(?:{UINT32_PATTERN}) *)?)*$"
ID_LIST_RE = re.compile(ID_LIST_PATTERN, re.ASCII)


def json_integer(value: Any) -> Any:
    """``43.0`` → ``43`` (JSON Schema's integer); everything else is left to strict validation."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """``anyOf: [X, {type: null}]`` → X (keeping title/default): the schema of an optional query value."""
    branches = schema.get("anyOf")
    if not isinstance(branches, list):
        return schema
    rest = [b for b in branches if b != {"type": "null"}]
    if len(rest) != 1 or len(rest) == len(branches):
        return schema
    out = {k: v for k, v in schema.items() if k != "anyOf"}
    if out.get("default", 0) is None:
        del out["default"]
    return {**rest[0], **out}


Strategy = Literal["ranker", "popular"]
# The bounds before the validator: pydantic then keeps them in the documented schema (minimum/maximum).
Id = Annotated[int, Field(strict=True, ge=0, le=UINT32_MAX), BeforeValidator(json_integer)]


# Ids of recorded data are positive, as ingest requires of every id (0 marks the network's None row).
PositiveId = Annotated[int, Field(strict=True, ge=1, le=UINT32_MAX), BeforeValidator(json_integer)]


class ContextOut(BaseModel):
    """The order context the answer was computed for."""

    dow: int = Field(description="Day of week of the order, 0-6 (Instacart's order_dow; 0 = Sunday assumed).")
    hour: int = Field(description="Hour of day of the order, 0-23.")
    days_since_last_order: float | None = Field(
        description="Days since the user's last order; null = the user's usual gap."
    )


class Item(BaseModel):
    """One recommended product."""

    product_id: int
    name: str
    aisle: str
    department: str
    score: float = Field(description="Ranker score (popularity share for the cold-start list); higher is better.")
    rank: int = Field(description="1 = best.")
    repeat: bool = Field(description="The user has bought it before.")
    reason: str = Field(
        min_length=1,
        description='Why it is recommended, from the numbers the ranker scored, e.g. "in 12 of your 15 orders", '
        '"you buy this about every 7 days; last time 9 days ago", "often bought with Bananas" (with a cart), '
        '"popular in produce among shoppers like you" (new to the user), "popular with shoppers" (cold start).',
    )


class RelatedItem(BaseModel):
    """A product often bought together with the asked one."""

    product_id: int
    name: str
    aisle: str
    department: str
    pmi: float = Field(
        description="log(P(both) / (P(a) P(b))) over baskets; > 0 means more often together than chance."
    )
    lift: float = Field(description="P(both) / (P(a) P(b)).")
    support: int = Field(description="Baskets (of the counted sample) holding both.")
    rank: int = Field(description="1 = the strongest association.")


class RelatedResponse(BaseModel):
    """GET /v1/products/{product_id}/related."""

    product_id: int
    model_version: str
    items: list[RelatedItem]


Freshness = Literal["fresh", "snapshot", "degraded"]
FRESHNESS_DESCRIPTION = (
    '"fresh": computed from rows that include the orders posted since the model was published '
    '(POST /v1/orders); "snapshot": the published snapshot is current for this user; "degraded": the '
    "online store could not be reached, so the snapshot answered (orders posted since may be missing)."
)


class UserRecommendations(BaseModel):
    """One user's top-k."""

    user_id: int
    strategy: Strategy = Field(description='"ranker", or "popular" for an unknown user (cold start).')
    items: list[Item]
    freshness: Freshness = Field("snapshot", description=FRESHNESS_DESCRIPTION)


class RecommendationResponse(UserRecommendations):
    """GET /v1/users/{user_id}/recommendations."""

    model_version: str
    context: ContextOut


class BatchRequest(BaseModel):
    """POST /v1/recommendations: many users, one context, one model call."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=lambda schema: _document_days_alias(schema))

    user_ids: list[Id] = Field(
        min_length=1, max_length=MAX_BATCH_USERS, description=f"1-{MAX_BATCH_USERS} user ids (duplicates kept)."
    )
    k: int = Field(DEFAULT_K, strict=True, ge=1, le=MAX_K, description=f"Number of products per user, 1-{MAX_K}.")
    dow: int | None = Field(None, strict=True, ge=0, le=6, description="Day of week 0-6; default: today (UTC).")
    hour: int | None = Field(None, strict=True, ge=0, le=23, description="Hour 0-23; default: the current hour (UTC).")
    days_since_last_order: float | None = Field(
        None,
        strict=True,  # a number: `false` or "3" is a 422, not 0 or 3
        ge=0,
        le=MAX_DAYS,
        allow_inf_nan=False,
        validation_alias=AliasChoices("days_since_last_order", "days"),
        description=f"Days since the last order, 0-{MAX_DAYS:g}; default: each user's usual gap. Also accepted "
        "as `days`.",
    )

    @field_validator("k", "dow", "hour", mode="before")
    @classmethod
    def _integral(cls, value: Any) -> Any:
        return json_integer(value)

    @model_validator(mode="before")
    @classmethod
    def _one_days(cls, data: Any) -> Any:
        """Both spellings given: ``days_since_last_order`` wins (``days`` is validated, then dropped)."""
        if isinstance(data, dict) and "days" in data and "days_since_last_order" in data:
            data = dict(data)
            cls.model_validate({"user_ids": [0], "days": data.pop("days")})  # still a 422 when invalid
        return data


def _document_days_alias(schema: dict[str, Any]) -> None:
    """Document ``days`` (accepted for ``days_since_last_order``): the body forbids other properties."""
    props = schema["properties"]
    days = dict(props["days_since_last_order"])
    days["description"] = "Alias of `days_since_last_order` (deprecated); ignored when that is given too."
    days["title"] = "Days"
    days["deprecated"] = True
    props["days"] = days


class BatchResponse(BaseModel):
    """One result per requested user id, in the request's order."""

    model_version: str
    k: int
    context: ContextOut
    results: list[UserRecommendations]


class BasketItem(BaseModel):
    """One product of the predicted basket."""

    product_id: int
    name: str
    aisle: str
    department: str
    probability: float = Field(description="Calibrated probability that the user reorders it.")


class BasketResponse(BaseModel):
    """GET /v1/users/{user_id}/basket: the basket maximising the expected F1."""

    user_id: int
    model_version: str
    strategy: Strategy = Field(description='"ranker", or "popular" for an unknown user (empty basket, none=true).')
    none: bool = Field(description='Whether "None" (no reordered product) is part of the prediction.')
    expected_f1: float | None = Field(description="Expected F1 of this basket; null for an unknown user.")
    products: list[BasketItem]
    context: ContextOut
    freshness: Freshness = Field("snapshot", description=FRESHNESS_DESCRIPTION)


MAX_ORDER_PRODUCTS = 1000
MAX_ORDER_ID_LENGTH = 128


class OrderRequest(BaseModel):
    """POST /v1/orders: one order, its products in the order they were added to the cart.

    When the order happened: ``order_dow`` and ``order_hour_of_day`` when given, else from
    ``placed_at`` (ISO 8601 with a timezone), else from the time the server receives it. Days since the user's
    previous order: ``days_since_prior_order``, else computed from the ``placed_at`` of their
    previous posted order when both have one, else unknown.
    """

    model_config = ConfigDict(extra="forbid")

    order_id: str = Field(
        min_length=1,
        max_length=MAX_ORDER_ID_LENGTH,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$",
        description="The client's id of the order, unique across all orders: a retry with the same id and the "
        "same content is recorded once (200, status `duplicate`); the same id with other content is a 409.",
    )
    user_id: PositiveId = Field(description="The shopper, 1-4294967295 (a new id starts a new shopper).")
    products: list[PositiveId] = Field(
        min_length=1,
        max_length=MAX_ORDER_PRODUCTS,
        description=f"1-{MAX_ORDER_PRODUCTS} product ids (1-4294967295) in cart order (a repeated id counts once, "
        "at its first position).",
    )
    placed_at: AwareDatetime | None = Field(
        None, description="When the order was placed (ISO 8601 / RFC 3339 string, with a timezone)."
    )
    order_dow: int | None = Field(None, strict=True, ge=0, le=6, description="Day of week 0-6 (0 = Sunday).")
    order_hour_of_day: int | None = Field(None, strict=True, ge=0, le=23, description="Hour of day 0-23.")
    days_since_prior_order: float | None = Field(
        None,
        strict=True,
        ge=0,
        le=365,
        allow_inf_nan=False,
        description="Days since the user's previous order (capped at 30 in features, as in Instacart's data).",
    )

    @field_validator("order_dow", "order_hour_of_day", mode="before")
    @classmethod
    def _integral(cls, value: Any) -> Any:
        return json_integer(value)

    @field_validator("placed_at", mode="before")
    @classmethod
    def _date_time_string(cls, value: Any) -> Any:
        """A date-time string, as documented (lax parsing would also take a number as epoch seconds)."""
        if value is not None and not isinstance(value, str):
            raise ValueError("a date-time string (ISO 8601 with a timezone)")
        return value


class OrderResponse(BaseModel):
    """POST /v1/orders: 201 when recorded now, 200 when it was already recorded (a retry)."""

    order_id: str
    user_id: int
    status: Literal["created", "duplicate"]
    model_version: str
    orders: int = Field(description="Orders in the user's history now (the snapshot's and the posted ones).")
    fresh: bool = Field(
        description="The user's recommendations now include this order (false: recorded, but the online store "
        "could not be updated; it catches up on a later read)."
    )
    unknown_products: list[int] = Field(
        default_factory=list,
        description="Products not in the served model's catalogue: recorded, used from the next retraining.",
    )
    warnings: list[str] = Field(default_factory=list)


class Health(BaseModel):
    """GET /health."""

    status: Literal["ok"] = "ok"


FolderState = Literal["current", "new_version", "missing", "not_a_model"]
ReloadStatus = Literal["loaded", "reloaded", "unchanged", "refused"]


class ModelFolder(BaseModel):
    """What the model folder holds now, next to what is served (checked on every GET /ready)."""

    state: FolderState = Field(
        description='"current": the served version; "new_version": another version, not served (not reloaded '
        'yet, or refused: see `last_reload`); "missing": the folder is gone (deleted, or being replaced); '
        '"not_a_model": it holds no readable serving bundle.'
    )
    version: str | None = Field(description="The version its bundle manifest names; null when unreadable.")


class LastReload(BaseModel):
    """The last (re)load this worker attempted: at startup, POST /admin/reload or SIGHUP."""

    status: ReloadStatus
    at: float = Field(description="Unix time of the attempt.")
    model_version: str | None = Field(description="The version served after it.")
    error: str | None = Field(description="Why the new version was refused; null otherwise.")


class OnlineStatus(BaseModel):
    """The real-time stores as /ready sees them (pinged on every call)."""

    order_log: str = Field(description="Where posted orders are recorded (no password).")
    online_store: str = Field(description="Where fresh rows and cached predictions live (no password).")
    order_log_up: bool
    online_store_up: bool
    degraded: bool = Field(description="The online store does not answer: reads use the snapshot.")
    refreshes_rows: bool = Field(description="The served model can recompute a user's rows after an order.")


class RegistryModel(BaseModel):
    """The registry alias (or version) served, as last resolved through MLflow's REST API."""

    uri: str = Field(description="What the server was asked to serve: models:/NAME@ALIAS or models:/NAME/VERSION.")
    name: str
    alias: str | None
    version: str | None = Field(description="The registered version the URI named at the last resolution.")
    run_id: str | None
    tracking_uri: str
    resolved_at: float | None = Field(description="Unix time of the last successful resolution.")
    error: str | None = Field(None, description="Why the last resolution failed (the served model is kept).")


class Readiness(BaseModel):
    """GET /ready: 200 while a model is served, 503 otherwise.

    A model keeps being served when its folder is deleted or replaced by something broken; then
    the answer stays 200 and ``warnings`` says what happened (``folder``, ``last_reload``).
    """

    status: Literal["ready", "unavailable"]
    model_version: str | None
    model_dir: str | None
    loaded_at: float | None = Field(description="Unix time the served model was loaded.")
    error: str | None = Field(None, description="Why no model is served (503 only).")
    pid: int = Field(description="The worker process that answered.")
    folder: ModelFolder | None = Field(None, description="The model folder now; null when none is configured.")
    last_reload: LastReload | None = None
    warnings: list[str] = Field(
        default_factory=list,
        description="What needs attention while the served model keeps answering: the folder deleted or "
        "broken, a refused reload, a published version not loaded yet, an online store or order log that "
        "does not answer.",
    )
    online: OnlineStatus | None = Field(None, description="The order log and online store; null when not opened.")
    registry: RegistryModel | None = Field(
        None, description="The registry alias served (BASKETCAST_MODEL_URI); null when serving a folder."
    )


class ReloadResponse(BaseModel):
    """POST /admin/reload, when the reload was not refused."""

    status: Literal["loaded", "reloaded", "unchanged"]
    model_version: str | None
    previous_version: str | None
    workers_notified: bool = Field(
        description="The other worker processes were asked (through the supervisor) to reload too."
    )
    pid: int


class ErrorDetail(BaseModel):
    """The body of every error answer."""

    model_config = ConfigDict(extra="allow")

    status: int
    code: str
    message: str


class ErrorResponse(BaseModel):
    """``{"error": {...}}``."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    422: {"model": ErrorResponse, "description": "Invalid parameters or body (`details` lists each problem)."},
    503: {"model": ErrorResponse, "description": "No model loaded."},
}
BODY_ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorResponse, "description": "The body cannot be parsed (e.g. JSON nested too deeply)."},
    413: {"model": ErrorResponse, "description": "The body is larger than the limit (1 MiB by default)."},
}
