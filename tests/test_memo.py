"""The bounded memo behind the per-request answers remembered by host, by path and by proxied path."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from ghost.api.proxy.route import ProxyFastPath, proxy
from ghost.memo import BoundedMemo


def test_an_answer_is_computed_once_per_key_and_the_memo_is_emptied_when_full() -> None:
    calls: list[str] = []

    def shout(word: str) -> str:
        calls.append(word)
        return word.upper()

    memo: BoundedMemo[str, str] = BoundedMemo(shout, limit=3)
    assert [memo("a"), memo("a"), memo("b"), memo("a")] == ["A", "A", "B", "A"]
    assert calls == ["a", "b"]
    memo("c")
    assert len(memo) == 3
    assert memo("d") == "D" and len(memo) == 1  # full: emptied, then the new answer kept
    assert memo("a") == "A" and calls == ["a", "b", "c", "d", "a"]  # forgotten, computed again


def test_false_and_none_answers_are_remembered_like_any_other() -> None:
    calls: list[int] = []

    def nothing(n: int) -> None:
        calls.append(n)

    memo: BoundedMemo[int, None] = BoundedMemo(nothing, limit=10)
    for _ in range(3):
        assert memo(1) is None
    assert calls == [1]


def test_a_stream_of_new_keys_never_grows_it_past_its_limit() -> None:
    memo: BoundedMemo[int, int] = BoundedMemo(lambda n: n * 2, limit=100)
    for n in range(10_000):
        assert memo(n) == n * 2
        assert len(memo) <= 100


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        BoundedMemo(str, limit=0)


async def _hello(request: object) -> PlainTextResponse:
    return PlainTextResponse("hi")


def test_the_proxy_fast_path_remembers_which_paths_only_the_catch_all_serves() -> None:
    app = Starlette(routes=[Route("/own", _hello), Route("/{path:path}", proxy)])
    fast = ProxyFastPath(app)

    def scope(path: str) -> dict[str, object]:
        return {"type": "http", "method": "POST", "path": path, "root_path": "", "app": app}

    assert not fast._is_proxied(scope("/own"))  # served by its own route, any method: FastAPI's
    assert fast._is_proxied(scope("/elsewhere"))
    for n in range(ProxyFastPath.MAX_REMEMBERED * 2 + 3):
        assert fast._is_proxied(scope(f"/made-up/{n}"))
        assert len(fast._proxied) <= ProxyFastPath.MAX_REMEMBERED
    assert not fast._is_proxied(scope("/own"))
