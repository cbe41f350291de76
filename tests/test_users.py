"""Several people on one Ghost (docs/users.md): users, keys, a workspace each, a front end acting
for its end users, and the line between them tried from every route and tool.

One real Ghost (bubblewrap sandbox, SQLite) on the scripted fake upstream for the module: the
admin, two users with their own keys (alice, bob), and a frontend key acting for two end users
(carol, dave). Every crossing attempt has a positive control: the owner does see the thing.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
import uuid
import zipfile
from multiprocessing.pool import ThreadPool
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from ghost.testing.fake_upstream import FakeUpstream, Reply
from ghost.testing.server import GhostServer

FRONTEND_USER = "X-OpenWebUI-User-Id"
FRONTEND_CHAT = "X-OpenWebUI-Chat-Id"


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout  # a hang guard, not a timing assertion
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class People:
    """The module's server and one httpx client per identity."""

    def __init__(self, server: GhostServer) -> None:
        self.server = server
        self.keys: dict[str, str] = {}
        self.key_ids: dict[str, str] = {}
        self.admin = self.client(server.headers)

    def client(self, headers: dict[str, str]) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, headers=headers, timeout=60)

    def add(self, name: str, role: str = "user") -> httpx.Client:
        made = self.admin.post("/api/users", json={"name": name, "role": role})
        assert made.status_code == 201, made.text
        self.keys[name], self.key_ids[name] = made.json()["key"], made.json()["key_id"]
        return self.client({"Authorization": f"Bearer {made.json()['key']}"})


@pytest.fixture(scope="module")
def people(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[People]:
    with GhostServer("--upstream-url", upstream.url, home=tmp_path_factory.mktemp("users-home")) as server:
        yield People(server)


@pytest.fixture(scope="module")
def alice(people: People) -> httpx.Client:
    client = people.add("alice")
    # Many turns in this module: no per-minute limit for the two (the override is tested below too).
    assert people.admin.put("/api/users/alice/limits", json={"turns_per_minute": 0}).status_code == 200
    return client


@pytest.fixture(scope="module")
def bob(people: People) -> httpx.Client:
    client = people.add("bob")
    assert people.admin.put("/api/users/bob/limits", json={"turns_per_minute": 0}).status_code == 200
    return client


@pytest.fixture(scope="module")
def frontend(people: People) -> httpx.Client:
    return people.add("webui", role="frontend")


def as_end_user(frontend: httpx.Client, user: str, chat: str | None = None) -> httpx.Client:
    headers = {**frontend.headers, FRONTEND_USER: user}
    if chat:
        headers[FRONTEND_CHAT] = chat
    return httpx.Client(base_url=str(frontend.base_url), headers=headers, timeout=60)


def chat(client: httpx.Client, text: str, **extra: Any) -> httpx.Response:
    return client.post("/v1/chat/completions", json={
        "model": "fake-model", "messages": [{"role": "user", "content": text}], **extra})


def tool(upstream: FakeUpstream, client: httpx.Client, name: str, arguments: dict[str, Any]) -> str:
    """Run one agent turn that calls tool `name`; the tool's result as the model saw it."""
    tag = f"turn-{uuid.uuid4().hex}"
    upstream.script_for(tag, Reply(content="", tool_calls=[{"name": name, "arguments": arguments}]),
                        Reply(content=f"done {tag}"))
    reply = chat(client, tag)
    assert reply.status_code == 200, reply.text
    seen = [r for r in upstream.chat_requests() if r["body"]["messages"][-1]["role"] == "tool"
            and any(m.get("content") == tag for m in r["body"]["messages"])]
    assert seen, "the upstream never saw the tool's result"
    return seen[-1]["body"]["messages"][-1]["content"]


# --- the user routes --------------------------------------------------------------------------------

def test_every_admitted_turn_is_counted(people: People) -> None:
    # Counts are written in the background, several turns in one write; the list reads them all.
    carol = people.add("carol")
    assert people.admin.put("/api/users/carol/limits", json={"turns_per_minute": 0}).status_code == 200

    def turns() -> int:
        return {u["name"]: u for u in people.admin.get("/api/users").json()["users"]}["carol"]["usage"]["turns"]

    assert turns() == 0
    for i in range(3):
        assert chat(carol, f"count {i}").status_code == 200
    assert turns() == 3  # read right after the last turn: nothing pending is missed
    with ThreadPool(2) as pool:  # a user runs 2 turns at once by default
        assert all(r.status_code == 200 for r in pool.map(lambda i: chat(carol, f"burst {i}"), range(16)))
    assert turns() == 19


async def test_turn_counts_that_come_together_are_written_together(db: Any) -> None:
    """On each engine (the `db` fixture): the turns counted meanwhile go to the store in one statement."""
    from ghost.store.users import Users

    users = Users(db)
    await users.create("dora")
    writes: list[dict] = []
    real_run = db.run

    async def counted(fn: Any, *args: Any) -> Any:
        if fn.__name__ == "_count_turns":
            writes.append(args[0])
        return await real_run(fn, *args)

    db.run = counted  # type: ignore[method-assign]
    for _ in range(50):
        await users.count_turn("dora")  # returns without waiting for the database
    assert writes == []
    assert {u["name"]: u["turns"] for u in await users.list()}["dora"] == 50
    assert writes == [{"dora": 50}]  # one statement for the turns counted meanwhile
    await users.count_turn("dora")
    await users.flush()
    assert (await users.get("dora")) is not None and writes[-1] == {"dora": 1}
    assert {u["name"]: u["turns"] for u in await users.list()}["dora"] == 51
    await users.count_turn("dora")
    await users.aclose()  # shutdown: the writer still waiting is stopped, the count written
    assert writes[-1] == {"dora": 1} and users._writer is not None and users._writer.cancelled()
    assert {u["name"]: u["turns"] for u in await users.list()}["dora"] == 52


def test_user_routes_follow_the_contract(people: People, alice: httpx.Client, frontend: httpx.Client) -> None:
    listed = people.admin.get("/api/users")
    assert listed.status_code == 200
    by_name = {u["name"]: u for u in listed.json()["users"]}
    assert by_name["admin"]["role"] == "admin" and by_name["alice"]["role"] == "user"
    assert by_name["webui"]["role"] == "frontend"
    assert by_name["alice"]["keys"] == 1 and set(by_name["alice"]["usage"]) == {"sandbox_bytes", "turns"}
    assert isinstance(by_name["alice"]["created_at"], float)
    again = people.admin.post("/api/users", json={"name": "alice"})
    assert again.status_code == 409
    assert people.admin.delete("/api/users/admin").status_code == 409
    for who in (alice, frontend):  # neither a user nor a front end may manage users
        for method, path in [("GET", "/api/users"), ("POST", "/api/users"), ("DELETE", "/api/users/bob"),
                             ("POST", "/api/users/alice/keys"), ("DELETE", "/api/users/alice/keys/x")]:
            reply = who.request(method, path, json={"name": "mallory"} if method == "POST" else None)
            assert reply.status_code == 403, (method, path, reply.text)
            assert reply.json()["error"]["type"] == "permission_error"
    anonymous = httpx.get(people.server.url + "/api/users", timeout=30)
    assert anonymous.status_code == 401
    assert people.admin.post("/api/users", json={"name": "x", "role": "root"}).status_code == 422


@pytest.mark.parametrize("name", ["..", ".", ".hidden", "a/b", "../alice", "a\\b", "a\x00b", "x" * 129,
                                  "x" * 10_000, "аlice", "ａlice", "alice\n", "", " alice", "al ice", 7, None])
def test_names_that_try_to_escape_are_refused(people: People, name: Any) -> None:
    reply = people.admin.post("/api/users", json={"name": name})
    assert reply.status_code == 422, reply.text
    assert reply.json()["error"]["type"] == "invalid_request_error"


def test_escaping_names_in_paths_and_headers_are_refused(people: People, frontend: httpx.Client) -> None:
    for path in ["/api/users/..%2F..%2Fetc", "/api/users/.x/keys", "/api/users/%D0%B0lice/keys"]:
        reply = people.admin.post(path) if path.endswith("keys") else people.admin.delete(path)
        # (a decoded '/' matches no user route: the path is not Ghost's and is proxied, 404)
        assert reply.status_code in (404, 422), (path, reply.text)
    for bad in ["..", "../bob", ".x", "x" * 129, "a b", "a/b"]:
        reply = as_end_user(frontend, bad).get("/api/sessions")
        assert reply.status_code == 422, (bad, reply.text)
    names = {u["name"] for u in people.admin.get("/api/users").json()["users"]}
    assert not any(n.startswith(".") or "/" in n for n in names)
    assert as_end_user(frontend, "okay-user").get("/api/sessions").status_code == 200  # positive control
    folders = [p.name for p in (people.server.home / "workspaces").iterdir()]
    assert "okay-user" in folders and not any(name.startswith(".") for name in folders)


# --- files, sandbox, tools across the line ------------------------------------------------------------

def test_files_stay_with_their_owner(upstream: FakeUpstream, alice: httpx.Client, bob: httpx.Client,
                                     people: People) -> None:
    written = tool(upstream, alice, "write_file", {"path": "notes/tax.txt", "content": "alice's tax notes"})
    assert "error" not in written.lower()
    # Positive controls: alice lists, reads and downloads her file.
    assert "tax.txt" in tool(upstream, alice, "list_files", {"path": "notes"})
    assert "alice's tax notes" in tool(upstream, alice, "read_file", {"path": "notes/tax.txt"})
    assert alice.get("/api/download/notes/tax.txt").text == "alice's tax notes"
    # Bob sees none of it, however he asks.
    assert "tax.txt" not in tool(upstream, bob, "list_files", {"path": ".", "recursive": True})
    for path in ["notes/tax.txt", "../alice/sandbox/notes/tax.txt", "../../workspaces/alice/sandbox/notes/tax.txt",
                 str(people.server.home / "workspaces" / "alice" / "sandbox" / "notes" / "tax.txt")]:
        assert "alice's tax notes" not in tool(upstream, bob, "read_file", {"path": path})
    assert "alice's tax notes" not in tool(upstream, bob, "search_files", {"query": "tax notes"})
    assert bob.get("/api/download/notes/tax.txt").status_code == 404
    assert bob.get("/api/download/..%2Falice%2Fsandbox%2Fnotes%2Ftax.txt").status_code in (400, 404)
    # Upload by bob lands in bob's folder only.
    up = bob.post("/api/upload", files={"file": ("bobs.txt", b"bob's upload")})
    assert up.status_code == 200, up.text
    assert bob.get("/api/download/bobs.txt").content == b"bob's upload"
    assert alice.get("/api/download/bobs.txt").status_code == 404
    assert (people.server.home / "workspaces" / "bob" / "sandbox" / "bobs.txt").exists()
    # The admin's workspace (today's sandbox folder) is not anyone else's either.
    assert people.admin.get("/api/download/notes/tax.txt").status_code == 404


def test_execute_cannot_reach_another_users_processes_or_files(upstream: FakeUpstream, alice: httpx.Client,
                                                              bob: httpx.Client, people: People) -> None:
    secret = people.server.home / "workspaces" / "alice" / "sandbox" / "secret.txt"
    secret.write_text("alice only")
    marker = f"alice-proc-{uuid.uuid4().hex}"
    # Alice's run stays alive (its argv carries the marker) until the test says so.
    alice_code = ("import os, time\nopen('started', 'w').close()\n"
                  f"while not os.path.exists('go'):\n    time.sleep(0.05)\nprint('alice survived')")
    results: dict[str, str] = {}

    def alice_turn() -> None:
        results["alice"] = tool(upstream, alice, "execute", {"code": f"import subprocess, sys\n"
                                f"subprocess.run([sys.executable, '-c', {alice_code!r}, '{marker}'])"})

    runner = threading.Thread(target=alice_turn)
    runner.start()
    try:
        wait_for(lambda: (secret.parent / "started").exists(), "alice's process to start")
        assert _host_has(marker)  # positive control: it is there, seen from the host
        probe = (
            "import os, signal\n"
            f"mine, theirs, killed = [], [], 0\nmarker = bytes.fromhex('{marker.encode().hex()}')\n"
            "for pid in [p for p in os.listdir('/proc') if p.isdigit()]:\n"
            "    try:\n        cmd = open(f'/proc/{pid}/cmdline', 'rb').read()\n    except OSError:\n        continue\n"
            "    if marker in cmd: theirs.append(pid)\n"
            "    if b'bob-probe' in cmd or int(pid) == os.getpid(): mine.append(pid)\n"
            "    try:\n        os.kill(int(pid), signal.SIGKILL) if int(pid) != os.getpid() else None; killed += 1\n"
            "    except OSError:\n        pass\n"
            f"try:\n    print('read:', open({str(secret)!r}).read())\nexcept OSError as e:\n    print('read failed', type(e).__name__)\n"
            "print('listing:', os.listdir('/sandbox'), os.path.exists('/sandbox/../workspaces'))\n"
            "print('mine:', len(mine) > 0, 'theirs:', theirs)\n"
        )
        seen = tool(upstream, bob, "execute", {"code": probe + "# bob-probe"})
        # Positive control: the probe finds its own process (run as is in alice's sandbox, it finds
        # hers; see the end of this test).
        assert "mine: True" in seen
        assert "theirs: []" in seen, seen
        assert "alice only" not in seen and "read failed" in seen
        assert "secret.txt" not in seen
        assert _host_has(marker)  # bob's SIGKILLs did not reach it
    finally:
        (secret.parent / "go").write_text("")
        runner.join(120)
    assert "alice survived" in results["alice"]
    # The probe does find a process with the marker where there is one: its own sandbox's.
    own = tool(upstream, bob, "execute", {"code": probe.replace("# bob-probe", "") + "\n# " + marker})
    assert "theirs: []" not in own, own
    # Positive control for the file: alice's own code reads it.
    assert "alice only" in tool(upstream, alice, "execute", {"code": "print(open('secret.txt').read())"})


def _host_has(marker: str) -> bool:
    import os
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"{entry.path}/cmdline", "rb") as cmdline:
                    if marker.encode() in cmdline.read():
                        return True
            except OSError:
                continue
    return False


def test_scratchpad_and_skills_stay_with_their_owner(upstream: FakeUpstream, alice: httpx.Client,
                                                     bob: httpx.Client) -> None:
    assert "error" not in tool(upstream, alice, "scratchpad_set", {"key": "pin", "value": "4321"}).lower()
    assert "4321" in tool(upstream, alice, "scratchpad_get", {"key": "pin"})
    assert "4321" not in tool(upstream, bob, "scratchpad_get", {"key": "pin"})
    assert "pin" not in tool(upstream, bob, "scratchpad_list", {})
    tool(upstream, bob, "scratchpad_delete", {"key": "pin"})
    assert "4321" in tool(upstream, alice, "scratchpad_get", {"key": "pin"})  # bob's delete did nothing
    made = tool(upstream, alice, "create_skill", {
        "name": "alice_adder", "description": "adds", "parameters": {"type": "object", "properties": {
            "a": {"type": "integer"}}, "required": ["a"]},
        "code": "import json, sys\nprint(json.load(sys.stdin)['a'] + 1)", "test_arguments": {"a": 1}})
    assert "alice_adder" in made
    assert "alice_adder" in tool(upstream, alice, "list_skills", {})
    assert "alice_adder" not in tool(upstream, bob, "list_skills", {})
    assert "42" in tool(upstream, alice, "alice_adder", {"a": 41})  # positive control
    assert "42" not in tool(upstream, bob, "alice_adder", {"a": 41})
    tool(upstream, bob, "delete_skill", {"name": "alice_adder"})
    assert "alice_adder" in tool(upstream, alice, "list_skills", {})  # bob's delete did nothing


def test_sessions_stay_with_their_owner(upstream: FakeUpstream, alice: httpx.Client, bob: httpx.Client) -> None:
    upstream.script_for("my diary", Reply(content="noted"))
    assert chat(alice, "my diary", session_id="alice-diary").status_code == 200
    assert "alice-diary" in [s["id"] for s in alice.get("/api/sessions").json()["sessions"]]
    assert alice.get("/api/sessions/alice-diary").status_code == 200
    assert "alice-diary" not in [s["id"] for s in bob.get("/api/sessions").json()["sessions"]]
    assert bob.get("/api/sessions/alice-diary").status_code == 404
    assert bob.delete("/api/sessions/alice-diary").status_code == 404
    assert alice.get("/api/sessions/alice-diary").json()["messages"][0]["content"] == "my diary"
    # The same session id used by bob is bob's own conversation, apart from alice's.
    upstream.script_for("bob's words", Reply(content="ok"))
    assert chat(bob, "bob's words", session_id="alice-diary").status_code == 200
    assert bob.get("/api/sessions/alice-diary").json()["messages"][0]["content"] == "bob's words"
    assert alice.get("/api/sessions/alice-diary").json()["messages"][0]["content"] == "my diary"


def test_stored_responses_stay_with_their_owner(upstream: FakeUpstream, alice: httpx.Client, bob: httpx.Client) -> None:
    upstream.script_for("alice's question", Reply(content="alice's answer"))
    made = alice.post("/v1/responses", json={"model": "fake-model", "input": "alice's question"})
    assert made.status_code == 200, made.text
    response_id = made.json()["id"]
    assert alice.get(f"/v1/responses/{response_id}").status_code == 200  # the owner sees it
    assert bob.get(f"/v1/responses/{response_id}").status_code == 404
    assert bob.delete(f"/v1/responses/{response_id}").status_code == 404
    continued = bob.post("/v1/responses", json={"model": "fake-model", "input": "go on",
                                                "previous_response_id": response_id})
    assert continued.status_code == 404, continued.text
    assert alice.get(f"/v1/responses/{response_id}").status_code == 200  # bob's delete did nothing


def test_the_upstream_account_behind_the_proxy_is_for_admins_only(people: People, alice: httpx.Client,
                                                                   frontend: httpx.Client) -> None:
    # The proxy sends the upstream key with every request: what the upstream keeps under it
    # (files, batches, stored completions) must not be one store every user's key can read.
    reached = people.admin.get("/echo/v1/files/file-of-bob")  # positive control: the admin's key goes through
    assert reached.status_code == 200 and reached.json()["path"] == "/echo/v1/files/file-of-bob", reached.text
    for client in (alice, as_end_user(frontend, "carol"), frontend):
        for method in ("GET", "DELETE", "POST"):
            refused = client.request(method, "/echo/v1/files/file-of-bob")
            assert refused.status_code == 403, (method, refused.text)
            assert refused.json()["error"]["type"] == "permission_error", refused.text
    # Stateless inference stays open to every key (--proxy-user-paths).
    embedded = alice.post("/v1/embeddings", json={"model": "fake-model", "input": "hello"})
    assert embedded.status_code == 200 and embedded.json()["data"], embedded.text


def test_save_and_load_stay_with_their_owner(upstream: FakeUpstream, alice: httpx.Client, bob: httpx.Client) -> None:
    tool(upstream, alice, "write_file", {"path": "saved.txt", "content": "in alice's archive"})
    tool(upstream, alice, "scratchpad_set", {"key": "kept", "value": "alice's memo"})
    saved = alice.post("/api/workspace/save", json={})
    assert saved.status_code == 200
    names = zipfile.ZipFile(io.BytesIO(saved.content)).namelist()
    assert "sandbox/saved.txt" in names  # positive control
    bobs = bob.post("/api/workspace/save", json={})
    assert bobs.status_code == 200
    assert "sandbox/saved.txt" not in zipfile.ZipFile(io.BytesIO(bobs.content)).namelist()
    # Bob loads an archive of his own: alice's workspace is untouched.
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("session.json", '{"format": "ghost-workspace", "version": 1, "scratchpad": {"bobkey": 1}}')
        z.writestr("sandbox/bob-loaded.txt", "bob's")
    loaded = bob.post("/api/workspace/load", files={"file": ("w.zip", archive.getvalue(), "application/zip")})
    assert loaded.status_code == 200, loaded.text
    assert bob.get("/api/download/bob-loaded.txt").text == "bob's"
    assert alice.get("/api/download/bob-loaded.txt").status_code == 404
    assert alice.get("/api/download/saved.txt").text == "in alice's archive"
    # The load replaced bob's scratchpad, not alice's.
    assert "alice's memo" in tool(upstream, alice, "scratchpad_get", {"key": "kept"})
    assert "bobkey" in tool(upstream, bob, "scratchpad_list", {})
    assert "bobkey" not in tool(upstream, alice, "scratchpad_list", {})


async def _mcp_list(url: str, headers: dict[str, str]) -> str:
    async with httpx2.AsyncClient(headers=headers, timeout=60) as http:  # the first /mcp request imports the MCP SDK
        async with Client(streamable_http_client(url + "/mcp", http_client=http)) as client:
            result = await client.call_tool("list_files", {"path": ".", "recursive": True})
            return result.content[0].text


def test_mcp_endpoint_acts_on_the_callers_workspace(upstream: FakeUpstream, people: People, alice: httpx.Client,
                                                   bob: httpx.Client) -> None:
    tool(upstream, alice, "write_file", {"path": "mcp-visible.txt", "content": "x"})
    assert "mcp-visible.txt" in asyncio.run(_mcp_list(people.server.url, dict(alice.headers)))
    assert "mcp-visible.txt" not in asyncio.run(_mcp_list(people.server.url, dict(bob.headers)))


def test_health_shows_the_callers_own_workspace(alice: httpx.Client, bob: httpx.Client, people: People) -> None:
    assert alice.get("/api/health").json()["user"] == "alice"
    assert bob.get("/api/health").json()["user"] == "bob"
    assert people.admin.get("/api/health").json()["user"] == "admin"


# --- the front end and forged headers -------------------------------------------------------------------

def test_frontend_acts_for_its_end_users_apart(upstream: FakeUpstream, frontend: httpx.Client, people: People,
                                               alice: httpx.Client) -> None:
    carol = as_end_user(frontend, "carol-3f2a", chat="chat-carol-1")
    dave = as_end_user(frontend, "dave-91be", chat="chat-dave-1")
    tool(upstream, carol, "write_file", {"path": "carol.txt", "content": "carol's"})
    assert carol.get("/api/download/carol.txt").text == "carol's"  # positive control
    assert dave.get("/api/download/carol.txt").status_code == 404
    assert frontend.get("/api/download/carol.txt").status_code == 404  # no header: its own workspace
    # The chat id names the session.
    assert "chat-carol-1" in [s["id"] for s in carol.get("/api/sessions").json()["sessions"]]
    assert "chat-carol-1" not in [s["id"] for s in dave.get("/api/sessions").json()["sessions"]]
    users = {u["name"]: u for u in people.admin.get("/api/users").json()["users"]}
    assert users["carol-3f2a"]["role"] == "user" and users["carol-3f2a"]["keys"] == 0
    # A front end acts for users only, never as an admin or another front end.
    for name in ("admin", "webui"):
        refused = as_end_user(frontend, name).get("/api/sessions")
        assert refused.status_code == 403 and refused.json()["error"]["type"] == "permission_error"
    twice = frontend.get("/api/sessions", headers=[(FRONTEND_USER, "carol-3f2a"), (FRONTEND_USER, "dave-91be")])
    assert twice.status_code == 422


def test_forged_frontend_headers_from_a_user_key_are_ignored(upstream: FakeUpstream, alice: httpx.Client,
                                                             bob: httpx.Client, people: People) -> None:
    tool(upstream, bob, "write_file", {"path": "bob-private.txt", "content": "bob's"})
    for target in ("bob", "admin", "carol-3f2a"):
        forged = httpx.Client(base_url=people.server.url, timeout=60, headers={
            **alice.headers, FRONTEND_USER: target, FRONTEND_CHAT: "stolen"})
        assert forged.get("/api/download/bob-private.txt").status_code == 404
        assert forged.get("/api/health").json()["user"] == "alice"
        assert "stolen" not in [s["id"] for s in forged.get("/api/sessions").json()["sessions"]]
    admin_forged = people.admin.get("/api/health", headers={FRONTEND_USER: "bob"})
    assert admin_forged.json()["user"] == "admin"


# --- keys: rotation and removal at once -----------------------------------------------------------------

def test_key_rotation_and_removal_take_effect_at_once(people: People) -> None:
    old = people.add("rotor")
    assert old.get("/api/sessions").status_code == 200
    added = people.admin.post("/api/users/rotor/keys")
    assert added.status_code == 201 and added.json()["name"] == "rotor"
    new = people.client({"X-Ghost-Key": added.json()["key"]})
    assert new.get("/api/sessions").status_code == 200
    assert people.admin.delete(f"/api/users/rotor/keys/{people.key_ids['rotor']}").status_code == 204
    assert old.get("/api/sessions").status_code == 401  # the very next request
    assert new.get("/api/sessions").status_code == 200
    assert people.admin.delete("/api/users/rotor/keys/nope").status_code == 404
    upload = new.post("/api/upload", files={"file": ("r.txt", b"rotor's")})
    assert upload.status_code == 200
    assert people.admin.delete("/api/users/rotor").status_code == 204
    assert new.get("/api/sessions").status_code == 401
    assert (people.server.home / "workspaces" / "rotor" / "sandbox" / "r.txt").exists()  # kept without purge
    people.add("gone")
    gone = people.client({"X-Ghost-Key": people.keys["gone"]})
    assert gone.post("/api/upload", files={"file": ("g.txt", b"g")}).status_code == 200
    assert (people.server.home / "workspaces" / "gone").exists()
    assert people.admin.delete("/api/users/gone", params={"purge": "true"}).status_code == 204
    assert gone.get("/api/sessions").status_code == 401
    assert not (people.server.home / "workspaces" / "gone").exists()
    assert people.admin.delete("/api/users/gone").status_code == 404


# --- two users at once, limits --------------------------------------------------------------------------

def test_two_users_turns_run_at_the_same_time(upstream: FakeUpstream, alice: httpx.Client, bob: httpx.Client) -> None:
    upstream.script_for("alice waits", Reply(content="alice's answer", hold="alice-turn"))
    upstream.script_for("bob goes", Reply(content="bob's answer"))
    result: dict[str, httpx.Response] = {}
    runner = threading.Thread(target=lambda: result.setdefault("alice", chat(alice, "alice waits")))
    runner.start()
    try:
        assert upstream.wait_hold_state("alice-turn", "open", timeout=60) == "open"
        bobs = chat(bob, "bob goes")  # while alice's turn is held open
        assert bobs.status_code == 200 and bobs.json()["choices"][0]["message"]["content"] == "bob's answer"
        assert upstream.hold_state("alice-turn") == "open"  # alice's still running: order by events
    finally:
        upstream.release("alice-turn")
        runner.join(60)
    assert result["alice"].json()["choices"][0]["message"]["content"] == "alice's answer"


def test_per_user_turn_limits_answer_429_and_spare_others(upstream: FakeUpstream, people: People,
                                                          bob: httpx.Client) -> None:
    erin = people.add("erin")
    # The default: 2 turns at once. Two held, the third is 429 at once; bob is unaffected.
    for n in (1, 2):
        upstream.script_for(f"erin held {n}", Reply(content="x", hold=f"erin-{n}"))
    runners = [threading.Thread(target=chat, args=(erin, f"erin held {n}")) for n in (1, 2)]
    for runner in runners:
        runner.start()
    try:
        for n in (1, 2):
            assert upstream.wait_hold_state(f"erin-{n}", "open", timeout=60) == "open"
        third = chat(erin, "erin third")
        assert third.status_code == 429 and third.headers["Retry-After"] == "1"
        assert third.json()["error"]["type"] == "rate_limit_error"
        upstream.script_for("bob meanwhile", Reply(content="fine"))
        assert chat(bob, "bob meanwhile").status_code == 200
    finally:
        for n in (1, 2):
            upstream.release(f"erin-{n}")
        for runner in runners:
            runner.join(60)
    # Turns per minute, by override: one allowed, the next 429 with a Retry-After in seconds.
    assert people.admin.put("/api/users/erin/limits", json={"turns_per_minute": 3}).status_code == 200
    upstream.script(Reply(content="a"))
    assert chat(erin, "erin per minute").status_code == 200  # the third turn in this minute
    refused = chat(erin, "erin again")
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 60
    assert people.admin.put("/api/users/erin/limits", json={"turns_per_minute": None}).status_code == 200
    bad = people.admin.put("/api/users/erin/limits", json={"turns_per_minute": -1})
    assert bad.status_code == 422


def test_the_default_turns_per_minute_holds(upstream: FakeUpstream, people: People) -> None:
    frank = people.add("frank")
    upstream.responder = lambda body: Reply(content="ok")
    codes = [chat(frank, f"frank {n}").status_code for n in range(31)]
    assert codes[:30] == [200] * 30
    assert codes[30] == 429


def test_sandbox_disk_limit_answers_507_and_spares_others(upstream: FakeUpstream, people: People,
                                                          bob: httpx.Client) -> None:
    gail = people.add("gail")
    assert gail.post("/api/upload", files={"file": ("big.bin", b"x" * 200_000)}).status_code == 200
    assert people.admin.put("/api/users/gail/limits", json={"sandbox_bytes": 100_000}).status_code == 200
    over = gail.post("/api/upload", files={"file": ("more.bin", b"y")})
    assert over.status_code == 507 and over.json()["error"]["type"] == "insufficient_storage"
    assert chat(gail, "gail chats").status_code == 507
    assert bob.post("/api/upload", files={"file": ("b2.txt", b"fine")}).status_code == 200
    usage = {u["name"]: u["usage"] for u in people.admin.get("/api/users").json()["users"]}
    assert usage["gail"]["sandbox_bytes"] >= 200_000


# --- an existing single-user home, upgraded in place ------------------------------------------------

def _home_of_the_single_user_schema(home: Any) -> None:
    """A GHOST_HOME as Ghost before users left it: schema version 3, a generated key file, a
    sandbox file, scratchpad entries, a stored conversation and its summary."""
    import json
    import os
    import sqlite3

    from ghost.store.conversation import conversation_digest, opening_digest
    from ghost.store.db import MIGRATIONS

    home.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(home / "ghost.db", isolation_level=None)
    for version, step in enumerate(MIGRATIONS[:3], start=1):  # the migrations as they were
        conn.execute("BEGIN")
        step(conn)
        conn.execute(f"PRAGMA user_version={version}")
        conn.execute("COMMIT")
    messages = [{"role": "user", "content": "old question"}, {"role": "assistant", "content": "old answer"}]
    conn.execute("INSERT INTO scratchpad VALUES ('old-key', ?, 1.0)", (json.dumps("old value"),))
    conn.execute("INSERT INTO history VALUES ('old-session', ?, 2.0, ?, ?)",
                 (json.dumps(messages), conversation_digest(messages), opening_digest(messages)))
    conn.execute("INSERT INTO context_summaries VALUES ('h1', 1, 'old summary', 3.0)")
    conn.execute("INSERT INTO session_summaries VALUES ('old-session', 'h1', 1, 'old summary', 3.0)")
    conn.close()
    (home / "sandbox").mkdir()
    (home / "sandbox" / "old-file.txt").write_text("kept through the upgrade")
    key = home / "api_key"
    key.write_text("old-generated-key-0123456789abcdef\n")
    os.chmod(key, 0o600)


def test_an_existing_home_upgrades_in_place_with_nothing_lost(upstream: FakeUpstream,
                                                              tmp_path_factory: pytest.TempPathFactory) -> None:
    home = tmp_path_factory.mktemp("old-home") / "home"
    _home_of_the_single_user_schema(home)
    with GhostServer("--upstream-url", upstream.url, home=home, api_key=None) as server:
        assert server.headers == {"X-Ghost-Key": "old-generated-key-0123456789abcdef"}  # the same key
        with httpx.Client(base_url=server.url, headers=server.headers, timeout=60) as admin:
            session = admin.get("/api/sessions/old-session")
            assert session.status_code == 200, session.text
            assert session.json()["messages"][0]["content"] == "old question"
            assert session.json()["summary"]["text"] == "old summary"
            assert "old value" in tool(upstream, admin, "scratchpad_get", {"key": "old-key"})
            assert admin.get("/api/download/old-file.txt").text == "kept through the upgrade"
            made = admin.post("/api/users", json={"name": "newcomer"})
            assert made.status_code == 201
            with httpx.Client(base_url=server.url, headers={"X-Ghost-Key": made.json()["key"]}, timeout=60) as new:
                assert new.get("/api/sessions").json()["sessions"] == []
                assert new.get("/api/download/old-file.txt").status_code == 404
                assert "old value" not in tool(upstream, new, "scratchpad_get", {"key": "old-key"})
    # Started again, the upgraded home is as it was (the migration ran once).
    with GhostServer("--upstream-url", upstream.url, home=home, api_key=None) as server:
        with httpx.Client(base_url=server.url, headers=server.headers, timeout=60) as admin:
            assert "old-session" in [s["id"] for s in admin.get("/api/sessions").json()["sessions"]]
            assert "newcomer" in [u["name"] for u in admin.get("/api/users").json()["users"]]


# --- the command line --------------------------------------------------------------------------------

def test_ghost_users_commands_manage_users_of_the_running_server(people: People, alice: httpx.Client) -> None:
    import subprocess
    import sys

    from ghost.testing.server import clean_env

    def ghost(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ghost", "users", *args, "--url", people.server.url,
                               "--api-key", people.server.api_key or ""],
                              capture_output=True, text=True, timeout=120, env=clean_env())

    added = ghost("add", "cli-user")
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip()
    assert key.startswith("ghost_") and "shown only now" in added.stderr
    as_cli = people.client({"X-Ghost-Key": key})
    assert as_cli.get("/api/sessions").status_code == 200
    listed = ghost("list")
    assert listed.returncode == 0 and "cli-user" in listed.stdout and "admin" in listed.stdout
    rotated = ghost("rotate", "cli-user")
    assert rotated.returncode == 0, rotated.stderr
    assert as_cli.get("/api/sessions").status_code == 401  # the old key, at once
    assert people.client({"X-Ghost-Key": rotated.stdout.strip()}).get("/api/sessions").status_code == 200
    assert ghost("add", "cli-user").returncode == 1  # 409: taken
    refused = ghost("add", "../escape")
    assert refused.returncode == 1 and "user name" in refused.stderr
    removed = ghost("remove", "cli-user", "--purge")
    assert removed.returncode == 0, removed.stderr
    assert people.client({"X-Ghost-Key": rotated.stdout.strip()}).get("/api/sessions").status_code == 401
    with_user_key = subprocess.run([sys.executable, "-m", "ghost", "users", "list", "--url", people.server.url,
                                    "--api-key", people.keys["alice"]], capture_output=True, text=True,
                                   timeout=120, env=clean_env())
    assert with_user_key.returncode == 1 and "admin" in with_user_key.stderr
