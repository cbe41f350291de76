"""Probes for a load balancer or an orchestrator: keyless, cheap, and honest about draining.

`GET /api/health/live`: the process answers (restart it if not). `GET /api/health/ready`: send it
requests — the store answers a trivial query, sandboxed execution is available, and Ghost is not
draining. On SIGTERM (with --drain-seconds) readiness turns 503 first, while Ghost still serves, so
the balancer moves new requests elsewhere before the listener closes (ghost.cli).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ghost.api import openapi

router = APIRouter()
READY_STORE_TIMEOUT_S = 2.0  # a store slower than this to answer SELECT 1 is not ready for requests


class Readiness:
    """Set by the SIGTERM handler (ghost.cli); read by the ready probe. A plain flag: the handler runs
    on the event loop's thread between two steps, and only ever sets it."""

    def __init__(self) -> None:
        self.draining = False

    def drain(self) -> None:
        self.draining = True


@router.get("/api/health/live", summary="Liveness probe (keyless)", **openapi.LIVE)
async def live() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/api/health/ready", summary="Readiness probe for a load balancer (keyless)", **openapi.READY)
async def ready(request: Request) -> JSONResponse:
    readiness: Readiness = request.app.state.readiness
    services = getattr(request.app.state, "services", None)
    if readiness.draining:
        return _answer("draining", {})
    if services is None:
        return _answer("starting", {})
    checks = {"store": await _store_answers(services.workspace.db),
              "sandbox": bool(services.tools.sandbox_info.get("available", True))}
    return _answer("ready" if all(checks.values()) else "unavailable", checks)


async def _store_answers(db: Any) -> bool:
    try:
        async with asyncio.timeout(READY_STORE_TIMEOUT_S):
            await db.ping()
        return True
    except Exception:  # any failure to answer is "not ready": the reason is in the store's log
        return False


def _answer(status: str, checks: dict[str, bool]) -> JSONResponse:
    return JSONResponse({"status": status, "checks": checks}, status_code=200 if status == "ready" else 503)
