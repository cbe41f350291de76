"""Who may talk to Ghost at all: the Host header (DNS rebinding) and the browser Origin (CORS).

Both checks run before routing, on every path (Ghost's own routes, `/`, and the proxy), and
answer 403 in the error shape. A key does not help a web page here: with `--no-auth`, or a weak
key a page could guess, these two checks are what keep a page from driving the agent.

- Host: a page served from `rebind.evil.example` whose name the attacker re-points at 127.0.0.1
  reaches Ghost with `Host: rebind.evil.example`. Ghost answers only names that cannot be
  re-pointed by a stranger: loopback names and addresses, the bound address, and the operator's
  `--allowed-hosts`. An IP literal cannot be used for rebinding (the page would have to be served
  from that very address), so on a wildcard bind (0.0.0.0, ::) any IP literal is accepted.
- Origin: a browser sends it on every cross-origin request and on every POST. A request whose
  Origin is not allowed is refused outright, not merely left without CORS headers: a "simple"
  request (a text/plain POST) would otherwise still run, even though the page cannot read the
  answer. Programs that are not browsers send no Origin and are not affected.
- Shape: a Host header must be one authority (a host name, an IPv4 address or a bracketed IPv6
  literal, then an optional port) and nothing else, else 400: a value like `[::1]evil.example`
  must not pass as `::1`. A request carrying two Host or two Origin headers is a 400 too: a
  check of the first one says nothing about the one a later reader picks.
"""

from __future__ import annotations

import ipaddress
import re

from starlette.types import ASGIApp, Receive, Scope, Send

from ghost.config import Settings
from ghost.api.error_shape import send_error
from ghost.errors import echo
from ghost.memo import BoundedMemo

# Origins a page on this machine has: http(s) on localhost, 127.0.0.1 or [::1], any port.
LOCAL_ORIGIN_REGEX = r"https?://(localhost|127\.0\.0\.1|\[::1\])(:[0-9]{1,5})?"


# One DNS label: letters, digits, '-' and '_' (service names, container names), 1..63 characters.
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_NAME_AUTHORITY = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}\.?(?::[0-9]{{1,5}})?")
_BRACKETED_AUTHORITY = re.compile(r"\[([0-9a-f:.]+)\](?::[0-9]{1,5})?")


def valid_authority(header: str) -> bool:
    """Whether a Host header value is exactly one authority: `name[:port]`, `a.b.c.d[:port]` or
    `[v6][:port]` (RFC 9110 7.2 / RFC 3986 3.2.2), with nothing before, between or after.
    An empty value is valid (HTTP/1.0, or a target without an authority)."""
    value = header.strip().lower()
    if value == "":
        return True
    if len(value) > 261:  # 255 for the name, 6 for ':65535'
        return False
    bracketed = _BRACKETED_AUTHORITY.fullmatch(value)
    if bracketed is not None:
        ip = _ip(bracketed.group(1))
        return ip is not None and ip.version == 6
    return _NAME_AUTHORITY.fullmatch(value) is not None


def split_host(header: str) -> str:
    """The host part of a Host header value ('[::1]:8080' -> '::1'), lower-case, no final dot."""
    value = header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else value
    if value.count(":") == 1:  # name:port or v4:port (a bare v6 address has several colons)
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


class HostRule:
    """The names and addresses a Host header may carry for this server."""

    # Answers are remembered per host (parsing it as an address, every request, was ~1 % of an agent
    # turn's CPU); the memo is emptied when full, so no stream of made-up names makes it grow.
    MAX_REMEMBERED = 1024

    def __init__(self, settings: Settings) -> None:
        self.allows: BoundedMemo[str, bool] = BoundedMemo(self._allows, self.MAX_REMEMBERED)
        bound = split_host(settings.host) if settings.host else ""
        self.bound_ip = _ip(bound)
        self.wildcard_bind = self.bound_ip is not None and self.bound_ip.is_unspecified
        self.names = {"localhost", *settings.allowed_host_list()}
        if bound and self.bound_ip is None:
            self.names.add(bound)  # bound by name (e.g. --host myhost.lan)
        self.suffixes = tuple(name for name in self.names if name.startswith("."))

    def _allows(self, host: str) -> bool:
        if host == "":
            return True  # HTTP/1.0 without Host: not a browser, nothing to rebind
        ip = _ip(host)
        if ip is not None:
            return ip.is_loopback or ip == self.bound_ip or self.wildcard_bind
        if host in self.names or host.endswith(".localhost"):  # *.localhost is loopback (RFC 6761)
            return True
        return any(host.endswith(suffix) for suffix in self.suffixes)


class OriginRule:
    """The browser origins allowed to call Ghost (the same list the CORS headers announce)."""

    def __init__(self, settings: Settings) -> None:
        listed = settings.cors_origin_list()
        self.any = "*" in listed
        self.listed = frozenset(origin.lower() for origin in listed)
        self.regex = None if listed else re.compile(LOCAL_ORIGIN_REGEX)

    def allows(self, origin: str) -> bool:
        origin = origin.strip().lower()
        if self.any:
            return True
        if self.regex is not None:
            return self.regex.fullmatch(origin) is not None
        return origin in self.listed

    def cors_options(self) -> dict[str, object]:
        """Keyword arguments for Starlette's CORSMiddleware announcing the same rule."""
        if self.any:
            return {"allow_origins": ["*"]}
        if self.regex is not None:
            return {"allow_origins": [], "allow_origin_regex": LOCAL_ORIGIN_REGEX}
        return {"allow_origins": sorted(self.listed)}


class BoundaryHeaders:
    """The request's Host and Origin headers, found in one pass over its headers."""

    __slots__ = ("host", "origin")

    def __init__(self, scope: Scope) -> None:
        self.host: list[str] = []
        self.origin: list[str] = []
        for key, value in scope["headers"]:
            if key == b"host":
                self.host.append(value.decode("latin-1"))
            elif key == b"origin":
                self.origin.append(value.decode("latin-1"))

    def named(self, name: str) -> list[str]:
        return self.host if name == "host" else self.origin


def header_problem(found: BoundaryHeaders) -> str | None:
    """Why the request's Host or Origin headers are malformed (400), or None."""
    for name in ("host", "origin"):
        if len(found.named(name)) > 1:
            return (f"the request carries more than one {name.capitalize()} header: "
                    "send exactly one")
    hosts = found.host
    if hosts and not valid_authority(hosts[0]):
        return (f"Host '{echo(hosts[0])}' is not a valid authority: a host name, an IPv4 address "
                "or a bracketed IPv6 address, with an optional :port")
    return None


class BoundaryMiddleware:
    """403 for a foreign Host or a disallowed Origin, before anything else looks at the request."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.hosts = HostRule(settings)
        self.origins = OriginRule(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            found = BoundaryHeaders(scope)
            if problem := header_problem(found):
                await send_error(scope, send, 400, problem, "invalid_request_error")
                return
            if refusal := self.refusal(found):
                await send_error(scope, send, 403, refusal, "forbidden")
                return
        await self.app(scope, receive, send)

    def refusal(self, found: BoundaryHeaders) -> str | None:
        """Why this request is refused, or None."""
        host = found.host[0] if found.host else None
        if host is not None and not self.hosts.allows(split_host(host)):
            return (f"Host '{echo(host)}' is not allowed: Ghost answers loopback names, its bound "
                    "address and --allowed-hosts (a guard against DNS rebinding)")
        origin = found.origin[0] if found.origin else None
        if origin is not None and not self.origins.allows(origin):
            return (f"Origin '{echo(origin)}' is not allowed: add it to --cors-origins to let "
                    "that web page call Ghost")
        return None
