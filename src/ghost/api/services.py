"""The services the routes use, built once by `ghost.app` at start, and one FastAPI dependency each.

A route asks for the one service it needs; the per-user ones (`Depends(get_workspace)`,
`get_chat`) are the caller's and live in `ghost.api.caller`. Nothing below `api/` sees this
container: each service was handed only its own parts when it was built.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from fastapi import Request
from starlette.requests import HTTPConnection

from ghost.agent.context_services import ContextServices
from ghost.agent.service import ChatService
from ghost.agent.spaces import Spaces
from ghost.config import Settings
from ghost.errors import GhostError
from ghost.llm.embedded import BundledModel
from ghost.llm.transport import UpstreamSession
from ghost.llm.upstream import HttpUpstream
from ghost.looplag import LoopLagMonitor
from ghost.mcp.setup import McpServices
from ghost.tools.setup import Toolbox
from ghost.store.users import Users
from ghost.workspace.service import Workspace


@dataclass
class Services:
    upstream: HttpUpstream
    chat: ChatService
    workspace: Workspace
    tools: Toolbox
    context: ContextServices
    mcp: McpServices
    bundled: BundledModel | None  # the bundled model, when it is the upstream
    loop_lag: LoopLagMonitor
    users: Users
    spaces: Spaces  # every user's workspace and what runs on it (the admin's: chat, workspace... above)
    started_at: float = field(default_factory=time.monotonic)

    @property
    def proxy_pool(self) -> UpstreamSession | None:
        """The catch-all proxy's connections to the upstream: the upstream's own session, so the
        proxy and the chat path share one pool (None without an upstream)."""
        return self.upstream.session


class NotReady(GhostError):
    status_code = 503
    error_type = "unavailable"


def services_of(request: Request) -> Services:
    services = getattr(request.app.state, "services", None)
    if services is None:  # a request that raced the start or the shutdown
        raise NotReady("Ghost is starting or stopping; try again")
    return services


async def get_services(request: Request) -> Services:
    return services_of(request)


def settings_of(request: HTTPConnection) -> Settings:
    """The settings in force, the one way anything under api/ reads them: `app.state.settings`, set
    once by `create_app` (checked, the key resolved) and the very object the services were built on."""
    settings: Settings = request.app.state.settings
    return settings


async def get_settings(request: Request) -> Settings:
    return settings_of(request)


async def get_upstream(request: Request) -> HttpUpstream:
    return services_of(request).upstream

