"""Watch one running process: feed stdin, read output as it comes, enforce time and output limits.

Both backends start their process with the write ends of an `OutputPipes` as stdout and stderr,
then hand it to `supervise` with a `kill` function that ends the whole process tree. Whatever
happens — normal exit, timeout, output flood, or the awaiting task being cancelled because the
client went away — the tree is killed before `supervise` returns or raises.

The output pipes are Ghost's own, not asyncio's subprocess pipes: data is consumed the moment it
arrives (the part past the limit is counted and dropped, never buffered), and Ghost can stop
reading a pipe that a process which escaped the kill still holds open. (With asyncio's pipes,
`wait()` does not return until every pipe is closed.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ghost.sandbox.base import ExecResult, LimitName, Limits
from ghost.sandbox.output import CappedBuffer

# After the command ends, how long its output pipes may stay open (held by a process that
# escaped the kill) before Ghost stops reading them.
DRAIN_GRACE_S = 2.0


@dataclass
class _Output:
    limits: Limits
    stdout: CappedBuffer = field(init=False)
    stderr: CappedBuffer = field(init=False)
    flooded: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.stdout = CappedBuffer(self.limits.output_bytes)
        self.stderr = CappedBuffer(self.limits.output_bytes)

    def feed(self, buffer: CappedBuffer, chunk: bytes) -> None:
        buffer.feed(chunk)
        if self.stdout.total + self.stderr.total >= self.limits.output_kill_bytes:
            self.flooded.set()


class _Reader(asyncio.Protocol):
    """Feeds one pipe into its buffer; `closed` resolves at end of file."""

    def __init__(self, output: _Output, buffer: CappedBuffer) -> None:
        self.output = output
        self.buffer = buffer
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.output.feed(self.buffer, data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class OutputPipes:
    """stdout and stderr pipes: the write ends go to the child, Ghost reads the others."""

    def __init__(self) -> None:
        self.out_r, self.out_w = os.pipe()
        self.err_r, self.err_w = os.pipe()
        self._open = {self.out_r, self.out_w, self.err_r, self.err_w}
        self._transports: list[asyncio.BaseTransport] = []

    def close_child_ends(self) -> None:
        self._close(self.out_w, self.err_w)

    async def read_into(self, output: _Output) -> list[asyncio.Future[None]]:
        loop = asyncio.get_running_loop()
        done = []
        for fd, buffer in ((self.out_r, output.stdout), (self.err_r, output.stderr)):
            reader = _Reader(output, buffer)
            self._open.discard(fd)  # the transport owns it now
            transport, _ = await loop.connect_read_pipe(lambda r=reader: r, os.fdopen(fd, "rb", 0))
            self._transports.append(transport)
            done.append(reader.closed)
        return done

    def close(self) -> None:
        for transport in self._transports:
            transport.close()
        self._close(*list(self._open))

    def _close(self, *fds: int) -> None:
        for fd in fds:
            if fd in self._open:
                self._open.discard(fd)
                os.close(fd)

    def __enter__(self) -> "OutputPipes":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def spawn(*argv: str, **kwargs: object) -> asyncio.subprocess.Process:
    """asyncio.create_subprocess_exec that a cancellation cannot interrupt half-way.

    Cancelled while the transport is being set up, asyncio (3.11) kills the child and then waits
    for pipes it never connected, forever. So the start runs shielded; if the caller is cancelled
    meanwhile, the started process group is killed and reaped here, then the cancellation goes on.
    Requires start_new_session=True (the group id is the pid).
    """
    starting = asyncio.ensure_future(asyncio.create_subprocess_exec(*argv, **kwargs))  # type: ignore[arg-type]
    try:
        return await asyncio.shield(starting)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            process = await starting
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            _close_stdin(process.stdin)
            await process.wait()
        raise


async def _feed(stream: asyncio.StreamWriter | None, data: bytes) -> None:
    if stream is None:
        return
    # The command may exit without reading its input; that is its business, not an error.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        if data:
            stream.write(data)
            await stream.drain()
    _close_stdin(stream)


def _close_stdin(stream: asyncio.StreamWriter | None) -> None:
    if stream is not None:
        with contextlib.suppress(OSError, RuntimeError):
            stream.close()


async def supervise(
    process: asyncio.subprocess.Process, pipes: OutputPipes, stdin: bytes, limits: Limits,
    kill: Callable[[], None], decode_exit: Callable[[int], tuple[int | None, int | None]],
) -> ExecResult:
    """Wait for `process` within `limits`; `decode_exit(returncode)` gives (exit code, signal)."""
    started = time.perf_counter()
    output = _Output(limits)
    feeding = asyncio.create_task(_feed(process.stdin, stdin))
    exited = asyncio.create_task(process.wait())
    flooded = asyncio.create_task(output.flooded.wait())
    try:
        eof = await pipes.read_into(output)
        limit = await _wait_for_end(exited, flooded, limits.timeout_s)
        if limit is not None:
            kill()
            _close_stdin(process.stdin)  # asyncio's wait() also waits for the stdin pipe to close
            await exited
        await _drain(eof, kill)
    finally:
        if process.returncode is None:
            kill()  # cancelled, or a bug above: the tree never outlives the call
        _close_stdin(process.stdin)
        for task in (feeding, exited, flooded):
            task.cancel()
        pipes.close()
    code, sig = decode_exit(process.returncode)
    return ExecResult(
        exit_code=None if limit else code, stdout=output.stdout.text(), stderr=output.stderr.text(),
        duration_s=round(time.perf_counter() - started, 4), limit=limit or _kernel_limit(sig), signal=sig,
    )


async def _wait_for_end(exited: asyncio.Task, flooded: asyncio.Task, timeout_s: float) -> LimitName | None:
    done, _ = await asyncio.wait({exited, flooded}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    if exited in done:
        return None
    return "output" if flooded in done else "timeout"


async def _drain(eof: list[asyncio.Future[None]], kill: Callable[[], None]) -> None:
    """Read what is left; kill stragglers that keep the pipes open, then stop reading."""
    _, pending = await asyncio.wait(eof, timeout=0.05)
    if pending:
        kill()
        await asyncio.wait(pending, timeout=DRAIN_GRACE_S)


def _kernel_limit(sig: int | None) -> LimitName | None:
    if sig == signal.SIGXCPU:
        return "cpu"
    if sig == signal.SIGXFSZ:
        return "file_size"
    return None
