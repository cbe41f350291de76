"""A real uvicorn on loopback serving an app built in the test's own process, in a thread: for
tests that build the app with `create_app` themselves (as a program embedding Ghost would)."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

START_TIMEOUT_S = 120.0  # a hang guard only: the services' start on a loaded machine


class InProcessServer:
    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "InProcessServer":
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the in-process server stopped during its start")
            if time.monotonic() > deadline:
                raise TimeoutError("the in-process server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()
