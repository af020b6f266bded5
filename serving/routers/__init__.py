"""The API's routers: ``health`` (/health, /ready, /metrics), ``recommendations`` (/v1/...), ``admin``."""

from serving.routers import admin, health, recommendations

ROUTERS = (health.router, recommendations.router, admin.router)

__all__ = ["ROUTERS", "admin", "health", "recommendations"]
