"""A scripted OpenAI-compatible server for tests and benchmarks.

It is a real HTTP server (uvicorn on loopback), so everything between Ghost and it — pooling,
streaming, timeouts, disconnects — is exercised for real. Each chat-completion request takes the
next scripted `Reply` (or a default one); every request is recorded for assertions.

In-process:    fake = FakeUpstream().start(); fake.script(Reply(content="hi")); fake.url
Out-of-process: python -m ghost.testing.fake_upstream --port 9000
                then POST /_fake/script with a JSON list of Reply fields, GET /_fake/requests.

A chat request with `n` > 1 gets n choices (the scripted answer, then variants ending " (2)",
" (3)"...), and one with `logprobs: true` a made-up but stable log-probability for each piece, with
`top_logprobs` alternatives (`ReplyOptions`).
`/v1/embeddings` answers stable vectors made from each input's hash (`serves_embeddings = False`
turns it into a 404). Other routes, for proxy tests: `/echo/...` (any method) answers with what it received, hashing the
body as it streams in; `/sse/{n}` streams n events; `/bytes/{n}` sends n bytes; `/slow/{s}` waits.
A `ContextWindow` (`fake.context = ContextWindow(...)`) makes it count every chat request's tokens
(characters / `chars_per_token`, recorded as `tokens`) and refuse one that does not fit the way the
server `kind` does: llama.cpp's 400 `exceed_context_size_error`, vLLM's 400 "maximum context length",
or Ollama's silent cut of the oldest messages. It also answers that server's window probe
(`/props`, `/api/show`, `/v1/models` `max_model_len`) and llama.cpp's `/tokenize`. A `responder`
function, when set, picks each reply from the request instead of the script.
`/hold/{name}` sends one SSE event, then waits for `release(name)` before the last one (with
`?before=headers` it waits before answering at all); `hold_state(name)` tells whether that stream is
"open", "finished" or "closed_early" (the client went away). A chat `Reply(hold=name)` is held the
same way: after `hold_after` streamed chunks (or, unanswered, before a non-streamed reply), until
`release(name)`; `hold_state(name)` tells where it is. `script_for(text, ...)` queues replies
only for requests whose last user message contains `text`, so concurrent turns get their own
replies whatever order they arrive in. `/broken/{n}` sends n chunks (n SSE events
with `?type=sse`) and then breaks the connection. `/hop` answers with hop-by-hop and repeated headers; `/status/{code}` sends the request's body back with that status.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import socket
import threading
import time
import math
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ghost.api.streaming import WatchedStreamingResponse

DEFAULT_MODEL = "fake-model"
MAX_RECORDED = 10_000


@dataclass
class Reply:
    """One scripted answer to a chat-completion request."""

    content: str = "Hello from the fake upstream."
    chunks: list[str] | None = None  # explicit content pieces; default: content split into words
    reasoning: str | None = None  # streamed as delta.reasoning_content before the content
    tool_calls: list[dict[str, Any]] | None = None  # [{"name": ..., "arguments": {...} | "json"}]
    delay: float = 0.0  # seconds between streamed chunks
    first_delay: float = 0.0  # seconds before the response starts
    status: int = 200
    body: str | None = None  # raw body instead of a completion (with status and content_type)
    content_type: str = "application/json"
    usage: dict[str, int] | None = field(
        default_factory=lambda: {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    )
    fail_after: int | None = None  # break the connection after this many streamed chunks
    finish_reason: str | None = None
    raw_stream: str | None = None  # sent verbatim as the event-stream body instead of the chunks
    raw_then_break: bool = False  # after raw_stream, break the connection instead of ending cleanly
    # A misbehaving upstream, generated as it is sent (never held whole): {"kind": "content" |
    # "arguments" | "calls" | "line" | "data_lines", "size": n}: n bytes of answer text, n bytes of
    # one tool call's arguments, n tool calls, one n-byte line that never ends, or one event whose
    # `data:` lines (short ones) add up to n bytes and never end.
    flood: dict[str, Any] | None = None
    hold: str | None = None  # wait for release(hold) after `hold_after` streamed chunks (see below)
    hold_after: int = 0  # chunks sent before the hold; a non-streamed reply is held before it is sent
    when: str | None = None  # only for a request whose last user message is this text

    def pieces(self) -> list[str]:
        return self.chunks if self.chunks is not None else _words(self.content)


def _words(text: str) -> list[str]:
    """Split text into streamable pieces that join back to exactly the text."""
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)] if text else []


@dataclass
class ContextWindow:
    """A simulated context window (see the module docstring)."""

    tokens: int = 4096
    kind: Literal["llama.cpp", "vllm", "ollama", "silent"] = "llama.cpp"  # silent: no probe, no check
    chars_per_token: float = 4.0  # a little under: the client must calibrate its estimate
    tokenize: bool = True  # llama.cpp: serve /tokenize
    advertise: bool = True  # answer the window probe of `kind`
    ollama_num_ctx_parameter: bool = True  # Ollama /api/show: num_ctx in parameters, else model_info only
    ollama_default_ctx: int = 2048  # Ollama's window when a request sends no options.num_ctx

    def count_text(self, text: str) -> int:
        return math.ceil(len(text) / self.chars_per_token)

    def count_message(self, message: dict[str, Any]) -> int:
        content = message.get("content")
        parts = [content] if isinstance(content, str) else [
            p.get("text", "") for p in content or [] if isinstance(p, dict)]
        for call in message.get("tool_calls") or []:
            parts += [call["function"]["name"], str(call["function"].get("arguments", ""))]
        return self.count_text("\n".join(str(p) for p in parts)) + 4

    def count(self, body: dict[str, Any]) -> int:
        tools = self.count_text(json.dumps(body["tools"])) if body.get("tools") else 0
        return sum(self.count_message(m) for m in body.get("messages") or []) + tools


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
        self.holds: dict[str, dict[str, Any]] = {}  # /hold/{name}: {"state", "released": Event}
        self._holds_lock = threading.Lock()
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

    # --- held streams (/hold/{name}) ---------------------------------------------------------
    def _hold(self, name: str) -> dict[str, Any]:
        with self._holds_lock:
            return self.holds.setdefault(name, {"state": "waiting", "released": threading.Event()})

    def release(self, name: str) -> None:
        """Let the held stream `name` finish (callable from any thread, before or after it starts)."""
        self._hold(name)["released"].set()

    def release_all(self) -> None:
        with self._holds_lock:
            holds = list(self.holds.values())
            self.holds = {}
        for hold in holds:
            hold["released"].set()

    def hold_state(self, name: str) -> str:
        """"waiting" (not requested yet), "open", "finished" or "closed_early"."""
        return self._hold(name)["state"]

    def wait_hold_state(self, name: str, *states: str, timeout: float = 60.0) -> str:
        """Poll until the held stream reaches one of `states`; returns the state it ended in."""
        deadline = time.monotonic() + timeout
        while self.hold_state(name) not in states and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.hold_state(name)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def chat_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"] == "/v1/chat/completions"]

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
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/props", self._props, methods=["GET"]),
            Route("/tokenize", self._tokenize, methods=["POST"]),
            Route("/api/show", self._show, methods=["POST"]),
            Route("/v1/embeddings", self._embeddings, methods=["POST"]),
            Route("/_fake/script", self._script, methods=["POST"]),
            Route("/_fake/reset", self._reset, methods=["POST"]),
            Route("/_fake/requests", self._requests, methods=["GET"]),
            Route("/echo/{rest:path}", self._echo, methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]),
            Route("/sse/{n:int}", self._sse, methods=["GET", "POST"]),
            Route("/bytes/{n:int}", self._bytes, methods=["GET"]),
            Route("/slow/{seconds:float}", self._slow, methods=["GET", "POST"]),
            Route("/hold/{name}", self._held, methods=["GET", "POST"]),
            Route("/broken/{n:int}", self._broken, methods=["GET", "POST"]),
            Route("/hop", self._hop, methods=["GET"]),
            Route("/status/{code:int}", self._status, methods=["POST"]),
        ])

    def _record(self, request: Request, body: Any) -> None:
        if len(self.requests) >= MAX_RECORDED:  # long benchmarks: keep memory flat
            del self.requests[: MAX_RECORDED // 2]
        self.requests.append({
            "method": request.method, "path": request.url.path, "query": request.url.query,
            "headers": dict(request.headers), "body": body,
            "header_list": request.headers.items(),  # with repeats, which `headers` folds
            "client_port": request.client.port if request.client else None,  # one per connection
        })

    async def _models(self, request: Request) -> Response:
        self._record(request, None)
        entry: dict[str, Any] = {"id": self.model, "object": "model", "created": 0, "owned_by": "fake"}
        if self._advertises("vllm"):
            entry["max_model_len"] = self.context.tokens
        return JSONResponse({"object": "list", "data": [entry]})

    def _advertises(self, kind: str) -> bool:
        return self.context is not None and self.context.kind == kind and self.context.advertise

    async def _props(self, request: Request) -> Response:
        self._record(request, None)
        if not self._advertises("llama.cpp"):
            return JSONResponse({"error": "not found"}, status_code=404)
        return JSONResponse({"default_generation_settings": {"n_ctx": self.context.tokens}, "total_slots": 1})

    async def _tokenize(self, request: Request) -> Response:
        body = await request.json()
        self._record(request, None)
        if self.context is None or self.context.kind != "llama.cpp" or not self.context.tokenize:
            return JSONResponse({"error": "not found"}, status_code=404)
        return JSONResponse({"tokens": list(range(self.context.count_text(str(body.get("content", "")))))})

    async def _show(self, request: Request) -> Response:
        self._record(request, await request.json())
        if not self._advertises("ollama"):
            return JSONResponse({"error": "not found"}, status_code=404)
        window = self.context
        parameters = f"num_ctx {window.tokens}\nstop <|im_end|>" if window.ollama_num_ctx_parameter else "stop <|im_end|>"
        length = window.tokens if not window.ollama_num_ctx_parameter else 131072
        return JSONResponse({"parameters": parameters, "model_info": {
            "general.architecture": "llama", "llama.context_length": length}})

    def _over_window(self, body: dict[str, Any]) -> tuple[Response | None, int]:
        """The refusal a real server of this kind gives to a prompt too long (or None), and the count."""
        window = self.context
        assert window is not None
        if window.kind == "ollama":
            return None, self._ollama_cut(body, window)
        prompt = window.count(body)
        if window.kind == "llama.cpp" and prompt > window.tokens:
            return JSONResponse({"error": {
                "code": 400, "message": "the request exceeds the available context size, try increasing it",
                "type": "exceed_context_size_error", "n_prompt_tokens": prompt, "n_ctx": window.tokens}},
                status_code=400), prompt
        reply = int(body.get("max_tokens") or 0)
        if window.kind == "vllm" and prompt + reply > window.tokens:
            return JSONResponse({"object": "error", "message": (
                f"This model's maximum context length is {window.tokens} tokens. However, you requested "
                f"{prompt + reply} tokens ({prompt} in the messages, {reply} in the completion). Please "
                f"reduce the length of the messages or completion."), "type": "BadRequestError",
                "param": None, "code": 400}, status_code=400), prompt
        return None, prompt

    def _ollama_cut(self, body: dict[str, Any], window: ContextWindow) -> int:
        """Ollama's way: drop the oldest messages (the system prompt first) until the rest fits."""
        num_ctx = (body.get("options") or {}).get("num_ctx") or window.ollama_default_ctx
        messages = body.get("messages") or []
        while messages and window.count({**body, "messages": messages}) > num_ctx:
            messages = messages[1:]
        if len(messages) < len(body.get("messages") or []):
            self.cut_requests += 1
            body["messages_seen"] = messages
        return window.count({**body, "messages": messages})

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        """The first scripted reply meant for this request (a client's parallel background
        requests cannot take a reply scripted for what the user said), else the default."""
        said = _last_user_text(body).strip()
        for text, queued in self.replies_for.items():
            if queued and text in said:
                return queued.popleft()
        for reply in self.replies:
            if reply.when is None or reply.when == said:
                self.replies.remove(reply)
                return reply
        return self.default_reply

    async def _embeddings(self, request: Request) -> Response:
        body = await request.json()
        self._record(request, body)
        if not self.serves_embeddings:
            return JSONResponse({"error": {"message": "Not Found", "type": "not_found"}}, status_code=404)
        inputs = [body["input"]] if isinstance(body["input"], str) else body["input"]
        return JSONResponse({"object": "list", "model": body.get("model", self.model), "data": [
            {"object": "embedding", "index": i, "embedding": fake_embedding(text)} for i, text in enumerate(inputs)],
            "usage": {"prompt_tokens": sum(len(t.split()) for t in inputs), "total_tokens": 0}})

    async def _script(self, request: Request) -> Response:
        items = await request.json()
        self.script(*(Reply(**item) for item in items))
        return JSONResponse({"queued": len(self.replies)})

    async def _reset(self, request: Request) -> Response:
        self.reset()
        return JSONResponse({"ok": True})

    async def _requests(self, request: Request) -> Response:
        return JSONResponse(self.requests)

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self._record(request, body)
        if self.context is not None:
            refusal, tokens = self._over_window(body)
            self.requests[-1]["tokens"] = tokens
            if refusal is not None:
                return refusal
        reply = self._reply_for(body)
        if self.context is not None and reply.usage is not None:
            reply = Reply(**{**asdict(reply), "usage": {**reply.usage, "prompt_tokens": self.requests[-1]["tokens"]}})
        if reply.first_delay:
            await asyncio.sleep(reply.first_delay)
        if reply.hold and not (body.get("stream") and reply.hold_after):
            await self._wait_released(self._hold(reply.hold))
        if reply.body is not None:
            return Response(reply.body, status_code=reply.status, media_type=reply.content_type)
        if reply.status != 200:
            return JSONResponse({"error": {"message": "scripted failure", "type": "server_error"}},
                                status_code=reply.status)
        model = body.get("model", self.model)
        if reply.raw_stream is not None:
            return WatchedStreamingResponse(self._raw(reply), media_type="text/event-stream")
        if reply.flood is not None:
            return WatchedStreamingResponse(flood_stream(reply.flood["kind"], int(reply.flood["size"]), model),
                                            media_type="text/event-stream")
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            # Watched: notices Ghost hanging up at once, so `closed_early` is exact.
            return WatchedStreamingResponse(self._stream(reply, model, include_usage, ReplyOptions.of(body)),
                                            media_type="text/event-stream")
        return JSONResponse(completion(reply, model, ReplyOptions.of(body)))

    def _reply_for(self, body: dict[str, Any]) -> Reply:
        if self.responder is not None:
            return self.responder(body)
        return self._next_reply(body)

    async def _stream(self, reply: Reply, model: str, include_usage: bool, options: ReplyOptions):
        self.open_streams += 1
        finished = False
        try:
            if not reply.delay and reply.fail_after is None and not reply.hold:
                # As fast as possible: one write, so the fake is never the bottleneck of a benchmark.
                chunks = stream_chunks(reply, model, include_usage, options)
                yield b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks)
                yield b"data: [DONE]\n\n"
                finished = True
                return
            for index, chunk in enumerate(stream_chunks(reply, model, include_usage, options)):
                if reply.fail_after is not None and index >= reply.fail_after:
                    raise ConnectionAbortedError("scripted mid-stream failure")
                if reply.delay and index:
                    await asyncio.sleep(reply.delay)
                if reply.hold and reply.hold_after and index == reply.hold_after:
                    await self._wait_released(self._hold(reply.hold))
                yield f"data: {json.dumps(chunk)}\n\n".encode()
            yield b"data: [DONE]\n\n"
            finished = True
        finally:
            self.open_streams -= 1
            if not finished:
                self.closed_early += 1

    @staticmethod
    async def _raw(reply: Reply):
        yield reply.raw_stream.encode("utf-8", "surrogateescape") if reply.raw_stream else b""
        await asyncio.sleep(0.05)  # let the bytes leave before the connection ends
        if reply.raw_then_break:
            raise ConnectionAbortedError("scripted break after raw stream bytes")

    async def _echo(self, request: Request) -> Response:
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.stream():
            digest.update(chunk)
            size += len(chunk)
        self._record(request, {"sha256": digest.hexdigest(), "size": size})
        return JSONResponse({
            "method": request.method, "path": request.url.path, "query": request.url.query,
            "headers": dict(request.headers), "sha256": digest.hexdigest(), "size": size,
        }, headers={"x-upstream": "fake", "connection": "keep-alive"})

    async def _sse(self, request: Request) -> Response:
        n = request.path_params["n"]
        delay = float(request.query_params.get("delay", "0.05"))

        async def events():
            for i in range(n):
                yield f"data: {i}\n\n".encode()
                await asyncio.sleep(delay)

        return StreamingResponse(events(), media_type="text/event-stream")

    async def _bytes(self, request: Request) -> Response:
        n = request.path_params["n"]
        block = b"x" * 65536

        async def body():
            left = n
            while left > 0:
                yield block[: min(left, len(block))]
                left -= len(block)

        return StreamingResponse(body(), media_type="application/octet-stream",
                                 headers={"content-length": str(n)})

    async def _slow(self, request: Request) -> Response:
        await asyncio.sleep(request.path_params["seconds"])
        return JSONResponse({"slept": request.path_params["seconds"]})


    async def _held(self, request: Request) -> Response:
        name = request.path_params["name"]
        hold = self._hold(name)
        self._record(request, None)
        hold["state"] = "open"
        if request.query_params.get("before") == "headers":
            while not hold["released"].is_set():
                if await request.is_disconnected():
                    hold["state"] = "closed_early"
                    return Response(status_code=499)
                await asyncio.sleep(0.01)
            hold["state"] = "finished"
            return JSONResponse({"held": name})
        return StreamingResponse(self._held_events(hold), media_type="text/event-stream")

    @staticmethod
    async def _wait_released(hold: dict[str, Any]) -> None:
        """A held chat reply: "open" until released, "closed_early" if Ghost gave up first."""
        hold["state"] = "open"
        try:
            while not hold["released"].is_set():
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            hold["state"] = "closed_early"
            raise
        hold["state"] = "finished"

    @staticmethod
    async def _held_events(hold: dict[str, Any]):
        finished = False
        try:
            yield b"data: first\n\n"
            while not hold["released"].is_set():
                await asyncio.sleep(0.01)
            yield b"data: last\n\n"
            finished = True
        finally:
            hold["state"] = "finished" if finished else "closed_early"

    async def _broken(self, request: Request) -> Response:
        n = request.path_params["n"]
        sse = request.query_params.get("type") == "sse"

        async def body():
            for i in range(n):
                yield f"data: {i}\n\n".encode() if sse else b"b" * 1024
                await asyncio.sleep(0.01)
            raise ConnectionAbortedError("scripted broken body")

        return StreamingResponse(body(), media_type="text/event-stream" if sse else "application/octet-stream")

    async def _status(self, request: Request) -> Response:
        """The request's body and content type, sent back with the status `code` (an error reply)."""
        body = await request.body()
        self._record(request, None)
        return Response(body, status_code=request.path_params["code"],
                        media_type=request.headers.get("content-type", "text/plain"))

    async def _hop(self, request: Request) -> Response:
        response = Response(b"hop", media_type="text/plain")
        response.raw_headers += [
            (b"connection", b"keep-alive, x-hop-listed"), (b"x-hop-listed", b"1"),
            (b"keep-alive", b"timeout=5"), (b"proxy-authenticate", b"Basic"), (b"trailer", b"x-t"),
            (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2"), (b"x-upstream", b"fake"),
        ]
        return response


def _last_user_text(body: dict[str, Any]) -> str:
    users = [m for m in body.get("messages") or [] if isinstance(m, dict) and m.get("role") == "user"]
    return str(users[-1].get("content")) if users else ""


def fake_embedding(text: str, dimensions: int = 8) -> list[float]:
    """A stable vector for `text`: the same text always gets the same one."""
    digest = hashlib.sha256(text.encode()).digest()
    return [round(byte / 255, 6) for byte in digest[:dimensions]]


def _tool_call_entries(reply: Reply) -> list[dict[str, Any]]:
    entries = []
    for index, call in enumerate(reply.tool_calls or []):
        arguments = call.get("arguments", {})
        entries.append({
            "index": index, "id": call.get("id", f"call_{uuid.uuid4().hex[:8]}"), "type": "function",
            "function": {"name": call["name"],
                         "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments)},
        })
    return entries


def _finish_reason(reply: Reply) -> str:
    return reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")


def completion(reply: Reply, model: str, options: ReplyOptions | None = None) -> dict[str, Any]:
    options = options or ReplyOptions()
    choices = []
    for index, pieces in enumerate(choice_pieces(reply, options.n)):
        message: dict[str, Any] = {"role": "assistant", "content": "".join(pieces) or None}
        if reply.reasoning:
            message["reasoning_content"] = reply.reasoning
        if reply.tool_calls:
            message["tool_calls"] = [{k: v for k, v in e.items() if k != "index"} for e in _tool_call_entries(reply)]
        choice = {"index": index, "message": message, "finish_reason": _finish_reason(reply)}
        if options.logprobs:
            choice["logprobs"] = {"content": [token_logprob(p, k, options.top_logprobs) for k, p in enumerate(pieces)]}
        choices.append(choice)
    result = {
        "id": f"chatcmpl-fake{uuid.uuid4().hex[:8]}", "object": "chat.completion", "created": int(time.time()),
        "model": model, "choices": choices,
    }
    if reply.usage is not None:
        result["usage"] = reply.usage
    return result


@dataclass(frozen=True)
class ReplyOptions:
    """What a request asks of the reply's shape: `n` choices, log-probabilities of each token."""

    n: int = 1
    logprobs: bool = False
    top_logprobs: int = 0

    @classmethod
    def of(cls, body: dict[str, Any]) -> "ReplyOptions":
        n, top = body.get("n"), body.get("top_logprobs")
        return cls(n if isinstance(n, int) and n > 1 else 1, body.get("logprobs") is True,
                   top if isinstance(top, int) and top > 0 else 0)


def choice_pieces(reply: Reply, n: int) -> list[list[str]]:
    """The answer pieces of each of `n` choices: the scripted one, then variants ending " (2)", " (3)"..."""
    pieces = reply.pieces()
    return [pieces] + [[*pieces, f" ({index + 1})"] for index in range(1, n)]


def token_logprob(token: str, position: int, top: int) -> dict[str, Any]:
    """A made-up but stable log-probability entry for one token, with `top` alternatives (the token first)."""
    logprob = -round(0.125 * (position + 1), 3)
    alternatives = [{"token": token, "logprob": logprob, "bytes": list(token.encode())}] + [
        {"token": f"alt{k}", "logprob": logprob - k, "bytes": list(f"alt{k}".encode())} for k in range(1, top)]
    return {"token": token, "logprob": logprob, "bytes": list(token.encode()), "top_logprobs": alternatives[:top]}


def stream_chunks(reply: Reply, model: str, include_usage: bool,
                  options: ReplyOptions | None = None) -> list[dict[str, Any]]:
    options = options or ReplyOptions()
    base = {"id": f"chatcmpl-fake{uuid.uuid4().hex[:8]}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model}
    chunks = []
    for index, pieces in enumerate(choice_pieces(reply, options.n)):
        def chunk(delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> dict[str, Any]:
            choice = {"index": index, "delta": delta, "finish_reason": finish}
            if options.logprobs:
                choice["logprobs"] = logprobs
            return {**base, "choices": [choice]}

        chunks.append(chunk({"role": "assistant", "content": ""}))
        if reply.reasoning:
            chunks += [chunk({"reasoning_content": piece}) for piece in _words(reply.reasoning)]
        # Log-probabilities only when asked: a scripted reply may hold a lone surrogate, which has no bytes.
        chunks += [chunk({"content": piece}, logprobs={"content": [token_logprob(piece, k, options.top_logprobs)]}
                         if options.logprobs else None)
                   for k, piece in enumerate(pieces)]
        for entry in _tool_call_entries(reply):
            chunks.append(chunk({"tool_calls": [entry]}))
        chunks.append(chunk({}, _finish_reason(reply)))
    if include_usage and reply.usage is not None:
        chunks.append({**base, "choices": [], "usage": reply.usage})
    return chunks


FLOOD_PIECE = 64 * 1024


async def flood_stream(kind: str, size: int, model: str):
    """A stream that never stops growing where a well-behaved upstream would stop."""
    def event(delta: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps({"object": "chat.completion.chunk", "model": model,
                                        "choices": [{"index": 0, "delta": delta}]}).encode() + b"\n\n"

    if kind == "line":
        yield b"data: {\"choices\": [{\"delta\": {\"content\": \""
        for _ in range(size // FLOOD_PIECE):
            yield b"x" * FLOOD_PIECE
            await asyncio.sleep(0)
        return
    if kind == "data_lines":
        piece = b"data: " + b"z" * 1000 + b"\n"
        for _ in range(size // FLOOD_PIECE):
            yield piece * (FLOOD_PIECE // len(piece))
            await asyncio.sleep(0)
        return
    if kind == "calls":
        for index in range(size):
            yield event({"tool_calls": [{"index": index, "id": f"call_{index}", "type": "function",
                                         "function": {"name": "scratchpad_list", "arguments": "{}"}}]})
    elif kind == "arguments":
        yield event({"tool_calls": [{"index": 0, "id": "call_0", "type": "function",
                                     "function": {"name": "scratchpad_set", "arguments": '{"key": "k", "value": "'}}]})
        for _ in range(size // FLOOD_PIECE):
            yield event({"tool_calls": [{"index": 0, "function": {"arguments": "a" * FLOOD_PIECE}}]})
            await asyncio.sleep(0)
    else:
        for _ in range(size // FLOOD_PIECE):
            yield event({"content": "y" * FLOOD_PIECE})
            await asyncio.sleep(0)
    yield b"data: [DONE]\n\n"


def main(upstream_class: type[FakeUpstream] = FakeUpstream,
         description: str = "Scripted fake OpenAI-compatible upstream.") -> None:
    """Serve one fake upstream until interrupted (`python -m ghost.testing.fake_upstream`, or a
    subclass's script); prints its URL as JSON on the first line."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    args = parser.parse_args()
    fake = upstream_class(model=args.model).start(args.port)
    print(json.dumps({"url": fake.url, "default_reply": asdict(fake.default_reply)}), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
