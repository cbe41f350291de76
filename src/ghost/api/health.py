"""GET /api/health: is Ghost able to do its job, and with what."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request

from ghost import __version__
from ghost.api import openapi
from ghost.api.auth import require_key
from ghost.agent.spaces import Space
from ghost.api.caller import get_space
from ghost.api.services import Services, get_services, settings_of

router = APIRouter()


@router.get("/api/health", dependencies=[Depends(require_key)], summary="Health and configuration",
             **openapi.HEALTH)
async def health(request: Request, services: Services = Depends(get_services),
                 space: Space = Depends(get_space)) -> dict[str, Any]:
    # The per-workspace parts (skills, turns, the load gate, MCP servers) are the caller's own.
    upstream = await services.upstream.health()
    sandbox = services.tools.sandbox_info
    return {
        # Degraded, not down: without the upstream or without sandboxed execution (the reason is
        # in sandbox.reason) Ghost still serves what it can.
        "status": "ok" if upstream["reachable"] and sandbox.get("available", True) else "degraded",
        "version": __version__,
        "model": services.upstream.default_model,
        "models": services.upstream.models,
        "upstream": upstream,
        "embedded_model": services.bundled.status if services.bundled is not None else None,
        "sandbox": sandbox,
        "user": space.name,
        "skills": space.tools.skills.report(),
        "storage": str(settings_of(request).home),
        "uptime_s": round(time.monotonic() - services.started_at, 1),
        "in_flight_turns": space.chat.in_flight_turns,
        "workspace_load_waiting": space.workspace.gate.load_waiting,
        "event_loop_lag": services.loop_lag.report(),
        "context_window": services.context.info(),
        "mcp": space.mcp.tools.info(),
    }
