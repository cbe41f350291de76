"""Who may use the catch-all proxy for what.

The proxy sends the upstream key (`--upstream-api-key`) with every request, so whatever the
upstream keeps under that key (files, batches, stored completions, fine-tunes, model management)
is one account shared by everyone who can reach the proxy. With several users that would let any
user's key read or delete what another stored there. So a non-admin key reaches only the stateless
inference paths of `--proxy-user-paths`; the built-in admin and other admins reach everything.
"""

from __future__ import annotations

from ghost.api.caller import Caller
from ghost.config import Settings
from ghost.errors import Forbidden


def path_allowed(path: str, patterns: list[str]) -> bool:
    """`path` is one of `patterns`, or below a pattern ending in `/*` (one or more segments)."""
    for pattern in patterns:
        if pattern.endswith("/*"):
            prefix = pattern[:-1]  # keeps the slash: '/v1/models/' matches '/v1/models/x', not '/v1/modelsx'
            if path.startswith(prefix) and len(path) > len(prefix):
                return True
        elif path == pattern:
            return True
    return False


def check_proxy_access(caller: Caller, path: str, settings: Settings) -> None:
    """403 unless the key's holder is an admin or `path` is one a user may reach."""
    if caller.key_user.role == "admin" or path_allowed(path, settings.proxy_user_path_list()):
        return
    raise Forbidden(f"only an admin's key may use the upstream through Ghost's proxy on {path[:200]!r}: the "
                    "upstream account is shared by every user (--proxy-user-paths lists the paths any key may use)")
