"""Routes for the catch-all proxy's tests: replies of each awkward shape a relay must carry.

`/echo/...` (any method) answers with what it received, hashing the body as it streams in;
`/sse/{n}` streams n events; `/bytes/{n}` sends n bytes; `/slow/{s}` waits; `/hold/{name}` sends
one event, then waits for `release(name)` before the last one (with `?before=headers` it waits
before answering at all); `/broken/{n}` sends n chunks (n SSE events with `?type=sse`) and then
breaks the connection; `/hop` answers with hop-by-hop and repeated headers; `/status/{code}`
sends the request's body back with that status.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ghost.testing.fake_upstream.holds import held_events

if TYPE_CHECKING:
    from ghost.testing.fake_upstream.server import FakeUpstream

ANY_METHOD = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]


class ProxyTestRoutes:
    def __init__(self, fake: FakeUpstream) -> None:
        self.fake = fake

    def routes(self) -> list[Route]:
        return [
            Route("/echo/{rest:path}", self.echo, methods=ANY_METHOD),
            Route("/sse/{n:int}", sse, methods=["GET", "POST"]),
            Route("/bytes/{n:int}", some_bytes, methods=["GET"]),
            Route("/slow/{seconds:float}", slow, methods=["GET", "POST"]),
            Route("/hold/{name}", self.held, methods=["GET", "POST"]),
            Route("/broken/{n:int}", broken, methods=["GET", "POST"]),
            Route("/hop", hop, methods=["GET"]),
            Route("/status/{code:int}", self.status, methods=["POST"]),
        ]

    async def echo(self, request: Request) -> Response:
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.stream():
            digest.update(chunk)
            size += len(chunk)
        self.fake.record(request, {"sha256": digest.hexdigest(), "size": size})
        return JSONResponse({
            "method": request.method, "path": request.url.path, "query": request.url.query,
            "headers": dict(request.headers), "sha256": digest.hexdigest(), "size": size,
        }, headers={"x-upstream": "fake", "connection": "keep-alive"})

    async def held(self, request: Request) -> Response:
        name = request.path_params["name"]
        hold = self.fake.holds.get(name)
        self.fake.record(request, None)
        hold["state"] = "open"
        if request.query_params.get("before") == "headers":
            while not hold["released"].is_set():
                if await request.is_disconnected():
                    hold["state"] = "closed_early"
                    return Response(status_code=499)
                await asyncio.sleep(0.01)
            hold["state"] = "finished"
            return JSONResponse({"held": name})
        return StreamingResponse(held_events(hold), media_type="text/event-stream")

    async def status(self, request: Request) -> Response:
        """The request's body and content type, sent back with the status `code` (an error reply)."""
        body = await request.body()
        self.fake.record(request, None)
        return Response(body, status_code=request.path_params["code"],
                        media_type=request.headers.get("content-type", "text/plain"))


async def sse(request: Request) -> Response:
    n = request.path_params["n"]
    delay = float(request.query_params.get("delay", "0.05"))

    async def events() -> AsyncIterator[bytes]:
        for i in range(n):
            yield f"data: {i}\n\n".encode()
            await asyncio.sleep(delay)

    return StreamingResponse(events(), media_type="text/event-stream")


async def some_bytes(request: Request) -> Response:
    n = request.path_params["n"]
    block = b"x" * 65536

    async def body() -> AsyncIterator[bytes]:
        left = n
        while left > 0:
            yield block[: min(left, len(block))]
            left -= len(block)

    return StreamingResponse(body(), media_type="application/octet-stream", headers={"content-length": str(n)})


async def slow(request: Request) -> Response:
    await asyncio.sleep(request.path_params["seconds"])
    return JSONResponse({"slept": request.path_params["seconds"]})


async def broken(request: Request) -> Response:
    n = request.path_params["n"]
    as_sse = request.query_params.get("type") == "sse"

    async def body() -> AsyncIterator[bytes]:
        for i in range(n):
            yield f"data: {i}\n\n".encode() if as_sse else b"b" * 1024
            await asyncio.sleep(0.01)
        raise ConnectionAbortedError("scripted broken body")

    return StreamingResponse(body(), media_type="text/event-stream" if as_sse else "application/octet-stream")


async def hop(request: Request) -> Response:
    response = Response(b"hop", media_type="text/plain")
    response.raw_headers += [
        (b"connection", b"keep-alive, x-hop-listed"), (b"x-hop-listed", b"1"),
        (b"keep-alive", b"timeout=5"), (b"proxy-authenticate", b"Basic"), (b"trailer", b"x-t"),
        (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2"), (b"x-upstream", b"fake"),
    ]
    return response
