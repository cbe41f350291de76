"""A body whose declared length is over the limit is refused from its headers alone: Ghost answers
413 before the client has sent one byte of it (and so never reads or buffers any of it)."""

from __future__ import annotations

import socket

import pytest

from ghost.testing.server import GhostServer

TOO_LONG = 64 * 1024 * 1024  # over the 32 MiB JSON default; the proxy's limit is set below it here


@pytest.fixture(scope="module")
def small_proxy_limit(upstream, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with GhostServer("--upstream-url", upstream.url, "--proxy-max-body-bytes", str(1024 * 1024),
                     home=tmp_path_factory.mktemp("body-limits")) as ghost:
        yield ghost


def headers_only(ghost: GhostServer, path: str) -> bytes:
    """Send a request's headers declaring TOO_LONG bytes, none of the body; what comes back."""
    with socket.create_connection(("127.0.0.1", ghost.port), timeout=20) as conn:
        conn.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Ghost-Key: {ghost.api_key}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {TOO_LONG}\r\n\r\n".encode())
        reply = b""
        try:  # the timeout is a hang guard only: without the check Ghost waits for the body
            while chunk := conn.recv(65536):  # Ghost closes the connection after a 413
                reply += chunk
        except TimeoutError:
            reply += b"(no more: Ghost waited for the body)"
        return reply


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat", "/echo/proxied"])
def test_declared_length_over_the_limit_is_413_before_the_body(path: str, small_proxy_limit: GhostServer) -> None:
    reply = headers_only(small_proxy_limit, path)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"request body larger than" in reply
    if not path.startswith("/api/"):  # Ollama routes answer in Ollama's shape: {"error": "<message>"}
        assert b"request_too_large" in reply
