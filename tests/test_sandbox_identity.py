"""The sandbox's identity, attacked over HTTP on a real Ghost with real bubblewrap.

Run as root (as CI does): sandboxed code must not be root on the host, must not reach kernel
settings, must not switch isolation off, and Ghost's state must stay private. Each attack is one
an `execute` call (text the model wrote) could make; the expected outcome is what the host sees.
The same checks with Ghost as an ordinary user are in test_sandbox_unprivileged.py.
"""

from __future__ import annotations

import errno
import os
import platform
import pwd
import stat
import shutil
import subprocess
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ghost.sandbox.identity import DEFAULT_USER
from ghost.sandbox.seccomp import DENIED
from ghost.testing.fake_upstream import FakeUpstream, Reply
from ghost.testing.server import GhostServer

TIMEOUT = 120  # a hang guard only
CORE_PATTERN = Path("/proc/sys/kernel/core_pattern")
# /proc/sys files a sandbox must not change (each written back with the value already there).
SYSCTLS = ["kernel/core_pattern", "vm/swappiness", "kernel/printk", "kernel/modprobe", "fs/file-max",
           "kernel/randomize_va_space"]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="these attacks are on Ghost running as root (CI runs as root)")


@pytest.fixture(scope="module")
def server(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhostServer]:
    with GhostServer("--upstream-url", upstream.url, "--sandbox-timeout", "20",
                     home=tmp_path_factory.mktemp("identity-home")) as ghost:
        yield ghost


def run_tools(server: GhostServer, upstream: FakeUpstream, calls: list[tuple[str, dict[str, Any]]],
              headers: dict[str, str] | None = None) -> list[str]:
    """Have the (fake) model call `calls` in one round (as the admin, or with `headers`); the tool
    results, in order."""
    upstream.script(Reply(content="", tool_calls=[{"name": n, "arguments": a} for n, a in calls]),
                    Reply(content="done"))
    reply = httpx.post(server.url + "/v1/chat/completions", headers=headers or server.headers, timeout=TIMEOUT,
                       json={"model": "fake-model", "messages": [{"role": "user", "content": "go"}]})
    assert reply.status_code == 200, reply.text
    messages = upstream.chat_requests()[-1]["body"]["messages"]
    return [m["content"] for m in messages if m.get("role") == "tool"]


def execute(server: GhostServer, upstream: FakeUpstream, code: str, language: str = "python") -> str:
    return run_tools(server, upstream, [("execute", {"code": textwrap.dedent(code), "language": language})])[0]


def health(server: GhostServer) -> dict[str, Any]:
    return httpx.get(server.url + "/api/health", headers=server.headers, timeout=30).json()


def sandbox_user() -> pwd.struct_passwd:
    return pwd.getpwnam(DEFAULT_USER)


# --- who the sandbox is ---------------------------------------------------------------------------
def test_the_sandbox_runs_as_the_unprivileged_sandbox_user(server: GhostServer, upstream: FakeUpstream) -> None:
    out = execute(server, upstream, """
        import os
        print("IDS", os.getuid(), os.geteuid(), os.getgid(), os.getgroups())
        print("MAP", open("/proc/self/uid_map").read().split())
        open("made-inside.txt", "w").write("x")
    """)
    user = sandbox_user()
    assert user.pw_uid != 0 and user.pw_gid != 0
    ids = next(line for line in out.splitlines() if line.startswith("IDS")).split(" ", 1)[1]
    assert ids == f"{user.pw_uid} {user.pw_uid} {user.pw_gid} []", out  # no supplementary groups
    assert "MAP ['0', '0', '1']" not in out, out
    # What the host sees: the file sandboxed code made belongs to the sandbox user, not to root.
    info = os.lstat(server.home / "sandbox" / "made-inside.txt")
    assert (info.st_uid, info.st_gid) == (user.pw_uid, user.pw_gid)
    assert health(server)["sandbox"]["user"].startswith(f"{DEFAULT_USER} (uid {user.pw_uid}")


class GroupedGhost(GhostServer):
    """Ghost (root) started with supplementary groups, as a service account often has (disk, adm)."""

    def command(self) -> list[str]:
        return ["setpriv", "--groups=6,4", "--", *super().command()]


def test_supplementary_groups_are_dropped(upstream: FakeUpstream, tmp_path: Path) -> None:
    with GroupedGhost("--upstream-url", upstream.url, home=tmp_path / "home") as ghost:
        ghost_groups = Path(f"/proc/{ghost.process.pid}/status").read_text()
        assert "Groups:\t4 6" in ghost_groups  # the probe: Ghost itself has them
        out = execute(ghost, upstream, "import os; print('GROUPS', os.getgroups())")
    assert "GROUPS []" in out, out


def test_files_ghost_creates_are_usable_by_sandboxed_code(server: GhostServer, upstream: FakeUpstream) -> None:
    results = run_tools(server, upstream, [("write_file", {"path": "made/by/ghost.txt", "content": "one"})])
    assert "wrote" in results[0], results
    upload = httpx.post(server.url + "/api/upload", headers=server.headers, timeout=TIMEOUT,
                        files={"file": ("u.txt", b"up")}, data={"path": "uploaded"})
    assert upload.status_code in (200, 201), upload.text
    out = execute(server, upstream, """
        import os
        open("made/by/ghost.txt", "a").write("+two")
        open("made/by/new.txt", "w").write("new")
        open("uploaded/u.txt", "a").write("+ok")
        os.rename("made/by/ghost.txt", "made/moved.txt")
        print("OK", open("made/moved.txt").read(), open("uploaded/u.txt").read())
    """)
    assert "OK one+two up+ok" in out, out


# --- kernel settings --------------------------------------------------------------------------------
def test_proc_sys_is_read_only(server: GhostServer, upstream: FakeUpstream) -> None:
    out = execute(server, upstream, f"""
        for name in {SYSCTLS!r}:
            path = "/proc/sys/" + name
            try:
                value = open(path).read()
            except OSError as exc:
                print("UNREADABLE", name, exc.errno)
                continue
            try:
                with open(path, "w") as handle:  # the value already there: a failure changes nothing
                    handle.write(value)
                print("WROTE", name)
            except OSError as exc:
                print("REFUSED", name, exc.errno)
    """)
    refused = {line.split()[1]: int(line.split()[2]) for line in out.splitlines() if line.startswith("REFUSED")}
    assert "WROTE" not in out, out
    assert set(refused) >= {"kernel/core_pattern", "vm/swappiness"}, out
    # Refused by the read-only mount itself (EROFS), not only by the uid check behind it (EACCES).
    assert set(refused.values()) == {errno.EROFS}, out


def test_the_core_pattern_hook_never_runs_on_the_host(server: GhostServer, upstream: FakeUpstream,
                                                      tmp_path: Path) -> None:
    """The attack end to end: a hook script in the sandbox, `|hook` in core_pattern, a crash."""
    marker = Path("/tmp") / f"ghost-core-hook-{uuid.uuid4().hex}"
    hook = server.home / "sandbox" / "hook.sh"
    original = CORE_PATTERN.read_text()
    try:
        # The probe works: the hook, run as root on the host, leaves the marker.
        hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
        hook.chmod(0o755)
        subprocess.run([str(hook)], check=True)
        assert marker.exists()
        marker.unlink()
        hook.unlink()
        out = execute(server, upstream, f"""
            import os, subprocess
            host = next(line.split()[3] for line in open("/proc/self/mountinfo") if line.split()[4] == "/sandbox")
            with open("hook.sh", "w") as handle:
                handle.write("#!/bin/sh\\ntouch {marker}\\n")
            os.chmod("hook.sh", 0o755)
            try:
                with open("/proc/sys/kernel/core_pattern", "w") as handle:
                    handle.write("|" + host + "/hook.sh")
                print("PATTERN SET")
            except OSError as exc:
                print("PATTERN REFUSED", exc.errno)
            subprocess.run(["python3", "-c", "import os; os.abort()"])
        """)
        assert not marker.exists(), out  # the crash did not run the hook as root on the host
        assert "PATTERN REFUSED" in out, out
        assert CORE_PATTERN.read_text() == original
    finally:
        if CORE_PATTERN.read_text() != original:
            CORE_PATTERN.write_text(original)
        marker.unlink(missing_ok=True)


# --- seccomp ----------------------------------------------------------------------------------------
def test_denied_system_calls_fail_and_ordinary_programs_work(server: GhostServer, upstream: FakeUpstream) -> None:
    column = {"x86_64": 0, "aarch64": 1}[platform.machine()]
    numbers = {name: nums[column] for name, nums in DENIED.items() if nums[column] is not None}
    out = execute(server, upstream, f"""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        for name, number in sorted({numbers!r}.items()):
            ctypes.set_errno(0)
            result = libc.syscall(number, 0, 0, 0, 0, 0, 0)
            print(name, result, ctypes.get_errno())
    """)
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.split() and line.split()[0] in numbers}
    assert set(rows) == set(numbers), out
    assert all(row == ["-1", "1"] for row in rows.values()), {n: r for n, r in rows.items() if r != ["-1", "1"]}
    ordinary = execute(server, upstream, """
        import json, subprocess, threading, tempfile, os
        results = []
        thread = threading.Thread(target=lambda: results.append(sum(range(10))))
        thread.start(); thread.join()
        piped = subprocess.run("echo hi | tr a-z A-Z", shell=True, capture_output=True, text=True).stdout.strip()
        with tempfile.NamedTemporaryFile("w", dir="/tmp") as handle:
            handle.write("t"); handle.flush()
            size = os.path.getsize(handle.name)
        print("ORDINARY", results[0], piped, size, json.dumps({"a": 1}))
    """)
    assert 'ORDINARY 45 HI 1 {"a": 1}' in ordinary, ordinary


# --- setuid -----------------------------------------------------------------------------------------
def test_a_planted_setuid_file_is_never_roots(server: GhostServer, upstream: FakeUpstream) -> None:
    out = execute(server, upstream, """
        import os, shutil, stat
        shutil.copy("/usr/bin/id", "suid-id")
        os.chmod("suid-id", 0o6755)
        print("MODE", oct(stat.S_IMODE(os.stat("suid-id").st_mode)))
        print("RUN", os.popen("./suid-id -u").read().strip())
    """)
    user = sandbox_user()
    assert f"RUN {user.pw_uid}" in out, out  # the bit gains nothing inside
    info = os.lstat(server.home / "sandbox" / "suid-id")
    assert info.st_uid == user.pw_uid and info.st_gid == user.pw_gid, info
    # A setuid bit on the host is the sandbox user's at most, and no one else can reach the file.
    assert info.st_uid != 0 and info.st_gid != 0
    assert stat.S_IMODE(os.stat(server.home / "sandbox").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(server.home).st_mode) == 0o700


# --- the sandbox root's owner and mode ----------------------------------------------------------------
def test_chmod_of_the_sandbox_root_does_not_break_the_next_run(server: GhostServer, upstream: FakeUpstream) -> None:
    out = execute(server, upstream, "import os; open('keep.txt', 'w').write('kept'); os.chmod('/sandbox', 0); print('CHMODDED')")
    assert "CHMODDED" in out, out
    out = execute(server, upstream, "print('NEXT', open('keep.txt').read())")
    assert "NEXT kept" in out, out
    info = os.stat(server.home / "sandbox")
    assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == sandbox_user().pw_uid


def test_a_load_never_takes_the_live_roots_mode(server: GhostServer, upstream: FakeUpstream) -> None:
    saved = httpx.post(server.url + "/api/workspace/save", headers=server.headers, timeout=TIMEOUT)
    assert saved.status_code == 200, saved.text
    # What sandboxed code can do to its root (`os.chmod('/sandbox', 0o777)`), done from the host so
    # that no sandbox start (the warm one follows every run) resets it before the load.
    os.chmod(server.home / "sandbox", 0o777)
    loaded = httpx.post(server.url + "/api/workspace/load", headers={**server.headers, "content-type": "application/zip"},
                        content=saved.content, timeout=TIMEOUT)
    assert loaded.status_code == 200, loaded.text
    info = os.stat(server.home / "sandbox")  # no run since: what the load itself left
    assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == sandbox_user().pw_uid


def test_a_broken_sandbox_root_is_repaired_by_a_restart(upstream: FakeUpstream, tmp_path: Path) -> None:
    home = tmp_path / "home"
    with GhostServer("--upstream-url", upstream.url, home=home) as ghost:
        assert "first" in execute(ghost, upstream, "print('first')")
    sandbox = home / "sandbox"
    os.chown(sandbox, 54321, 54321)  # what a careless restore, or sandboxed code as root, could leave
    os.chmod(sandbox, 0)
    with GhostServer("--upstream-url", upstream.url, home=home) as ghost:
        sandbox_info = health(ghost)["sandbox"]
        assert sandbox_info["backend"] == "bubblewrap" and sandbox_info["available"] is True, sandbox_info
        assert "second" in execute(ghost, upstream, "print('second')")
    info = os.stat(sandbox)
    assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == sandbox_user().pw_uid


# --- isolation never lost silently ---------------------------------------------------------------------
def test_auto_with_broken_bubblewrap_refuses_code_and_says_why(upstream: FakeUpstream, tmp_path: Path) -> None:
    fake = Path(tempfile.mkdtemp(prefix="ghost-fake-bwrap-"))  # one the sandbox user may enter
    fake.chmod(0o755)
    (fake / "bwrap").write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied (fake)' >&2\nexit 1\n")
    (fake / "bwrap").chmod(0o755)
    env = {"PATH": f"{fake}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    with GhostServer("--upstream-url", upstream.url, env=env, home=tmp_path / "home") as ghost:
        report = health(ghost)
        sandbox_info = report["sandbox"]
        assert report["status"] == "degraded", report
        assert sandbox_info["available"] is False and sandbox_info["backend"] == "none", sandbox_info
        assert "uid map: Permission denied (fake)" in sandbox_info["reason"], sandbox_info
        results = run_tools(ghost, upstream, [
            ("execute", {"code": "import os; print('RAN', os.getuid())"}),
            ("write_file", {"path": "still.txt", "content": "works"}),
        ])
        assert "RAN" not in results[0] and "unavailable" in results[0], results
        assert "uid map: Permission denied (fake)" in results[0], results
        assert "wrote" in results[1], results
        # Another user's workspace (its own executor) is refused for the same reason, not broken.
        made = httpx.post(ghost.url + "/api/users", headers=ghost.headers, json={"name": "eve"}, timeout=TIMEOUT)
        assert made.status_code == 201, made.text
        eve = {"Authorization": f"Bearer {made.json()['key']}"}
        results = run_tools(ghost, upstream, [("execute", {"code": "print('RAN')"})], headers=eve)
        assert "RAN" not in results[0] and "uid map: Permission denied (fake)" in results[0], results
    assert "REFUSED" in ghost.log() and "uid map: Permission denied (fake)" in ghost.log()
    shutil.rmtree(fake)


# --- private state -------------------------------------------------------------------------------------
class UmaskGhost(GhostServer):
    """Ghost started under `umask 000`: its files' modes must not depend on the umask."""

    def command(self) -> list[str]:
        return ["/bin/sh", "-c", 'umask 000; exec "$@"', "ghost", *super().command()]


def test_private_modes_under_umask_000(upstream: FakeUpstream, tmp_path: Path) -> None:
    home = tmp_path / "home"
    with UmaskGhost("--upstream-url", upstream.url, api_key=None, home=home) as ghost:
        execute(ghost, upstream, "print(1)")  # a turn: history in the database (and its -wal file)
        upload = httpx.post(ghost.url + "/api/upload", headers=ghost.headers, timeout=TIMEOUT,
                            files={"file": ("u.txt", b"u")})
        assert upload.status_code in (200, 201), upload.text
        modes = {path.name: stat.S_IMODE(os.lstat(path).st_mode) for path in home.iterdir()}
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
    assert modes["sandbox"] == 0o700 and modes[".sandbox.ghost-tmp"] == 0o700, modes
    for name in ("ghost.db", "ghost.db-wal", "ghost.db-shm", "api_key"):
        assert modes.get(name) == 0o600, (name, modes)


def test_sandbox_user_setting_refuses_root(upstream: FakeUpstream, tmp_path: Path) -> None:
    with GhostServer("--upstream-url", upstream.url, "--sandbox-user", "0", home=tmp_path / "home") as ghost:
        sandbox_info = health(ghost)["sandbox"]
        assert sandbox_info["available"] is False and "never run as root" in sandbox_info["reason"], sandbox_info
        assert "unavailable" in execute(ghost, upstream, "print(1)")
