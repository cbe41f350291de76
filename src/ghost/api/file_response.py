"""A download served from a file Ghost already opened (by fd), never re-opened by name."""

from __future__ import annotations

import mimetypes
import os
from typing import Any

from fastapi.responses import FileResponse


class OpenFileResponse(FileResponse):
    """Starlette's FileResponse (streams in a worker thread, answers range requests) reading the
    open file as /proc/self/fd/N — the very file Ghost opened, whatever the sandbox renames
    meanwhile — and closing it afterwards."""

    def __init__(self, fd: int, info: os.stat_result, filename: str) -> None:
        super().__init__(f"/proc/self/fd/{fd}", stat_result=info, filename=filename,
                         media_type=mimetypes.guess_type(filename)[0] or "application/octet-stream")
        self.fd = fd

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            os.close(self.fd)
