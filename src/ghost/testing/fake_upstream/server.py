"""`FakeUpstream`: the fake's state (script, recorded requests, counters, holds) and its server,
uvicorn on loopback in a thread of its own, so that a test can script and inspect it directly."""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ghost.testing.fake_upstream.holds import Holds
from ghost.testing.fake_upstream.openai_routes import OpenAIRoutes
from ghost.testing.fake_upstream.proxy_routes import ProxyTestRoutes
from ghost.testing.fake_upstream.script import Reply, next_reply
from ghost.testing.fake_upstream.window import ContextWindow

DEFAULT_MODEL = "fake-model"
MAX_RECORDED = 10_000


class FakeUpstream:
    def __init__(self, model: str = DEFAULT_MODEL, keep_alive: float = 5.0) -> None:
        self.model = model
        self.context: ContextWindow | None = None
        self.responder: Callable[[dict[str, Any]], Reply] | None = None
        self.cut_requests = 0  # Ollama-style silent cuts made
        self.keep_alive = keep_alive  # seconds an idle client connection is kept open
        self.replies: deque[Reply] = deque()
        self.replies_for: dict[str, deque[Reply]] = {}  # by text in the last user message
        self.requests: list[dict[str, Any]] = []
        self.default_reply = Reply()
        self.serves_embeddings = True  # False: /v1/embeddings answers 404, as many chat-only servers do
        self.open_streams = 0  # chat streams currently being sent
        self.closed_early = 0  # chat streams whose client went away before the end
        self.holds = Holds()  # /hold/{name} and Reply(hold=name)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # --- scripting ---------------------------------------------------------------------------
    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def script_for(self, text: str, *replies: Reply) -> None:
        """Queue replies for requests whose last user message contains `text` (before `script`'s)."""
        self.replies_for.setdefault(text, deque()).extend(replies)

    def reset(self) -> None:
        self.replies.clear()
        self.replies_for.clear()
        self.requests.clear()
        self.closed_early = 0
        self.context = None
        self.responder = None
        self.cut_requests = 0
        self.serves_embeddings = True
        self.release_all()

    def reply_for(self, body: dict[str, Any]) -> Reply:
        """The reply to this chat request: the responder's, else the script's next, else the default."""
        if self.responder is not None:
            return self.responder(body)
        return next_reply(body, self.replies, self.replies_for, self.default_reply)

    # --- held streams (/hold/{name}) ---------------------------------------------------------
    def release(self, name: str) -> None:
        """Let the held stream `name` finish (callable from any thread, before or after it starts)."""
        self.holds.release(name)

    def release_all(self) -> None:
        self.holds.release_all()

    def hold_state(self, name: str) -> str:
        """"waiting" (not requested yet), "open", "finished" or "closed_early"."""
        return self.holds.state(name)

    def wait_hold_state(self, name: str, *states: str, timeout: float = 60.0) -> str:
        """Poll until the held stream reaches one of `states`; returns the state it ended in."""
        return self.holds.wait_state(name, *states, timeout=timeout)

    # --- what it was sent --------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def chat_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"] == "/v1/chat/completions"]

    def record(self, request: Request, body: Any) -> None:
        if len(self.requests) >= MAX_RECORDED:  # long benchmarks: keep memory flat
            del self.requests[: MAX_RECORDED // 2]
        self.requests.append({
            "method": request.method, "path": request.url.path, "query": request.url.query,
            "headers": dict(request.headers), "body": body,
            "header_list": request.headers.items(),  # with repeats, which `headers` folds
            "client_port": request.client.port if request.client else None,  # one per connection
        })

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self, port: int = 0) -> "FakeUpstream":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app(), log_level="warning", access_log=False, lifespan="off",
                                timeout_keep_alive=self.keep_alive)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)

    # --- the ASGI app --------------------------------------------------------------------------
    def app(self) -> Starlette:
        return Starlette(routes=[
            *OpenAIRoutes(self).routes(),
            # Scripting from another process (`python -m ghost.testing.fake_upstream`).
            Route("/_fake/script", self._script, methods=["POST"]),
            Route("/_fake/reset", self._reset, methods=["POST"]),
            Route("/_fake/requests", self._requests, methods=["GET"]),
            *ProxyTestRoutes(self).routes(),
        ])

    async def _script(self, request: Request) -> Response:
        """Queue the replies: for any request, or (`?for=text`) for requests whose last user
        message contains `text`, as `script_for` does."""
        items = await request.json()
        if (text := request.query_params.get("for")) is not None:
            self.script_for(text, *(Reply(**item) for item in items))
        else:
            self.script(*(Reply(**item) for item in items))
        return JSONResponse({"queued": len(self.replies)})

    async def _reset(self, request: Request) -> Response:
        self.reset()
        return JSONResponse({"ok": True})

    async def _requests(self, request: Request) -> Response:
        return JSONResponse(self.requests)
