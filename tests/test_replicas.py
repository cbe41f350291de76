"""Three Ghost replicas behind HAProxy, sharing one PostgreSQL and one workspace root (docs/scaling.md).

Everything goes through the balancer (round robin, no stickiness), so consecutive requests land on
different replicas; `X-Served-By` (set by HAProxy) says which. The module shares one set of servers;
the tests that kill a replica and restart PostgreSQL come last.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ghost.testing.fake_upstream import FakeUpstream, Reply
from ghost.testing.haproxy import HAProxy, config
from ghost.testing.postgres import PostgresServer
from ghost.testing.server import TEST_KEY, GhostServer

ADMIN = {"X-Ghost-Key": TEST_KEY}
DOC = Path(__file__).resolve().parents[1] / "docs" / "scaling.md"
ADD_CODE = "import json, sys\nargs = json.load(sys.stdin)\nprint(args['a'] + args['b'])\n"
ADD_PARAMS = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
              "required": ["a", "b"]}


@dataclass
class Cluster:
    database: PostgresServer
    root: Path
    replicas: dict[str, GhostServer]
    balancer: HAProxy
    upstream: FakeUpstream

    def client(self, headers: dict[str, str] | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.balancer.url, headers=ADMIN if headers is None else headers, timeout=60)

    def replica_args(self) -> list[str]:
        return ["--upstream-url", self.upstream.url, "--database-url", self.database.url("ghost"),
                "--workspace-root", str(self.root), "--drain-seconds", "1"]


@pytest.fixture(scope="module")
def cluster(upstream: FakeUpstream) -> Iterator[Cluster]:
    database = PostgresServer().start()
    database.create_database("ghost")
    root = Path(tempfile.mkdtemp(prefix="ghost-shared-"))
    replicas: dict[str, GhostServer] = {}
    balancer = None
    try:
        made = Cluster(database, root, replicas, None, upstream)  # type: ignore[arg-type]
        # The first start makes the schema and the sandbox user; the other two then start at once.
        names = ("r1", "r2", "r3")
        for name in names:
            replicas[name] = GhostServer(*made.replica_args(), home=root.parent / f"{root.name}-{name}-home")
        replicas["r1"].start(timeout=120)
        starting = [threading.Thread(target=replicas[n].start, kwargs={"timeout": 120}) for n in names[1:]]
        for thread in starting:
            thread.start()
        for thread in starting:
            thread.join()
        balancer = HAProxy([(name, replicas[name].port) for name in names]).start(ready_servers=3)
        made.balancer = balancer
        yield made
    finally:
        if balancer is not None:
            balancer.stop()
        for server in replicas.values():
            server.stop()
        database.remove()


def chat(client: httpx.Client, messages: list[dict[str, str]]) -> httpx.Response:
    response = client.post("/v1/chat/completions", json={"model": "fake-model", "messages": messages})
    assert response.status_code == 200, response.text
    return response


def served_by(response: httpx.Response) -> str:
    return response.headers["x-served-by"]


def tool_results(upstream: FakeUpstream) -> list[str]:
    return [m["content"] for r in upstream.chat_requests() for m in r["body"]["messages"] if m["role"] == "tool"]


def test_the_doc_shows_the_tested_haproxy_config() -> None:
    shown = config(8080, [("ghost1", 8001), ("ghost2", 8002), ("ghost3", 8003)], bind="0.0.0.0")
    assert shown in DOC.read_text()


def test_a_conversation_across_replicas_keeps_history_and_files(cluster: Cluster) -> None:
    upstream = cluster.upstream
    first = [{"role": "user", "content": "remember alpha"}]
    upstream.script(Reply(content="", tool_calls=[{"name": "write_file",
                                                   "arguments": {"path": "notes.txt", "content": "alpha"}}]),
                    Reply(content="Saved it."))
    with cluster.client() as client:
        one = chat(client, first)
        session = one.headers["x-ghost-session"]
        second = [*first, {"role": "assistant", "content": "Saved it."}, {"role": "user", "content": "read it"}]
        upstream.script(Reply(content="", tool_calls=[{"name": "read_file", "arguments": {"path": "notes.txt"}}]),
                        Reply(content="It says alpha."))
        two = chat(client, second)
        assert served_by(two) != served_by(one)
        assert two.headers["x-ghost-session"] == session  # continued: the history was found elsewhere
        assert any("alpha" in result for result in tool_results(upstream))
        # A third replica shows the stored conversation, whole.
        stored = client.get(f"/api/sessions/{session}")
        assert served_by(stored) not in (served_by(one), served_by(two))
        assert [m["content"] for m in stored.json()["messages"]][-1] == "It says alpha."
        assert len(stored.json()["messages"]) == 4


def test_a_skill_made_through_one_replica_is_called_through_another(cluster: Cluster) -> None:
    upstream = cluster.upstream
    upstream.script(
        Reply(content="", tool_calls=[{"name": "create_skill", "arguments": {
            "name": "add", "description": "Add two numbers.", "parameters": ADD_PARAMS, "code": ADD_CODE,
            "test_arguments": {"a": 1, "b": 2}}}]),
        Reply(content="Made it."))
    with cluster.client() as client:
        made = chat(client, [{"role": "user", "content": "make add"}])
        upstream.script(Reply(content="", tool_calls=[{"name": "add", "arguments": {"a": 20, "b": 22}}]),
                        Reply(content="42."))
        used = chat(client, [{"role": "user", "content": "use add"}])
        assert served_by(used) != served_by(made)
        offered = {t["function"]["name"] for t in upstream.chat_requests()[-2]["body"]["tools"]}
        assert "add" in offered
        assert tool_results(upstream)[-1] == "42\n"


def test_save_through_one_load_through_another(cluster: Cluster) -> None:
    with cluster.client() as client:
        put = client.post("/api/upload", files={"file": ("kept.txt", b"version one")})
        assert put.status_code == 200, put.text
        saved = client.post("/api/workspace/save")
        assert saved.status_code == 200
        changed = client.post("/api/upload", files={"file": ("kept.txt", b"version two")})
        assert changed.status_code == 200
        loaded = client.post("/api/workspace/load", content=saved.content, headers={"content-type": "application/zip"})
        assert loaded.status_code == 200, loaded.text
        assert served_by(loaded) != served_by(saved)
        for _ in range(3):  # every replica serves the loaded file
            got = client.get("/api/download/kept.txt")
            assert got.content == b"version one", served_by(got)


def test_a_user_made_through_one_replica_works_at_once_on_all(cluster: Cluster) -> None:
    with cluster.client() as client:
        made = client.post("/api/users", json={"name": "zed"})
        assert made.status_code == 201, made.text
        key = made.json()["key"]
    with cluster.client({"X-Ghost-Key": key}) as client:
        answers = [client.get("/api/sessions") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert len({served_by(a) for a in answers}) == 3
    with cluster.client() as client:
        assert client.delete("/api/users/zed").status_code == 204
    with cluster.client({"X-Ghost-Key": key}) as client:
        assert [client.get("/api/sessions").status_code for _ in range(3)] == [401, 401, 401]


def test_a_load_on_one_replica_waits_for_a_turn_on_another(cluster: Cluster) -> None:
    upstream = cluster.upstream
    with cluster.client() as client:
        archive = client.post("/api/workspace/save")
        assert archive.status_code == 200
    upstream.script(Reply(chunks=["a", "b", "c"], hold="turn", hold_after=1))
    events: list[str] = []

    def turn() -> None:
        with cluster.client() as client:
            with client.stream("POST", "/v1/chat/completions", json={
                    "model": "fake-model", "stream": True, "messages": [{"role": "user", "content": "slow"}]}) as r:
                events.append("turn started on " + served_by(r))
                body = "".join(r.iter_text())
        events.append("turn ended" if "[DONE]" in body else "turn broken")

    def load() -> None:
        with cluster.client() as client:
            answer = client.post("/api/workspace/load", content=archive.content,
                                 headers={"content-type": "application/zip"})
        events.append(f"load {answer.status_code} on {served_by(answer)}")

    turning = threading.Thread(target=turn)
    turning.start()
    assert upstream.wait_hold_state("turn", "open", timeout=60) == "open"
    loading = threading.Thread(target=load)
    loading.start()
    time.sleep(1.0)  # room for a wrong order to show; the order itself is what is checked
    assert not any(e.startswith("load") for e in events), events
    upstream.release("turn")
    turning.join(60)
    loading.join(60)
    assert events[1] == "turn ended" and events[2].startswith("load 200"), events
    assert events[0].split()[-1] != events[2].split()[-1]  # two replicas


def test_two_turns_of_one_session_on_two_replicas_run_as_on_one_machine(cluster: Cluster) -> None:
    # On one machine (ghost.agent.service): turns of one workspace hold its gate shared, so two turns
    # of the same workspace, even of the same session, run side by side (tests/test_chat.py), and
    # the session keeps both replies, in the order the turns finished (ghost.store.history.append_turn).
    # Across replicas: both hold the workspace's lease shared at once, and the same holds.
    upstream = cluster.upstream
    opening = [{"role": "user", "content": "two at once"}]
    upstream.script(Reply(content="Ready."))
    with cluster.client() as client:
        session = chat(client, opening).headers["x-ghost-session"]
    earlier = [*opening, {"role": "assistant", "content": "Ready."}]
    for turn in ("turn A", "turn B"):
        upstream.script_for(turn, Reply(chunks=[f"answer to {turn}", "."], hold=turn, hold_after=1))
    answers: dict[str, httpx.Response] = {}
    finished: list[str] = []

    def send(turn: str) -> None:
        with cluster.client({**ADMIN, "X-Ghost-Session": session}) as client:
            answers[turn] = client.post("/v1/chat/completions", json={
                "model": "fake-model", "messages": [*earlier, {"role": "user", "content": turn}]})
        finished.append(turn)

    threads = {turn: threading.Thread(target=send, args=(turn,)) for turn in ("turn A", "turn B")}
    try:
        for thread in threads.values():
            thread.start()
        # Serialised turns (an exclusive lease, a per-session lock) would never have both open together.
        for turn in threads:
            assert upstream.wait_hold_state(turn, "open", timeout=60) == "open", f"{turn} never reached the upstream"
        # The turn sent first finishes last: its messages come after the other's.
        upstream.release("turn B")
        threads["turn B"].join(60)
        upstream.release("turn A")
        threads["turn A"].join(60)
    finally:
        upstream.release_all()
        for thread in threads.values():
            thread.join(60)
    assert finished == ["turn B", "turn A"]
    for turn, answer in answers.items():
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"] == f"answer to {turn}."
        assert answer.headers["x-ghost-session"] == session
    assert served_by(answers["turn A"]) != served_by(answers["turn B"])  # two replicas
    with cluster.client() as client:
        stored = client.get(f"/api/sessions/{session}").json()["messages"]
    assert [m["content"] for m in stored] == ["two at once", "Ready.", "turn B", "answer to turn B.",
                                              "turn A", "answer to turn A."]


def test_per_user_turn_limits_hold_across_replicas(cluster: Cluster) -> None:
    upstream = cluster.upstream
    with cluster.client() as client:
        key = client.post("/api/users", json={"name": "lim"}).json()["key"]
        assert client.put("/api/users/lim/limits", json={"turns_per_minute": 2}).status_code == 200
    with cluster.client({"X-Ghost-Key": key}) as client:
        upstream.script(Reply(content="one"), Reply(content="two"))
        messages = [{"role": "user", "content": "count me"}]
        answers = [client.post("/v1/chat/completions", json={"model": "fake-model", "messages": messages})
                   for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert len({served_by(a) for a in answers}) == 3  # three replicas, one count
        assert int(answers[2].headers["retry-after"]) >= 1
    with cluster.client() as client:
        assert client.put("/api/users/lim/limits", json={"turns_per_minute": None,
                                                         "max_concurrent_turns": 1}).status_code == 200
    # hold_after=2: the role chunk and "a" go out, so the held turn's headers arrive (Ghost sends them
    # with the first content, never before)
    upstream.script(Reply(chunks=["a", "b"], hold="lim", hold_after=2))
    held: list[str] = []

    def slow_turn() -> None:
        with cluster.client({"X-Ghost-Key": key}) as client:
            with client.stream("POST", "/v1/chat/completions", json={
                    "model": "fake-model", "stream": True, "messages": [{"role": "user", "content": "slow"}]}) as r:
                held.append(served_by(r))
                r.read()

    worker = threading.Thread(target=slow_turn)
    worker.start()
    try:
        assert upstream.wait_hold_state("lim", "open", timeout=60) == "open"
        with cluster.client({"X-Ghost-Key": key}) as client:
            refused = [client.post("/v1/chat/completions", json={"model": "fake-model", "messages": messages})
                       for _ in range(2)]  # two other replicas
        assert [r.status_code for r in refused] == [429, 429], [r.text for r in refused]
        for _ in range(1200):  # a hang guard: the held turn's headers arrive with its first streamed event
            if held:
                break
            time.sleep(0.05)
        assert held and held[0] not in {served_by(r) for r in refused}
    finally:
        upstream.release("lim")
        worker.join(60)
    upstream.script(Reply(content="free again"))
    with cluster.client({"X-Ghost-Key": key}) as client:
        assert client.post("/v1/chat/completions", json={"model": "fake-model", "messages": messages}).status_code == 200


def test_kill_9_of_the_replica_running_a_turn(cluster: Cluster) -> None:
    upstream = cluster.upstream
    with cluster.client() as client:
        before = client.get("/api/sessions").json()
    upstream.script(Reply(chunks=["a", "b", "c"], hold="doomed", hold_after=2))  # headers sent with "a"
    outcome: dict[str, object] = {}

    def turn() -> None:
        try:
            with cluster.client() as client:
                with client.stream("POST", "/v1/chat/completions", json={
                        "model": "fake-model", "stream": True,
                        "messages": [{"role": "user", "content": "doomed"}]}) as r:
                    outcome["replica"] = served_by(r)
                    outcome["body"] = "".join(r.iter_text())
        except httpx.HTTPError as exc:
            outcome["error"] = exc

    turning = threading.Thread(target=turn)
    turning.start()
    assert upstream.wait_hold_state("doomed", "open", timeout=60) == "open"
    for _ in range(1200):  # a hang guard
        if "replica" in outcome:
            break
        time.sleep(0.05)
    victim = cluster.replicas[str(outcome["replica"])]
    assert victim.process is not None
    os.killpg(victim.process.pid, signal.SIGKILL)
    victim.process.wait(30)
    turning.join(60)
    upstream.release("doomed")
    # The client sees the failure: a broken stream, never a finished reply.
    assert "error" in outcome or "[DONE]" not in str(outcome.get("body", "")), outcome
    # The next turn, on another replica, works; nothing committed before is lost.
    upstream.script(Reply(content="Still here."))
    with cluster.client() as client:
        after = chat(client, [{"role": "user", "content": "after the kill"}])
        assert served_by(after) != outcome["replica"]
        sessions = {s["id"] for s in client.get("/api/sessions").json()["sessions"]}
        assert {s["id"] for s in before["sessions"]} <= sessions
        # The dead replica's lease went with its connection: a load is not kept waiting for it.
        archive = client.post("/api/workspace/save")
        loaded = client.post("/api/workspace/load", content=archive.content,
                             headers={"content-type": "application/zip"})
        assert loaded.status_code == 200, loaded.text
    victim.start(timeout=120)  # back for the tests after this one


def test_postgresql_restarted_mid_run_fails_clearly_then_recovers(cluster: Cluster) -> None:
    cluster.database.stop()
    try:
        with cluster.client() as client:
            failed = client.get("/api/sessions")
            # Ghost's own 503 (store_unavailable), or HAProxy's once every replica's ready check failed.
            assert failed.status_code == 503, failed.text
            if failed.headers.get("content-type", "").startswith("application/json"):
                assert json.loads(failed.text)["error"]["type"] == "store_unavailable"
    finally:
        cluster.database.start()
    cluster.upstream.script(Reply(content="Back."))
    with cluster.client() as client:
        for _ in range(120):
            if client.get("/api/sessions").status_code == 200:
                break
            time.sleep(0.5)
        else:
            raise AssertionError("requests did not recover after PostgreSQL came back")
        assert chat(client, [{"role": "user", "content": "after the restart"}]).json()["choices"][0][
            "message"]["content"] == "Back."
