"""GET /api/health: is Ghost able to do its job, and with what."""

from __future__ import annotations

import time
from typing import Any

import httpx
from fastapi import APIRouter, Depends

from ghost import __version__
from ghost.agent.context_services import context_info
from ghost.api import openapi
from ghost.api.auth import require_key
from ghost.api.deps import get_runtime
from ghost.mcp.setup import MCP_KEY
from ghost.runtime import Runtime

router = APIRouter()
PROBE_TIMEOUT_S = 3.0


async def probe_upstream(runtime: Runtime) -> dict[str, Any]:
    if not runtime.upstream_url:
        return {"url": "", "reachable": False, "error": "no upstream configured"}
    started = time.perf_counter()
    try:
        response = await runtime.http.get(
            f"{runtime.upstream_url}/v1/models", headers=runtime.upstream_headers(), timeout=PROBE_TIMEOUT_S
        )
    except httpx.HTTPError as exc:
        return {"url": runtime.upstream_url, "reachable": False, "error": type(exc).__name__}
    latency_ms = round((time.perf_counter() - started) * 1000, 2)
    return {"url": runtime.upstream_url, "reachable": response.status_code < 500,
            "status": response.status_code, "latency_ms": latency_ms}


@router.get("/api/health", dependencies=[Depends(require_key)], summary="Health and configuration",
             **openapi.HEALTH)
async def health(runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    upstream = await probe_upstream(runtime)
    sandbox = runtime.extras.get("sandbox_info", {"backend": "none", "isolated": False})
    return {
        "status": "ok" if upstream["reachable"] else "degraded",
        "version": __version__,
        "model": runtime.default_model,
        "models": runtime.models,
        "upstream": upstream,
        "embedded_model": runtime.extras.get("embedded_info"),
        "sandbox": sandbox,
        "skills": skills.report() if (skills := runtime.extras.get("skills")) is not None else None,
        "storage": str(runtime.settings.home),
        "uptime_s": round(time.monotonic() - runtime.started_at, 1),
        "in_flight_turns": runtime.in_flight_turns,
        "workspace_load_waiting": runtime.gate.load_waiting,
        "event_loop_lag": runtime.loop_lag.report(),
        "context_window": context_info(runtime),
        "mcp": mcp.info() if (mcp := runtime.extras.get(MCP_KEY)) is not None else None,
    }
