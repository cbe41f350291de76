"""Names the sandbox can create but JSON and terminals cannot carry (issue 21).

Bytes that are not UTF-8, newlines, escape sequences and bidirectional overrides in file names go
through every file tool, the next upstream request, download, upload, save and load without a
500, shown in the one escaped form of `ghost.sandbox.names` that maps back to the same file.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import urllib.parse
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ghost.sandbox.names import real_name, shown_name
from ghost.testing.fake_upstream import FakeUpstream, Reply
from ghost.testing.server import GhostServer

TIMEOUT = 60
# raw name (bytes, as sandboxed code creates it) -> the form Ghost shows
ODD = {
    b"bad\xff.txt": "bad\\xff.txt",
    b"two\nlines.txt": "two\\x0alines.txt",
    b"\x1b[2Jclear.txt": "\\x1b[2Jclear.txt",
    b"back\\slash.txt": "back\\x5cslash.txt",
    "\u202eevil.txt".encode(): "\\u202eevil.txt",
    b"c1\xc2\x85.txt": "c1\\u0085.txt",
    b"half\xe2\x82.txt": "half\\xe2\\x82.txt",
}
ORDINARY = ["plain.txt", "café 漢字 😀.txt", "space name.md", "percent%41.txt"]


@pytest.fixture(scope="module")
def server(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhostServer]:
    with GhostServer("--upstream-url", upstream.url, home=tmp_path_factory.mktemp("odd-names")) as ghost:
        yield ghost


@pytest.fixture()
def sandbox(server: GhostServer) -> Iterator[bytes]:
    """The sandbox folder (as bytes, so odd names can be made in it), emptied after each test."""
    root = os.fsencode(server.home / "sandbox")
    yield root
    for name in os.listdir(root):
        path = os.path.join(root, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)


def plant(root: bytes, raw: bytes, content: bytes) -> None:
    with open(os.path.join(root, raw), "wb") as handle:
        handle.write(content)


def run_tools(server: GhostServer, upstream: FakeUpstream, calls: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """The fake model calls `calls` in one round; the tool results as the next request carried them."""
    upstream.script(Reply(content="", tool_calls=[{"name": n, "arguments": a} for n, a in calls]),
                    Reply(content="done"))
    reply = httpx.post(server.url + "/v1/chat/completions", headers=server.headers, timeout=TIMEOUT,
                       json={"model": "fake-model", "messages": [{"role": "user", "content": "go"}]})
    assert reply.status_code == 200, reply.text
    messages = upstream.chat_requests()[-1]["body"]["messages"]
    return [m["content"] for m in messages if m.get("role") == "tool"]


def test_the_escaped_form_round_trips_both_ways() -> None:
    for raw, escaped in ODD.items():
        name = os.fsdecode(raw)
        assert shown_name(name) == escaped
        assert real_name(escaped) == name and os.fsencode(real_name(escaped)) == raw
        escaped.encode("utf-8")  # JSON and UTF-8 carry it
        assert all(c.isprintable() for c in escaped)
    for name in ORDINARY:
        assert shown_name(name) == name and real_name(name) == name


def test_listing_and_searching_odd_names_keeps_every_later_turn_working(server: GhostServer, upstream: FakeUpstream,
                                                                       sandbox: bytes) -> None:
    for raw in ODD:
        plant(sandbox, raw, b"needle inside\n")
    for name in ORDINARY:
        plant(sandbox, name.encode(), b"needle inside\n")
    listing, found = run_tools(server, upstream, [("list_files", {"path": "."}),
                                                  ("search_files", {"query": "needle"})])
    listed = [line.rsplit(" (", 1)[0] for line in listing.splitlines()]
    for escaped in [*ODD.values(), *ORDINARY]:
        assert escaped in listed, listing
        assert f"{escaped}:1: needle inside" in found.splitlines()
    assert "\x1b" not in listing and "\u202e" not in listing
    # the turn after sees the same (the history carried the results)
    assert run_tools(server, upstream, [("list_files", {"path": "."})])[0] == listing
    # ... and so does a recursive listing inside an odd folder
    os.mkdir(os.path.join(sandbox, b"dir\xfe"))
    plant(sandbox, b"dir\xfe/in\x07side.txt", b"x")
    deep = run_tools(server, upstream, [("list_files", {"path": "dir\\xfe", "recursive": True})])[0]
    assert deep == "in\\x07side.txt (1 bytes)"


def test_every_file_tool_reaches_the_file_its_shown_name_names(server: GhostServer, upstream: FakeUpstream,
                                                               sandbox: bytes) -> None:
    for raw, escaped in ODD.items():
        plant(sandbox, raw, b"first line\n")
        read, = run_tools(server, upstream, [("read_file", {"path": escaped})])
        appended, = run_tools(server, upstream, [("append_file", {"path": escaped, "content": "more\n"})])
        assert read == "first line\n", read
        assert escaped in appended
        with open(os.path.join(sandbox, raw), "rb") as handle:
            assert handle.read() == b"first line\nmore\n"
        moved, = run_tools(server, upstream, [("move_file", {"source": escaped, "destination": "moved-" + escaped})])
        assert moved.endswith(f"to moved-{escaped}"), moved
        assert os.path.exists(os.path.join(sandbox, b"moved-" + raw))
        deleted, = run_tools(server, upstream, [("delete_file", {"path": "moved-" + escaped})])
        assert "deleted" in deleted and not os.path.lexists(os.path.join(sandbox, b"moved-" + raw))
        # the model can make such a name too, from the shown form
        wrote, = run_tools(server, upstream, [("write_file", {"path": "new-" + escaped, "content": "made"})])
        assert f"wrote new-{escaped}" in wrote
        with open(os.path.join(sandbox, b"new-" + raw), "rb") as handle:
            assert handle.read() == b"made"


@pytest.mark.parametrize("path", ["a\\b", "x\\", "\\x2f..", "\\x2e\\x2e/etc", "a\\x00b", "\\q", "\\x4"])
def test_a_backslash_that_is_not_an_escape_or_escapes_a_separator_is_refused(server: GhostServer,
                                                                             upstream: FakeUpstream,
                                                                             sandbox: bytes, path: str) -> None:
    result, = run_tools(server, upstream, [("write_file", {"path": path, "content": "x"})])
    assert result.startswith("write_file failed:"), result
    assert any(word in result for word in ("backslash", "'/' or NUL", "'..'")), result
    assert os.listdir(sandbox) == []


def test_download_serves_an_odd_name_by_its_shown_name(server: GhostServer, sandbox: bytes) -> None:
    for raw, escaped in ODD.items():
        plant(sandbox, raw, b"payload " + raw)
        response = httpx.get(server.url + "/api/download/" + urllib.parse.quote(escaped, safe=""),
                             headers=server.headers, timeout=TIMEOUT)
        assert response.status_code == 200, (raw, response.text[:300])
        assert response.content == b"payload " + raw
        disposition = response.headers["content-disposition"]
        assert "\n" not in disposition and "\x1b" not in disposition
        assert urllib.parse.unquote(disposition.split("''", 1)[-1]).strip('"') == escaped or escaped in disposition


def test_upload_to_a_shown_name_lands_on_the_real_name(server: GhostServer, sandbox: bytes) -> None:
    for raw, escaped in ODD.items():
        response = httpx.post(server.url + "/api/upload", headers=server.headers, timeout=TIMEOUT,
                              files={"file": (escaped, b"uploaded", "application/octet-stream")})
        assert response.status_code == 200, (raw, response.text[:300])
        assert response.json()["filename"] == escaped
        with open(os.path.join(sandbox, raw), "rb") as handle:
            assert handle.read() == b"uploaded"


def test_save_and_load_keep_odd_names(server: GhostServer, sandbox: bytes) -> None:
    os.mkdir(os.path.join(sandbox, b"odd\xfedir"))
    for raw in ODD:
        plant(sandbox, raw, raw)
        plant(sandbox, b"odd\xfedir/" + raw, raw * 2)
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=TIMEOUT) as http:
        saved = http.post("/api/workspace/save")
        assert saved.status_code == 200, saved.text[:300]
        names = zipfile.ZipFile(io.BytesIO(saved.content)).namelist()
        for escaped in ODD.values():
            assert f"sandbox/{escaped}" in names and f"sandbox/odd\\xfedir/{escaped}" in names, names
        for raw in ODD:  # change everything, then load the archive back
            os.unlink(os.path.join(sandbox, raw))
        plant(sandbox, b"later.txt", b"x")
        loaded = http.post("/api/workspace/load", content=saved.content, headers={"content-type": "application/zip"})
        assert loaded.status_code == 200, loaded.text[:300]
        json.dumps(loaded.json())
    for raw in ODD:
        with open(os.path.join(sandbox, raw), "rb") as handle:
            assert handle.read() == raw
        with open(os.path.join(sandbox, b"odd\xfedir/" + raw), "rb") as handle:
            assert handle.read() == raw * 2
    assert not os.path.exists(os.path.join(sandbox, b"later.txt"))


def test_names_made_by_execute_are_listed(server: GhostServer, upstream: FakeUpstream, sandbox: bytes) -> None:
    code = "import os\nfor n in (b'x\\xff', b'y\\n', b'z\\x1b]52;c;aGk=\\x07'):\n    open(n, 'wb').close()\nprint('ok')"
    ran, = run_tools(server, upstream, [("execute", {"code": code})])
    listing, = run_tools(server, upstream, [("list_files", {"path": "."})])
    assert "ok" in ran, ran
    assert sorted(listing.splitlines()) == ["x\\xff (0 bytes)", "y\\x0a (0 bytes)", "z\\x1b]52;c;aGk=\\x07 (0 bytes)"]


def test_a_skill_sidecar_with_an_odd_name_is_reported_in_health(server: GhostServer, sandbox: bytes) -> None:
    skills = os.path.join(sandbox, b"acquired_skills")
    os.mkdir(skills)
    plant(skills, b"bad\xff\x1b.json", b"not json")
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=TIMEOUT) as http:
        saved = http.post("/api/workspace/save")
        assert saved.status_code == 200, saved.text[:300]
        loaded = http.post("/api/workspace/load", content=saved.content, headers={"content-type": "application/zip"})
        assert loaded.status_code == 200, loaded.text[:300]  # a load rescans the skills
        health = http.get("/api/health")
    assert health.status_code == 200, health.text[:300]
    assert "bad\\xff\\x1b.json" in [entry["name"] for entry in health.json()["skills"]["skipped"]]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat"])
def test_a_lone_surrogate_in_a_request_is_a_clear_400_not_a_500(server: GhostServer, upstream: FakeUpstream,
                                                                path: str) -> None:
    # JSON allows "\udcff" (what an undecodable byte becomes in Python); it is no character, and
    # UTF-8 cannot carry it. A client sending one back must get a clear error, not a 500.
    body = ('{"model": "fake-model", "stream": false, "messages": [{"role": "user", "content": "list"}, '
            '{"role": "assistant", "content": "bad\\udcff.txt"}, {"role": "user", "content": "again"}]}')
    reply = httpx.post(server.url + path, content=body, timeout=TIMEOUT,
                       headers={**server.headers, "content-type": "application/json"})
    assert reply.status_code == 400, reply.text[:300]
    assert "surrogate" in reply.text
    # a surrogate pair is one character, as clients with ASCII-only JSON write it
    upstream.script(Reply(content="fine"))
    paired = body.replace("\\udcff", "\\ud83d\\ude00")
    reply = httpx.post(server.url + "/v1/chat/completions", content=paired, timeout=TIMEOUT,
                       headers={**server.headers, "content-type": "application/json"})
    assert reply.status_code == 200, reply.text[:300]
    assert any(m.get("content") == "bad😀.txt" for m in upstream.chat_requests()[-1]["body"]["messages"])


@pytest.mark.parametrize("stream", [False, True])
def test_a_lone_surrogate_from_the_upstream_becomes_a_replacement_character(server: GhostServer,
                                                                           upstream: FakeUpstream,
                                                                           stream: bool) -> None:
    upstream.script(Reply(content="bad \udcff half"))  # sent as the JSON escape "\udcff"
    reply = httpx.post(server.url + "/v1/chat/completions", headers=server.headers, timeout=TIMEOUT,
                       json={"model": "fake-model", "stream": stream, "messages": [{"role": "user", "content": "go"}]})
    assert reply.status_code == 200, reply.text[:300]
    if stream:
        chunks = [json.loads(line[6:]) for line in reply.text.splitlines() if line.startswith("data: {")]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    else:
        text = reply.json()["choices"][0]["message"]["content"]
    assert text == "bad \ufffd half"
