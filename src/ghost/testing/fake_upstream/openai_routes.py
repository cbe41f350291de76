"""The routes an OpenAI-compatible model server answers: chat completions (from the script),
the model list, embeddings, and the window probes and tokenizer of the server kind a
`ContextWindow` plays (llama.cpp's `/props` and `/tokenize`, Ollama's `/api/show`, vLLM's
`max_model_len`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ghost.api.streaming import WatchedStreamingResponse
from ghost.testing.fake_upstream.holds import wait_released
from ghost.testing.fake_upstream.script import Reply
from ghost.testing.fake_upstream.window import check_window, ollama_show
from ghost.testing.fake_upstream.wire import ReplyOptions, completion, fake_embedding, flood_stream, stream_chunks

if TYPE_CHECKING:
    from ghost.testing.fake_upstream.server import FakeUpstream

NOT_FOUND = {"error": "not found"}


class OpenAIRoutes:
    def __init__(self, fake: FakeUpstream) -> None:
        self.fake = fake

    def routes(self) -> list[Route]:
        return [
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/props", self.props, methods=["GET"]),
            Route("/tokenize", self.tokenize, methods=["POST"]),
            Route("/api/show", self.show, methods=["POST"]),
            Route("/v1/embeddings", self.embeddings, methods=["POST"]),
        ]

    def _advertises(self, kind: str) -> bool:
        return self.fake.context is not None and self.fake.context.advertises(kind)

    # --- the window probes and the tokenizer -----------------------------------------------------
    async def models(self, request: Request) -> Response:
        self.fake.record(request, None)
        entry: dict[str, Any] = {"id": self.fake.model, "object": "model", "created": 0, "owned_by": "fake"}
        if self._advertises("vllm"):
            entry["max_model_len"] = self.fake.context.tokens
        return JSONResponse({"object": "list", "data": [entry]})

    async def props(self, request: Request) -> Response:
        self.fake.record(request, None)
        if not self._advertises("llama.cpp"):
            return JSONResponse(NOT_FOUND, status_code=404)
        return JSONResponse({"default_generation_settings": {"n_ctx": self.fake.context.tokens}, "total_slots": 1})

    async def tokenize(self, request: Request) -> Response:
        body = await request.json()
        self.fake.record(request, None)
        window = self.fake.context
        if window is None or window.kind != "llama.cpp" or not window.tokenize:
            return JSONResponse(NOT_FOUND, status_code=404)
        return JSONResponse({"tokens": list(range(window.count_text(str(body.get("content", "")))))})

    async def show(self, request: Request) -> Response:
        self.fake.record(request, await request.json())
        if not self._advertises("ollama"):
            return JSONResponse(NOT_FOUND, status_code=404)
        return JSONResponse(ollama_show(self.fake.context))

    async def embeddings(self, request: Request) -> Response:
        body = await request.json()
        self.fake.record(request, body)
        if not self.fake.serves_embeddings:
            return JSONResponse({"error": {"message": "Not Found", "type": "not_found"}}, status_code=404)
        inputs = [body["input"]] if isinstance(body["input"], str) else body["input"]
        return JSONResponse({"object": "list", "model": body.get("model", self.fake.model), "data": [
            {"object": "embedding", "index": i, "embedding": fake_embedding(text)} for i, text in enumerate(inputs)],
            "usage": {"prompt_tokens": sum(len(t.split()) for t in inputs), "total_tokens": 0}})

    # --- chat completions ------------------------------------------------------------------------
    async def chat(self, request: Request) -> Response:
        body = await request.json()
        self.fake.record(request, body)
        if self.fake.context is not None:
            check = check_window(self.fake.context, body)
            if check.cut:
                self.fake.cut_requests += 1
            self.fake.requests[-1]["tokens"] = check.tokens
            if check.refusal is not None:
                return check.refusal
        reply = self.fake.reply_for(body)
        if self.fake.context is not None and reply.usage is not None:
            reply = Reply(**{**asdict(reply), "usage": {**reply.usage, "prompt_tokens": self.fake.requests[-1]["tokens"]}})
        if reply.first_delay:
            await asyncio.sleep(reply.first_delay)
        if reply.hold and not (body.get("stream") and reply.hold_after):
            await wait_released(self.fake.holds.get(reply.hold))
        return self._answer(reply, body)

    def _answer(self, reply: Reply, body: dict[str, Any]) -> Response:
        if reply.body is not None:
            return Response(reply.body, status_code=reply.status, media_type=reply.content_type)
        if reply.status != 200:
            return JSONResponse({"error": {"message": "scripted failure", "type": "server_error"}},
                                status_code=reply.status)
        model = body.get("model", self.fake.model)
        if reply.raw_stream is not None:
            return WatchedStreamingResponse(_raw(reply), media_type="text/event-stream")
        if reply.flood is not None:
            return WatchedStreamingResponse(flood_stream(reply.flood["kind"], int(reply.flood["size"]), model),
                                            media_type="text/event-stream")
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            # Watched: notices Ghost hanging up at once, so `closed_early` is exact.
            return WatchedStreamingResponse(self._stream(reply, model, include_usage, ReplyOptions.of(body)),
                                            media_type="text/event-stream")
        return JSONResponse(completion(reply, model, ReplyOptions.of(body)))

    async def _stream(self, reply: Reply, model: str, include_usage: bool,
                      options: ReplyOptions) -> AsyncIterator[bytes]:
        fake = self.fake
        fake.open_streams += 1
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
                    await wait_released(fake.holds.get(reply.hold))
                yield f"data: {json.dumps(chunk)}\n\n".encode()
            yield b"data: [DONE]\n\n"
            finished = True
        finally:
            fake.open_streams -= 1
            if not finished:
                fake.closed_early += 1


async def _raw(reply: Reply) -> AsyncIterator[bytes]:
    yield reply.raw_stream.encode("utf-8", "surrogateescape") if reply.raw_stream else b""
    await asyncio.sleep(0.05)  # let the bytes leave before the connection ends
    if reply.raw_then_break:
        raise ConnectionAbortedError("scripted break after raw stream bytes")
