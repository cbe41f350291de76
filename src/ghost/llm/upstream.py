"""The upstream LLM server as one object: where it is, what it serves, and the calls Ghost makes.

`Upstream` is the interface the agent and the routes use; `HttpUpstream` is the real one (any
OpenAI-compatible server, the bundled model's included). Tests that need no network use the
in-process `ghost.testing.scripted_upstream.ScriptedUpstream`. Where the server is, and its key,
is one value, `HttpUpstream.endpoint` (`ghost.llm.endpoint`), that every caller of it reads. The
catch-all proxy does not call through here: it relays bytes (`ghost.api.proxy`) over this
upstream's aiohttp session, the chat path's own (`HttpUpstream.session`, `ghost.llm.transport`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from ghost.config import Settings
from ghost.llm.bounds import ReplyBounds
from ghost.llm.chat import Completion, Delta, stream_chat
from ghost.llm.embeddings import Embeddings, embed
from ghost.llm.endpoint import UpstreamEndpoint
from ghost.llm.relay import RelayEnd, relay_reply, relay_stream
from ghost.llm.transport import UpstreamSession, make_pool
from ghost.llm.wire import RequestBodies

PROBE_TIMEOUT_S = 3.0


class Upstream(Protocol):
    """What the agent and the routes need of the model server."""

    url: str  # "" when there is none
    models: list[str]  # the models Ghost serves, the default first

    def stream_chat(self, payload: dict[str, Any], request_id: str) -> AsyncIterator[Delta | Completion]: ...

    async def embed(self, model: str, inputs: list[str], request_id: str) -> Embeddings: ...

    def relay_stream(self, payload: dict[str, Any], request_id: str) -> AsyncIterator[dict[str, Any] | RelayEnd]: ...

    async def relay_reply(self, payload: dict[str, Any], request_id: str) -> dict[str, Any]: ...

    async def health(self) -> dict[str, Any]: ...

    def upstream_model(self, served_name: str) -> str: ...


def _always_available() -> None:
    return None


@dataclass
class HttpUpstream:
    """An OpenAI-compatible server at `endpoint`, reached with the shared `http` client."""

    http: httpx.AsyncClient
    endpoint: UpstreamEndpoint  # where it is and its key: the one value every caller reads
    bounds: ReplyBounds
    models: list[str] = field(default_factory=list)  # set once it is up (`settle_models`)
    # The one name every request is sent under (`--upstream-model`), whatever the client asked for.
    model_override: str = ""
    # Raises ModelUnavailable when the server is known to be gone for good (a failed bundled model).
    check_available: Callable[[], None] = _always_available
    # The aiohttp session chat completions stream over, and the catch-all proxy's pool (one pool of
    # kept-alive connections for both); `http` serves the rest (embeddings, discovery, health,
    # token counts). None without an upstream.
    session: UpstreamSession | None = None
    # Chat request bodies, each tool schema encoded once (`ghost.llm.wire`).
    bodies: RequestBodies = field(default_factory=RequestBodies)

    @property
    def url(self) -> str:
        return self.endpoint.url

    @property
    def default_model(self) -> str:
        return self.models[0]

    def headers(self) -> dict[str, str]:
        """The key, and the current span's `traceparent` when tracing is on (`UpstreamEndpoint.headers`)."""
        return self.endpoint.headers()

    def upstream_model(self, served_name: str) -> str:
        """The name the upstream knows a model by that Ghost serves as `served_name`."""
        return self.model_override or served_name

    def stream_chat(self, payload: dict[str, Any], request_id: str) -> AsyncIterator[Delta | Completion]:
        return stream_chat(self, payload, request_id)

    async def embed(self, model: str, inputs: list[str], request_id: str) -> Embeddings:
        return await embed(self, model, inputs, request_id)

    def relay_stream(self, payload: dict[str, Any], request_id: str) -> AsyncIterator[dict[str, Any] | RelayEnd]:
        """A `-plain` model's streamed reply, chunk by chunk as the upstream sent it (`ghost.llm.relay`)."""
        return relay_stream(self, payload, request_id)

    async def relay_reply(self, payload: dict[str, Any], request_id: str) -> dict[str, Any]:
        """A `-plain` model's non-streamed reply, whole as the upstream sent it."""
        return await relay_reply(self, payload, request_id)

    async def settle_models(self, configured: list[str], fallback: str) -> None:
        """Set the models Ghost serves, the one place they are set, once the upstream is up: the
        configured ones (`--model`), else the first the upstream lists, else `fallback`."""
        discovered = await self.discover_models()
        self.models = configured or discovered[:1] or [fallback]

    async def discover_models(self) -> list[str]:
        """The upstream's model ids, or [] if it cannot tell us right now."""
        if not self.endpoint.exists:
            return []
        try:
            response = await self.http.get(self.endpoint.at("/v1/models"), headers=self.headers(),
                                           timeout=PROBE_TIMEOUT_S)
            return [str(m["id"]) for m in response.json().get("data", []) if "id" in m]
        except (httpx.HTTPError, ValueError, AttributeError, TypeError, KeyError):
            return []

    async def health(self) -> dict[str, Any]:
        """{url, reachable, status, latency_ms | error}: one quick call to the upstream's model list."""
        if not self.endpoint.exists:
            return {"url": "", "reachable": False, "error": "no upstream configured"}
        started = time.perf_counter()
        try:
            response = await self.http.get(self.endpoint.at("/v1/models"), headers=self.headers(),
                                           timeout=PROBE_TIMEOUT_S)
        except httpx.HTTPError as exc:
            return {"url": self.url, "reachable": False, "error": type(exc).__name__}
        return {"url": self.url, "reachable": response.status_code < 500, "status": response.status_code,
                "latency_ms": round((time.perf_counter() - started) * 1000, 2)}

    async def aclose(self) -> None:
        if self.session is not None:
            await self.session.aclose()


def open_upstream(settings: Settings, http: httpx.AsyncClient, endpoint: UpstreamEndpoint,
                  check_available: Callable[[], None] = _always_available) -> HttpUpstream:
    """The upstream at `endpoint`, with the one aiohttp session its chat calls and the catch-all
    proxy share (closed by `aclose`)."""
    return HttpUpstream(http, endpoint, ReplyBounds.from_settings(settings), model_override=settings.upstream_model,
                        check_available=check_available, session=make_pool(settings, endpoint))
