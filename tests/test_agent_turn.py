"""The agent loop through a real Ghost: client tools, round limit, usage, failures, disconnects,
concurrency and history."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import ollama
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ghost.testing.fake_upstream import FakeUpstream, Reply
from ghost.testing.server import GhostServer

USER = [{"role": "user", "content": "hi"}]
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture(scope="module")
def server(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhostServer]:
    with GhostServer("--upstream-url", upstream.url, "--max-tool-rounds", "3", "--read-timeout", "2",
                     home=tmp_path_factory.mktemp("turn-home")) as ghost:
        yield ghost


@pytest.fixture()
def oai(server: GhostServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=server.api_key, max_retries=0)


def chat(server: GhostServer, **body: object) -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", headers=server.headers, timeout=30,
                      json={"model": "fake-model", "messages": USER, **body})


# --- client tools -------------------------------------------------------------------------------

def test_client_tool_call_is_returned_to_the_client(oai: openai.OpenAI, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="", tool_calls=[{"id": "call_w1", "name": "get_weather", "arguments": {"city": "Oslo"}}]))
    reply = oai.chat.completions.create(model="fake-model", messages=USER, tools=[WEATHER_TOOL])
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls[0].function.name == "get_weather"
    assert json.loads(choice.message.tool_calls[0].function.arguments) == {"city": "Oslo"}
    assert len(upstream.chat_requests()) == 1  # the turn ended there
    sent_tools = [t["function"]["name"] for t in upstream.chat_requests()[0]["body"]["tools"]]
    assert "get_weather" in sent_tools


def test_client_tool_call_streams_and_result_continues(oai: openai.OpenAI, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="", tool_calls=[{"id": "call_w2", "name": "get_weather", "arguments": {"city": "Rome"}}]),
                    Reply(content="It is sunny in Rome."))
    chunks = list(oai.chat.completions.create(model="fake-model", messages=USER, tools=[WEATHER_TOOL], stream=True))
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].id == "call_w2" and calls[0].function.name == "get_weather"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    follow_up = [*USER,
                 {"role": "assistant", "content": None, "tool_calls": [
                     {"id": "call_w2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
                 {"role": "tool", "tool_call_id": "call_w2", "content": "sunny, 24C"}]
    reply = oai.chat.completions.create(model="fake-model", messages=follow_up, tools=[WEATHER_TOOL])
    assert reply.choices[0].message.content == "It is sunny in Rome."
    sent = upstream.chat_requests()[-1]["body"]["messages"]
    assert sent[-1] == {"role": "tool", "content": "sunny, 24C", "tool_call_id": "call_w2"}


def test_ollama_client_gets_tool_calls_and_can_answer(server: GhostServer, upstream: FakeUpstream) -> None:
    client = ollama.Client(host=server.url, headers={"X-Ghost-Key": server.api_key})
    upstream.script(Reply(content="", tool_calls=[{"name": "get_weather", "arguments": {"city": "Lima"}}]),
                    Reply(content="Cloudy."))
    reply = client.chat(model="fake-model", messages=USER, tools=[WEATHER_TOOL])
    call = reply.message.tool_calls[0]
    assert call.function.name == "get_weather" and call.function.arguments == {"city": "Lima"}
    messages = [*USER, reply.message.model_dump(exclude_none=True),
                {"role": "tool", "content": "cloudy", "tool_name": "get_weather"}]
    assert client.chat(model="fake-model", messages=messages, tools=[WEATHER_TOOL]).message.content == "Cloudy."
    sent = upstream.chat_requests()[-1]["body"]["messages"]
    assistant_call_id = sent[-2]["tool_calls"][0]["id"]
    assert sent[-1]["role"] == "tool" and sent[-1]["tool_call_id"] == assistant_call_id


# --- the loop's limit and accounting --------------------------------------------------------

def test_round_limit_stops_a_model_that_never_stops(oai: openai.OpenAI, upstream: FakeUpstream) -> None:
    upstream.default_reply = Reply(content="", tool_calls=[{"name": "no_such_tool", "arguments": {}}])
    try:
        reply = oai.chat.completions.create(model="fake-model", messages=USER)
    finally:
        upstream.default_reply = Reply()
    assert "--max-tool-rounds" in reply.choices[0].message.content
    assert len(upstream.chat_requests()) == 4  # 3 rounds of tools, then the limit
    # The unknown tool came back to the model as an error result, not a crash.
    tool_message = upstream.chat_requests()[1]["body"]["messages"][-1]
    assert tool_message["role"] == "tool" and "unknown tool" in tool_message["content"]


def test_usage_sums_across_rounds(oai: openai.OpenAI, upstream: FakeUpstream) -> None:
    upstream.script(
        Reply(content="", tool_calls=[{"name": "no_such_tool", "arguments": {}}],
              usage={"prompt_tokens": 100, "completion_tokens": 7, "total_tokens": 107}),
        Reply(content="done", usage={"prompt_tokens": 120, "completion_tokens": 3, "total_tokens": 123}))
    reply = oai.chat.completions.create(model="fake-model", messages=USER)
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (220, 10, 230)


def test_usage_unknown_if_any_round_did_not_report(oai: openai.OpenAI, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="", tool_calls=[{"name": "no_such_tool", "arguments": {}}], usage=None),
                    Reply(content="done"))
    assert oai.chat.completions.create(model="fake-model", messages=USER).usage is None


# --- upstream failures -----------------------------------------------------------------------

def test_upstream_error_before_stream_is_a_status(server: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(status=500))
    response = chat(server, stream=True)
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "upstream_error"
    assert "500" in response.json()["error"]["message"]


def test_upstream_unreachable_is_502(tmp_path_factory: pytest.TempPathFactory) -> None:
    with GhostServer("--upstream-url", "http://127.0.0.1:9", "--model", "m",
                     home=tmp_path_factory.mktemp("down")) as ghost:
        response = httpx.post(ghost.url + "/api/chat", headers=ghost.headers,
                              json={"model": "m", "messages": USER})
    # /api/chat is an Ollama route: Ollama's error shape, the same status
    assert response.status_code == 502 and "unreachable" in response.json()["error"]


def test_upstream_timeout_is_504(server: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(first_delay=4))
    response = chat(server)
    assert response.status_code == 504 and response.json()["error"]["type"] == "upstream_timeout"


def test_upstream_garbage_is_502(server: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(body="<html>oops</html>", content_type="text/html"))
    response = chat(server, stream=True)
    assert response.status_code == 502
    assert "text/html" in response.json()["error"]["message"]


def test_upstream_dying_mid_stream_is_reported_in_band(oai: openai.OpenAI, upstream: FakeUpstream) -> None:
    upstream.script(Reply(chunks=["partial", " answer", " more"], fail_after=3))
    stream = oai.chat.completions.create(model="fake-model", messages=USER, stream=True)
    received = []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    assert received == ["partial", " answer"]


def test_mid_stream_error_sse_shape(server: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(chunks=["a", "b"], fail_after=2))
    text = chat(server, stream=True).text
    blocks = [b for b in text.split("\n\n") if b]
    assert blocks[-2].startswith("event: error\ndata: ")
    error = json.loads(blocks[-2].split("data: ", 1)[1])["error"]
    assert error["type"].startswith("upstream")
    # It was reached and had answered: the connection broke, it was not "unreachable".
    assert error["message"].startswith("upstream connection lost: "), error
    assert blocks[-1] == "data: [DONE]"


def test_mid_stream_error_ndjson_shape(server: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(chunks=["a", "b"], fail_after=2))
    response = httpx.post(server.url + "/api/chat", headers=server.headers,
                          json={"model": "fake-model", "messages": USER})
    lines = [json.loads(line) for line in response.text.splitlines() if line]
    assert lines[0]["message"]["content"] == "a"
    assert set(lines[-1]) == {"error"} and isinstance(lines[-1]["error"], str)


def test_mid_stream_error_ndjson_is_also_answer_text(server: GhostServer, upstream: FakeUpstream) -> None:
    # Open WebUI drops an Ollama line's `error` key; the message must reach its reader as text too.
    upstream.script(Reply(chunks=["a", "b"], fail_after=2))
    response = httpx.post(server.url + "/api/chat", headers=server.headers,
                          json={"model": "fake-model", "messages": USER})
    lines = [json.loads(line) for line in response.text.splitlines() if line]
    shown = lines[-2]["message"]["content"]
    assert lines[-2]["done"] is False and lines[-1]["error"] in shown and shown.startswith("\n\n[Ghost error: ")


# --- cancellation -----------------------------------------------------------------------------

def test_disconnect_mid_turn_closes_the_upstream_stream(server: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(chunks=[f"w{i} " for i in range(200)], delay=0.05))
    with httpx.stream("POST", server.url + "/v1/chat/completions", headers=server.headers,
                      json={"model": "fake-model", "messages": USER, "stream": True}) as response:
        for line in response.iter_lines():
            if "w2" in line:
                break
    deadline = time.monotonic() + 60
    while upstream.closed_early < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream.closed_early == 1 and upstream.open_streams == 0


def test_disconnect_of_non_streaming_request_closes_upstream(server: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(chunks=[f"w{i} " for i in range(200)], delay=0.05))
    with pytest.raises(httpx.ReadTimeout):  # the client gives up and hangs up mid-turn
        httpx.post(server.url + "/v1/chat/completions", headers=server.headers, timeout=0.5,
                   json={"model": "fake-model", "messages": USER})
    deadline = time.monotonic() + 60
    while upstream.closed_early < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream.closed_early == 1


# --- concurrency bound ------------------------------------------------------------------------

def test_too_many_turns_get_429_with_retry_after(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> None:
    with GhostServer("--upstream-url", upstream.url, "--max-concurrent-turns", "1", "--turn-queue-timeout", "0.3",
                     home=tmp_path_factory.mktemp("busy")) as ghost:
        # The first turn holds the only slot until it is released: an event, not a delay.
        upstream.script(Reply(content="slow", hold="busy-turn"))
        holder = threading.Thread(target=lambda: httpx.post(
            ghost.url + "/v1/chat/completions", headers=ghost.headers, timeout=30,
            json={"model": "fake-model", "messages": USER}))
        holder.start()
        while not upstream.chat_requests():
            time.sleep(0.02)
        busy = httpx.post(ghost.url + "/v1/chat/completions", headers=ghost.headers,
                          json={"model": "fake-model", "messages": USER})
        upstream.release("busy-turn")
        holder.join()
        after = httpx.post(ghost.url + "/v1/chat/completions", headers=ghost.headers,
                           json={"model": "fake-model", "messages": USER})
    assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
    assert busy.json()["error"]["type"] == "rate_limit_error"
    assert after.status_code == 200


# --- history ----------------------------------------------------------------------------------

def test_history_is_stored_per_session(server: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="for alpha"), Reply(content="for beta"))
    chat(server, session_id="alpha", messages=[{"role": "user", "content": "I am alpha"}])
    httpx.post(server.url + "/api/chat", headers={**server.headers, "X-Ghost-Session": "beta"},
               json={"model": "fake-model", "messages": [{"role": "user", "content": "I am beta"}], "stream": False})
    alpha = httpx.get(server.url + "/api/sessions/alpha", headers=server.headers).json()
    beta = httpx.get(server.url + "/api/sessions/beta", headers=server.headers).json()
    assert alpha["messages"] == [{"role": "user", "content": "I am alpha"}, {"role": "assistant", "content": "for alpha"}]
    assert beta["messages"][-1] == {"role": "assistant", "content": "for beta"}
    listed = {s["id"]: s["messages"] for s in httpx.get(server.url + "/api/sessions", headers=server.headers).json()["sessions"]}
    assert listed["alpha"] == 2 and listed["beta"] == 2
    assert httpx.delete(server.url + "/api/sessions/alpha", headers=server.headers).status_code == 200
    assert httpx.get(server.url + "/api/sessions/alpha", headers=server.headers).status_code == 404
    assert httpx.delete(server.url + "/api/sessions/alpha", headers=server.headers).status_code == 404


def test_failed_turn_stores_no_history(server: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(status=500))
    chat(server, session_id="failing")
    assert httpx.get(server.url + "/api/sessions/failing", headers=server.headers).status_code == 404


def test_history_survives_restart(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> None:
    home = tmp_path_factory.mktemp("persist")
    with GhostServer("--upstream-url", upstream.url, home=home) as ghost:
        upstream.script(Reply(content="remember me"))
        httpx.post(ghost.url + "/v1/chat/completions", headers=ghost.headers,
                   json={"model": "fake-model", "messages": USER, "session_id": "keep"})
    with GhostServer("--upstream-url", upstream.url, home=home) as ghost:
        stored = httpx.get(ghost.url + "/api/sessions/keep", headers=ghost.headers).json()
    assert stored["messages"][-1]["content"] == "remember me"


def test_session_routes_need_the_key(server: GhostServer) -> None:
    assert httpx.get(server.url + "/api/sessions").status_code == 401
    assert httpx.delete(server.url + "/api/sessions/x").status_code == 401


# --- Ghost's own tools, for real ------------------------------------------------------------------

def test_multi_round_turn_writes_runs_and_reads(server: GhostServer, upstream: FakeUpstream) -> None:
    """The model writes a file, runs it, reads what it wrote; the answer streams incrementally and
    the tool activity stays out of the content."""
    script = "with open('out.txt', 'w') as f:\n    f.write(str(6 * 7))\nprint('wrote it')\n"
    upstream.script(
        Reply(content="", tool_calls=[{"name": "write_file", "arguments": {"path": "calc/answer.py", "content": script}}]),
        Reply(content="", tool_calls=[{"name": "execute", "arguments": {"language": "bash", "code": "cd calc && python3 answer.py"}}]),
        Reply(content="", tool_calls=[{"name": "read_file", "arguments": {"path": "calc/out.txt"}}]),
        Reply(chunks=["The ", "answer ", "is ", "42."], delay=0.05),
    )
    oai = openai.OpenAI(base_url=server.url + "/v1", api_key=server.api_key, max_retries=0)
    chunks = list(oai.chat.completions.create(model="fake-model", messages=USER, stream=True))
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
    assert content == ["The ", "answer ", "is ", "42."]  # relayed piece by piece, nothing else mixed in
    assert "→ write_file" in reasoning and "→ execute" in reasoning and "→ read_file" in reasoning
    # The sandbox really holds the file and its output.
    sandbox = server.home / "sandbox"
    assert (sandbox / "calc" / "answer.py").read_text() == script
    assert (sandbox / "calc" / "out.txt").read_text() == "42"
    # Each tool result went back to the model as a tool message.
    requests = upstream.chat_requests()
    assert len(requests) == 4
    executed = requests[2]["body"]["messages"][-1]
    assert executed["role"] == "tool" and "wrote it" in executed["content"]
    read_back = requests[3]["body"]["messages"][-1]
    assert read_back["role"] == "tool" and "42" in read_back["content"]
    assert {t["function"]["name"] for t in requests[0]["body"]["tools"]} >= {"write_file", "execute", "read_file"}


def test_ollama_stream_shows_tool_activity_as_thinking(server: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="", tool_calls=[{"name": "list_files", "arguments": {}}]), Reply(content="Listed."))
    response = httpx.post(server.url + "/api/chat", headers=server.headers, timeout=30,
                          json={"model": "fake-model", "messages": USER})
    lines = [json.loads(line) for line in response.text.splitlines() if line]
    thinking = "".join(l["message"].get("thinking", "") for l in lines if "message" in l)
    content = "".join(l["message"]["content"] for l in lines if "message" in l)
    assert "→ list_files" in thinking and content == "Listed."


def test_disconnect_kills_a_long_execute(server: GhostServer, upstream: FakeUpstream) -> None:
    marker = f"ghost-sleep-{time.monotonic_ns()}"
    upstream.script(Reply(content="", tool_calls=[{"name": "execute", "arguments": {
        "language": "bash", "code": f"exec -a {marker} sleep 60"}}]), Reply(content="never asked for"))
    body = json.dumps({"model": "fake-model", "messages": USER}).encode()
    before = turn_outcomes(server)  # the server is shared: other tests' turns are counted too
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as conn:
        conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"X-Ghost-Key: %s\r\nContent-Length: %d\r\n\r\n%s" % (server.api_key.encode(), len(body), body))
        # Or a second round asked for: the process has come and gone (it never ran the sleep).
        wait_until(lambda: _running(marker) or len(upstream.chat_requests()) > 1, "the sandbox process to start")
        assert len(upstream.chat_requests()) == 1, "the execute ended before the client left"
    # The connection is closed while the process runs (its own limit is 30 s, the sleep 60 s).
    # Waiting for the turn to end, not only for the process to go: a turn that ran on would see
    # its process killed at that limit too, and ask for the second round only a moment later.
    wait_until(lambda: sum(turn_outcomes(server).values()) == sum(before.values()) + 1, "the turn to end")
    after = turn_outcomes(server)
    assert {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)} == {"cancelled": 1}
    wait_until(lambda: not _running(marker), "the sandbox process to be killed")
    assert len(upstream.chat_requests()) == 1  # the turn stopped: no second round was asked for


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout  # a hang guard only
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def turn_outcomes(server: GhostServer) -> dict[str, float]:
    """Turns ended so far by outcome, from Ghost's own `ghost_turns_total`."""
    text = httpx.get(server.url + "/metrics", headers=server.headers, timeout=30).raise_for_status().text
    return {sample.labels["outcome"]: sample.value for family in text_string_to_metric_families(text)
            if family.name == "ghost_turns" for sample in family.samples
            if sample.name == "ghost_turns_total" and sample.value}


def _running(marker: str) -> bool:
    import subprocess

    found = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    return bool(found.stdout.strip())


def test_skill_created_mid_turn_is_offered_next_round(server: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(
        Reply(content="", tool_calls=[{"name": "create_skill", "arguments": {
            "name": "shout", "description": "Upper-case a text",
            "parameters": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
            "code": "import json, sys\nargs = json.load(sys.stdin)\nprint(args['text'].upper())\n",
            "test_arguments": {"text": "hi"}}}]),
        Reply(content="", tool_calls=[{"name": "shout", "arguments": {"text": "ghost"}}]),
        Reply(content="done"))
    reply = httpx.post(server.url + "/v1/chat/completions", headers=server.headers, timeout=60,
                       json={"model": "fake-model", "messages": USER}).json()
    assert reply["choices"][0]["message"]["content"] == "done"
    requests = upstream.chat_requests()
    assert "shout" in {t["function"]["name"] for t in requests[1]["body"]["tools"]}
    assert "GHOST" in requests[2]["body"]["messages"][-1]["content"]
