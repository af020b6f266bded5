"""Server settings, read from ``BASKETCAST_*`` environment variables (pydantic-settings).

``get_settings()`` is cached (``lru_cache``): the environment is read once per process. Routes
take ``Annotated[Settings, Depends(get_settings)]`` and tests swap it with
``app.dependency_overrides[get_settings] = lambda: Settings(...)`` (``create_app(settings)`` does
exactly that); the lifespan and the middlewares resolve it the same way (``resolve_settings``),
so one override changes everything.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "BASKETCAST_"
MODEL_DIR_ENV = f"{ENV_PREFIX}MODEL_DIR"
MODEL_URI_ENV = f"{ENV_PREFIX}MODEL_URI"
SUPERVISOR_PID_ENV = f"{ENV_PREFIX}SUPERVISOR_PID"
MIB = 1024 * 1024


class Settings(BaseSettings):
    """What the server needs to know; each field is the env var ``BASKETCAST_<FIELD NAME>``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    model_dir: Path | None = Field(
        default=None, description="Run folder (or its serving/ bundle) to serve; re-opened by each reload."
    )
    model_uri: str | None = Field(
        default=None,
        description="A registry model to serve instead of a folder: models:/NAME@ALIAS (or models:/NAME/VERSION), "
        "resolved through the MLflow server at MLFLOW_TRACKING_URI; each reload resolves the alias again and "
        "fetches a new version's bundle into state_dir/registry.",
    )
    max_body_bytes: int = Field(default=MIB, ge=0, description="Request bodies above this size get 413.")
    admin_token: SecretStr | None = Field(
        default=None,
        description="If set, POST /admin/reload needs 'Authorization: Bearer <token>'. Required to listen on "
        "anything but loopback; unset (or blank), /admin answers only requests that arrive on loopback.",
    )
    reload_on_sighup: bool = Field(
        default=True, description="Reload the model when the worker process receives SIGHUP."
    )
    order_log: str = Field(
        default="embedded",
        description="Where posted orders are recorded (the system of record of orders after the snapshot): "
        "'embedded' (a SQLite file in state_dir), 'sqlite:///ABS/PATH.sqlite', or 'postgresql://USER:PW@HOST:PORT/DB'.",
    )
    online_store: str = Field(
        default="embedded",
        description="Where each user's fresh rows and cached predictions live: 'embedded' (SQLite in state_dir, "
        "shared by all workers), 'sqlite:///ABS/PATH.sqlite', or 'redis://HOST:PORT/DB'.",
    )
    state_dir: Path = Field(
        default_factory=lambda: default_state_dir(),
        description="Folder of the embedded stores ($XDG_STATE_HOME/basketcast, else ~/.local/state/basketcast).",
    )
    online_ttl_seconds: float = Field(
        default=30 * 24 * 3600.0, gt=0, description="Fresh rows expire after this long without a new order."
    )
    prediction_cache: bool = Field(
        default=True,
        description="Cache answers of GET /v1/users/{id}/recommendations in the online store (keyed by model "
        "version, user, the orders their rows include and the request); false: every request is scored.",
    )
    cache_ttl_seconds: float = Field(
        default=300.0, gt=0, description="Cached predictions (Redis) expire after this long."
    )
    supervisor_pid: int | None = Field(
        default=None,
        description="Set by basketcast.serving.server.serve for its workers (internal): the supervisor that forwards "
        "SIGHUP to every worker, so a reload through one worker reaches all of them.",
    )

    def order_log_url(self) -> str:
        """The order log's URL: ``embedded`` is the SQLite file ``state_dir/orders.sqlite``."""
        if self.order_log == "embedded":
            return f"sqlite:///{(self.state_dir / 'orders.sqlite').resolve()}"
        return self.order_log

    @field_validator("model_uri", mode="after")
    @classmethod
    def _registry_uri(cls, value: str | None) -> str | None:
        """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` (blank = none)."""
        if value is None or not value.strip():
            return None
        from basketcast.serving.registry import ModelUri, RegistryError

        try:
            return str(ModelUri.parse(value.strip()))
        except RegistryError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("admin_token", mode="after")
    @classmethod
    def _blank_token_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        """A blank token (``BASKETCAST_ADMIN_TOKEN=``) is no token: it would let an empty header through."""
        if value is not None and not value.get_secret_value().strip():
            return None
        return value


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/basketcast``, else ``~/.local/state/basketcast`` (never the working directory)."""
    import os

    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "basketcast"


LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


def is_loopback_host(host: str) -> bool:
    """Whether listening on ``host`` reaches only this machine (127.0.0.0/8, ::1, localhost).

    Anything else — ``0.0.0.0``, ``::``, an interface address, another host name, "" — may be
    reached from the network.
    """
    host = host.strip().strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


@lru_cache
def get_settings() -> Settings:
    """The process's settings from the environment (read once, then cached)."""
    return Settings()


def resolve_settings(app: Any) -> Settings:
    """The settings an app uses: its ``dependency_overrides[get_settings]`` if any, else the env's."""
    provider = getattr(app, "dependency_overrides", {}).get(get_settings, get_settings)
    settings: Settings = provider()
    return settings
