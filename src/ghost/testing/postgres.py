"""A real PostgreSQL server for tests: Debian's binaries, a temp folder, its own port, a non-root user.

PostgreSQL refuses to run as root, so when the tests run as root the server runs as the `postgres`
user Debian's package creates (through `runuser`), in a folder owned by it. The socket directory is
inside the temp folder, so nothing is written to /var/run and several servers can run at once.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

SUPERUSER = "ghost"
START_TIMEOUT_S = 60.0


def postgres_bin() -> Path:
    """The folder of Debian's PostgreSQL binaries (15 preferred), or RuntimeError naming the package."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: (not p.startswith("/usr/lib/postgresql/15/"), p))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: `apt-get install postgresql` (make system-deps)")
    return Path(found[0]).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """`start()`, `url(dbname)`, `create_database(name)`, `stop()`, `restart()`."""

    def __init__(self, *, max_connections: int = 200) -> None:
        self.bin = postgres_bin()
        self.max_connections = max_connections
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="ghost-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "run"
        self.process: subprocess.Popen[bytes] | None = None
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self._run([str(self.bin / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
                   "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
        self._run(["mkdir", "-p", str(self.socket_dir)])

    def _run(self, argv: list[str]) -> None:
        subprocess.run([*self._as_user, *argv], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> "PostgresServer":
        log = open(self.root / "server.log", "ab")
        self.process = subprocess.Popen(
            [*self._as_user, str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
             "-k", str(self.socket_dir), "-c", "listen_addresses=127.0.0.1",
             "-c", f"max_connections={self.max_connections}",
             # A test server: durability is not what is tested, speed on a shared machine matters.
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
            stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return self
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("PostgreSQL did not start:\n" + self.log_tail()) from None
                time.sleep(0.1)

    def log_tail(self) -> str:
        try:
            return (self.root / "server.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def create_database(self, name: str) -> str:
        """A fresh, empty database; its URL."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Fast shutdown: open sessions are ended, the data stays."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
