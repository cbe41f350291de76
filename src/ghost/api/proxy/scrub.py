"""The bundled model server's error replies, scrubbed on their way through the proxy.

The proxy relays a user's own upstream unchanged: it is their server, and its error text is theirs
to read. The bundled model server is Ghost's own process, run from Ghost's install, and its error
bodies are not fit to show: llama-cpp-python's server puts a Python traceback, with the absolute
paths of Ghost's virtual environment, into the `message` of its 500s. So an error reply (status
400 and up) from the bundled model keeps its status, headers and JSON shape, and every string in
it goes through `errors.upstream_text` (stack frames out, paths as `<path>`); a body that is not
JSON is scrubbed as one text. Such bodies are small; one past `MAX_ERROR_BODY`, or compressed,
is replaced by a plain error naming the status.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from ghost.api.proxy.headers import forward_response_headers, header
from ghost.errors import error_body, upstream_text
from ghost.jsondepth import too_deep
from ghost.llm.bounds import UpstreamTooLarge, read_bounded
from ghost.llm.transport import UpstreamResponse

MAX_ERROR_BODY = 256 * 1024
MAX_ERROR_DEPTH = 64
_REPLACED = (b"content-length", b"content-encoding", b"content-type")


def scrubbed(value: Any) -> Any:
    """`value` with every non-empty string scrubbed; keys, numbers and shape as they were."""
    if isinstance(value, str):
        return upstream_text(value) if value.strip() else value
    if isinstance(value, dict):
        return {key: scrubbed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [scrubbed(item) for item in value]
    return value


def scrubbed_body(body: bytes) -> tuple[bytes, bytes]:
    """(the body scrubbed, its content type)."""
    if not too_deep(body, MAX_ERROR_DEPTH):
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):
            pass
        else:
            return json.dumps(scrubbed(parsed), ensure_ascii=False).encode(), b"application/json"
    return upstream_text(body.decode("utf-8", "replace")).encode(), b"text/plain; charset=utf-8"


async def scrubbed_error(upstream: UpstreamResponse) -> Response:
    """The bundled model's error reply as the client gets it (the upstream response is closed)."""
    try:
        body: bytes | None = await read_bounded(upstream, MAX_ERROR_BODY)
    except UpstreamTooLarge:
        body = None
    finally:
        await upstream.aclose()
    encoding = header(upstream.headers, b"content-encoding")
    if body is not None and not body.strip():
        text, content_type = body, header(upstream.headers, b"content-type") or b"text/plain"
    elif body is None or encoding not in (None, b"identity"):
        text, content_type = json.dumps(error_body(f"the bundled model server answered {upstream.status}",
                                                   "upstream_error")).encode(), b"application/json"
    else:
        text, content_type = scrubbed_body(body)
    response = Response(text, status_code=upstream.status)
    kept = [(k, v) for k, v in forward_response_headers(upstream.headers, False) if k not in _REPLACED]
    response.raw_headers = [*kept, (b"content-type", content_type), (b"content-length", b"%d" % len(text))]
    return response
