"""Request and response bodies of the HTTP API (pydantic), and the API's limits.

Ids are unsigned 32-bit integers (the snapshot stores them as uint32): anything else is a 422.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from serving.model import MAX_DAYS

UINT32_MAX = 2**32 - 1
MAX_K = 100
DEFAULT_K = 10
MAX_BATCH_USERS = 1000
MAX_EXCLUDE = 1000

Strategy = Literal["ranker", "popular"]
Id = Annotated[int, Field(strict=True, ge=0, le=UINT32_MAX)]


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


class UserRecommendations(BaseModel):
    """One user's top-k."""

    user_id: int
    strategy: Strategy = Field(description='"ranker", or "popular" for an unknown user (cold start).')
    items: list[Item]


class RecommendationResponse(UserRecommendations):
    """GET /v1/users/{user_id}/recommendations."""

    model_version: str
    context: ContextOut


class BatchRequest(BaseModel):
    """POST /v1/recommendations: many users, one context, one model call."""

    model_config = ConfigDict(extra="forbid")

    user_ids: list[Id] = Field(min_length=1, max_length=MAX_BATCH_USERS)
    k: int = Field(DEFAULT_K, strict=True, ge=1, le=MAX_K)
    dow: int | None = Field(None, strict=True, ge=0, le=6, description="Default: today (UTC).")
    hour: int | None = Field(None, strict=True, ge=0, le=23, description="Default: the current hour (UTC).")
    days_since_last_order: float | None = Field(
        None,
        ge=0,
        le=MAX_DAYS,
        allow_inf_nan=False,
        validation_alias=AliasChoices("days_since_last_order", "days"),
        description="Default: each user's usual gap. Also accepted as `days`.",
    )


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


class Health(BaseModel):
    """GET /health."""

    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    """GET /ready (200 when a model is loaded, 503 otherwise)."""

    status: Literal["ready", "unavailable"]
    model_version: str | None
    model_dir: str | None
    loaded_at: float | None = Field(description="Unix time the served model was loaded.")
    error: str | None = None
    pid: int = Field(description="The worker process that answered.")


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
    422: {"model": ErrorResponse, "description": "Invalid parameters or body."},
    503: {"model": ErrorResponse, "description": "No model loaded."},
}
