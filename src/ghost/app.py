"""The app factory: route table, middleware, and the lifespan that owns every live resource."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute
from starlette.middleware import Middleware

from ghost import __version__
from ghost.api import chat, health, info, ollama, openapi, proxy, sessions, workspace
from ghost.agent.context_services import start_context
from ghost.agent.service import ChatService
from ghost.api.error_shape import OllamaErrorShape
from ghost.api.boundary import BoundaryMiddleware, OriginRule
from ghost.api.errors import install_error_handlers
from ghost.api.middleware import BodyLimitMiddleware, RequestIdMiddleware
from ghost.config import Settings
from ghost.keyfile import with_resolved_key
from ghost.llm.client import make_http_client
from ghost.llm.embedded import start_embedded_model
from ghost.mcp import endpoint as mcp_endpoint
from ghost.mcp.setup import start_mcp
from ghost.runtime import Runtime
from ghost.sandbox import fspool
from ghost.store.db import Database
from ghost.tools.setup import start_tools
from ghost.workspace.gate import WorkspaceGate
from ghost.workspace.layout import reset_tmp_dir

log = logging.getLogger("ghost")

# Routers in match order. The catch-all proxy must stay last.
ROUTERS = [info.router, ollama.router, ollama.keyed, health.router, chat.router, sessions.router, workspace.router,
           proxy.router]


async def discover_models(http: httpx.AsyncClient, upstream_url: str, headers: dict[str, str]) -> list[str]:
    """The upstream's model ids, or [] if it cannot tell us right now."""
    if not upstream_url:
        return []
    try:
        response = await http.get(f"{upstream_url}/v1/models", headers=headers, timeout=3.0)
        return [str(m["id"]) for m in response.json().get("data", []) if "id" in m]
    except (httpx.HTTPError, ValueError, AttributeError, TypeError, KeyError):
        return []


async def build_runtime(settings: Settings, stack: AsyncExitStack) -> Runtime:
    http = await stack.enter_async_context(make_http_client(settings))
    db = await Database(settings.database_path).open()
    stack.push_async_callback(db.close)
    sandbox_root = settings.sandbox_path
    sandbox_root.mkdir(parents=True, exist_ok=True)
    runtime = Runtime(settings=settings, http=http, upstream_url=settings.upstream_url, models=[],
                      db=db, sandbox_root=sandbox_root, gate=WorkspaceGate(settings.workspace_wait_s))
    fspool.start_pool(settings.sandbox_file_threads)  # the sandbox file layer's own threads
    stack.callback(fspool.stop_pool)
    await fspool.run(reset_tmp_dir, sandbox_root)  # left-overs of a killed save/load/upload
    # Subsystems start here in dependency order; each pushes its own cleanup onto `stack`.
    registry = await start_tools(runtime, stack)
    if not runtime.upstream_url:  # after the tools: its self-test sends their schemas
        await start_embedded_model(runtime, stack)  # the bundled model becomes the upstream
    await start_mcp(runtime, stack, registry)  # waits at most --mcp-start-timeout for the servers
    upstream = settings.model_copy(update={"upstream_url": runtime.upstream_url})  # bundled model's too
    if pool := proxy.make_pool(upstream):  # the catch-all proxy's own upstream session
        runtime.extras[proxy.POOL_KEY] = pool
        stack.push_async_callback(pool.aclose)
    discovered = await discover_models(http, runtime.upstream_url, runtime.upstream_headers())
    embedded = runtime.extras.get("embedded_info") or {}  # a failed bundled model lists no models
    runtime.models = settings.models or discovered[:1] or [embedded.get("model") or "ghost"]
    await start_context(runtime)  # the model's context window, asked of the upstream once
    runtime.agent = ChatService(runtime)
    runtime.loop_lag.start()
    stack.push_async_callback(runtime.loop_lag.stop)
    return runtime


def _lifespan(settings: Settings) -> Callable[[FastAPI], AsyncIterator[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.home.mkdir(parents=True, exist_ok=True)
        resolved = await asyncio.to_thread(with_resolved_key, settings)  # the generated key, if unset
        async with AsyncExitStack() as stack:
            app.state.runtime = await build_runtime(resolved, stack)
            log.info("Ghost %s ready; upstream %s; models %s", __version__,
                     app.state.runtime.upstream_url or "(none)", app.state.runtime.models)
            yield

    return lifespan


def own_paths() -> frozenset[str]:
    """Paths Ghost answers itself; a wrong method on one is a 405, not a proxied request."""
    routes = (route for router in ROUTERS for route in router.routes)
    return frozenset(r.path for r in routes if isinstance(r, APIRoute) and "{" not in r.path)


def body_limits(app: FastAPI, settings: Settings) -> Callable[[str], int]:
    """Path -> largest body accepted. Ghost's own routes take JSON; everything else is proxied."""
    special: dict[str, int] = {}
    own = app.state.own_paths

    def limit_for(path: str) -> int:
        if path in special:
            return special[path]
        return settings.max_request_bytes if path in own else settings.proxy_max_body_bytes

    app.state.body_limit_overrides = special
    return limit_for


# Routes anyone may call without the key: their bodies must stay small (nobody vouches for them).
UNAUTHENTICATED_PATHS = ("/", "/api/show", "/api/tags", "/api/version", "/api/ps")


def unauthenticated_body_limits(settings: Settings) -> dict[str, int]:
    limit = min(settings.unauth_max_body_bytes, settings.max_request_bytes)
    return {path: limit for path in UNAUTHENTICATED_PATHS}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(title="Ghost", version=__version__, lifespan=_lifespan(settings),
                  docs_url="/docs", redoc_url=None)
    app.state.settings = settings
    app.router.routes.append(mcp_endpoint.route())  # before the catch-all proxy
    for router in ROUTERS:
        app.include_router(router)
    app.state.own_paths = own_paths()
    openapi.install(app)  # the finished /openapi.json (security, streams, error shapes)
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, limit_for=body_limits(app, settings))
    app.state.body_limit_overrides.update(workspace.body_limits(settings))
    app.state.body_limit_overrides.update(unauthenticated_body_limits(settings))
    app.state.body_limit_overrides[mcp_endpoint.PATH] = settings.max_request_bytes
    app.add_middleware(
        CORSMiddleware, allow_credentials=False, allow_methods=["*"], allow_headers=["*"],
        expose_headers=["X-Request-ID", "X-Ghost-Session"], **OriginRule(settings).cors_options(),
    )
    app.add_middleware(BoundaryMiddleware, settings=settings)  # Host and Origin: before routing
    app.add_middleware(RequestIdMiddleware)
    # Outermost: every error reply, whichever layer raised it, in the shape its path's clients read.
    app.add_middleware(OllamaErrorShape)
    # Innermost (after the error handlers' own): paths no route serves skip FastAPI's routing.
    app.user_middleware.append(Middleware(proxy.ProxyFastPath))
    return app
