"""The scripted fake upstream for the browser suite: Ghost's own, plus its held streams over HTTP.

Runs in Ghost's venv (`python e2e/upstream.py --port N`). A reply scripted with `hold` streams
`hold_after` chunks and then waits; the suite reads where that stream is — "open" while Ghost
holds the connection, "closed_early" once Ghost hung up — and can let it finish:

    GET  /_fake/holds/{name}    {"state": "waiting" | "open" | "finished" | "closed_early"}
    POST /_fake/release/{name}
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ghost.testing.fake_upstream import FakeUpstream, main


class BrowserSuiteUpstream(FakeUpstream):
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
