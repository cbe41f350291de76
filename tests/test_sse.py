"""The one SSE reader (`ghost.sse`): the format as the standard defines it, its bounds, and both
of its users, the upstream chat stream (over a real Ghost and the fake upstream) and the client."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from ghost.client.connection import ClientError
from ghost.client.sse import Activity, Answer, Finished, chat_events
from ghost.sse import SSEParser, SSETooLarge, ServerSentEvent, iter_sse
from ghost.testing.fake_upstream import FakeUpstream, Reply
from ghost.testing.server import GhostServer


def events(*chunks: bytes, **bounds: int) -> list[ServerSentEvent]:
    return list(iter_sse(chunks, SSEParser(**bounds)))


def every_split(stream: bytes) -> Iterator[list[bytes]]:
    """The stream as one chunk, byte by byte, and cut in two at every position."""
    yield [stream]
    yield [stream[i:i + 1] for i in range(len(stream))]
    for cut in range(1, len(stream)):
        yield [stream[:cut], stream[cut:]]


# --- the format ----------------------------------------------------------------------------------


def test_multi_line_data_is_joined_with_newlines() -> None:
    assert events(b"data: one\ndata:two\ndata:  three\n\n") == [ServerSentEvent(b"one\ntwo\n three")]


def test_event_names_id_and_retry() -> None:
    parser = SSEParser()
    got = parser.feed(b"event: ping\nid: 7\nretry: 1500\ndata: {}\n\ndata: next\n\nid\ndata: last\n\n")
    assert got == [ServerSentEvent(b"{}", "ping", "7"), ServerSentEvent(b"next", "message", "7"),
                   ServerSentEvent(b"last", "message", "")]
    assert parser.retry == 1500
    parser.feed(b"retry: soon\nretry: " + b"9" * 5000 + b"\nid: a\0b\ndata: x\n\n")
    assert parser.retry == 1500  # not digits, or too long for int(): ignored


def test_comments_unknown_fields_and_empty_events_are_ignored() -> None:
    stream = b": keep-alive\n\n:tool marker\nfoo: bar\ndata: kept\nnocolon\n\nevent: lonely\n\n"
    assert events(stream) == [ServerSentEvent(b"kept")]


def test_a_field_without_a_colon_has_an_empty_value() -> None:
    assert events(b"data\ndata\n\n") == [ServerSentEvent(b"\n")]


@pytest.mark.parametrize("end", [b"\n", b"\r\n", b"\r"])
def test_every_line_end_at_every_chunk_boundary(end: bytes) -> None:
    stream = end.join([b"\xef\xbb\xbfevent: a", b"data: 1", b"data: 2", b"", b": c", b"data: 3", b"", b""])
    want = [ServerSentEvent(b"1\n2", "a"), ServerSentEvent(b"3")]
    for chunks in every_split(stream):
        assert list(iter_sse(chunks)) == want, chunks


def test_mixed_line_ends_and_a_cr_before_a_crlf() -> None:
    for chunks in every_split(b"data: a\r\rdata: b\r\n\ndata: c\n\r\n"):
        assert list(iter_sse(chunks)) == [ServerSentEvent(b"a"), ServerSentEvent(b"b"), ServerSentEvent(b"c")]


def test_an_event_left_open_at_the_end_is_still_dispatched() -> None:
    assert events(b"data: [DONE]") == [ServerSentEvent(b"[DONE]")]
    assert events(b"data: a\ndata: b\n") == [ServerSentEvent(b"a\nb")]


# --- the bounds --------------------------------------------------------------------------------------


def test_a_line_past_the_bound_is_refused_while_it_arrives() -> None:
    parser = SSEParser(max_line=100)
    parser.feed(b"data: " + b"x" * 94)  # exactly 100 bytes held: allowed
    with pytest.raises(SSETooLarge, match="one line longer than 100"):
        parser.feed(b"x")
    with pytest.raises(SSETooLarge, match="one line"):
        SSEParser(max_line=100).feed(b"data: " + b"x" * 200 + b"\n")  # arrived whole in one chunk


def test_one_events_data_is_bounded_across_its_lines() -> None:
    parser = SSEParser(max_line=100, max_data=1000)
    line = b"data: " + b"y" * 89 + b"\n"  # 89 bytes of data, 90 with the joining newline
    parser.feed(line * 11)  # 11 * 90 - 1 = 989 bytes collected
    with pytest.raises(SSETooLarge, match="one event's data longer than 1000"):
        parser.feed(line)
    # Events that end keep nothing: the same lines split into events never trip the bound.
    assert len(SSEParser(max_line=100, max_data=1000).feed((line + b"\n") * 1000)) == 1000


def test_the_bound_error_is_the_callers() -> None:
    class Refused(Exception):
        pass

    parser = SSEParser(max_line=10, too_large=lambda what, limit: Refused(what, limit))
    with pytest.raises(Refused):
        parser.feed(b"data: 12345678901\n")


# --- the upstream's chat stream, through a real Ghost ---------------------------------------------------


@pytest.fixture(scope="module")
def server(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhostServer]:
    with GhostServer("--upstream-url", upstream.url, "--sandbox-backend", "process",
                     home=tmp_path_factory.mktemp("sse-home")) as ghost:
        yield ghost


def chunk(content: str, finish: str | None = None) -> str:
    return json.dumps({"choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]})


def answer(server: GhostServer, raw_stream: str, upstream: FakeUpstream) -> httpx.Response:
    upstream.script(Reply(raw_stream=raw_stream))
    return httpx.post(server.url + "/v1/chat/completions", headers=server.headers, timeout=30,
                      json={"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]})


def test_upstream_data_split_over_lines(server: GhostServer, upstream: FakeUpstream) -> None:
    first = chunk("Hello, ").replace(', "delta"', ',\ndata: "delta"')
    assert "\ndata:" in first
    stream = f"data: {first}\n\ndata: {chunk('world', 'stop')}\n\ndata: [DONE]\n\n"
    response = answer(server, stream, upstream)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "Hello, world"


@pytest.mark.parametrize("end", ["\r\n", "\r"])
def test_upstream_line_ends_other_than_lf(server: GhostServer, upstream: FakeUpstream, end: str) -> None:
    stream = f": hello{end}{end}data: {chunk('over ')}{end}{end}retry: 10{end}id: 1{end}" \
             f"data: {chunk('there', 'stop')}{end}{end}data: [DONE]{end}{end}"
    response = answer(server, stream, upstream)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "over there"


def test_upstream_named_events_and_comments(server: GhostServer, upstream: FakeUpstream) -> None:
    stream = (f": keep-alive\n\nevent: message\ndata: {chunk('kept ')}\n\n"
              "event: ping\ndata: not json, and not a chat chunk\n\n"
              f":comment between\ndata: {chunk('too', 'stop')}\n\ndata: [DONE]\n\n")
    response = answer(server, stream, upstream)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "kept too"


@pytest.mark.parametrize("data", ['{"error": {"message": "the model fell over"}}', '{"message": "the model fell over"}',
                                  "the model fell over"])
def test_upstream_error_event_is_a_502_with_its_message(server: GhostServer, upstream: FakeUpstream,
                                                        data: str) -> None:
    response = answer(server, f"event: error\ndata: {data}\n\n", upstream)
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["type"] == "upstream_error" and "the model fell over" in error["message"]


# --- the client's reading of Ghost's stream -----------------------------------------------------------


def test_client_reads_ghosts_stream_at_any_chunking() -> None:
    body = (b": keep-alive\r\n\r\n"
            b'data: {"choices": [{"delta": {"reasoning_content": "thinking"}}]}\r\n\r\n'
            b'data: {"choices": [{"delta": {"content": "hi"},\r\ndata: "finish_reason": "stop"}]}\r\n\r\n'
            b"data: [DONE]\r\n\r\n")
    for chunks in every_split(body):
        assert list(chat_events(chunks)) == [Activity("thinking"), Answer("hi"), Finished("stop")]


def test_client_raises_ghosts_in_band_error() -> None:
    body = b'data: {"choices": [{"delta": {"content": "par"}}]}\n\nevent: error\ndata: {"error": {"message": "boom", ' \
           b'"type": "upstream_error"}}\n\ndata: [DONE]\n\n'
    seen = []
    with pytest.raises(ClientError, match="the answer failed: boom"):
        for event in chat_events([body]):
            seen.append(event)
    assert seen == [Answer("par")]
