"""Faults against a real Ghost: a broken upstream stream, SIGKILL mid-write, a full disk, a missing
sandbox backend, and secrets in the log. (Upstream death, HTML, non-200 and hangs are in
test_agent_turn.py.)"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ghost.testing.fake_upstream import FakeUpstream, Reply
from ghost.testing.server import GhostServer

USER = [{"role": "user", "content": "hi"}]
FIRST = 'data: {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "partial"}}]}\n\n'


@pytest.fixture(scope="module")
def server(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhostServer]:
    with GhostServer("--upstream-url", upstream.url, "--sandbox-backend", "process",
                     home=tmp_path_factory.mktemp("faults-home")) as ghost:
        yield ghost


def chat(server: GhostServer, path: str = "/v1/chat/completions", **body: object) -> httpx.Response:
    return httpx.post(server.url + path, headers=server.headers, timeout=30,
                      json={"model": "fake-model", "messages": USER, **body})


def still_serves(server: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="fine again"))
    response = chat(server)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "fine again"


# --- 1. a broken upstream stream ---------------------------------------------------------------------

BEFORE_FIRST_BYTE = {
    "truncated line, then the connection breaks": Reply(raw_stream='data: {"choi', raw_then_break=True),
    "truncated line, then the stream ends": Reply(raw_stream='data: {"choi'),
    "garbage bytes": Reply(raw_stream="data: \x00\x01\udcff\udcfe not json at all\n\n"),
    "garbage lines without data:": Reply(raw_stream="\udcff\udcfe\x07garbage\n\nmore garbage\n"),
    "JSON of the wrong shape": Reply(raw_stream='data: {"choices": [{"delta": "oops"}]}\n\n'),
    "choices not a list": Reply(raw_stream='data: {"choices": 5}\n\n'),
    "bad tool-call index": Reply(raw_stream='data: {"choices": [{"delta": {"tool_calls": [{"index": "x"}]}}]}\n\n'),
}


@pytest.mark.parametrize("case", list(BEFORE_FIRST_BYTE))
@pytest.mark.parametrize("stream", [True, False])
def test_broken_stream_before_any_content_is_a_clean_502(case: str, stream: bool, server: GhostServer,
                                                         upstream: FakeUpstream) -> None:
    upstream.script(BEFORE_FIRST_BYTE[case])
    response = chat(server, stream=stream)
    assert response.status_code == 502, response.text
    assert response.json()["error"]["type"].startswith("upstream")
    still_serves(server, upstream)


AFTER_FIRST_BYTE = {
    "truncated line": Reply(raw_stream=FIRST + 'data: {"choi', raw_then_break=True),
    "garbage bytes": Reply(raw_stream=FIRST + "data: \udcff\udcfe{{{ not json\n\n"),
    "JSON of the wrong shape": Reply(raw_stream=FIRST + 'data: {"choices": ["x"]}\n\n'),
}


@pytest.mark.parametrize("case", list(AFTER_FIRST_BYTE))
def test_broken_stream_after_content_is_an_in_band_error(case: str, server: GhostServer,
                                                        upstream: FakeUpstream) -> None:
    upstream.script(AFTER_FIRST_BYTE[case])
    response = chat(server, stream=True)
    assert response.status_code == 200
    blocks = [b for b in response.text.split("\n\n") if b and not b.startswith(":")]
    first = [json.loads(b.split("data: ", 1)[1]) for b in blocks[:-2]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in first) == "partial"
    assert blocks[-2].startswith("event: error\ndata: ")
    assert json.loads(blocks[-2].split("data: ", 1)[1])["error"]["type"].startswith("upstream")
    assert blocks[-1] == "data: [DONE]"
    still_serves(server, upstream)


def test_broken_stream_after_content_in_ndjson(server: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(AFTER_FIRST_BYTE["garbage bytes"])
    response = chat(server, path="/api/chat")
    lines = [json.loads(line) for line in response.text.splitlines() if line]
    assert lines[0]["message"]["content"] == "partial"
    assert set(lines[-1]) == {"error"} and "malformed" in lines[-1]["error"]
    assert "internal" not in response.text
    still_serves(server, upstream)
