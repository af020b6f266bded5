"""Server settings, read from ``BASKETCAST_*`` environment variables (pydantic-settings).

``get_settings()`` is cached (``lru_cache``): the environment is read once per process. Routes
take ``Annotated[Settings, Depends(get_settings)]`` and tests swap it with
``app.dependency_overrides[get_settings] = lambda: Settings(...)`` (``create_app(settings)`` does
exactly that); the lifespan and the middlewares resolve it the same way (``resolve_settings``),
so one override changes everything.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "BASKETCAST_"
MODEL_DIR_ENV = f"{ENV_PREFIX}MODEL_DIR"
SUPERVISOR_PID_ENV = f"{ENV_PREFIX}SUPERVISOR_PID"
MIB = 1024 * 1024


class Settings(BaseSettings):
    """What the server needs to know; each field is the env var ``BASKETCAST_<FIELD NAME>``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    model_dir: Path | None = Field(
        default=None, description="Run folder (or its serving/ bundle) to serve; re-opened by each reload."
    )
    max_body_bytes: int = Field(default=MIB, ge=0, description="Request bodies above this size get 413.")
    admin_token: SecretStr | None = Field(
        default=None, description="If set, POST /admin/reload needs 'Authorization: Bearer <token>'."
    )
    reload_on_sighup: bool = Field(
        default=True, description="Reload the model when the worker process receives SIGHUP."
    )
    supervisor_pid: int | None = Field(
        default=None,
        description="Set by serving.server.serve for its workers (internal): the supervisor that forwards "
        "SIGHUP to every worker, so a reload through one worker reaches all of them.",
    )


@lru_cache
def get_settings() -> Settings:
    """The process's settings from the environment (read once, then cached)."""
    return Settings()


def resolve_settings(app: Any) -> Settings:
    """The settings an app uses: its ``dependency_overrides[get_settings]`` if any, else the env's."""
    provider = getattr(app, "dependency_overrides", {}).get(get_settings, get_settings)
    settings: Settings = provider()
    return settings
