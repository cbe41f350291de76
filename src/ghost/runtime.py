"""The live objects one Ghost process owns, built in the app's lifespan and shared by routes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from pathlib import Path

from ghost.config import Settings
from ghost.looplag import LoopLagMonitor
from ghost.store.db import Database
from ghost.tools.base import ToolRegistry
from ghost.workspace.gate import WorkspaceGate


@dataclass
class Runtime:
    settings: Settings
    http: httpx.AsyncClient
    # Base URL of the upstream in use (configured, or the bundled model once it runs); "" if none.
    upstream_url: str
    models: list[str]
    db: Database
    sandbox_root: Path
    started_at: float = field(default_factory=time.monotonic)
    in_flight_turns: int = 0
    loop_lag: LoopLagMonitor = field(default_factory=LoopLagMonitor)
    agent: Any = None  # ghost.agent.service.ChatService, set once the runtime is built
    tools: ToolRegistry | None = None  # set by ghost.tools.setup.start_tools
    # Agent turns hold it shared (`async with gate.turn()`), a workspace load exclusively.
    gate: WorkspaceGate = field(default_factory=WorkspaceGate)
    # Called after a workspace load has swapped files and state in (e.g. to re-scan skills).
    after_workspace_load: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Filled by later subsystems (sandbox, store, agent, embedded model); typed there.
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def default_model(self) -> str:
        return self.models[0]

    def upstream_headers(self) -> dict[str, str]:
        key = self.settings.upstream_api_key
        return {"authorization": f"Bearer {key}"} if key else {}
