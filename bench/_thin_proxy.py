"""The baseline of bench/turn.py: the thinnest useful chat proxy, Starlette + one httpx client.

It relays POST /v1/chat/completions to the upstream and streams the reply back unchanged; nothing
else. Run as its own process: python bench/_thin_proxy.py UPSTREAM_URL PORT
"""

from __future__ import annotations

import sys

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route


def build(upstream: str) -> Starlette:
    client = httpx.AsyncClient(base_url=upstream, timeout=60)

    async def chat(request: Request) -> StreamingResponse:
        body = await request.body()
        reply = await client.send(client.build_request(
            "POST", "/v1/chat/completions", content=body, headers={"content-type": "application/json"}),
            stream=True)
        return StreamingResponse(reply.aiter_raw(), status_code=reply.status_code,
                                 media_type=reply.headers.get("content-type"),
                                 background=BackgroundTask(reply.aclose))

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


if __name__ == "__main__":
    uvicorn.run(build(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning",
                access_log=False)
