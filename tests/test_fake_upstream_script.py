"""The fake upstream's scripting, which the benches lean on: replies scripted over HTTP for one
text go to the requests that say it, and a used-up queue does not slow every later request."""

from __future__ import annotations

import httpx

from ghost.testing.fake_upstream import FakeUpstream, Reply


def _ask(upstream: FakeUpstream, text: str) -> str:
    reply = httpx.post(f"{upstream.url}/v1/chat/completions", timeout=30,
                       json={"model": "m", "messages": [{"role": "user", "content": text}]})
    reply.raise_for_status()
    return reply.json()["choices"][0]["message"]["content"]


def test_replies_scripted_over_http_for_a_text_go_to_the_requests_that_say_it(upstream: FakeUpstream) -> None:
    for text in ("alpha", "beta"):
        scripted = httpx.post(f"{upstream.url}/_fake/script", params={"for": text}, timeout=30,
                              json=[{"content": f"{text} 1"}, {"content": f"{text} 2"}])
        scripted.raise_for_status()
    httpx.post(f"{upstream.url}/_fake/script", json=[{"content": "anyone's"}], timeout=30).raise_for_status()
    assert _ask(upstream, "say beta") == "beta 1"  # not the first queued text's, nor the general script's
    assert _ask(upstream, "say alpha") == "alpha 1"
    assert _ask(upstream, "say beta") == "beta 2"
    assert _ask(upstream, "something else") == "anyone's"
    assert _ask(upstream, "say alpha") == "alpha 2"


def test_a_used_up_queue_is_dropped(upstream: FakeUpstream) -> None:
    for n in range(200):
        upstream.script_for(f"[turn {n}]", Reply(content=f"reply {n}"))
    assert len(upstream.replies_for) == 200  # the probe sees queued texts
    for n in range(200):
        assert _ask(upstream, f"[turn {n}]") == f"reply {n}"
    assert upstream.replies_for == {}  # each lookup would otherwise scan every text ever scripted
