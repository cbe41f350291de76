"""`--log-format json`: every line Ghost writes is one JSON object, and each request's line carries
its request id, trace id, user, route, status and duration. Text stays the default."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from ghost.testing.fake_upstream import FakeUpstream, Reply
from ghost.testing.server import GhostServer

TRACE = "0af7651916cd43dd8448eb211c80319c"


def test_json_logs_are_one_object_per_line_with_the_request_fields(upstream: FakeUpstream, tmp_path: Path) -> None:
    with GhostServer("--upstream-url", upstream.url, "--log-format", "json", home=tmp_path) as server:
        upstream.script(Reply(content="logged"))
        chat = httpx.post(f"{server.url}/v1/chat/completions", timeout=60,
                          headers={**server.headers, "X-Request-ID": "req-chat-1",
                                   "traceparent": f"00-{TRACE}-b7ad6b7169203331-01"},
                          json={"messages": [{"role": "user", "content": "hi"}]})
        assert chat.status_code == 200
        refused = httpx.get(f"{server.url}/api/sessions/abc", headers={"X-Request-ID": "req-refused-2"})
        assert refused.status_code == 401
        proxied = httpx.get(f"{server.url}/echo/logged", headers={**server.headers, "X-Request-ID": "req-proxy-3"})
        assert proxied.status_code == 200
    lines = [line for line in server.log_path.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line: a failure here names the odd one
    assert any(r["logger"].startswith("uvicorn") for r in records)  # the server's own lines too
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    by_id = {r["request_id"]: r for r in records if "request_id" in r}

    chat_line = by_id["req-chat-1"]
    assert (chat_line["route"], chat_line["status"], chat_line["user"], chat_line["trace_id"]) == \
        ("/v1/chat/completions", 200, "admin", TRACE)
    assert chat_line["duration_ms"] > 0 and chat_line["method"] == "POST" and chat_line["logger"] == "ghost.access"
    refused_line = by_id["req-refused-2"]
    assert (refused_line["route"], refused_line["status"]) == ("/api/sessions/{session_id}", 401)
    assert "user" not in refused_line and "trace_id" not in refused_line
    assert (by_id["req-proxy-3"]["route"], by_id["req-proxy-3"]["status"]) == ("proxy", 200)
    warning = next(r for r in records if r["logger"] == "ghost.auth")
    assert warning["level"] == "warning" and "auth failed" in warning["message"]
    assert warning["request_id"] == "req-refused-2"  # a line logged while serving names its request


def access_line(ghost: GhostServer, request_id: str) -> str:
    """The log line naming `request_id`: written as the request ends, which may be just after the
    client has its reply, so it is waited for (a hang guard, not a timing assertion)."""
    deadline = time.monotonic() + 60
    while True:
        lines = [line for line in ghost.log_path.read_text().splitlines() if request_id in line]
        if lines or time.monotonic() > deadline:
            assert lines, f"no log line names {request_id}"
            return lines[0]
        time.sleep(0.02)


def test_text_logs_stay_the_default(ghost: GhostServer, client: httpx.Client) -> None:
    assert client.get("/api/health", headers={"X-Request-ID": "req-text-1"}).status_code == 200
    line = access_line(ghost, "req-text-1")
    assert " INFO ghost.access: {" in line  # time, level, logger, then the fields
    try:
        json.loads(line)
    except ValueError:
        pass
    else:
        raise AssertionError("the default log line is JSON")


def test_at_log_level_warning_a_request_writes_no_line(ghost: GhostServer, client: httpx.Client,
                                                         upstream: FakeUpstream, tmp_path: Path) -> None:
    assert client.get("/api/health", headers={"X-Request-ID": "req-level-1"}).status_code == 200
    line = access_line(ghost, "req-level-1")  # the probe finds the line at the default level
    assert json.loads(line.split(" INFO ghost.access: ", 1)[1])["request_id"] == "req-level-1"
    with GhostServer("--upstream-url", upstream.url, "--log-level", "warning", home=tmp_path) as quiet:
        reply = httpx.get(f"{quiet.url}/api/health", headers={**quiet.headers, "X-Request-ID": "req-level-2"})
        assert reply.status_code == 200
    assert "req-level-2" not in quiet.log_path.read_text()  # written by now: the server has stopped
