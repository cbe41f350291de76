"""Who may talk to the bundled model server: Ghost, and nobody else.

The model server listens on a loopback port that any local process (and any web page that finds
the port, through DNS rebinding or a plain cross-origin request) can reach. llama-cpp-python's
server needs no key by default and answers every Origin with itself and
`allow-credentials: true`. This gate, the outermost ASGI layer of the model server's process, lets
a request through only when

- it carries the secret Ghost generated for this server (`Authorization: Bearer <key>`, compared
  in constant time): 401 otherwise, on every path (the model routes, the docs, `/ghost/status`);
- its Host is the address Ghost reaches it by (`127.0.0.1:<port>`, or `localhost:<port>`): 403
  otherwise, so a rebound name cannot be used even by a page that somehow has the key;

and it removes any `Origin` header before the server sees it, so llama-cpp-python's CORS layer
never grants a browser anything (Ghost's proxy passes a client's Origin on; Ghost has already
checked it against its own rule). The key reaches the server process in its environment
(`KEY_ENV`), never on its command line, which every local user can read in /proc.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

KEY_ENV = "GHOST_EMBEDDED_KEY"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def key_matches(headers: list[tuple[bytes, bytes]], key: bytes) -> bool:
    """Exactly one Authorization header, and it is `Bearer <key>`."""
    values = [value for name, value in headers if name.lower() == b"authorization"]
    return len(values) == 1 and hmac.compare_digest(values[0], b"Bearer " + key)


def host_matches(headers: list[tuple[bytes, bytes]], port: int) -> bool:
    """Exactly one Host header, naming this server's loopback address and port."""
    values = [value.lower() for name, value in headers if name.lower() == b"host"]
    return len(values) == 1 and values[0] in (f"127.0.0.1:{port}".encode(), f"localhost:{port}".encode())


class GhostOnly:
    """ASGI middleware: the key and the Host checked, the Origin removed, before `app` runs."""

    def __init__(self, app: App, key: str, port: int) -> None:
        if not key:
            raise ValueError(f"the model server needs its key in {KEY_ENV}")
        self.app, self.key, self.port = app, key.encode(), port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)  # lifespan
        headers = list(scope.get("headers") or [])
        if not key_matches(headers, self.key):
            return await _refuse(scope, send, 401, "the bundled model server answers only Ghost (no or wrong key)")
        if not host_matches(headers, self.port):
            return await _refuse(scope, send, 403, "the bundled model server answers only at its loopback address")
        scope = {**scope, "headers": [(k, v) for k, v in headers if k.lower() != b"origin"]}
        await self.app(scope, receive, send)


async def _refuse(scope: Scope, send: Send, status: int, message: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = json.dumps({"error": {"message": message, "type": "authentication_error" if status == 401
                                 else "forbidden"}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
