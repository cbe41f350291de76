"""Every route Ghost serves, declared once: who may call it, which setting caps its body, and the
shape its errors are written in.

The middleware reads this table and nothing else: `BodyLimit` the cap of the request's path, the
error writer (`ghost.api.error_shape`) the shape, `ghost.app` the paths that are Ghost's own, and
the chat fast path (`ghost.api.chat_fast_path`) the key check of the POST routes it serves. The routes themselves declare their key check as a FastAPI dependency (`require_key`,
`require_admin`), so that the order of the answers stays FastAPI's (a 405 before a 401, a
malformed body before the key); `tests/test_route_table.py` checks each route's dependency against
its entry here, that FastAPI serves exactly the routes listed, and that docs/architecture.md's
route table is the one `markdown()` writes (`make docs` rewrites it).

The middleware runs before routing, so it decides by path alone: entries that share a path must
agree on the cap and the shape (the test checks that too).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from starlette.convertors import PathConvertor, register_url_convertor
from starlette.routing import compile_path

from ghost.api.protocols.anthropic.paths import COUNT_TOKENS_PATH, MESSAGES_PATH
from ghost.config import Settings
from ghost.memo import BoundedMemo

class AnyPathConvertor(PathConvertor):
    """Starlette's `path`, across line breaks too: its `.*` stops at one, and a file name holding one
    would then miss the download route and be proxied upstream."""

    regex = "(?s:.*)"


register_url_convertor("anypath", AnyPathConvertor())

# Room for the multipart framing around a file of exactly the upload cap.
MULTIPART_SLACK = 1024 * 1024


class Auth(StrEnum):
    KEY = "key"  # any valid key (`require_key`)
    ADMIN = "admin"  # an admin's key (`require_admin`)
    NONE = "none"  # anyone who passes the Host/Origin checks


class Cap(StrEnum):
    """Which setting bounds the request body (413 past it)."""

    JSON = "max_request_bytes"
    # Nobody vouches for these bodies: the smaller of this and the JSON cap.
    UNAUTH = "unauth_max_body_bytes"
    UPLOAD = "upload_max_bytes"  # plus the multipart framing's slack
    PROXY = "proxy_max_body_bytes"

    def limit(self, settings: Settings) -> int:
        if self is Cap.UNAUTH:
            return min(settings.unauth_max_body_bytes, settings.max_request_bytes)
        if self is Cap.UPLOAD:
            return settings.upload_max_bytes + MULTIPART_SLACK
        return int(getattr(settings, self.value))


class Shape(StrEnum):
    """The error body a path's clients read."""

    OPENAI = "openai"  # Ghost's own: {"error": {"message", "type"}}
    OLLAMA = "ollama"  # {"error": "<message>"}: Ollama's clients show anything else as a dead server
    ANTHROPIC = "anthropic"  # {"type": "error", "error": {"type", "message"}}; no 422 (a 400)


@dataclass(frozen=True)
class RouteSpec:
    methods: tuple[str, ...]  # ("*",): any method
    path: str  # FastAPI's path template; with `prefix`, every path beneath it
    auth: Auth
    cap: Cap
    shape: Shape
    module: str  # below src/ghost/, as the doc shows it: the first `...` is the module serving it
    calls: str  # the service it calls, for the doc
    # A route that proxies: its error replies come from the upstream, and are reshaped on their way.
    relayed: bool = False
    prefix: bool = False
    # A boolean setting that, when true, leaves this route out (it is then proxied like any other path).
    off_when: str | None = None
    # A boolean setting that, when true, serves this route without the key.
    public_when: str | None = None

    def served(self, settings: Settings) -> bool:
        return self.off_when is None or not getattr(settings, self.off_when)

    def auth_under(self, settings: Settings) -> Auth:
        return Auth.NONE if self.public_when and getattr(settings, self.public_when) else self.auth


def _group(module: str, calls: str, *routes: tuple[str, Auth, Cap, Shape], **extra: object) -> list[RouteSpec]:
    """Routes of one module: ("GET, HEAD /", auth, cap, shape), ..."""
    specs = []
    for where, auth, cap, shape in routes:
        methods, _, path = where.rpartition(" ")
        specs.append(RouteSpec(tuple(m.strip() for m in methods.split(",")), path, auth, cap, shape, module, calls,
                               **extra))  # type: ignore[arg-type]
    return specs


K, A, N = Auth.KEY, Auth.ADMIN, Auth.NONE
JSON, UNAUTH, UPLOAD, PROXY = Cap.JSON, Cap.UNAUTH, Cap.UPLOAD, Cap.PROXY
OPENAI, OLLAMA, ANTHROPIC = Shape.OPENAI, Shape.OLLAMA, Shape.ANTHROPIC

# In the doc's order. The catch-all proxy stays last: it is the entry of every path not listed.
ROUTES: tuple[RouteSpec, ...] = (
    *_group("`api/info.py`", "`Upstream.models`, `BundledModel.meta`",
            ("GET, HEAD /", N, UNAUTH, OPENAI), ("GET /api/version", N, UNAUTH, OLLAMA),
            ("GET /api/tags", N, UNAUTH, OLLAMA), ("POST /api/show", N, UNAUTH, OLLAMA),
            ("GET /v1/models", K, JSON, OPENAI)),
    *_group("`api/ollama.py`", "`Upstream` (`embed`, `models`)",
            # /api/ps needs the key, but has always taken only the small bodies of the open routes.
            ("GET /api/ps", K, UNAUTH, OLLAMA), ("POST /api/embed", K, JSON, OLLAMA),
            ("POST /api/embeddings", K, JSON, OLLAMA), ("POST /api/pull", K, JSON, OLLAMA),
            ("POST /api/push", K, JSON, OLLAMA), ("POST /api/create", K, JSON, OLLAMA),
            ("POST /api/copy", K, JSON, OLLAMA), ("DELETE /api/delete", K, JSON, OLLAMA)),
    *_group("`api/chat.py` → `api/chat_reply.py`",
            "`ChatService.run` (`agent/service.py`) → `AgentTurn` (`agent/turn.py`); a `-plain` model on OpenAI's "
            "wire: `api/plain_relay.py` → `ChatService.relay_stream` / `relay_reply` → `llm/relay.py` (the "
            "upstream's reply as it is, bounded)",
            ("POST /v1/chat/completions", K, JSON, OPENAI), ("POST /chat", K, JSON, OPENAI),
            ("POST /api/chat", K, JSON, OLLAMA), ("POST /api/generate", K, JSON, OLLAMA)),
    *_group("`api/protocols/anthropic/` (`routes.py`: `request.py` parses, `encoder.py` encodes) → "
            "`api/chat_reply.py`", "`ChatService.run`; `ChatService.count_tokens`",
            (f"POST {MESSAGES_PATH}", K, JSON, ANTHROPIC), (f"POST {COUNT_TOKENS_PATH}", K, JSON, ANTHROPIC)),
    *_group("`api/protocols/responses/` (`route.py`; parser `request.py`, encoder `encoder.py`)",
            "`ChatService.run`; stored responses: `store/responses.py`",
            ("POST /v1/responses", K, JSON, OPENAI), ("GET, DELETE /v1/responses/{response_id}", K, JSON, OPENAI)),
    *_group("`api/health.py`", "every service's report", ("GET /api/health", K, JSON, OPENAI)),
    *_group("`api/probes.py`", "the process answers; the store answers, the sandbox is usable, not draining "
            "(`Readiness`, set by the SIGTERM handler in `cli.py`)",
            ("GET /api/health/live", N, UNAUTH, OPENAI), ("GET /api/health/ready", N, UNAUTH, OPENAI)),
    *_group("`api/metrics.py`", "the app's `Telemetry` registry (`observe/`); not served with `--no-metrics`, "
            "no key with `--metrics-public`", ("GET /metrics", A, JSON, OPENAI),
            off_when="no_metrics", public_when="metrics_public"),
    *_group("`api/sessions.py`", "`Workspace.history`",
            ("GET /api/sessions", K, JSON, OPENAI), ("GET, DELETE /api/sessions/{session_id}", K, JSON, OPENAI)),
    *_group("`api/workspace.py`", "`workspace/archive.py`",
            ("POST /api/workspace/save", K, JSON, OPENAI), ("POST /api/workspace/load", K, UPLOAD, OPENAI)),
    *_group("`api/workspace.py` (bodies: `api/receive.py`, files: `api/file_response.py`)", "`workspace/transfer.py`",
            ("POST /api/upload", K, UPLOAD, OPENAI), ("GET /api/download/{filename:anypath}", K, JSON, OPENAI)),
    *_group("`api/mcp.py`", "the caller's MCP server (`mcp/endpoint.py`)", ("GET, POST, DELETE /mcp", K, JSON, OPENAI)),
    *_group("`api/users.py`", "`Users`, `Spaces`",
            ("GET, POST /api/users", A, JSON, OPENAI), ("DELETE /api/users/{name}", A, JSON, OPENAI),
            ("POST /api/users/{name}/keys", A, JSON, OPENAI), ("DELETE /api/users/{name}/keys/{key_id}", A, JSON, OPENAI),
            ("PUT /api/users/{name}/limits", A, JSON, OPENAI)),
    *_group("FastAPI (`api/openapi.py` finishes the document)", "the OpenAPI document and its viewer",
            ("GET /openapi.json", N, UNAUTH, OPENAI), ("GET /docs", N, UNAUTH, OPENAI),
            ("GET /docs/oauth2-redirect", N, UNAUTH, OPENAI)),
    # Ollama's blob uploads are not Ghost's: proxied, with the upstream's errors in Ollama's shape.
    *_group("`api/proxy/` (`route.py` → `forward.py`)", "the upstream, as below", ("* /api/blobs/", K, PROXY, OLLAMA),
            relayed=True, prefix=True),
    *_group("`api/proxy/` (`route.py` → `forward.py`)",
            "the upstream, over the aiohttp session the chat path uses too (`llm/transport.py`); a non-admin key "
            "only on `--proxy-user-paths`", ("* /{path:path}", K, PROXY, OPENAI), relayed=True),
)
PROXY_ROUTE = ROUTES[-1]


class RouteTable:
    """The entry of a request's path, among the routes served under `settings` (before routing)."""

    # Paths looked up through the templates are remembered (a proxied path would otherwise try each
    # one on every request); the memo is emptied when full, so no stream of paths makes it grow.
    MAX_REMEMBERED = 4096

    def __init__(self, specs: Iterable[RouteSpec], settings: Settings | None = None) -> None:
        served = [s for s in specs if settings is None or s.served(settings)]
        self.specs = tuple(served)
        self._fixed: dict[str, RouteSpec] = {}
        self._patterns: list[tuple[re.Pattern[str], RouteSpec]] = []
        self._prefixes: list[tuple[str, RouteSpec]] = []
        self._looked_up: BoundedMemo[str, RouteSpec] = BoundedMemo(self._matched, self.MAX_REMEMBERED)
        for spec in served:
            if spec is PROXY_ROUTE:
                continue
            if spec.prefix:
                self._prefixes.append((spec.path, spec))
            elif "{" in spec.path:
                self._patterns.append((compile_path(spec.path)[0], spec))
            else:
                self._fixed.setdefault(spec.path, spec)

    def spec_for(self, path: str) -> RouteSpec:
        spec = self._fixed.get(path)
        return spec if spec is not None else self._looked_up(path)

    def _matched(self, path: str) -> RouteSpec:
        for pattern, spec in self._patterns:
            if pattern.match(path):
                return spec
        for prefix, spec in self._prefixes:
            if path.startswith(prefix):
                return spec
        return PROXY_ROUTE


# Every route, served or not: the shape of a path does not depend on the settings (a route left out
# is proxied, and the proxy's shape is Ghost's own, the same as every switchable route's).
ALL_ROUTES = RouteTable(ROUTES)


def shape_for(path: str) -> Shape:
    """The one rule deciding the error shape of a path."""
    return ALL_ROUTES.spec_for(path).shape


def markdown() -> str:
    """docs/architecture.md's route table: one row per module and what its routes share."""
    rows = ["| route | key | body cap | errors | module | service it calls |", "| --- | --- | --- | --- | --- | --- |"]
    groups: dict[tuple[object, ...], list[RouteSpec]] = {}
    for spec in ROUTES:
        groups.setdefault((spec.auth, spec.cap, spec.shape, spec.module, spec.calls, spec.public_when), []).append(spec)
    for (auth, cap, shape, module, calls, _), specs in groups.items():
        routes = ", ".join(_shown(spec) for spec in specs)
        rows.append(f"| {routes} | {auth} | `{cap.value}` | {shape} | {module} | {calls} |")
    return "\n".join(rows) + "\n"


def _shown(spec: RouteSpec) -> str:
    if spec is PROXY_ROUTE:
        return "anything else"
    path = re.sub(r"\{(\w+)(:\w+)?\}", r"{\1}", spec.path) + ("*" if spec.prefix else "")
    methods = "any" if spec.methods == ("*",) else "/".join(spec.methods)
    return f"`{methods} {path}`"
