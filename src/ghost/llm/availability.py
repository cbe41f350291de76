"""Is the model Ghost would call there at all? One check before every upstream call.

A bundled model server that kept crashing is given up on (`ghost.llm.embedded`); from then on a
request that needs it gets 503 with the reason, not a 502 from a connection that was refused.
"""

from __future__ import annotations

from ghost.errors import ModelUnavailable
from ghost.runtime import Runtime

EMBEDDED_INFO = "embedded_info"  # Runtime.extras key: the bundled model server's live status


def check_model_available(runtime: Runtime) -> None:
    info = runtime.extras.get(EMBEDDED_INFO)
    if info is not None and info.get("state") == "failed":
        raise ModelUnavailable(f"the bundled model is unavailable: it failed {info.get('failures_in_a_row')} "
                               f"times in a row and is not restarted; last: {info.get('error')}. "
                               f"Its log: {info.get('log')}. See /api/health; restart Ghost once fixed.")
