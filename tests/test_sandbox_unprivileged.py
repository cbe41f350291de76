"""The process limit when Ghost is not root: RLIMIT_NPROC, set inside the run's own user namespace.

The other tests run as whoever runs pytest; on a root machine they use the cgroup. This one drops
to `nobody` so that the RLIMIT_NPROC path is exercised too.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

NOBODY = 65534
SCRIPT = """
import asyncio, sys
from pathlib import Path
from ghost.config import Settings
from ghost.sandbox.factory import make_executor

async def main():
    settings = Settings(home=Path(sys.argv[1]), sandbox_backend=sys.argv[2], sandbox_max_processes=16,
                        sandbox_timeout=20)
    settings.sandbox_path.mkdir(parents=True, exist_ok=True)
    executor = await make_executor(settings, settings.sandbox_path)
    code = ("import os, time\\nkids = 0\\nfor _ in range(60):\\n    try:\\n        pid = os.fork()\\n"
            "    except OSError:\\n        continue\\n    if pid == 0:\\n        time.sleep(1)\\n"
            "        os._exit(0)\\n    kids += 1\\nprint(kids)")
    result = await executor.run([executor.python, "-c", code])
    print(executor.info()["process_limit"], result.stdout.strip())

asyncio.run(main())
"""


# What the script imports, copied where `nobody` can read it: the checkout and the virtualenv may
# sit in a folder only root may enter (a CI clone in a private temp folder does).
NEEDED = ["ghost", "pydantic", "pydantic_core", "pydantic_settings", "typing_extensions",
          "annotated_types", "typing_inspection", "dotenv"]


def copy_importable(target: Path) -> Path:
    target.mkdir()
    for name in NEEDED:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue  # optional for this version of pydantic
        origin = Path(spec.origin)
        if origin.name == "__init__.py":
            shutil.copytree(origin.parent, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(origin, target / origin.name)
    for path in [target, *target.rglob("*")]:
        os.chown(path, NOBODY, NOBODY)
    return target


@pytest.fixture()
def nobody_dir() -> Iterator[Path]:
    if os.getuid() != 0:
        pytest.skip("already unprivileged: every other sandbox test exercises this path")
    path = Path(tempfile.mkdtemp(prefix="ghost-nobody-"))
    os.chown(path, NOBODY, NOBODY)
    (path / "run.py").write_text(SCRIPT)
    yield path
    shutil.rmtree(path)


@pytest.mark.parametrize("backend", ["bwrap", "process"])
def test_process_limit_holds_for_an_unprivileged_ghost(nobody_dir: Path, backend: str) -> None:
    python = "/usr/bin/python3"  # Ghost's own interpreter may live where nobody cannot reach it
    version = subprocess.run([python, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                             text=True).stdout.strip()
    if version != str(sys.version_info[:2]):
        pytest.skip(f"{python} is Python {version}; Ghost's compiled dependencies need {sys.version_info[:2]}")
    pythonpath = str(copy_importable(nobody_dir / "lib"))
    done = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", python,
         str(nobody_dir / "run.py"), str(nobody_dir / "home"), backend],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": pythonpath}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    mode, forked = done.stdout.split()
    assert mode == "rlimit"
    # bwrap: exact, the namespace holds only this run. process: the user's task count is taken
    # just before the start, so tasks of that user ending meanwhile leave a little more room.
    assert int(forked) < (16 if backend == "bwrap" else 24), done.stdout


# The sandbox's identity with Ghost as an ordinary user (issue 21): sandboxes run as that user, and
# the kernel interfaces, the root's mode and the no-fallback rule hold as they do for root.
IDENTITY_SCRIPT = """
import asyncio, errno, json, os, stat, sys
from pathlib import Path
from ghost.config import Settings
from ghost.sandbox.factory import make_executor

async def main():
    settings = Settings(home=Path(sys.argv[1]), sandbox_timeout=20)
    executor = await make_executor(settings, settings.sandbox_path)
    info = executor.info()
    code = '''
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
print("IDS", os.getuid(), os.getgid())
try:
    value = open("/proc/sys/vm/swappiness").read()
    open("/proc/sys/vm/swappiness", "w").write(value)
    print("SYSCTL wrote")
except OSError as exc:
    print("SYSCTL", exc.errno)
print("KEYCTL", libc.syscall(%d, 0, 0, 0, 0, 0), ctypes.get_errno())
os.chmod("/sandbox", 0)
''' % KEYCTL_NR
    first = await executor.run([executor.python, "-c", code])
    second = await executor.run([executor.python, "-c", "import os; print('NEXT', sorted(os.listdir('.')))"])
    root_mode = stat.S_IMODE(os.stat(settings.sandbox_path).st_mode)
    print(json.dumps({"backend": info["backend"], "user": info.get("user"), "first": first.stdout + first.stderr,
                      "second": second.stdout + second.stderr, "root_mode": root_mode}))
    await executor.aclose()

asyncio.run(main())
"""


def test_an_unprivileged_ghost_keeps_its_uid_and_the_kernel_interfaces_closed(nobody_dir: Path) -> None:
    import json
    import platform

    from ghost.sandbox.seccomp import DENIED

    python = "/usr/bin/python3"
    version = subprocess.run([python, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                             text=True).stdout.strip()
    if version != str(sys.version_info[:2]):
        pytest.skip(f"{python} is Python {version}; Ghost's compiled dependencies need {sys.version_info[:2]}")
    keyctl = DENIED["keyctl"][{"x86_64": 0, "aarch64": 1}[platform.machine()]]
    (nobody_dir / "identity.py").write_text(IDENTITY_SCRIPT.replace("KEYCTL_NR", str(keyctl)))
    pythonpath = str(copy_importable(nobody_dir / "lib"))
    done = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", python,
         str(nobody_dir / "identity.py"), str(nobody_dir / "home")],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": pythonpath}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["backend"] == "bubblewrap", report
    assert report["user"] == f"Ghost's own (uid {NOBODY})", report  # nothing changes for an ordinary user
    assert f"IDS {NOBODY} {NOBODY}" in report["first"], report
    assert "SYSCTL 30" in report["first"], report  # EROFS: the read-only mount, not only the uid check
    assert "KEYCTL -1 1" in report["first"], report
    assert "NEXT" in report["second"], report  # the chmod of the root did not break the next run
    assert report["root_mode"] == 0o700, report
