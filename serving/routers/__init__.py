"""The API's routers: ``health`` (/health, /ready, /metrics), ``recommendations`` (/v1/...), ``orders``
(POST /v1/orders), ``admin``."""

from serving.routers import admin, health, orders, recommendations

ROUTERS = (health.router, recommendations.router, orders.router, admin.router)

__all__ = ["ROUTERS", "admin", "health", "orders", "recommendations"]
