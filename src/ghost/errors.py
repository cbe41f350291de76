"""Ghost's exception tree. One handler (`ghost.api.errors`) maps it to the error shape.

    GhostError                      500 internal_error
    ├── BadRequest                  400 invalid_request_error
    │   └── ContextLengthExceeded   400 context_length_exceeded
    ├── AuthenticationFailed        401 authentication_error
    ├── Forbidden                   403 permission_error
    ├── NotFound                    404 not_found_error
    ├── Conflict                    409 conflict_error
    ├── LimitExceeded               413 request_too_large
    ├── Unprocessable               422 invalid_request_error
    ├── Busy                        429 rate_limit_error
    ├── UpstreamError               502 upstream_error
    │   ├── UpstreamUnavailable     502 upstream_unavailable
    │   └── UpstreamTimeout         504 upstream_timeout
    ├── ModelUnavailable            503 model_unavailable
    ├── StoreUnavailable            503 store_unavailable
    ├── ToolError                   (a tool call failed; becomes a tool result, never a response)
    ├── SandboxError                500 sandbox_error
    ├── InsufficientStorage         507 insufficient_storage
    └── WorkspaceError              400 workspace_error
        ├── UnsafePath              400 invalid_path
        │   └── PathOutsideSandbox  404 not_found_error
        └── ArchiveRejected         400 invalid_archive

Exceptions are plain values: constructors only store their message. Foreign errors (httpx,
sqlite, zipfile) are translated where they are caught, with `raise ... from exc`.
"""

from __future__ import annotations

import re


class GhostError(Exception):
    status_code: int = 500
    error_type: str = "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequest(GhostError):
    status_code = 400
    error_type = "invalid_request_error"


class ContextLengthExceeded(BadRequest):
    """The prompt cannot fit the model's context window, even after Ghost compacted it.

    `needed` and `allowed` are token counts when known (0: not known)."""

    error_type = "context_length_exceeded"

    def __init__(self, message: str, *, needed: int = 0, allowed: int = 0) -> None:
        super().__init__(message)
        self.needed = needed
        self.allowed = allowed


class AuthenticationFailed(GhostError):
    status_code = 401
    error_type = "authentication_error"


class Forbidden(GhostError):
    """A well-formed request for something Ghost does not allow (e.g. deleting a served model)."""

    status_code = 403
    error_type = "permission_error"


class NotFound(GhostError):
    status_code = 404
    error_type = "not_found_error"


class Conflict(GhostError):
    status_code = 409
    error_type = "conflict_error"


class LimitExceeded(GhostError):
    status_code = 413
    error_type = "request_too_large"


class Unprocessable(GhostError):
    status_code = 422
    error_type = "invalid_request_error"


class Busy(GhostError):
    status_code = 429
    error_type = "rate_limit_error"


class UpstreamError(GhostError):
    status_code = 502
    error_type = "upstream_error"


class UpstreamUnavailable(UpstreamError):
    error_type = "upstream_unavailable"


class UpstreamTimeout(UpstreamError):
    status_code = 504
    error_type = "upstream_timeout"


class ModelUnavailable(GhostError):
    """The bundled model server kept crashing and was given up on; the message says why."""

    status_code = 503
    error_type = "model_unavailable"


class StoreUnavailable(GhostError):
    """The shared database (PostgreSQL) cannot be reached or dropped the connection mid-request."""

    status_code = 503
    error_type = "store_unavailable"


class ToolError(GhostError):
    error_type = "tool_error"


class SandboxError(GhostError):
    error_type = "sandbox_error"


class InsufficientStorage(GhostError):
    """The disk (or quota) Ghost writes an upload, archive or staged load to is full."""

    status_code = 507
    error_type = "insufficient_storage"


class WorkspaceError(GhostError):
    status_code = 400
    error_type = "workspace_error"


class UnsafePath(WorkspaceError):
    """A user- or model-supplied path that is malformed (absolute, `..`, NUL, backslash, too long)."""

    error_type = "invalid_path"


class PathOutsideSandbox(UnsafePath):
    """A well-formed path that resolves outside the sandbox (through a symlink)."""

    status_code = 404
    error_type = "not_found_error"


class ArchiveRejected(WorkspaceError):
    error_type = "invalid_archive"


def error_body(message: str, error_type: str) -> dict[str, dict[str, str]]:
    """The one error shape every response and stream uses."""
    return {"error": {"message": message, "type": error_type}}


def error_text(error: object) -> str:
    """The text of an `error` value another server sent: its `message` if it has one, else itself,
    scrubbed (`upstream_text`).

    Servers send either Ghost's (and OpenAI's) `{"message": ..., "type": ...}` or a plain string."""
    if isinstance(error, dict):
        return upstream_text(str(error.get("message") or error))
    return upstream_text(str(error))


# A stack as Python, Node/Java and Go print it, and the source line Python shows under a frame.
_TRACEBACK_LINE = re.compile(r"^\s*(Traceback \(most recent call last\):|During handling of the above exception"
                             r"|The above exception was the direct cause|goroutine \d+ \[)")
_FRAME_LINE = re.compile(r'^(\s*File "[^"]*", line \d+|\s+at \S)')  # Python's; Node's and Java's, indented
_CARETS = re.compile(r"^\s*[\^~]+\s*$")
# An absolute file path: under a usual root, or ending in a file name with an extension. Not the
# path part of a URL (`host:8080/v1/...`), not an API route (`/v1/chat/completions`).
_ROOTS = "home|root|usr|opt|var|tmp|srv|etc|app|work|mnt|data|models|proc|lib|lib64|nix|private|Users|snap|workspace"
_PATH = re.compile(r"(?<![\w.:/~-])(?:/(?:" + _ROOTS + r")(?:/[^\s\"'`,;:()\[\]{}]+)+"
                   r"|(?:/[\w.@+-]+)+/[\w@+-]+\.[A-Za-z]\w{0,7}\b)"
                   r"|\b[A-Za-z]:\\[^\s\"'()]+")


def upstream_text(text: str) -> str:
    """Error text another server wrote, as a client may read it: no stack frames, no file paths.

    The one rule for every place an upstream's (or the bundled model server's) error text reaches
    a client: a Python traceback tells the client nothing it can act on and shows the server's
    layout; the exception's own line (`ValueError: ...`) stays, with any path in it as `<path>`."""
    kept: list[str] = []
    in_frame = False
    for line in text.splitlines():
        if _TRACEBACK_LINE.match(line) or _CARETS.match(line):
            continue
        if _FRAME_LINE.match(line):
            in_frame = True  # Python prints the frame's source line next, indented deeper
            continue
        if in_frame and line.startswith("    ") and not line.strip().startswith("File "):
            in_frame = False
            continue
        in_frame = False
        kept.append(_PATH.sub("<path>", line))
    cleaned = "\n".join(line for line in kept if line.strip()).strip()
    return cleaned or "(the upstream's error text was only a stack trace)"


ECHO_CHARS = 80


def echo(value: object, limit: int = ECHO_CHARS) -> str:
    """A client-supplied value as an error message may repeat it: cut short, marked as cut.

    Error messages never carry large input back (a 45 MB `model` field must not become a 45 MB 404).
    """
    text = value if isinstance(value, str) else repr(value) if not isinstance(value, (list, dict)) else \
        f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "…"
