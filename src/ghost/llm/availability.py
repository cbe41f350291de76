"""Is the model Ghost would call there at all? One check before every upstream call.

A bundled model server that kept crashing is given up on (`ghost.llm.embedded`); from then on a
request that needs it gets 503 with the reason, not a 502 from a connection that was refused.
"""

from __future__ import annotations

from typing import Any

from ghost.errors import ModelUnavailable


def check_model_available(status: dict[str, Any]) -> None:
    """Raise ModelUnavailable if the bundled model server with this live status was given up on."""
    if status.get("state") == "failed":
        retry = status.get("failed_retry_s") or 0
        when = f"is tried again {retry:.0f}s after it was given up" if retry > 0 else "is not restarted"
        raise ModelUnavailable(f"the bundled model is unavailable: it failed {status.get('failures_in_a_row')} "
                               f"times in a row and {when}; last: {status.get('error')}. "
                               f"Its log: {status.get('log')}. See /api/health; restart Ghost once fixed.")
