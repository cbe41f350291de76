"""HAProxy in front of Ghost replicas, for tests and the benchmark: Debian's haproxy, its own port.

`config()` is the configuration docs/scaling.md shows (a test checks the doc carries it): round
robin, no stickiness, readiness checks on /api/health/ready, and a failed connection retried on
another replica (`option redispatch`) — a request that reached a replica which then died is not.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from ghost.testing.server import free_port

START_TIMEOUT_S = 30.0


def config(port: int, replicas: list[tuple[str, int]], *, bind: str = "127.0.0.1") -> str:
    servers = "\n".join(f"    server {name} 127.0.0.1:{p} check inter 500ms fall 2 rise 1" for name, p in replicas)
    return f"""global
    maxconn 4096

defaults
    mode http
    timeout connect 5s
    timeout client  600s
    timeout server  600s
    timeout http-request 30s
    retries 2
    option redispatch
    option http-server-close

frontend ghost
    bind {bind}:{port}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET /api/health/ready
    http-check expect status 200
    http-response set-header X-Served-By %[srv_name]
{servers}
"""


class HAProxy:
    def __init__(self, replicas: list[tuple[str, int]]) -> None:
        self.binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="ghost-haproxy-"))
        self.config_path = self.folder / "haproxy.cfg"
        self.config_path.write_text(config(self.port, replicas))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_servers: int) -> "HAProxy":
        log = open(self.folder / "haproxy.log", "ab")
        self.process = subprocess.Popen([self.binary, "-db", "-f", str(self.config_path)],
                                        stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:  # up once it answers through `ready_servers` distinct replicas' checks
            if self.process.poll() is not None:
                raise RuntimeError("haproxy exited:\n" + self.log())
            try:
                if httpx.get(self.url + "/api/health/ready", timeout=2).status_code == 200 and \
                        self.up_count() >= ready_servers:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("haproxy did not come up:\n" + self.log())
            time.sleep(0.2)

    def up_count(self) -> int:
        """How many replicas' readiness checks have passed, by asking each through the balancer's
        round robin: enough distinct answers (bounded)."""
        seen = set()
        for _ in range(12):
            answer = httpx.get(self.url + "/api/health/live", timeout=2)
            seen.add(answer.headers.get("x-served-by", ""))
        return len(seen)

    def log(self) -> str:
        try:
            return (self.folder / "haproxy.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)
