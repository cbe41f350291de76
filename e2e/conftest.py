"""Start the scripted fake upstream, Ghost and Open WebUI as real processes; give tests a browser.

Ghost and the fake upstream (e2e/upstream.py) run from Ghost's own venv (GHOST_PYTHON), Open WebUI
and Playwright from the e2e venv this runs in. Chromium is Debian's (/usr/bin/chromium): Playwright
cannot download its own here. A failed test leaves a screenshot in e2e/artifacts/, and the
servers' logs are copied there when anything failed.

Every server runs in a process group of its own and is killed with it at the end, whatever
happened: by the session fixture, by an atexit hook if pytest is torn down another way, and on
SIGTERM (turned into KeyboardInterrupt, which pytest answers by running the fixtures' teardown).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

KEY = "e2e-key-0123456789abcdef-0123456789"
MODEL = "fake-model"
HERE = Path(__file__).resolve().parent
ARTIFACTS = HERE / "artifacts"
CHROMIUM = os.environ.get("E2E_CHROMIUM", "/usr/bin/chromium")
# --no-sandbox: CI runs as root, where Chromium refuses its sandbox; --disable-dev-shm-usage: a
# container's /dev/shm is often too small for it.
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run"]
START_TIMEOUT = float(os.environ.get("E2E_START_TIMEOUT", "600"))  # Open WebUI's first start migrates a database


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Everything this run starts inherits this variable (servers, Playwright's driver, Chromium), so
# what is left at the end can be found even if it was re-parented.
RUN_ID = os.environ.setdefault("E2E_RUN_ID", uuid.uuid4().hex)


def processes_of_this_run() -> list[int]:
    """Live processes carrying this run's E2E_RUN_ID, other than pytest itself."""
    mark = f"E2E_RUN_ID={RUN_ID}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if mark in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return found


STARTED: list["Process"] = []  # every server this run started, for the atexit hook


class Process:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.log = logs / f"{name}.log"
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        STARTED.append(self)

    def wait_http(self, url: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(url, timeout=2).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} did not answer {url} in {START_TIMEOUT} s")

    def stop(self) -> None:
        """Stop the whole process group (a server's workers too), by force if it lingers."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # what is left of the group, the leader too
        self.proc.wait(timeout=10)


@atexit.register
def _stop_everything() -> None:
    for process in reversed(STARTED):
        process.stop()


signal.signal(signal.SIGTERM, signal.default_int_handler)


class Stack:
    """The three servers, their URLs, and helpers to script the upstream and read Ghost's sessions."""

    def __init__(self, root: Path) -> None:
        self.fake_url = f"http://127.0.0.1:{free_port()}"
        self.ghost_url = f"http://127.0.0.1:{free_port()}"
        self.webui_url = f"http://127.0.0.1:{free_port()}"
        self.root = root
        self.processes: list[Process] = []

    def start(self) -> None:
        ghost_python = os.environ.get("GHOST_PYTHON", sys.executable)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("GHOST_", "OLLAMA_", "OPENAI_"))}
        fake = Process("fake-upstream", [ghost_python, str(HERE / "upstream.py"), "--port",
                                         self.fake_url.rsplit(":", 1)[1], "--model", MODEL], base, self.root)
        self.processes.append(fake)
        fake.wait_http(self.fake_url + "/v1/models")
        ghost = Process("ghost", [ghost_python, "-m", "ghost", "serve", "--port", self.ghost_url.rsplit(":", 1)[1],
                                  "--api-key", KEY, "--home", str(self.root / "ghost-home"),
                                  "--upstream-url", self.fake_url], base, self.root)
        self.processes.append(ghost)
        ghost.wait_http(self.ghost_url + "/api/version")
        webui = Process("open-webui", [str(Path(sys.executable).with_name("open-webui")), "serve", "--host",
                                       "127.0.0.1", "--port", self.webui_url.rsplit(":", 1)[1]],
                        {**base, **self.webui_env()}, self.root)
        self.processes.append(webui)
        webui.wait_http(self.webui_url + "/health")

    def webui_env(self) -> dict[str, str]:
        session = {"X-Ghost-Session": "{{CHAT_ID}}"}
        return {
            "DATA_DIR": str(self.root / "webui-data"), "WEBUI_AUTH": "False", "WEBUI_SECRET_KEY": "e2e",
            "OFFLINE_MODE": "true", "HF_HUB_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "false",
            "SCARF_NO_ANALYTICS": "true", "DO_NOT_TRACK": "true", "ENABLE_VERSION_UPDATE_CHECK": "false",
            "ENABLE_OLLAMA_API": "true", "OLLAMA_BASE_URLS": self.ghost_url,
            "OLLAMA_API_CONFIGS": json.dumps({"0": {"key": KEY, "headers": session}}),
            "ENABLE_OPENAI_API": "true", "OPENAI_API_BASE_URLS": self.ghost_url + "/v1", "OPENAI_API_KEYS": KEY,
            "OPENAI_API_CONFIGS": json.dumps({"0": {"prefix_id": "oai", "headers": session}}),
            "TASK_MODEL": f"{MODEL}-plain", "TASK_MODEL_EXTERNAL": f"oai.{MODEL}-plain",
            "RAG_EMBEDDING_ENGINE": "ollama", "RAG_EMBEDDING_MODEL": MODEL, "ENABLE_WEB_SEARCH": "false",
            # Open WebUI's slim mode: no local embedding/speech models, no vector store unless used;
            # the suite's venv has none of their libraries (e2e/requirements.txt).
            "USE_SLIM_DOCKER": "true",
        }

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()

    # --- the fake upstream and Ghost, from the test ---------------------------------------------
    def script(self, *replies: dict[str, Any]) -> None:
        httpx.post(self.fake_url + "/_fake/script", json=list(replies), timeout=10).raise_for_status()

    def reset(self) -> None:
        httpx.post(self.fake_url + "/_fake/reset", timeout=10).raise_for_status()

    def upstream_requests(self) -> list[dict[str, Any]]:
        return httpx.get(self.fake_url + "/_fake/requests", timeout=10).json()

    def hold_state(self, name: str) -> str:
        """Where the held upstream stream `name` is: "waiting", "open", "finished", "closed_early"."""
        return httpx.get(f"{self.fake_url}/_fake/holds/{name}", timeout=10).json()["state"]

    def session(self, session_id: str) -> dict[str, Any] | None:
        response = httpx.get(f"{self.ghost_url}/api/sessions/{session_id}", headers={"X-Ghost-Key": KEY}, timeout=10)
        return response.json() if response.status_code == 200 else None


def pytest_sessionstart(session: pytest.Session) -> None:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)  # only this run's failures


def pytest_sessionfinish(session: pytest.Session) -> None:
    """After every fixture's teardown: nothing this run started may still be running."""
    deadline = time.monotonic() + 20  # a hang guard: processes told to stop may take a moment
    while (leftovers := processes_of_this_run()) and time.monotonic() < deadline:
        time.sleep(0.2)
    if leftovers:
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        print(f"\n!! processes left running by the suite, now killed: {leftovers}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Stack]:
    servers = Stack(tmp_path_factory.mktemp("e2e"))
    started = False
    try:
        servers.start()
        started = True
        # The leftover check at the end (pytest_sessionfinish) sees what it must look for.
        assert {p.proc.pid for p in servers.processes} <= set(processes_of_this_run())
        yield servers
    finally:
        servers.stop()
        if request.session.testsfailed or not started:
            ARTIFACTS.mkdir(exist_ok=True)
            for log in servers.root.glob("*.log"):
                shutil.copy(log, ARTIFACTS / log.name)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture()
def page(browser: Any, stack: Stack, request: pytest.FixtureRequest) -> Iterator[Any]:
    stack.reset()
    context = browser.new_context(base_url=stack.webui_url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    # A fresh install shows its release notes once, whenever the page gets to it: dismissed
    # before any action it would cover, instead of guessing when it appears.
    dismiss = page.get_by_role("button", name="Okay, Let's Go!")
    page.add_locator_handler(dismiss, lambda button: button.click())
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report
