"""Stream an uploaded file from the request body to a temp file, with a cap, never whole in memory.

Two body shapes: `multipart/form-data` (the file in one named field, small text fields beside it)
parsed incrementally with python-multipart's streaming parser, or a raw body. Bytes are counted
as they arrive and the upload stops at the first byte past the cap (`LimitExceeded`, 413). Disk
writes are batched and done in a worker thread. On any failure the temp file is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from ghost.errors import BadRequest, LimitExceeded
from ghost.workspace.layout import IO_BLOCK, disk_space
from ghost.workspace.tasks import to_completion

MAX_FIELDS = 16
MAX_FIELD_BYTES = 64 * 1024


@dataclass
class Received:
    path: Path  # the temp file; the caller moves or removes it
    size: int
    filename: str | None = None
    fields: dict[str, str] = field(default_factory=dict)


def _new_temp(tmp_dir: Path, prefix: str) -> tuple[BinaryIO, Path]:
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".part", dir=tmp_dir)
    return os.fdopen(fd, "wb"), Path(name)


class _Spool:
    """A temp file fed from the event loop.

    Writes happen in a worker thread a block at a time, and overlap with receiving: one block is
    written while the next one fills, so at most two blocks are held in memory.
    """

    def __init__(self, tmp_dir: Path, prefix: str, cap: int) -> None:
        self.file, self.path = _new_temp(tmp_dir, prefix)
        self.cap = cap
        self.size = 0
        self._pending = bytearray()
        self._writing: asyncio.Future[int] | None = None

    def add(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        if self.size > self.cap:
            raise LimitExceeded(f"upload larger than the {self.cap}-byte limit")
        self._pending += data

    async def flush(self, force: bool = False) -> None:
        if not self._pending or (len(self._pending) < IO_BLOCK and not force):
            return
        await self._wait_for_write()
        block, self._pending = self._pending, bytearray()
        self._writing = asyncio.ensure_future(asyncio.to_thread(self._write, block))

    def _write(self, block: bytearray) -> int:
        with disk_space("upload"):
            return self.file.write(block)

    async def _wait_for_write(self) -> None:
        if self._writing is not None:
            await self._writing
            self._writing = None

    async def finish(self) -> None:
        await self.flush(force=True)
        await self._wait_for_write()
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        with disk_space("upload"):
            self.file.close()

    async def discard(self) -> None:
        """Remove the temp file after a failure (which is already on its way up)."""
        if self._writing is not None:
            # A block may still be on its way to disk: let it land before closing the file.
            with contextlib.suppress(Exception):
                await to_completion(self._writing)
        with contextlib.suppress(OSError):  # a full disk can fail the close's flush too
            self.file.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def content_type(request: Request) -> tuple[str, dict[bytes, bytes]]:
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    return kind.decode("latin-1"), options


async def receive_raw(request: Request, tmp_dir: Path, cap: int, prefix: str) -> Received:
    """The whole body, as a file."""
    spool = _Spool(tmp_dir, prefix, cap)
    try:
        async for chunk in _body(request):
            spool.add(chunk)
            await spool.flush()
        await spool.finish()
    except BaseException:
        await spool.discard()
        raise
    return Received(path=spool.path, size=spool.size)


async def receive_multipart(request: Request, tmp_dir: Path, cap: int, prefix: str,
                            file_field: str = "file") -> Received:
    """The file in `file_field` as a file, plus the small text fields."""
    _, options = content_type(request)
    boundary = options.get(b"boundary")
    if not boundary:
        raise BadRequest("multipart body without a boundary")
    form = _FormSink(_Spool(tmp_dir, prefix, cap), file_field)
    try:
        parser = MultipartParser(boundary, form.callbacks())  # type: ignore[arg-type]
        async for chunk in _body(request):
            _feed(parser, chunk)
            await form.spool.flush()
        form.check_complete()
        await form.spool.finish()
    except BaseException:
        await form.spool.discard()
        raise
    return Received(path=form.spool.path, size=form.spool.size, filename=form.filename, fields=form.fields)


def _feed(parser: MultipartParser, chunk: bytes) -> None:
    try:
        parser.write(chunk)
    except MultipartParseError as exc:
        raise BadRequest(f"malformed multipart body: {exc}") from exc


async def _body(request: Request) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.stream():
            if chunk:
                yield chunk
    except ClientDisconnect as exc:
        raise BadRequest("client disconnected during the upload") from exc


class _FormSink:
    """Callbacks for the streaming parser: the file part goes to the spool, text fields to memory."""

    def __init__(self, spool: _Spool, file_field: str) -> None:
        self.spool = spool
        self.file_field = file_field
        self.filename: str | None = None
        self.fields: dict[str, str] = {}
        self._seen_file = False
        self._ended = False
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._target: str | None = None  # "file", a text field's name, or None (ignored part)
        self._text = bytearray()

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._header_name.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._header_value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._headers = {}
        self._target = None
        self._text = bytearray()

    def _header_end(self) -> None:
        self._headers[bytes(self._header_name).lower()] = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name == self.file_field:
            if self._seen_file:
                raise BadRequest(f"more than one '{self.file_field}' part in the upload")
            self._seen_file = True
            self._target = "file"
            filename = options.get(b"filename")
            self.filename = filename.decode("utf-8", "replace") if filename is not None else None
        elif name and len(self.fields) < MAX_FIELDS:
            self._target = name
        else:
            raise BadRequest(f"unexpected or too many form parts (at most {MAX_FIELDS})")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._target == "file":
            self.spool.add(memoryview(data)[start:end])
        elif self._target is not None:
            self._text += data[start:end]
            if len(self._text) > MAX_FIELD_BYTES:
                raise BadRequest(f"form field '{self._target}' longer than {MAX_FIELD_BYTES} bytes")

    def _part_end(self) -> None:
        if self._target not in (None, "file"):
            self.fields[self._target] = self._text.decode("utf-8", "replace")

    def _end(self) -> None:
        self._ended = True

    def check_complete(self) -> None:
        if not self._ended:
            raise BadRequest("multipart body ended early (no closing boundary)")
        if not self._seen_file:
            raise BadRequest(f"no '{self.file_field}' part in the multipart body")
