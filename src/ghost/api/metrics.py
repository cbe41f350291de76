"""GET /metrics: Prometheus' text format, from the app's own registry (`ghost.observe`).

The counts cover every user, so the route needs an admin's key (Prometheus sends it from its
scrape config), unless `--metrics-public` serves it to anyone who can reach Ghost; whether it needs
the key is fixed when the app is built, so the OpenAPI document says which.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from ghost.api import openapi
from ghost.api.auth import require_admin, require_key
from ghost.api.services import services_of
from ghost.config import Settings
from ghost.observe import Telemetry

PATH = "/metrics"


def router_for(settings: Settings) -> APIRouter:
    router = APIRouter()
    keyed = [] if settings.metrics_public else [Depends(require_key), Depends(require_admin)]
    router.add_api_route(PATH, metrics, methods=["GET"], dependencies=keyed, summary="Prometheus metrics",
                         **openapi.METRICS)
    return router


async def metrics(request: Request) -> Response:
    telemetry: Telemetry = request.app.state.telemetry
    bundled = services_of(request).bundled
    up = bundled is not None and bundled.status.get("state") == "ready"
    telemetry.metrics.bundled_model_up.set(1 if up else 0)
    return Response(telemetry.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
