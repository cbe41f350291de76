"""The route table in code (`ghost.api.route_table`) is the routes Ghost serves: every route has an
entry and every entry a route, each route's key check is its entry's, each path's body cap and
error shape are its entry's on the wire, and docs/architecture.md's table is the one written from it."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_dependant
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Route

from ghost.api.auth import require_admin, require_key
from ghost.api.mcp import McpEndpoint
from ghost.api.protocols.anthropic.encoder import error_type_for_status
from ghost.api.proxy.route import PROXY_METHODS, every_route, proxy
from ghost.api.route_table import (ALL_ROUTES, PROXY_ROUTE, ROUTES, Auth, Cap, RouteSpec, RouteTable, Shape,
                                   markdown)
from ghost.app import create_app
from ghost.config import Settings
from ghost.testing.fake_upstream import FakeUpstream
from ghost.testing.server import GhostServer

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "ghost"
DOC_SCRIPT = ROOT / "scripts" / "route_table_doc.py"


def served_routes(app: FastAPI) -> Iterator[BaseRoute]:
    yield from every_route(app.router.routes)


def route_methods(route: BaseRoute) -> set[str]:
    methods = set(getattr(route, "methods", None) or ())
    if "GET" in methods and not isinstance(route, APIRoute):
        methods.discard("HEAD")  # Starlette adds HEAD to a plain GET route of its own accord
    return methods


def spec_methods(spec: RouteSpec) -> set[str]:
    return set(PROXY_METHODS) if spec.methods == ("*",) else set(spec.methods)


def pairs_served(app: FastAPI) -> set[tuple[str, str]]:
    return {(method, route.path) for route in served_routes(app) for method in route_methods(route)}


def pairs_listed(table: RouteTable) -> set[tuple[str, str]]:
    # A prefix entry is a part of the proxy's paths, not a route of its own.
    return {(method, spec.path) for spec in table.specs if not spec.prefix for method in spec_methods(spec)}


@pytest.mark.parametrize("flags", [{}, {"no_metrics": True}, {"metrics_public": True}], ids=str)
def test_fastapi_serves_exactly_the_routes_the_table_lists(flags: dict[str, bool]) -> None:
    settings = Settings(**flags)
    app = create_app(settings)
    served, listed = pairs_served(app), pairs_listed(app.state.routes)
    assert served - listed == set(), "routes without an entry in ghost.api.route_table (decide their key, cap, shape)"
    assert listed - served == set(), "entries in ghost.api.route_table that no route serves"


def test_the_check_finds_a_route_without_an_entry() -> None:
    # The probe: a route added the ordinary way, with no entry, is found.
    app = create_app(Settings())
    app.add_api_route("/api/planted", lambda: {}, methods=["POST"])
    assert ("POST", "/api/planted") in pairs_served(app) - pairs_listed(app.state.routes)


def routes_with_their_routers_dependencies(routes: Iterable[BaseRoute], inherited: tuple[Any, ...] = ()
                                          ) -> Iterator[tuple[BaseRoute, tuple[Any, ...]]]:
    """Each route with the dependencies `include_router` gave the routers it sits in (newer FastAPI
    keeps those on the included router's entry, not in the route's own dependant)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is None:
            yield route, inherited
            continue
        given = tuple(getattr(getattr(route, "include_context", None), "dependencies", None) or ())
        yield from routes_with_their_routers_dependencies(included.routes, inherited + given)


def auth_of(route: BaseRoute, router_dependencies: tuple[Any, ...] = ()) -> Auth:
    """The key check a route really makes."""
    if isinstance(route, Route) and isinstance(route.endpoint, McpEndpoint):
        return Auth.KEY  # checks the key itself (check_key) before the SDK's handler
    calls = dependency_calls(route.dependant) if isinstance(route, APIRoute) else set()
    for depends in router_dependencies:
        calls |= {depends.dependency} | dependency_calls(get_dependant(path="", call=depends.dependency))
    return Auth.ADMIN if require_admin in calls else Auth.KEY if require_key in calls else Auth.NONE


def dependency_calls(dependant: Dependant) -> set[Any]:
    """Every callable a route depends on, at any depth."""
    calls: set[Any] = set()
    for dependency in dependant.dependencies:
        calls.add(dependency.call)
        calls |= dependency_calls(dependency)
    return calls


def auth_mismatches(app: FastAPI, table: RouteTable, settings: Settings) -> list[str]:
    wrong = []
    for route, given in routes_with_their_routers_dependencies(app.router.routes):
        spec = next(s for s in table.specs if s.path == route.path and route_methods(route) <= spec_methods(s))
        if (auth := auth_of(route, given)) is not spec.auth_under(settings):
            wrong.append(f"{sorted(route_methods(route))} {route.path}: {auth}, listed {spec.auth_under(settings)}")
    return wrong


@pytest.mark.parametrize("flags", [{}, {"metrics_public": True}], ids=str)
def test_each_route_checks_the_key_its_entry_names(flags: dict[str, bool]) -> None:
    settings = Settings(**flags)
    app = create_app(settings)
    wrong = auth_mismatches(app, app.state.routes, settings)
    assert not wrong, "routes whose key check differs from their entry:\n" + "\n".join(wrong)


def test_the_check_finds_a_route_whose_key_check_is_not_its_entrys() -> None:
    # The probe: the table says /api/tags needs a key, while the route asks for none.
    settings = Settings()
    planted = [replace(s, auth=Auth.KEY) if s.path == "/api/tags" else s for s in ROUTES]
    assert auth_mismatches(create_app(settings), RouteTable(planted, settings), settings) == [
        "['GET'] /api/tags: none, listed key"]


def test_a_key_check_is_found_through_a_nested_dependency_and_a_router_dependency() -> None:
    # The probes: the check counts a key check made by a dependency of a dependency, or by the
    # router a route was included with, as the route's own.
    def needs_key(_: None = Depends(require_key)) -> None:
        return None

    app = FastAPI()
    app.add_api_route("/nested", lambda: {}, methods=["GET"], dependencies=[Depends(needs_key)])
    router = APIRouter()
    router.add_api_route("/by-router", lambda: {}, methods=["GET"])
    app.include_router(router, dependencies=[Depends(require_admin)])
    auths = {route.path: auth_of(route, given) for route, given in routes_with_their_routers_dependencies(app.routes)
             if isinstance(route, APIRoute)}
    assert auths == {"/nested": Auth.KEY, "/by-router": Auth.ADMIN}


def test_each_entry_names_the_module_that_serves_it() -> None:
    app = create_app(Settings())
    for route in served_routes(app):
        endpoint = getattr(route, "endpoint", None)
        module = type(endpoint).__module__ if isinstance(endpoint, McpEndpoint) else getattr(endpoint, "__module__", "")
        if not module.startswith("ghost."):
            continue  # FastAPI's own (/docs, /openapi.json)
        spec = ALL_ROUTES.spec_for(concrete(route.path)) if endpoint is not proxy else PROXY_ROUTE
        named = re.search(r"`([^`]+)`", spec.module)
        assert named, spec
        file = named.group(1)
        where = SRC / file
        shown = module.removeprefix("ghost.").replace(".", "/")
        assert (where.is_dir() and shown.startswith(file.rstrip("/"))) or shown + ".py" == file, (route.path, file, module)


def test_entries_that_share_a_path_agree_on_what_the_middleware_decides() -> None:
    # The middleware runs before routing: it knows the path, not the route.
    by_path: dict[str, set[tuple[Cap, Shape]]] = {}
    for spec in ROUTES:
        by_path.setdefault(spec.path, set()).add((spec.cap, spec.shape))
    assert {path: decided for path, decided in by_path.items() if len(decided) > 1} == {}


def test_routes_without_the_key_take_only_small_bodies() -> None:
    # Nobody vouches for these bodies (issue 15's rule, now one line of the table per route).
    assert [s.path for s in ROUTES if s.auth is Auth.NONE and s.cap is not Cap.UNAUTH] == []


def test_a_route_switched_off_is_answered_like_any_proxied_path() -> None:
    # Error shapes come from the table of every route, served or not: right only if a route that can
    # be left out answers in the proxy's shape (a left-out path is proxied).
    assert [s.path for s in ROUTES if s.off_when and s.shape is not PROXY_ROUTE.shape] == []
    table = RouteTable(ROUTES, Settings(no_metrics=True))
    assert table.spec_for("/metrics") is PROXY_ROUTE
    assert RouteTable(ROUTES, Settings()).spec_for("/metrics").path == "/metrics"


def concrete(template: str) -> str:
    """A path a template matches: `/api/sessions/{session_id}` -> `/api/sessions/x`."""
    return re.sub(r"\{\w+(:\w+)?\}", lambda m: "a/b.txt" if m.group(1) else "x", template)


def test_each_entry_is_what_its_paths_look_up() -> None:
    for spec in ROUTES:
        if spec is PROXY_ROUTE:
            assert ALL_ROUTES.spec_for("/v1/completions") is spec
            continue
        path = spec.path + "sha256:0" if spec.prefix else concrete(spec.path)
        found = ALL_ROUTES.spec_for(path)
        assert (found.path, found.cap, found.shape) == (spec.path, spec.cap, spec.shape), path
    assert ALL_ROUTES.spec_for("/api/download/a\nb").path == "/api/download/{filename:anypath}"
    assert ALL_ROUTES.spec_for("/api/tags/").path == PROXY_ROUTE.path  # exact paths only, as FastAPI routes


def test_the_memo_of_looked_up_paths_stays_bounded() -> None:
    table = RouteTable(ROUTES)
    for n in range(RouteTable.MAX_REMEMBERED * 2 + 10):
        assert table.spec_for(f"/proxied/{n}") is PROXY_ROUTE
        assert len(table._looked_up) <= RouteTable.MAX_REMEMBERED
    assert table.spec_for("/api/sessions/x").path == "/api/sessions/{session_id}"  # after a clear as before
    assert table.spec_for("/api/sessions/x").path == "/api/sessions/{session_id}"  # and remembered


def test_the_doc_route_table_is_the_one_the_code_writes() -> None:
    loaded = importlib.util.spec_from_file_location("route_table_doc", DOC_SCRIPT)
    assert loaded is not None and loaded.loader is not None
    script = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(script)
    _, table, _ = script.split(script.DOC.read_text())
    assert table == markdown(), "docs/architecture.md's route table is out of date: run `make docs`"
    # The probe: a table edited by hand (or a route added in code) is a difference.
    assert table.replace("| key |", "| none |", 1) != markdown()


# --- on the wire: one real Ghost with small, distinct caps -------------------------------------------

CAPS = {"--max-request-bytes": 2000, "--unauth-max-body-bytes": 300, "--upload-max-bytes": 1500,
        "--proxy-max-body-bytes": 5000}


def cap_bytes(cap: Cap) -> int:
    settings = Settings(max_request_bytes=2000, unauth_max_body_bytes=300, upload_max_bytes=1500,
                        proxy_max_body_bytes=5000)
    return cap.limit(settings)


def wire_cases() -> list[tuple[str, str, RouteSpec]]:
    cases = []
    for spec in ROUTES:
        path = "/echo/x" if spec is PROXY_ROUTE else spec.path + "sha256:0" if spec.prefix else concrete(spec.path)
        if spec.path.startswith("/api/users/"):
            path = path.replace("/x", "/nobody", 1)
        for method in sorted(spec_methods(spec) & {"GET", "POST", "PUT", "DELETE"}):
            cases.append((method, path, spec))
    return cases


WIRE = wire_cases()


@pytest.fixture(scope="module")
def small_caps(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhostServer]:
    flags = [arg for flag, value in CAPS.items() for arg in (flag, str(value))]
    with GhostServer("--upstream-url", upstream.url, *flags, home=tmp_path_factory.mktemp("routes")) as server:
        yield server


@pytest.fixture(scope="module")
def http(small_caps: GhostServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=small_caps.url, timeout=60) as client:
        yield client


def error_message(body: Any, shape: Shape, status: int, error_type: str) -> str:
    """The message of an error body, asserting it is in `shape`."""
    if shape is Shape.OLLAMA:
        assert isinstance(body["error"], str), body
        return body["error"]
    if shape is Shape.ANTHROPIC:
        assert body["type"] == "error" and body["error"]["type"] == error_type_for_status(status), body
        return body["error"]["message"]
    assert body["error"]["type"] == error_type, body
    return body["error"]["message"]


@pytest.mark.parametrize("method,path,spec", WIRE, ids=[f"{m} {p}" for m, p, _ in WIRE])
def test_each_route_takes_its_entrys_body_cap_in_its_entrys_shape(http: httpx.Client, method: str, path: str,
                                                                  spec: RouteSpec) -> None:
    limit = cap_bytes(spec.cap)
    too_large = http.request(method, path, content=b"x" * (limit + 1), headers={"content-type": "application/json"})
    assert too_large.status_code == 413, too_large.text
    message = error_message(too_large.json(), spec.shape, 413, "request_too_large")
    assert f"larger than {limit} bytes" in message


@pytest.mark.parametrize("method,path,spec", WIRE, ids=[f"{m} {p}" for m, p, _ in WIRE])
def test_each_route_asks_for_its_entrys_key_in_its_entrys_shape(http: httpx.Client, method: str, path: str,
                                                                spec: RouteSpec) -> None:
    answer = http.request(method, path)
    if spec.auth is Auth.NONE:
        assert answer.status_code != 401, answer.text
        return
    assert answer.status_code == 401, answer.text
    assert error_message(answer.json(), spec.shape, 401, "authentication_error")


def test_admin_routes_refuse_a_users_key(small_caps: GhostServer, http: httpx.Client) -> None:
    made = http.post("/api/users", json={"name": "plain"}, headers=small_caps.headers)
    assert made.status_code == 201, made.text
    user = {"Authorization": f"Bearer {made.json()['key']}"}
    admin_cases = [(m, p, s) for m, p, s in WIRE if s.auth is Auth.ADMIN]
    assert admin_cases
    for method, path, spec in admin_cases:
        answer = http.request(method, path, headers=user)
        assert answer.status_code == 403, (method, path, answer.text)
        assert error_message(answer.json(), spec.shape, 403, "permission_error")
