"""Log lines as JSON (`--log-format json`): one object per line, for log shippers.

Every record gets `time`, `level`, `logger` and `message` (and `request_id` when logged while a
request is served); the fields a record carries in its
`fields` extra (the access log's request id, trace id, user, route, status, duration) are merged
in at the top level, so each request's line reads without parsing its message.
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import datetime, timezone

FIELDS = "fields"  # the `extra` key structured records carry their fields under
# The request being served (set by the request-id middleware): every JSON line logged while it is
# served names it, the warnings of the auth check, a tool or the upstream included.
REQUEST_ID: ContextVar[str] = ContextVar("ghost_request_id", default="")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            line["message"] = "request"
            line.update(fields)
        else:
            line["message"] = record.getMessage()
            if request_id := REQUEST_ID.get():
                line["request_id"] = request_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def log_handler(log_format: str) -> logging.Handler:
    """A handler for stderr in `log_format` ("text" or "json")."""
    import sys

    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return handler
