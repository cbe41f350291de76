"""The session-id rule: which strings may name a stored conversation, in one place.

Chat bodies and headers, the session routes and the workspace routes all check ids here; the
request models and the OpenAPI document use the same pattern.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field

from ghost.errors import Unprocessable

SESSION_HEADER = "X-Ghost-Session"  # asks for a session (requests), names the one used (chat replies)
SESSION_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
SESSION_ID_RULE = "1-128 characters of letters, digits and . _ : -"
SessionId = Annotated[str, Field(pattern=SESSION_ID_PATTERN, description=f"Conversation id: {SESSION_ID_RULE}.")]
_VALID = re.compile(SESSION_ID_PATTERN)


def optional_session_id(value: Any) -> str | None:
    """A valid session id, or None when none is given; 422 for anything else."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _VALID.fullmatch(value):
        raise Unprocessable(f"session_id: {SESSION_ID_RULE}")
    return value


def session_id(value: Any) -> str:
    """A valid session id; "default" when none is given (an archive saved or loaded without one)."""
    return optional_session_id(value) or "default"
