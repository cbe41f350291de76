"""The process backend: no isolation (that is expected and tested as such), but every limit."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ghost.config import Settings
from ghost.errors import SandboxError
from ghost.sandbox.base import Executor
from ghost.sandbox.bwrap import BwrapExecutor
from ghost.sandbox.factory import make_executor
from ghost.sandbox.process import ProcessExecutor

MB = 1024 * 1024


async def executor_for(home: Path, **overrides: object) -> Executor:
    values: dict[str, object] = dict(home=home, sandbox_backend="process", sandbox_timeout=10,
                                     sandbox_max_processes=32, sandbox_memory_bytes=512 * MB)
    values.update(overrides)
    settings = Settings(**values)
    settings.sandbox_path.mkdir(parents=True, exist_ok=True)
    executor = await make_executor(settings, settings.sandbox_path)
    _OPEN.append(executor)
    return executor


_OPEN: list[Executor] = []


@pytest.fixture(autouse=True)
async def _close_executors() -> AsyncIterator[None]:
    yield
    while _OPEN:
        await _OPEN.pop().aclose()  # the warm sandbox a bubblewrap one keeps


@pytest.fixture()
async def process(tmp_path: Path) -> Executor:
    return await executor_for(tmp_path / "home")


async def py(executor: Executor, code: str, stdin: bytes = b""):  # noqa: ANN201
    return await executor.run([executor.python, "-c", code], stdin=stdin)


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"{entry.path}/cmdline", "rb") as cmdline:
                    if marker.encode() in cmdline.read():
                        found.append(int(entry.name))
            except OSError:
                continue
    return found


def wait_until_gone(marker: str, deadline_s: float = 15.0) -> list[int]:
    deadline = time.monotonic() + deadline_s
    while (left := processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


async def test_reports_that_it_does_not_isolate(process: Executor) -> None:
    assert isinstance(process, ProcessExecutor)
    assert process.info()["isolated"] is False and process.info()["backend"] == "process"


async def test_runs_in_the_sandbox_directory(process: Executor, tmp_path: Path) -> None:
    result = await py(process, "import os; print(os.getcwd()); open('made-here', 'w').write('x')")
    assert result.stdout.strip() == str(tmp_path / "home" / "sandbox")
    assert (tmp_path / "home" / "sandbox" / "made-here").exists()


async def test_lack_of_isolation_is_real(process: Executor, tmp_path: Path) -> None:
    # Expected: the process backend can read what Ghost's user can. This is why it warns.
    (tmp_path / "outside.txt").write_text("readable")
    result = await py(process, f"print(open({str(tmp_path / 'outside.txt')!r}).read())")
    assert result.stdout == "readable\n"


async def test_environment_is_scrubbed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GHOST_API_KEY", "key-4f9e-secret")
    executor = await executor_for(tmp_path / "home")
    result = await py(executor, "import os; print(sorted(os.environ.items()))")
    assert "secret" not in result.stdout and "GHOST" not in result.stdout


async def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    executor = await executor_for(tmp_path / "home", sandbox_timeout=1)
    marker = f"ptree-{uuid.uuid4().hex}"
    result = await executor.run([executor.bash, "-c", f"(sleep 300; echo {marker}) & sleep 301; echo {marker}"])
    assert result.limit == "timeout" and result.exit_code is None
    assert wait_until_gone(marker) == []


async def test_fork_bomb_is_contained(tmp_path: Path) -> None:
    executor = await executor_for(tmp_path / "home", sandbox_timeout=2, sandbox_max_processes=32)
    assert executor.info()["process_limit"] != "none"  # never set a bomb off without a limit
    marker = f"pbomb-{uuid.uuid4().hex}"
    result = await py(executor, f"# {marker}\nimport os\nwhile True:\n    try:\n        os.fork()\n"
                                "    except OSError:\n        pass")
    assert result.limit == "timeout"
    assert wait_until_gone(marker) == []


async def test_process_limit_holds(tmp_path: Path) -> None:
    executor = await executor_for(tmp_path / "home", sandbox_max_processes=16)
    code = """
import os, time
kids, refused = [], 0
for _ in range(60):
    try:
        pid = os.fork()
    except OSError:
        refused += 1
        continue
    if pid == 0:
        time.sleep(1)
        os._exit(0)
    kids.append(pid)
print(len(kids), refused)
"""
    result = await py(executor, code)
    forked, refused = map(int, result.stdout.split())
    assert forked < 16 and refused == 60 - forked, result


async def test_memory_cpu_and_file_size_limits(tmp_path: Path) -> None:
    executor = await executor_for(tmp_path / "home", sandbox_cpu_seconds=1, sandbox_file_size_bytes=MB,
                                  sandbox_timeout=20)
    memory = await py(executor, "hog = []\nwhile True: hog.append(bytearray(50 * 1024 * 1024))")
    assert memory.exit_code == 1 and "MemoryError" in memory.stderr
    cpu = await py(executor, "while True: pass")
    assert cpu.limit == "cpu" and cpu.exit_code == 128 + 24
    big = await py(executor, "open('big', 'wb').write(b'x' * (2 * 1024 * 1024))")
    assert "File too large" in big.stderr


async def test_output_flood_is_killed(tmp_path: Path) -> None:
    executor = await executor_for(tmp_path / "home", sandbox_output_bytes=4096, sandbox_output_kill_bytes=4 * MB)
    result = await py(executor, "import sys\nwhile True: sys.stdout.write('z' * 65536)")
    assert result.limit == "output" and len(result.stdout) < 4096 + 200


async def test_cancelling_the_caller_kills_the_run(process: Executor) -> None:
    marker = f"pcancel-{uuid.uuid4().hex}"
    run = asyncio.create_task(process.run([process.bash, "-c", f"sleep 300 & sleep 301; echo {marker}"]))
    deadline = time.monotonic() + 60
    while not processes_with(marker) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert wait_until_gone(marker) == []


async def test_a_straggler_holding_the_output_pipe_does_not_hang_the_run(process: Executor) -> None:
    # It leaves the process group, so the group kill misses it: the cgroup kill gets it, and
    # without a cgroup Ghost stops reading after a grace period. Either way the run returns.
    marker = f"straggle-{uuid.uuid4().hex}"
    result = await process.run([process.bash, "-c", f"setsid bash -c 'sleep 60; : {marker}' & echo done"])
    assert result.exit_code == 0 and result.stdout == "done\n"
    if process.info()["process_limit"] == "cgroup":
        assert wait_until_gone(marker) == []
    else:
        os.killpg(os.getpgid(processes_with(marker)[0]), 9)


# --- choosing the backend -----------------------------------------------------------------------

async def test_auto_prefers_bubblewrap(tmp_path: Path) -> None:
    executor = await executor_for(tmp_path / "home", sandbox_backend="auto")
    assert isinstance(executor, BwrapExecutor)


async def test_auto_never_falls_back_to_the_process_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on the PATH
    with caplog.at_level(logging.WARNING, logger="ghost.sandbox"):
        executor = await executor_for(tmp_path / "home", sandbox_backend="auto")
    assert not isinstance(executor, ProcessExecutor)
    assert executor.info()["available"] is False and "bwrap" in executor.info()["reason"]
    with pytest.raises(SandboxError, match="unavailable.*bwrap command is not installed"):
        await executor.run(["/bin/true"])
    assert "REFUSED" in caplog.text


async def test_bwrap_required_but_missing_refuses_to_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SandboxError, match="bwrap"):
        await executor_for(tmp_path / "home", sandbox_backend="bwrap")
