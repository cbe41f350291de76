"""The bubblewrap backend, for real: isolation, limits, and abuse that must fail safely."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from ghost.config import Settings
from ghost.errors import SandboxError
from ghost.sandbox.base import Executor
from ghost.sandbox.bwrap import BwrapExecutor
from ghost.sandbox.factory import make_executor
from ghost.sandbox.layout import Layout

MB = 1024 * 1024


def settings_for(home: Path, **overrides: object) -> Settings:
    values: dict[str, object] = dict(home=home, sandbox_backend="bwrap", sandbox_timeout=10,
                                     sandbox_max_processes=32, sandbox_memory_bytes=512 * MB)
    values.update(overrides)
    return Settings(**values)


_OPEN: list[Executor] = []


async def executor_for(settings: Settings) -> Executor:
    settings.sandbox_path.mkdir(parents=True, exist_ok=True)
    executor = await make_executor(settings, settings.sandbox_path)
    _OPEN.append(executor)
    return executor


@pytest.fixture(autouse=True)
async def _close_executors() -> AsyncIterator[None]:
    yield
    while _OPEN:
        await _OPEN.pop().aclose()  # the warm sandbox each one keeps


@pytest.fixture()
def home(tmp_path: Path) -> Path:
    home = tmp_path / "ghost-home"
    home.mkdir()
    # What Ghost keeps beside the sandbox: its database, holding a secret.
    with sqlite3.connect(home / "ghost.db") as db:
        db.execute("CREATE TABLE secrets (value TEXT)")
        db.execute("INSERT INTO secrets VALUES ('db-secret-5a1f')")
    return home


@pytest.fixture()
async def sandbox(home: Path) -> AsyncIterator[Executor]:
    executor = await executor_for(settings_for(home))
    assert isinstance(executor, BwrapExecutor)
    yield executor


async def py(executor: Executor, code: str, stdin: bytes = b""):  # noqa: ANN201
    return await executor.run([executor.python, "-c", code], stdin=stdin)


def processes_with(marker: str) -> list[int]:
    """Host pids whose command line contains `marker` (sandboxed ones included)."""
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


# --- the basics -------------------------------------------------------------------------------

async def test_runs_python_in_the_sandbox_directory(sandbox: Executor, home: Path) -> None:
    (home / "sandbox" / "input.txt").write_text("from the host")
    result = await py(sandbox, "import os; print(os.getcwd()); print(open('input.txt').read());"
                               "open('output.txt', 'w').write('from the sandbox')")
    assert result.exit_code == 0 and result.limit is None, result
    assert result.stdout.splitlines() == ["/sandbox", "from the host"]
    assert (home / "sandbox" / "output.txt").read_text() == "from the sandbox"
    assert sandbox.info()["isolated"] is True and sandbox.info()["backend"] == "bubblewrap"


async def test_bash_exit_code_and_stderr(sandbox: Executor) -> None:
    result = await sandbox.run([sandbox.bash, "-c", "echo out; echo err >&2; exit 7"])
    assert (result.exit_code, result.stdout, result.stderr, result.limit) == (7, "out\n", "err\n", None)


async def test_stdin_reaches_the_command(sandbox: Executor) -> None:
    result = await py(sandbox, "import sys, json; print(json.load(sys.stdin)['n'] * 2)", stdin=b'{"n": 21}')
    assert result.stdout == "42\n"


async def test_runs_at_once_do_not_mix(sandbox: Executor) -> None:
    results = await asyncio.gather(*(py(sandbox, f"import time; time.sleep(0.2); print({i})") for i in range(6)))
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(6)]


# --- isolation --------------------------------------------------------------------------------

async def test_etc_shadow_is_not_readable(sandbox: Executor) -> None:
    result = await py(sandbox, "print(open('/etc/shadow').read())")
    assert result.exit_code != 0
    assert "FileNotFoundError" in result.stderr or "PermissionError" in result.stderr
    assert "root:" not in result.stdout


async def test_ghosts_database_is_not_visible(sandbox: Executor, home: Path) -> None:
    code = f"""
import os
for path in [{str(home / 'ghost.db')!r}, '../ghost.db', '/sandbox/../ghost.db']:
    try:
        print(open(path, 'rb').read())
    except OSError as exc:
        print('refused', type(exc).__name__)
print([os.path.join(d, f) for top in ('/etc', '/tmp', '/sandbox', '/dev')
       for d, _, files in os.walk(top) for f in files if f == 'ghost.db'] + os.listdir('/'))
print(os.path.exists({str(home)!r}))
"""
    result = await py(sandbox, code)
    assert result.exit_code == 0, result
    assert "db-secret-5a1f" not in result.stdout
    assert result.stdout.count("refused FileNotFoundError") == 3
    *_, listing, home_exists = result.stdout.splitlines()
    assert "ghost.db" not in listing and home.name not in listing and home_exists == "False"


async def test_writing_outside_the_sandbox_fails(sandbox: Executor, home: Path, tmp_path: Path) -> None:
    targets = ["/usr/evil", "/etc/evil", "/evil", "/bin/evil", "/dev/evil", "/proc/evil",
               str(home / "evil"), str(tmp_path / "evil"), "../evil"]
    code = f"""
for path in {targets!r}:
    try:
        open(path, 'w').write('x')
        print('WROTE', path)
    except OSError as exc:
        print('refused', path, type(exc).__name__)
"""
    result = await py(sandbox, code)
    assert "WROTE" not in result.stdout, result.stdout
    assert result.stdout.count("refused") == len(targets)
    assert not (home / "evil").exists() and not (tmp_path / "evil").exists() and not Path("/evil").exists()


@pytest.fixture()
def loopback_server() -> Iterator[tuple[int, list[bytes]]]:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    received: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                received.append(conn.recv(100) or b"connected")
                conn.sendall(b"hello from the host\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], received
    stop.set()
    thread.join()
    server.close()


async def test_no_network_not_even_loopback(sandbox: Executor, loopback_server: tuple[int, list[bytes]]) -> None:
    port, received = loopback_server
    code = f"""
import socket
try:
    s = socket.create_connection(('127.0.0.1', {port}), timeout=3)
    s.sendall(b'ping')
    print('CONNECTED', s.recv(100))
except OSError as exc:
    print('refused', type(exc).__name__)
"""
    result = await py(sandbox, code)
    assert result.stdout.startswith("refused"), result
    assert received == []


async def test_network_setting_gives_the_network(home: Path, loopback_server: tuple[int, list[bytes]]) -> None:
    executor = await executor_for(settings_for(home, sandbox_network=True))
    port, received = loopback_server
    result = await py(executor, f"import socket; s = socket.create_connection(('127.0.0.1', {port}), timeout=5);"
                                "s.sendall(b'ping'); print(s.recv(100))")
    assert "hello from the host" in result.stdout, result
    assert received == [b"ping"]


async def test_ghost_key_and_settings_do_not_reach_the_environment(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GHOST_API_KEY", "key-4f9e-secret")
    monkeypatch.setenv("GHOST_UPSTREAM_API_KEY", "upstream-key-secret")
    executor = await executor_for(settings_for(home))
    code = """
import os
print(sorted(os.environ))
print(open('/proc/self/environ', 'rb').read())
print(open('/proc/1/environ', 'rb').read() if os.access('/proc/1/environ', os.R_OK) else b'')
print(open('/proc/1/cmdline', 'rb').read())
"""
    result = await py(executor, code)
    assert result.exit_code == 0, result
    assert "secret" not in result.stdout
    assert "GHOST" not in result.stdout
    assert str(home) not in result.stdout  # no path of Ghost's home in the environment or argv


async def test_other_processes_are_invisible(sandbox: Executor) -> None:
    result = await py(sandbox, "import os; print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))")
    assert result.stdout == "[1, 2]\n"  # bubblewrap's init and the command itself, nothing else


async def test_no_capabilities_and_no_new_user_namespaces(sandbox: Executor) -> None:
    # Every set, not only the effective one: a bounding or ambient set left full lets an exec'd
    # program (a file capability, a setuid binary) get back what the effective set lacks.
    result = await sandbox.run([sandbox.bash, "-c", "grep ^Cap /proc/self/status; "
                                                    "unshare --user true 2>/dev/null && echo UNSHARED || echo refused"])
    *sets, verdict = result.stdout.splitlines()
    capabilities = dict(line.split(":\t") for line in sets)
    assert set(capabilities) == {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}, result
    assert set(capabilities.values()) == {"0000000000000000"}, capabilities
    assert verdict == "refused", result


# Mounts that may be writable: the sandbox directory, the private /tmp, the private /proc (its
# kernel interfaces are covered read-only, see test_sandbox_identity) and bubblewrap's own /dev
# entries (device nodes, /dev/pts, the bounded /dev/shm). Everything else is mounted read-only.
WRITABLE_MOUNTS = ("/sandbox", "/tmp", "/proc")


def mount_options(mountinfo: str) -> dict[str, list[str]]:
    """Mount point -> per-mount options, for every line of /proc/self/mountinfo (see proc(5))."""
    return {fields[4]: fields[5].split(",") for fields in map(str.split, mountinfo.splitlines())}


async def test_everything_but_the_sandbox_and_tmp_is_mounted_read_only(sandbox: Executor) -> None:
    # A mount property, not a file mode: the sandbox user cannot write /usr by its permissions
    # anyway, but a writable mount would be one chmod or one root-owned bug away from it.
    result = await sandbox.run([sandbox.bash, "-c", "cat /proc/self/mountinfo"])
    mounts = mount_options(result.stdout)
    assert {"/", "/usr", "/etc/ld.so.cache", "/dev", "/sandbox", "/tmp"} <= set(mounts), result
    assert "rw" in mounts["/sandbox"] and "rw" in mounts["/tmp"]  # the probe sees writable mounts
    writable = [point for point, options in mounts.items() if "rw" in options
                and point not in WRITABLE_MOUNTS and not point.startswith("/dev/")]
    assert writable == [], mounts


async def test_ghost_home_under_a_mounted_directory_is_masked(tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"  # stands for a system directory mounted read-only, e.g. /usr
    (prefix / "home").mkdir(parents=True)
    (prefix / "home" / "ghost.db").write_text("masked-secret")
    (prefix / "visible.txt").write_text("visible")
    sandbox_root = tmp_path / "sandbox"
    sandbox_root.mkdir()
    layout = Layout(sandbox_root=sandbox_root, hidden=prefix / "home", extra_ro=(prefix,))
    reference = await executor_for(settings_for(tmp_path / "h"))
    executor = BwrapExecutor("/usr/bin/bwrap", layout, reference.python, reference.bash, reference.limits, 1, None)
    result = await py(executor, f"import os; print(open({str(prefix / 'visible.txt')!r}).read());"
                                f"print(os.listdir({str(prefix / 'home')!r}))")
    assert result.stdout == "visible\n[]\n", result


def test_a_mounted_directory_inside_ghosts_home_is_refused(tmp_path: Path) -> None:
    layout = Layout(sandbox_root=tmp_path / "sandbox", hidden=tmp_path, extra_ro=(tmp_path / "python",))
    with pytest.raises(SandboxError, match="inside Ghost's home"):
        layout.args()


# --- limits -----------------------------------------------------------------------------------

async def test_infinite_loop_is_killed_at_the_timeout(home: Path) -> None:
    executor = await executor_for(settings_for(home, sandbox_timeout=1))
    marker = f"loop-{uuid.uuid4().hex}"
    result = await py(executor, f"# {marker}\nwhile True: pass")
    assert result.limit == "timeout" and result.exit_code is None
    assert wait_until_gone(marker) == []


async def test_timeout_kills_children_and_background_processes_too(home: Path) -> None:
    executor = await executor_for(settings_for(home, sandbox_timeout=1))
    marker = f"tree-{uuid.uuid4().hex}"
    result = await executor.run([executor.bash, "-c", f"(sleep 300; echo {marker}) & setsid sleep 301 & "
                                                      f"sleep 302; echo {marker}"])
    assert result.limit == "timeout"
    assert wait_until_gone(marker) == [] and wait_until_gone("sleep 30") == []


async def test_background_processes_die_when_the_command_ends(sandbox: Executor) -> None:
    marker = f"bg-{uuid.uuid4().hex}"
    result = await sandbox.run([sandbox.bash, "-c", f"nohup setsid bash -c 'sleep 300 # {marker}' >/dev/null 2>&1 & "
                                                    "echo started"])
    assert result.exit_code == 0 and result.stdout == "started\n"
    assert wait_until_gone(marker) == []


async def test_fork_bomb_is_contained(home: Path) -> None:
    executor = await executor_for(settings_for(home, sandbox_timeout=2, sandbox_max_processes=32))
    assert executor.info()["process_limit"] != "none"  # never set a bomb off without a limit
    marker = f"bomb-{uuid.uuid4().hex}"
    result = await py(executor, f"# {marker}\nimport os\nwhile True:\n    try:\n        os.fork()\n"
                                "    except OSError:\n        pass")
    assert result.limit == "timeout"
    assert wait_until_gone(marker) == []


async def test_process_limit_holds(home: Path) -> None:
    executor = await executor_for(settings_for(home, sandbox_max_processes=16))
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
for pid in kids:
    os.waitpid(pid, 0)
"""
    result = await py(executor, code)
    forked, refused = map(int, result.stdout.split())
    assert forked < 16 and refused == 60 - forked, result


async def test_memory_hog_gets_memory_error(sandbox: Executor) -> None:
    result = await py(sandbox, "hog = []\nwhile True: hog.append(bytearray(50 * 1024 * 1024))")
    assert result.exit_code == 1 and "MemoryError" in result.stderr


async def test_cpu_limit(home: Path) -> None:
    executor = await executor_for(settings_for(home, sandbox_cpu_seconds=1, sandbox_timeout=20))
    result = await py(executor, "while True: pass")
    assert result.limit == "cpu" and result.signal == 24, result


async def test_file_size_limit(home: Path) -> None:
    executor = await executor_for(settings_for(home, sandbox_file_size_bytes=MB))
    result = await py(executor, "open('big', 'wb').write(b'x' * (2 * 1024 * 1024))")
    assert result.exit_code == 1 and "File too large" in result.stderr
    shell = await executor.run([executor.bash, "-c", "head -c 2000000 /dev/zero > big2"])
    assert shell.limit == "file_size" or shell.exit_code != 0
    assert (home / "sandbox" / "big2").stat().st_size <= MB


async def test_private_tmp_is_bounded(home: Path) -> None:
    executor = await executor_for(settings_for(home, sandbox_tmp_bytes=2 * MB))
    result = await py(executor, "open('/tmp/fill', 'wb').write(b'x' * (3 * 1024 * 1024))")
    assert "No space left" in result.stderr


async def test_100_mb_of_stdout_is_cut_and_the_flood_killed(home: Path) -> None:
    executor = await executor_for(settings_for(home, sandbox_output_bytes=4096, sandbox_output_kill_bytes=4 * MB))
    code = "import sys\nfor _ in range(1600): sys.stdout.write('y' * 65536)\nprint('END')"
    result = await py(executor, code)
    assert result.limit == "output" and result.exit_code is None
    assert len(result.stdout) < 4096 + 200
    assert "output truncated" in result.stdout


async def test_long_output_keeps_head_and_tail(home: Path) -> None:
    executor = await executor_for(settings_for(home, sandbox_output_bytes=2000))
    result = await py(executor, "print('START'); print('m' * 100000); print('END')")
    assert result.exit_code == 0 and result.limit is None
    assert result.stdout.startswith("START\n") and result.stdout.endswith("END\n")
    assert "output truncated: 100,011 bytes in all" in result.stdout


async def test_cancelling_the_caller_kills_the_run(sandbox: Executor, home: Path) -> None:
    marker = f"cancel-{uuid.uuid4().hex}"
    run = asyncio.create_task(py(sandbox, f"# {marker}\nimport subprocess, time\n"
                                          f"subprocess.Popen(['sleep', '300'])\ntime.sleep(300)"))
    deadline = time.monotonic() + 60
    while not processes_with(marker) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert processes_with(marker), "the run never started"
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert wait_until_gone(marker) == []
    deadline = time.monotonic() + 60
    while _run_cgroups() and time.monotonic() < deadline:  # removed in the background
        await asyncio.sleep(0.02)
    assert _run_cgroups() == []


def _run_cgroups() -> list[Path]:
    """This process's cgroups that are not the warm sandbox's (there is at most one of those)."""
    groups = sorted(Path("/sys/fs/cgroup/pids").glob(f"ghost-{os.getpid()}-*"))
    return [g for g in groups if "bash" not in "".join(
        Path(f"/proc/{pid}/comm").read_text() for pid in (g / "cgroup.procs").read_text().split()
        if Path(f"/proc/{pid}/comm").exists())]


async def test_the_event_loop_keeps_running_during_a_run(sandbox: Executor) -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    await py(sandbox, "import time; time.sleep(1)")
    ticker.cancel()
    assert ticks > 10


# --- the sandbox started ahead of time ------------------------------------------------------------

async def test_a_replaced_sandbox_directory_is_never_served_stale(sandbox: Executor, home: Path) -> None:
    await py(sandbox, "print('a warm sandbox is now waiting')")
    root = home / "sandbox"
    root.rename(home / "sandbox-old")
    root.mkdir()
    (root / "fresh.txt").write_text("new directory")
    result = await py(sandbox, "import os; print(sorted(os.listdir('.')))")
    assert result.stdout == "['fresh.txt']\n"


async def test_large_code_and_other_limits_take_a_fresh_sandbox(sandbox: Executor) -> None:
    await py(sandbox, "pass")
    big = "x = 0\n" + "x += 1\n" * 5000 + "print(x)"  # ~35 KB of argv
    assert (await py(sandbox, big)).stdout == "5000\n"
    tight = replace(sandbox.limits, timeout_s=1)
    result = await sandbox.run([sandbox.python, "-c", "while True: pass"], limits=tight)
    assert result.limit == "timeout"


async def test_without_warm_start(home: Path) -> None:
    settings = settings_for(home)
    settings.sandbox_path.mkdir(parents=True, exist_ok=True)
    executor = await make_executor(settings, settings.sandbox_path, warm=False)
    assert executor.info()["warm_start"] is False
    for _ in range(2):
        result = await py(executor, "import os; print(os.getcwd(), sum(p.isdigit() for p in os.listdir('/proc')))")
        assert result.stdout == "/sandbox 2\n"


def test_an_older_bwrap_gets_only_the_options_it_knows(tmp_path: Path) -> None:
    full = Layout(sandbox_root=tmp_path, hidden=tmp_path / "home").args()
    assert "--disable-userns" in full and full.count("--size") == 2
    old = Layout(sandbox_root=tmp_path, hidden=tmp_path / "home", features=frozenset({"--tmpfs"})).args()
    assert "--disable-userns" not in old and "--size" not in old
    assert old.count("--tmpfs") == 2 and "--unshare-all" in old


def _other_tasks() -> list[asyncio.Task[object]]:
    return [task for task in asyncio.all_tasks() if task is not asyncio.current_task() and not task.done()]


async def test_a_sandbox_that_cannot_start_fails_clearly_and_leaves_nothing_running(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The probe sees a task left running.
    planted = asyncio.ensure_future(asyncio.sleep(60))
    assert planted in _other_tasks()
    planted.cancel()
    await asyncio.wait({planted})
    # Options bubblewrap refuses (--hostname without its own UTS namespace): it exits at once.
    refused = Layout.args
    monkeypatch.setattr(Layout, "args", lambda self: [a for a in refused(self) if a != "--unshare-all"])
    with pytest.raises(SandboxError, match="requires --unshare-uts"):
        await asyncio.wait_for(executor_for(settings_for(home)), 120)  # a hang guard only
    assert _other_tasks() == []  # no warm sandbox retried in the background, nothing to hang on
