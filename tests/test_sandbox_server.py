"""A real Ghost: the health report, and serving on while the model abuses the sandbox."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from ghost.testing.fake_upstream import FakeUpstream, Reply
from ghost.testing.server import GhostServer

FORK_BOMB = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
ABUSE = {
    "fork bomb": FORK_BOMB,
    "memory hog": "hog = []\nwhile True: hog.append(bytearray(64 * 1024 * 1024))",
    "infinite loop": "while True: pass",
    "100 MB of stdout": "import sys\nfor _ in range(1600): sys.stdout.write('x' * 65536)",
}
# Its own environment, and every readable command line and environment of every process it can see
# that names Ghost (only those: on a busy machine all of them would pass the tool-result cap and
# hide Ghost's own behind the cut).
READ_THE_KEY = """import glob, os
print(os.environ)
for name in glob.glob('/proc/[0-9]*/cmdline') + glob.glob('/proc/[0-9]*/environ'):
    try:
        data = open(name, 'rb').read()
    except OSError:
        continue
    if b'ghost' in data.lower():
        print(name, data)
"""
# Every ghost.db below each top-level folder (the read-only /usr and the kernel's /proc, /sys and
# /dev left out for time), and Ghost's home by its host path.
FIND_THE_DATABASE = """import glob, os
tops = [t for t in os.listdir('/') if t not in ('proc', 'sys', 'dev', 'usr') and not os.path.islink('/' + t)]
print(sorted(p for t in tops for p in glob.glob(f'/{t}/**/ghost.db', recursive=True)))
print('home visible:', os.path.exists(HOME))
"""


@pytest.fixture(scope="module")
def server(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhostServer]:
    # The time limit ends the fork bomb and the loop; it is long enough that, on a loaded machine,
    # the memory hog and the probes below still finish before it.
    with GhostServer("--upstream-url", upstream.url, "--sandbox-timeout", "8", "--sandbox-max-processes", "32",
                     "--sandbox-memory-bytes", str(512 * 1024 * 1024),
                     home=tmp_path_factory.mktemp("sandbox-server-home")) as ghost:
        yield ghost


def chat(server: GhostServer, **extra: object) -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", headers=server.headers, timeout=120,
                      json={"model": "fake-model", "messages": [{"role": "user", "content": "go"}], **extra})


def test_health_reports_the_sandbox(server: GhostServer) -> None:
    sandbox = httpx.get(server.url + "/api/health", headers=server.headers).json()["sandbox"]
    assert sandbox["backend"] == "bubblewrap" and sandbox["isolated"] is True
    assert sandbox["network"] is False and sandbox["process_limit"] in ("cgroup", "rlimit")
    assert sandbox["limits"]["timeout_s"] == 8 and sandbox["limits"]["max_processes"] == 32


def test_ghost_keeps_serving_while_the_model_abuses_the_sandbox(server: GhostServer, upstream: FakeUpstream) -> None:
    stop = threading.Event()
    statuses: list[int] = []

    def poll() -> None:
        with httpx.Client(base_url=server.url, headers=server.headers, timeout=10) as client:
            while not stop.is_set():
                statuses.append(client.get("/api/health").status_code)
                statuses.append(client.get("/api/version").status_code)
                time.sleep(0.05)

    poller = threading.Thread(target=poll)
    poller.start()
    # Positive controls: the key probe finds the key when run outside the sandbox, and the database
    # probe finds a ghost.db planted in the sandbox.
    outside = subprocess.run([sys.executable, "-c", READ_THE_KEY], capture_output=True, text=True, timeout=60)
    assert server.api_key in outside.stdout
    (server.home / "sandbox" / "planted" / "deep").mkdir(parents=True)
    (server.home / "sandbox" / "planted" / "deep" / "ghost.db").write_text("planted")
    assert (server.home / "ghost.db").exists()
    # Each result is checked as soon as it is back, the probes first: a probe that finds the key or
    # the home fails the test at once, without waiting for the abuses' time limits.
    checks: dict[str, tuple[str, Callable[[str], bool]]] = {
        "read the key": (READ_THE_KEY, lambda r: server.api_key not in r and "GHOST" not in r
                         and str(server.home) not in r),
        "read the database": (FIND_THE_DATABASE.replace("HOME", repr(str(server.home))),
                              lambda r: "stdout:\n['/sandbox/planted/deep/ghost.db']\nhome visible: False" in r),
        "fork bomb": (ABUSE["fork bomb"], lambda r: r.startswith("stopped: it ran past the time limit")),
        "memory hog": (ABUSE["memory hog"], lambda r: "MemoryError" in r),
        "infinite loop": (ABUSE["infinite loop"], lambda r: r.startswith("stopped: it ran past the time limit")),
        "100 MB of stdout": (ABUSE["100 MB of stdout"],
                             lambda r: r.startswith("stopped: it wrote more output than allowed") and len(r) < 80_000),
    }
    try:
        for name, (code, check) in checks.items():
            upstream.script(Reply(content="", tool_calls=[{"name": "execute", "arguments": {"code": code}}]),
                            Reply(content=f"survived {name}"))
            reply = chat(server)
            assert reply.status_code == 200
            assert reply.json()["choices"][0]["message"]["content"] == f"survived {name}"
            result = upstream.chat_requests()[-1]["body"]["messages"][-1]["content"]
            assert check(result), f"{name}: {result[:2000]}"
    finally:
        stop.set()
        poller.join()
    assert statuses and set(statuses) == {200}


def _running(marker: str) -> bool:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"{entry.path}/cmdline", "rb") as cmdline:
                    if marker.encode() in cmdline.read():
                        return True
            except OSError:
                continue
    return False


def test_a_client_that_disconnects_kills_the_sandbox_process(upstream: FakeUpstream, tmp_path: Path) -> None:
    marker = f"disconnect-{uuid.uuid4().hex}"
    upstream.script(Reply(content="", tool_calls=[{"name": "execute", "arguments": {
        "code": f"import time  # {marker}\ntime.sleep(300)"}}]), Reply(content="never sent"))
    # A long sandbox timeout: the process can only be gone because the disconnect killed it.
    with GhostServer("--upstream-url", upstream.url, "--sandbox-timeout", "600", home=tmp_path / "home") as ghost:
        with httpx.Client(base_url=ghost.url, headers=ghost.headers, timeout=30) as client:
            with client.stream("POST", "/v1/chat/completions", json={
                    "model": "fake-model", "stream": True, "messages": [{"role": "user", "content": "go"}]}) as reply:
                assert reply.status_code == 200
                deadline = time.monotonic() + 60
                while not _running(marker) and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert _running(marker), "the sandbox run never started"
            # Leaving the block closed the connection mid-stream.
        deadline = time.monotonic() + 30
        while _running(marker) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _running(marker)
        assert len(upstream.replies) == 1  # the turn stopped: the second reply was never asked for
        assert client_can_still_talk(ghost)


def client_can_still_talk(ghost: GhostServer) -> bool:
    return httpx.get(ghost.url + "/api/health", headers=ghost.headers).status_code == 200


def test_a_fresh_home_gets_a_working_sandbox(server: GhostServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(content="", tool_calls=[{"name": "execute", "arguments": {
        "code": "open('hello.txt', 'w').write('hi'); print('made')"}}]), Reply(content="ok"))
    assert chat(server).status_code == 200
    assert (server.home / "sandbox" / "hello.txt").read_text() == "hi"


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                status = Path(entry.path, "status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{pid}\n" in status:
                kids.append(int(entry.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


# Silent, reads nothing, closes the pipes Ghost gave it, and ignores every signal Ghost's death
# could bring about indirectly (a closed pipe's SIGPIPE, a hang-up, a polite TERM): only a SIGKILL
# from the kernel (bubblewrap's --die-with-parent) ends it before its 300 s are up. Without the
# flag, it survived Ghost's SIGKILL until some other Ghost start swept its stale pids cgroup.
SURVIVOR = """import os, signal, time  # {marker}
for sig in (signal.SIGPIPE, signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, signal.SIG_IGN)
for fd in (0, 1, 2):
    os.close(fd)
time.sleep(300)
"""


def test_sandboxes_die_with_ghost(upstream: FakeUpstream, tmp_path: Path) -> None:
    marker = f"orphan-{uuid.uuid4().hex}"
    upstream.script(Reply(content="", tool_calls=[{"name": "execute", "arguments": {
        "code": SURVIVOR.format(marker=marker)}}]), Reply(content="never sent"))
    # No pids cgroup: the next Ghost start anywhere on the machine kills what a dead Ghost left in
    # one (a second safety net), which would hide a missing --die-with-parent.
    ghost = GhostServer("--upstream-url", upstream.url, "--sandbox-timeout", "600", "--sandbox-no-pids-cgroup",
                        home=tmp_path / "home").start()
    try:
        threading.Thread(target=lambda: _quietly(chat, ghost), daemon=True).start()
        deadline = time.monotonic() + 60
        while not _running(marker) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _running(marker)
        sandboxes = _children(ghost.process.pid)  # the running sandbox's bwrap, and the warm one's
        assert sandboxes
    finally:
        ghost.stop(signal.SIGKILL)  # no shutdown code runs: only the kernel can clean up now
    deadline = time.monotonic() + 60
    while (_running(marker) or any(map(_alive, sandboxes))) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _running(marker)
    assert not [pid for pid in sandboxes if _alive(pid)]


def _quietly(fn: Callable[..., object], *args: object) -> None:
    with contextlib.suppress(httpx.HTTPError):  # the server is killed under it
        fn(*args)


def test_the_process_backend_says_it_does_not_isolate(upstream: FakeUpstream, tmp_path: Path) -> None:
    with GhostServer("--upstream-url", upstream.url, "--sandbox-backend", "process", home=tmp_path / "home") as ghost:
        sandbox = httpx.get(ghost.url + "/api/health", headers=ghost.headers).json()["sandbox"]
        assert sandbox["backend"] == "process" and sandbox["isolated"] is False
        assert "does NOT isolate" in ghost.log()
