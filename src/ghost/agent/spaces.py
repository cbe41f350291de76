"""Every user's workspace with what runs on it: the per-user half of Ghost's services.

A `Space` is one user's sandbox folder and stores (`Workspace`), its tools (its own sandbox
executor, bound to that folder only, and its own skills), its MCP servers and `/mcp` endpoint, its
context memos, its chat service and its limits. The built-in admin's is built at start (today's
single workspace); any other user's on its first request, then kept open (bounded in number,
closed when idle) by `Spaces`. What is shared by all users is only what holds no user's data: the
upstream, the learned context window, the server-wide turn limiter, the database connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

from ghost.agent.context_services import ContextServices
from ghost.agent.limits import TurnLimiter
from ghost.agent.service import ChatService
from ghost.agent.turn import TurnServices
from ghost.agent.user_limits import LimitValues, SharedTurns, UserLimits
from ghost.config import Settings
from ghost.errors import InsufficientStorage
from ghost.llm.upstream import HttpUpstream
from ghost.mcp.setup import McpServices, start_mcp
from ghost.observe import Telemetry
from ghost.sandbox import fspool
from ghost.sandbox.base import Executor
from ghost.store.db import ADMIN, Database
from ghost.store.summaries import Summaries
from ghost.store.users import User, Users
from ghost.tools.setup import Toolbox, start_tools
from ghost.workspace.layout import reset_tmp_dir
from ghost.workspace.follow import LoadFollower
from ghost.workspace.service import WORKSPACES_DIR, Workspace, user_workspace

log = logging.getLogger("ghost.users")
IDLE_CHECK_S = 30.0
RECENT_S = 5.0


@dataclass
class Space:
    user: User  # refreshed on every request: a changed limit applies at once
    workspace: Workspace
    tools: Toolbox
    mcp: McpServices
    context: ContextServices
    chat: ChatService
    limits: UserLimits
    last_used: float = field(default_factory=time.monotonic)
    closing: asyncio.Event = field(default_factory=asyncio.Event)  # set: its task closes it
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def name(self) -> str:
        return self.workspace.name

    @property
    def busy(self) -> bool:
        return self.workspace.gate.readers > 0 or self.workspace.gate.exclusive_held or self.chat.in_flight_turns > 0


@dataclass
class SpaceParts:
    """What every space is built from (built once at start by ghost.app)."""

    settings: Settings
    upstream: HttpUpstream
    db: Database
    users: Users
    executor: Executor  # the admin's; other users' are `executor.with_root(their folder)`
    context: ContextServices  # the admin's; others share its window and counter only
    limiter: TurnLimiter  # the server-wide bound on turns
    telemetry: Telemetry  # the app's metrics and tracing


def limit_values(settings: Settings, user: User) -> LimitValues:
    """The limits in force for `user`: its overrides, else the settings; none for admins."""
    if user.role == "admin":
        return LimitValues(0, 0, 0)
    own = user.limits
    return LimitValues(own.get("max_concurrent_turns", settings.user_max_concurrent_turns),
                       own.get("turns_per_minute", settings.user_turns_per_minute),
                       own.get("sandbox_bytes", settings.user_sandbox_bytes))


async def open_space(parts: SpaceParts, user: User, workspace: Workspace, stack: AsyncExitStack,
                     tools: Toolbox | None = None, mcp: McpServices | None = None,
                     context: ContextServices | None = None) -> Space:
    """Start everything of one user's workspace; the admin's passes the parts already started."""
    settings, root = parts.settings, workspace.sandbox_root
    if tools is None:
        await fspool.run(reset_tmp_dir, root)  # left-overs of a killed save/load/upload
        executor = parts.executor.with_root(root)
        if not executor.isolated:
            log.warning("!!! user %s's workspace runs on the %s backend, which does NOT isolate: its code "
                        "can read every other user's files and see their processes !!!", user.name, executor.name)
        tools = await start_tools(settings, root, workspace.scratchpad, stack, executor=executor,
                                  telemetry=parts.telemetry if parts.telemetry.observing else None)
        workspace.after_load.append(tools.skills.scan)
    if mcp is None:
        mcp_home = settings.home / WORKSPACES_DIR / workspace.name / "mcp"
        mcp = await start_mcp(settings, tools.executor, root, workspace.gate, tools.registry, stack, mcp_home)
        workspace.after_load.append(mcp.tools.restart_in_sandbox_dir)
    if context is None:
        context = parts.context.for_workspace(Summaries(parts.db, workspace.name), root)
        workspace.after_load.append(context.forget_saved)
    space_user = user
    # With replicas, a user's turn limits are counted in the shared store, so they hold across them.
    shared = SharedTurns(parts.db, lambda: space.user.name) if settings.replica_id else None
    limits = UserLimits(lambda: limit_values(settings, space.user), root, settings.sandbox_walk_max_depth,
                        shared=shared)
    workspace.room_checks.append(limits.check_disk)
    workspace.on_written.append(limits.forget_usage)

    follower = None
    if settings.replica_id:  # replicas share the folder: follow loads and skills made elsewhere
        follower = LoadFollower(workspace)
        await follower.start()

    async def count_turn() -> None:
        if follower is not None and not await follower.check():
            await tools.skills.rescan_if_changed()
        try:
            await parts.users.count_turn(space.user.name)
        except InsufficientStorage:  # a counter is not worth failing a turn for
            pass

    # The turn's upstream calls are observed at the interface (ghost.observe), nothing inside it.
    observing = parts.telemetry.observing
    turn_upstream = parts.telemetry.upstream(parts.upstream) if observing else parts.upstream
    turns = TurnServices(settings, turn_upstream, tools.registry, context, tools.sandbox_network)
    chat = ChatService(settings, parts.upstream, turns, workspace.history, workspace.gate, limiter=parts.limiter,
                       user_limits=limits, on_turn=count_turn,
                       observer=parts.telemetry.turns_of(user.name) if observing else None)
    space = Space(space_user, workspace, tools, mcp, context, chat, limits)
    return space


class Spaces:
    """Users' spaces by name: opened on first use, at most `workspaces_max_open` besides the
    admin's, closed after `workspace_idle_s` without a request (never while a turn, tool call,
    upload or load holds its gate)."""

    def __init__(self, parts: SpaceParts, admin: Space) -> None:
        self.parts = parts
        self.admin = admin
        self._open: dict[str, Space] = {}
        self._opening: dict[str, asyncio.Future[Space]] = {}
        self._runners: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def get(self, user: User) -> Space:
        """`user`'s space, opened if it is not (concurrent first requests share one opening)."""
        if user.name == ADMIN:
            space = self.admin
        elif (space := self._open.get(user.name)) is None:
            opening = self._opening.get(user.name)
            if opening is None:
                opening = asyncio.get_running_loop().create_future()
                self._opening[user.name] = opening
                self._runners.add(asyncio.create_task(self._run_space(user, opening)))
            space = await asyncio.shield(opening)
        space.user = user
        space.last_used = time.monotonic()
        return space

    def peek(self, name: str) -> Space | None:
        return self.admin if name == ADMIN else self._open.get(name)

    async def _run_space(self, user: User, opening: asyncio.Future[Space]) -> None:
        """Open one space, keep it until it is closed, then close it — all in this one task: the
        MCP endpoint's task group must be left by the task that entered it."""
        space: Space | None = None
        try:
            async with AsyncExitStack() as stack:
                try:
                    workspace = await fspool.run(user_workspace, self.parts.settings, self.parts.db, user.name)
                    space = await open_space(self.parts, user, workspace, stack)
                except BaseException as exc:
                    opening.set_exception(exc if isinstance(exc, Exception) else RuntimeError("Ghost is stopping"))
                    opening.exception()  # retrieved: its waiter may be gone
                    raise
                self._open[user.name] = space
                opening.set_result(space)
                log.info("opened the workspace of user %s (%d open)", user.name, len(self._open))
                await self._close_over_cap(keep=user.name)
                await space.closing.wait()
        except Exception:
            log.exception("the workspace of user %s failed", user.name)
        finally:
            if self._opening.get(user.name) is opening:
                del self._opening[user.name]
            if space is not None:
                if self._open.get(user.name) is space:
                    del self._open[user.name]
                space.closed.set()
            self._runners.discard(asyncio.current_task())  # type: ignore[arg-type]

    async def close(self, name: str) -> None:
        """Close `name`'s space now (its user was deleted, or it is idle), and wait until it is."""
        space = self._open.pop(name, None)
        if space is not None:
            space.closing.set()
            await space.closed.wait()

    async def _close_over_cap(self, keep: str) -> None:
        # Not one used in the last seconds either: a request may hold it without its gate yet.
        recent = time.monotonic() - RECENT_S
        idle = sorted((s for s in self._open.values() if not s.busy and s.name != keep and s.last_used < recent),
                      key=lambda s: s.last_used)
        while len(self._open) > self.parts.settings.workspaces_max_open and idle:
            space = idle.pop(0)
            self._open.pop(space.name, None)
            space.closing.set()  # its own task closes it

    async def close_idle(self) -> None:
        cutoff = time.monotonic() - self.parts.settings.workspace_idle_s
        for space in [s for s in self._open.values() if s.last_used < cutoff and not s.busy]:
            log.info("closing the idle workspace of user %s", space.name)
            await self.close(space.name)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(min(IDLE_CHECK_S, self.parts.settings.workspace_idle_s))
            try:
                await self.close_idle()
            except Exception:  # one failed close must not stop the sweeping
                log.exception("closing idle workspaces failed")

    @property
    def open_count(self) -> int:
        return len(self._open)

    async def aclose(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for name in list(self._open):
            await self.close(name)
        for task in list(self._runners):  # any still opening
            task.cancel()
        await asyncio.gather(*self._runners, return_exceptions=True)
