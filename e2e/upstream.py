"""The scripted fake upstream for the browser suite: Ghost's own, plus its held streams over HTTP.

Runs in Ghost's venv (`python e2e/upstream.py --port N`). A reply scripted with `hold` streams
`hold_after` chunks and then waits; the suite reads where that stream is — "open" while Ghost
holds the connection, "closed_early" once Ghost hung up — and can let it finish:

It behaves like most hosted OpenAI-compatible services: its context window (8,192 tokens) is not
told to Ghost (so Ghost assumes its default, 8,192), and every chat request's size is recorded
(`tokens` in `/_fake/requests`) for the suite to check that each one fits.

    GET  /_fake/holds/{name}    {"state": "waiting" | "open" | "finished" | "closed_early"}
    POST /_fake/release/{name}
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ghost.testing.fake_upstream import ContextWindow, FakeUpstream, main

WINDOW = 8192


class BrowserSuiteUpstream(FakeUpstream):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.context = ContextWindow(WINDOW, "silent")

    def reset(self) -> None:
        super().reset()
        self.context = ContextWindow(WINDOW, "silent")  # counted and recorded, never probed or refused

    def app(self) -> Starlette:
        app = super().app()
        app.router.routes += [
            Route("/_fake/holds/{name}", self._hold_state_route, methods=["GET"]),
            Route("/_fake/release/{name}", self._release_route, methods=["POST"]),
        ]
        return app

    async def _hold_state_route(self, request: Request) -> Response:
        return JSONResponse({"state": self.hold_state(request.path_params["name"])})

    async def _release_route(self, request: Request) -> Response:
        self.release(request.path_params["name"])
        return JSONResponse({"released": request.path_params["name"]})


if __name__ == "__main__":
    main(BrowserSuiteUpstream, __doc__.splitlines()[0])
