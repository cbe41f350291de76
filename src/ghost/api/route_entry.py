"""The innermost middleware: where a request, past the boundary and CORS, finds what serves it.

One pure ASGI layer calling its steps in turn (each its own small piece, as three layers did before
and in the same order): the body cap of the path's route (`ghost.api.middleware.BodyLimit`), the
last line of defence against unexpected exceptions (`answer_unexpected`), and the way on — a chat
route's handler (`ChatFastPath`), the proxy for a path no route serves (`ProxyFastPath`), or
FastAPI's exception handlers and router for everything else. One layer, not three: each layer of
ASGI middleware is a call and, for every message of the reply, a `send` wrapper of its own.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from ghost.api.chat_fast_path import ChatFastPath, StartedSend
from ghost.api.middleware import BodyLimit, answer_unexpected
from ghost.api.proxy.route import ProxyFastPath


class RouteEntry:
    def __init__(self, app: ASGIApp, body_limit: BodyLimit, chat: ChatFastPath) -> None:
        self.app = app
        self.body_limit = body_limit
        self.chat = chat
        self.routed = ProxyFastPath(app)  # a proxied path straight to the proxy, the rest to FastAPI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.body_limit.limit_for(scope["path"])
        if await self.body_limit.refused(scope, send, limit):
            return
        receive = self.body_limit.counted(receive, limit)
        sent = StartedSend(send)
        try:
            if (chat := self.chat.route_for(scope)) is not None:
                await self.chat.serve(chat, scope, receive, sent)
            else:
                await self.routed(scope, receive, sent)
        except Exception as exc:
            await answer_unexpected(scope, send, exc, sent.started)
