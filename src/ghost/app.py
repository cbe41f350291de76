"""The app factory: route table, middleware, and the lifespan that owns every live resource."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.middleware import Middleware

from ghost import __version__
from ghost.api import chat, health, info, ollama, openapi, probes, proxy, sessions, users as users_api, workspace
from ghost.agent.context_services import start_context
from ghost.agent.selftest import self_test
from ghost.agent.limits import TurnLimiter
from ghost.agent.spaces import SpaceParts, Spaces, open_space
from ghost.agent.turn import TurnServices
from ghost.api import mcp as mcp_endpoint
from ghost.api.error_shape import RelayedErrorShape
from ghost.api.protocols.anthropic import routes as anthropic
from ghost.api.boundary import BoundaryMiddleware, OriginRule
from ghost.api.errors import install_error_handlers
from ghost.api.chat_fast_path import ChatFastPath, chat_routes
from ghost.api.middleware import BodyLimit, RequestIdMiddleware
from ghost.api.route_entry import RouteEntry
from ghost.api.route_table import ROUTES, RouteTable
from ghost.api import metrics as metrics_api
from ghost.api.observe import ObserveMiddleware
from ghost.api.protocols.responses import route as responses
from ghost.api.services import Services
from ghost.config import Settings
from ghost.heap import freeze_startup_heap
from ghost.keyfile import settings_in_force
from ghost.llm.client import make_http_client
from ghost.llm.embedded import open_embedded_model
from ghost.llm.endpoint import UpstreamEndpoint
from ghost.llm.upstream import open_upstream
from ghost.looplag import LoopLagMonitor
from ghost.mcp.setup import start_mcp
from ghost.observe import Telemetry
from ghost.sandbox import fspool
from ghost.store.db import ADMIN
from ghost.store.users import Users
from ghost.tools.setup import start_tools
from ghost.workspace.layout import reset_tmp_dir, use_replica_scratch
from ghost.workspace.service import open_workspace

log = logging.getLogger("ghost")

# Routers in match order. The catch-all proxy must stay last.
ROUTERS = [info.router, ollama.keyed, health.router, probes.router, chat.router, anthropic.router, responses.router,
           sessions.router, workspace.router, users_api.router, proxy.router]


async def build_services(settings: Settings, stack: AsyncExitStack, telemetry: Telemetry | None = None) -> Services:
    """Start every service in dependency order; each pushes its own cleanup onto `stack`."""
    telemetry = telemetry or Telemetry(settings)
    observed = telemetry if telemetry.observing else None
    http = await stack.enter_async_context(make_http_client(settings))
    fspool.start_pool(settings.sandbox_file_threads)  # the sandbox file layer's own threads
    stack.callback(fspool.stop_pool)
    use_replica_scratch(settings.replica_id)  # before anything uses a workspace's scratch space
    workspace = await open_workspace(settings)  # the built-in admin's: today's workspace
    stack.push_async_callback(workspace.db.close)
    await fspool.run(reset_tmp_dir, workspace.sandbox_root)  # left-overs of a killed save/load/upload
    tools = await start_tools(settings, workspace.sandbox_root, workspace.scratchpad, stack, telemetry=observed)
    workspace.after_load.append(tools.skills.scan)
    bundled = None if settings.upstream_url else await open_embedded_model(settings, http)
    # The upstream: the configured one, or the bundled model (its address is fixed before it starts).
    # Its one aiohttp session serves the chat path and the catch-all proxy alike.
    upstream = open_upstream(settings, http, bundled.endpoint, bundled.check_available) if bundled \
        else open_upstream(settings, http, UpstreamEndpoint.configured(settings))
    stack.push_async_callback(upstream.aclose)
    if bundled is not None:  # the bundled model becomes the upstream; its self-test sends Ghost's tools
        turns = TurnServices(settings, upstream, tools.registry, None, tools.sandbox_network)
        test = (lambda: self_test(turns, bundled.name, settings.embedded_self_test_timeout)) \
            if settings.embedded_self_test == "on" else None
        await bundled.start(stack, test)
    mcp = await start_mcp(settings, tools.executor, workspace.sandbox_root, workspace.gate, tools.registry, stack)
    workspace.after_load.append(mcp.tools.restart_in_sandbox_dir)
    await upstream.settle_models(settings.models, bundled.name if bundled else "ghost")
    bundled_size = bundled.server.spec.context_size if bundled else None
    context = await start_context(settings, upstream, workspace.db, workspace.sandbox_root, bundled_size)
    workspace.after_load.append(context.forget_saved)
    users = Users(workspace.db)
    stack.push_async_callback(users.aclose)  # before the database closes: the last turns' counts
    admin_user = await users.get(ADMIN)
    assert admin_user is not None  # made by the migration that added users
    parts = SpaceParts(settings, upstream, workspace.db, users, tools.executor, context,
                       TurnLimiter(settings.max_concurrent_turns, settings.turn_queue_timeout), telemetry)
    admin = await open_space(parts, admin_user, workspace, stack, tools, mcp, context)
    spaces = Spaces(parts, admin)
    spaces.start()
    stack.push_async_callback(spaces.aclose)
    loop_lag = LoopLagMonitor()
    loop_lag.start()
    stack.push_async_callback(loop_lag.stop)
    return Services(upstream, admin.chat, workspace, tools, context, mcp, bundled, loop_lag, users, spaces)


def _lifespan(settings: Settings) -> Callable[[FastAPI], AsyncIterator[None]]:
    """Starts the services on `settings`: the settings in force, which create_app also keeps as
    `app.state.settings` (one object, so the routes and the services read the same values)."""
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            telemetry: Telemetry = app.state.telemetry
            stack.push_async_callback(asyncio.to_thread, telemetry.shutdown)  # the spans still queued
            services = await build_services(settings, stack, telemetry)
            app.state.services = services
            log.info("Ghost %s ready; upstream %s; models %s", __version__,
                     services.upstream.url or "(none)", services.upstream.models)
            if getattr(app.state, "freeze_heap", False):  # set by `ghost serve` for its own process
                freeze_startup_heap()
            try:
                yield
            finally:
                del app.state.services

    return lifespan


def _fastapi_telemetry_off() -> dict[str, object]:
    """FastAPI's own OpenTelemetry instrumentation (its newer releases) switched off: Ghost makes its
    own server spans and HTTP metrics (`api/observe.py`), which FastAPI's would duplicate as soon as
    anything set a global provider, and asking whether one is set cost every request ~0.7 % of an
    agent turn's CPU (docs/benchmarks.md). Older releases have no such instrumentation, nor the keyword."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False, "operation_spans": False,
                          "auto_configure": False}}


def create_app(settings: Settings | None = None) -> FastAPI:
    """The Ghost app serving `settings` (default: from the environment). Raises StartRefused for a
    configuration that must not serve. The settings in force (the key resolved) are
    `app.state.settings`, the very object the services get: the one place anything reads them."""
    settings = settings_in_force(settings or Settings())
    app = FastAPI(title="Ghost", version=__version__, lifespan=_lifespan(settings),
                  docs_url="/docs", redoc_url=None, **_fastapi_telemetry_off())
    app.state.settings = settings
    app.state.readiness = probes.Readiness()  # turned to draining by SIGTERM (ghost.cli)
    app.state.telemetry = telemetry = Telemetry(settings)
    app.router.routes.append(mcp_endpoint.route())  # before the catch-all proxy
    served = [metrics_api.router_for(settings)] if telemetry.serves_metrics else []
    routers = [*ROUTERS[:-1], *served, ROUTERS[-1]]  # the proxy stays last
    for router in routers:
        app.include_router(router)
    # Each route's body cap and error shape: its entry in the one route table (ghost.api.route_table).
    app.state.routes = routes = RouteTable(ROUTES, settings)
    openapi.install(app)  # the finished /openapi.json (security, streams, error shapes)
    install_error_handlers(app)
    app.add_middleware(
        CORSMiddleware, allow_credentials=False, allow_methods=["*"], allow_headers=["*"],
        expose_headers=["X-Request-ID", "X-Ghost-Session"], **OriginRule(settings).cors_options(),
    )
    app.add_middleware(BoundaryMiddleware, settings=settings)  # Host and Origin: before routing
    if telemetry.observing:
        app.add_middleware(ObserveMiddleware, telemetry=telemetry)  # counts what the boundary refuses too
    app.add_middleware(RequestIdMiddleware)
    # Outermost: the proxy's relayed error replies in the shape of their path's clients (Ghost's own
    # errors are written in it already: ghost.api.error_shape).
    app.add_middleware(RelayedErrorShape)
    # Innermost, just outside the error handlers: the body cap, the last resort for unexpected errors,
    # then a chat route's handler or the proxy straight away, past FastAPI's routing (ghost.api.route_entry).
    chat_fast_path = ChatFastPath(chat_routes(app.router.routes, routes, settings))
    app.user_middleware.append(Middleware(RouteEntry, body_limit=BodyLimit(routes, settings), chat=chat_fast_path))
    return app
