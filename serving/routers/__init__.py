"""The API's routers: ``health`` (/health, /ready, /metrics), ``recommendations`` (/v1/...), ``orders``
(POST /v1/orders), ``admin``; outside ROUTERS and the OpenAPI document, ``docs`` (/, /docs, /redoc and
their assets, served offline) and ``dashboard`` (/dashboard), included by ``basketcast.serving.main.create_app``."""

from basketcast.serving.routers import admin, health, orders, recommendations

ROUTERS = (health.router, recommendations.router, orders.router, admin.router)

__all__ = ["ROUTERS", "admin", "health", "orders", "recommendations"]
