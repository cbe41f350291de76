"""The catch-all proxy forwards only to the configured upstream, whatever the request target says.

A second server on loopback plays the host an attacker would like Ghost to reach; every request
shape that could name another host is sent on a raw socket, and that server must never hear of it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from ghost.testing.fake_upstream import FakeUpstream
from ghost.testing.server import GhostServer


@pytest.fixture(scope="module")
def other_host() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


def raw_request(port: int, target: str, host: str = "127.0.0.1", key: str = "") -> bytes:
    """Send one request with exactly this request target; the whole reply back."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nX-Ghost-Key: {key}\r\n"
                     "Connection: close\r\n\r\n".encode())
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    return reply


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else 0


def targets(other: str) -> list[tuple[str, str]]:
    """(request target, Host header) pairs that name the other host in some way."""
    return [
        (f"http://{other}/echo/absolute-form", "127.0.0.1"),
        (f"//{other}/echo/scheme-relative", "127.0.0.1"),
        (f"/%2F%2F{other}/echo/encoded-slashes", "127.0.0.1"),
        (f"/@{other}/echo/userinfo-like", "127.0.0.1"),
        ("/echo/host-header", other),
        (f"/echo/..%2F..%2F{other}/dots", "127.0.0.1"),
    ]


def test_nothing_reaches_another_host(ghost: GhostServer, upstream: FakeUpstream, other_host: FakeUpstream) -> None:
    other = f"127.0.0.1:{other_host.port}"
    # Controls: the other host records what reaches it, and a plain path reaches the upstream.
    assert status_of(raw_request(other_host.port, "/echo/direct")) == 200
    assert [r["path"] for r in other_host.requests] == ["/echo/direct"]
    other_host.requests.clear()
    assert status_of(raw_request(ghost.port, "/echo/plain", key=ghost.api_key)) == 200
    assert upstream.requests[-1]["path"] == "/echo/plain"
    for target, host in targets(other):
        before = len(upstream.requests)
        status = status_of(raw_request(ghost.port, target, host, ghost.api_key))
        assert other_host.requests == [], f"{target} (Host {host}) reached the other host"
        # Forwarded to the upstream (whatever it answered), or refused by Ghost as a bad request.
        assert len(upstream.requests) == before + 1 or 400 <= status < 500, f"{target} (Host {host}): {status}"
        assert status != 500
