"""The one helper that notices a client hang-up (ghost.api.disconnect), driven by ASGI messages."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from ghost.api.disconnect import cancel_on_disconnect, unless_disconnected


class Client:
    """An ASGI `receive` whose messages the test sends: body chunks, then maybe a hang-up."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[dict] = asyncio.Queue()

    async def receive(self) -> dict:
        return await self.messages.get()

    def hang_up(self) -> None:
        self.messages.put_nowait({"type": "http.request", "body": b"", "more_body": False})
        self.messages.put_nowait({"type": "http.disconnect"})


async def test_work_that_finishes_first_gives_its_result() -> None:
    assert await unless_disconnected(Client().receive, asyncio.sleep(0, result="done")) == "done"


async def test_a_hang_up_cancels_the_work_and_runs_its_cleanup() -> None:
    client, cleaned = Client(), asyncio.Event()

    async def long_work() -> str:
        try:
            await asyncio.sleep(60)
            return "never"
        finally:
            cleaned.set()

    asyncio.get_running_loop().call_later(0.05, client.hang_up)
    async with asyncio.timeout(10):  # a hang guard only
        assert await unless_disconnected(client.receive, long_work()) is None
    assert cleaned.is_set()


async def test_errors_of_the_work_are_raised() -> None:
    async def failing() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await unless_disconnected(Client().receive, failing())


async def test_listening_waits_for_the_body_to_be_read() -> None:
    client, body_read = Client(), asyncio.Event()
    client.hang_up()
    with anyio.CancelScope() as scope:
        watcher = asyncio.ensure_future(cancel_on_disconnect(client.receive, scope, after=body_read))
        await asyncio.sleep(0.05)
        assert client.messages.qsize() == 2  # nothing read while someone else owns the body
        body_read.set()
        async with asyncio.timeout(10):
            await watcher
    assert scope.cancel_called
