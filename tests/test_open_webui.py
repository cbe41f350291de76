"""Open WebUI as a client, replayed: the requests it sends over an Ollama connection, and what Ghost
must make of them — Ollama-shaped errors, a stored session equal to the chat after the background
tasks ran, the Task Model's plain relay, Ghost's own `create_skill` reachable next to Open WebUI's
tool of that name, and the Ollama routes Open WebUI calls besides chat.

The request shapes follow Open WebUI 0.12.4 (its Ollama payload conversion and its task prompts,
re-worded); the browser suite (`make e2e`) drives the real thing.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import ollama
import pytest

from ghost.testing.fake_upstream import DEFAULT_MODEL, FakeUpstream, Reply, fake_embedding
from ghost.testing.server import GhostServer

PLAIN = f"{DEFAULT_MODEL}-plain"
# Open WebUI's built-in tools as it sends them with native function calling: 36, one `create_skill`.
BUILTIN_NAMES = [
    "get_current_timestamp", "calculate_timestamp", "search_web", "fetch_url", "generate_image", "edit_image",
    "execute_code", "search_memories", "add_memory", "replace_memory_content", "delete_memory", "list_memories",
    "search_notes", "view_note", "write_note", "replace_note_content", "search_chats", "view_chat",
    "search_channels", "search_channel_messages", "view_channel_message", "view_channel_thread",
    "list_knowledge_bases", "search_knowledge_bases", "search_knowledge_files", "view_knowledge_file",
    "query_knowledge_files", "list_chat_files", "view_file", "view_skill", "read_skill_file", "create_skill",
    "update_skill_files", "create_tasks", "update_task", "search_tools",
]
BUILTIN_TOOLS = [{"type": "function", "function": {
    "name": name, "description": f"Open WebUI built-in: {name}",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}} for name in BUILTIN_NAMES]
U1 = {"role": "user", "content": "Hi! What can you do?"}
U2 = {"role": "user", "content": "Thanks. And what is 6 times 7?"}
A1_TEXT = "Hello! I can run code and keep notes."
A2_TEXT = "It is 42."


def task_prompt(kind: str, chat: list[dict[str, Any]]) -> dict[str, Any]:
    """One of Open WebUI's background tasks: a lone user message quoting the chat."""
    history = "\n".join(f"{m['role'].upper()}: {m['content']}" for m in chat)
    return {"role": "user", "content": f"### Task:\nGenerate {kind} for the chat below.\n"
            f"### Chat History:\n<chat_history>\n{history}\n</chat_history>"}


@pytest.fixture()
def server(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhostServer]:
    """A fresh Ghost per test: the session list starts empty."""
    with GhostServer("--upstream-url", upstream.url, home=tmp_path_factory.mktemp("owui")) as ghost:
        yield ghost


@pytest.fixture()
def http(server: GhostServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=60) as client:
        yield client


def chat(http: httpx.Client, messages: list[dict[str, Any]], *, model: str = DEFAULT_MODEL,
         session: str | None = None, stream: bool = True, tools: list[dict[str, Any]] | None = None) -> httpx.Response:
    """POST /api/chat as Open WebUI sends it (an Ollama payload; the chat id as a header if configured)."""
    body: dict[str, Any] = {"model": model, "messages": messages, "stream": stream}
    if tools:
        body["tools"] = tools
    headers = {"X-Ghost-Session": session} if session else {}
    return http.post("/api/chat", json=body, headers=headers)


def answer(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    lines = [json.loads(line) for line in response.text.splitlines() if line.strip()]
    return "".join(line.get("message", {}).get("content", "") for line in lines)


def stored(http: httpx.Client, session: str) -> list[dict[str, Any]]:
    return [{"role": m["role"], "content": m["content"]} for m in http.get(f"/api/sessions/{session}").json()["messages"]]


def session_ids(http: httpx.Client) -> list[str]:
    return [s["id"] for s in http.get("/api/sessions").json()["sessions"]]


def reply_of(text: str) -> dict[str, str]:
    # How Open WebUI sends an earlier answer back: the text, with its thinking folded in a <details> block.
    return {"role": "assistant", "content": f'<details type="reasoning" done="true">\n<summary>Thought for 1 '
            f'seconds</summary>\n&gt; → execute\n</details>\n{text}'}


# --- the conversation a chat UI has, and its background tasks --------------------------------------


def run_first_turn_and_tasks(http: httpx.Client, upstream: FakeUpstream, *, session: str | None,
                             task_model: str) -> str:
    """First message, then title, tags and follow-ups as Open WebUI sends them; the session used."""
    upstream.script(Reply(content=A1_TEXT))
    first = chat(http, [U1], session=session, tools=BUILTIN_TOOLS)
    assert answer(first) == A1_TEXT
    used = first.headers["x-ghost-session"]
    done = [U1, {"role": "assistant", "content": A1_TEXT}]
    for kind, reply in (("a title", '{"title": "Greeting"}'), ("1-3 tags", '{"tags": ["General"]}'),
                        ("follow-up questions", '{"follow_ups": ["More?"]}')):
        upstream.script(Reply(content=reply))
        task = chat(http, [task_prompt(kind, done)], model=task_model, session=session, stream=False)
        assert task.status_code == 200 and task.json()["message"]["content"] == reply
        assert "x-ghost-session" not in task.headers  # answered, stored nowhere
    return used


def test_with_the_chat_id_header_the_tasks_never_replace_the_chat(http: httpx.Client, upstream: FakeUpstream) -> None:
    # No Task Model configured: the tasks run on the agent model and carry the chat's id.
    used = run_first_turn_and_tasks(http, upstream, session="owui-chat-1", task_model=DEFAULT_MODEL)
    assert used == "owui-chat-1"
    assert stored(http, used) == [U1, {"role": "assistant", "content": A1_TEXT}]
    upstream.script(Reply(content=A2_TEXT))
    second = chat(http, [U1, reply_of(A1_TEXT), U2], session=used, tools=BUILTIN_TOOLS)
    assert answer(second) == A2_TEXT and second.headers["x-ghost-session"] == used
    # History is append-only: the first reply stays as Ghost stored it; the copy Open WebUI resends
    # (its reasoning folded into <details>) is the same message by what is compared, so not rewritten.
    assert stored(http, used) == [U1, {"role": "assistant", "content": A1_TEXT}, U2,
                                  {"role": "assistant", "content": A2_TEXT}]
    assert session_ids(http) == [used]  # the tasks are stored nowhere


def test_without_a_header_the_conversation_is_followed_and_the_task_model_is_plain(
        http: httpx.Client, upstream: FakeUpstream) -> None:
    used = run_first_turn_and_tasks(http, upstream, session=None, task_model=PLAIN)
    tasks = upstream.chat_requests()[1:]
    assert len(tasks) == 3
    for task in tasks:  # relayed as sent: no Ghost system prompt, no tools, the upstream's model name
        assert task["body"]["messages"] == [task_prompt_sent(task)] and "tools" not in task["body"]
        assert task["body"]["model"] == DEFAULT_MODEL
    upstream.script(Reply(content=A2_TEXT))
    second = chat(http, [U1, reply_of(A1_TEXT), U2], tools=BUILTIN_TOOLS)
    assert answer(second) == A2_TEXT
    assert second.headers["x-ghost-session"] == used  # found again by its messages
    assert [m["role"] for m in stored(http, used)] == ["user", "assistant", "user", "assistant"]
    assert stored(http, used)[-1]["content"] == A2_TEXT
    assert session_ids(http) == [used]


def task_prompt_sent(task: dict[str, Any]) -> dict[str, Any]:
    [message] = task["body"]["messages"]
    assert message["role"] == "user" and message["content"].startswith("### Task:")
    return message


def test_an_unrelated_request_without_an_id_starts_its_own_session(http: httpx.Client, upstream: FakeUpstream) -> None:
    first = chat(http, [U1])
    other = chat(http, [{"role": "user", "content": "something else"}])
    assert answer(first) and answer(other)
    assert first.headers["x-ghost-session"] != other.headers["x-ghost-session"]
    assert stored(http, first.headers["x-ghost-session"])[0] == U1  # untouched
    assert sorted(session_ids(http)) == sorted([first.headers["x-ghost-session"], other.headers["x-ghost-session"]])


def test_a_regenerated_answer_replaces_the_chat_under_its_id(http: httpx.Client, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="first try"), Reply(content="second try"))
    assert answer(chat(http, [U1], session="regen")) == "first try"
    assert answer(chat(http, [U1], session="regen")) == "second try"  # Open WebUI's regenerate
    assert stored(http, "regen") == [U1, {"role": "assistant", "content": "second try"}]


def test_without_an_id_an_edited_turn_forks_and_the_original_stays(http: httpx.Client, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content=A1_TEXT), Reply(content=A2_TEXT), Reply(content="another"))
    one = chat(http, [U1]).headers["x-ghost-session"]
    assert chat(http, [U1, {"role": "assistant", "content": A1_TEXT}, U2]).headers["x-ghost-session"] == one
    edited = {"role": "user", "content": "edited"}
    fork = chat(http, [U1, {"role": "assistant", "content": A1_TEXT}, edited]).headers["x-ghost-session"]
    assert fork != one  # [U1, A1] alone is no stored conversation any more: a new session
    assert len(stored(http, one)) == 4  # the original chat is untouched
    assert stored(http, fork) == [U1, {"role": "assistant", "content": A1_TEXT}, edited,
                                  {"role": "assistant", "content": "another"}]


# --- name clashes -------------------------------------------------------------------------------------


def test_ghosts_create_skill_stays_reachable_next_to_open_webuis(http: httpx.Client, upstream: FakeUpstream) -> None:
    skill = {"name": "triple", "description": "Triple a number.", "code":
             "import json, sys\nprint(json.load(sys.stdin)['n'] * 3)\n",
             "parameters": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
             "test_arguments": {"n": 2}}
    upstream.script(Reply(content="", tool_calls=[{"name": "create_skill", "arguments": skill}]),
                    Reply(content="", tool_calls=[{"name": "client__create_skill", "arguments": {"query": "x"}}]))
    response = http.post("/api/chat", json={"model": DEFAULT_MODEL, "messages": [U1], "stream": False,
                                            "tools": BUILTIN_TOOLS})
    assert response.status_code == 200, response.text
    # Ghost's create_skill ran in Ghost (the skill exists now)...
    first, second = upstream.chat_requests()
    tool_result = second["body"]["messages"][-1]
    assert tool_result["role"] == "tool" and "saved" in tool_result["content"]
    # ... and both tools were offered, the client's under its new name...
    offered = [t["function"]["name"] for t in first["body"]["tools"]]
    assert offered.count("create_skill") == 1 and offered.count("client__create_skill") == 1
    assert len(offered) == len(set(offered))
    # ... and the model's call to the client's tool came back to the client under its own name.
    [call] = response.json()["message"]["tool_calls"]
    assert call["function"]["name"] == "create_skill" and call["function"]["arguments"] == {"query": "x"}


def test_the_clients_earlier_calls_are_renamed_for_the_model(http: httpx.Client, upstream: FakeUpstream) -> None:
    earlier = [U1, {"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "create_skill", "arguments": {"query": "x"}}}]},
        {"role": "tool", "tool_name": "create_skill", "content": "made"}]
    assert answer(chat(http, earlier, tools=BUILTIN_TOOLS))
    sent = upstream.chat_requests()[-1]["body"]["messages"]
    assert sent[-2]["tool_calls"][0]["function"]["name"] == "client__create_skill"
    assert stored(http, chat(http, earlier, tools=BUILTIN_TOOLS).headers["x-ghost-session"])[1]["role"] == "assistant"


# --- errors in Ollama's shape ----------------------------------------------------------------------


def test_errors_on_ollama_routes_are_ollama_shaped(server: GhostServer, upstream: FakeUpstream) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as anon:
        missing_key = anon.post("/api/chat", json={"model": DEFAULT_MODEL, "messages": [U1]})
        assert missing_key.status_code == 401 and isinstance(missing_key.json()["error"], str)
        assert "API key" in missing_key.json()["error"]
        openai_route = anon.post("/v1/chat/completions", json={"model": DEFAULT_MODEL, "messages": [U1]})
        assert openai_route.json()["error"]["type"] == "authentication_error"  # OpenAI routes: OpenAI's shape
    keyed = ollama.Client(host=server.url, headers=server.headers)
    with pytest.raises(ollama.ResponseError) as unknown:
        keyed.chat(model="no-such-model", messages=[U1])
    assert unknown.value.status_code == 404 and unknown.value.error.startswith("model 'no-such-model' not found")
    with pytest.raises(ollama.ResponseError) as keyless:
        ollama.Client(host=server.url).chat(model=DEFAULT_MODEL, messages=[U1])
    assert keyless.value.status_code == 401 and "API key" in keyless.value.error
    upstream.script(Reply(status=500))
    with pytest.raises(ollama.ResponseError) as broken:
        keyed.chat(model=DEFAULT_MODEL, messages=[U1])
    assert broken.value.status_code == 502 and "upstream answered 500" in broken.value.error
    bad = httpx.post(server.url + "/api/chat", headers=server.headers, json={"model": DEFAULT_MODEL, "messages": []})
    assert bad.status_code == 422 and bad.json() == {"error": "messages: must be a non-empty list"}


def test_a_body_over_the_limit_is_an_ollama_shaped_413(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> None:
    with GhostServer("--upstream-url", upstream.url, "--max-request-bytes", "2048",
                     home=tmp_path_factory.mktemp("owui-small")) as ghost:
        big = {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "x" * 4096}]}
        response = httpx.post(ghost.url + "/api/chat", headers=ghost.headers, json=big, timeout=30)
        assert response.status_code == 413 and "2048" in response.json()["error"]
        assert httpx.post(ghost.url + "/chat", headers=ghost.headers, json=big, timeout=30).json()["error"]["type"] \
            == "request_too_large"


def test_a_busy_server_is_an_ollama_shaped_429(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> None:
    with GhostServer("--upstream-url", upstream.url, "--max-concurrent-turns", "1", "--turn-queue-timeout", "0.3",
                     home=tmp_path_factory.mktemp("owui-busy")) as ghost:
        upstream.script(Reply(content="slow", first_delay=2.0))
        holder = threading.Thread(target=lambda: httpx.post(
            ghost.url + "/api/chat", headers=ghost.headers, timeout=30,
            json={"model": DEFAULT_MODEL, "messages": [U1], "stream": False}))
        holder.start()
        while not upstream.chat_requests():  # the one turn slot is taken
            time.sleep(0.02)
        busy = httpx.post(ghost.url + "/api/chat", headers=ghost.headers, timeout=30,
                          json={"model": DEFAULT_MODEL, "messages": [U1]})
        holder.join()
    assert busy.status_code == 429 and busy.headers["retry-after"]
    assert busy.json() == {"error": "too many chat turns running; try again shortly"}


# --- the other Ollama routes Open WebUI calls ---------------------------------------------------------


def test_ps_lists_the_served_models_with_the_connections_key(server: GhostServer) -> None:
    # Open WebUI sends its connection's key to /api/ps as to /api/tags; Ghost asks for it there.
    with pytest.raises(ollama.ResponseError) as keyless:
        ollama.Client(host=server.url).ps()
    assert keyless.value.status_code == 401
    listed = ollama.Client(host=server.url, headers=server.headers).ps()
    assert [m.model for m in listed.models] == [DEFAULT_MODEL]
    assert listed.models[0].details.family == "qwen3" and listed.models[0].expires_at is not None


def test_embed_translates_to_the_upstreams_embeddings(server: GhostServer, upstream: FakeUpstream) -> None:
    client = ollama.Client(host=server.url, headers=server.headers)
    reply = client.embed(model="nomic-embed-text", input=["one", "two"])
    assert reply.embeddings == [fake_embedding("one"), fake_embedding("two")]
    assert reply.model == "nomic-embed-text"
    [sent] = [r for r in upstream.requests if r["path"] == "/v1/embeddings"]
    assert sent["body"] == {"model": "nomic-embed-text", "input": ["one", "two"]}
    assert client.embeddings(model="nomic-embed-text", prompt="three").embedding == fake_embedding("three")
    with pytest.raises(ollama.ResponseError) as bad:
        client.embed(model="nomic-embed-text", input=[])
    assert bad.value.status_code == 422 and "input" in bad.value.error


def test_embed_without_an_upstream_embeddings_route_says_so(server: GhostServer, upstream: FakeUpstream) -> None:
    upstream.serves_embeddings = False
    response = httpx.post(server.url + "/api/embed", headers=server.headers, json={"input": "x"}, timeout=30)
    assert response.status_code == 502
    assert response.json() == {"error": "the upstream has no embeddings endpoint (/v1/embeddings answered 404); "
                                        "use an upstream that serves embeddings"}


def test_pull_of_a_served_model_succeeds_at_once(server: GhostServer) -> None:
    client = ollama.Client(host=server.url, headers=server.headers)
    assert client.pull(DEFAULT_MODEL).status == "success"
    statuses = [part.status for part in client.pull(PLAIN, stream=True)]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    with pytest.raises(ollama.ResponseError) as missing:
        client.pull("llama3")
    assert missing.value.status_code == 404 and "fixed set" in missing.value.error


def test_model_management_is_refused_in_ollamas_shape(server: GhostServer) -> None:
    client = ollama.Client(host=server.url, headers=server.headers)
    for attempt in (lambda: client.delete(DEFAULT_MODEL), lambda: client.copy(DEFAULT_MODEL, "mine"),
                    lambda: client.push(DEFAULT_MODEL), lambda: client.create("mine", from_=DEFAULT_MODEL)):
        with pytest.raises(ollama.ResponseError) as refused:
            attempt()
        assert refused.value.status_code == 403 and "fixed set of models" in refused.value.error
    with pytest.raises(ollama.ResponseError) as unknown:
        client.delete("llama3")
    assert unknown.value.status_code == 404
