"""Whether the store `--database-url` names can be reached, said in one line for `ghost serve`.

Checked before the server starts, so that an unreachable PostgreSQL stops Ghost with one clear line
and a non-zero status rather than the traceback of a failed start. Like the store's own start-up,
it waits a while for a database that is still starting or not yet reachable; a refusal by the
server (a wrong password, no such database) is reported at once. The database is named without
its password, and the password is cut out of whatever the driver says.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

from ghost.store.engine import POSTGRES_PREFIXES

CONNECT_WAIT_S = 10.0  # as long as PostgresDatabase's pool waits for its first connection
RETRY_PAUSE_S = 0.5
STARTING_UP = "57P03"  # cannot_connect_now: the server is starting, stopping or in recovery


def unreachable_reason(url: str, wait_s: float = CONNECT_WAIT_S) -> str | None:
    """Why the store at `url` cannot be used now, in one line; None if it can (or is SQLite, a
    file Ghost opens itself). Blocking: for the command line, before the server runs."""
    if not url.startswith(POSTGRES_PREFIXES):
        return None
    import psycopg  # loaded only when PostgreSQL is used
    from psycopg.conninfo import conninfo_to_dict

    secrets = _passwords(url)
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error as exc:
        return f"the database URL cannot be read: {_one_line(exc, secrets)}"
    if params.get("password"):
        secrets.append(str(params["password"]))
    deadline = time.monotonic() + wait_s
    while True:
        left = deadline - time.monotonic()
        try:
            psycopg.connect(url, connect_timeout=max(1, int(left)), autocommit=True).close()
            return None
        except psycopg.Error as exc:
            # No SQLSTATE: the server never answered (refused, unreachable, timed out).
            waitable = getattr(exc, "sqlstate", None) in (None, STARTING_UP)
            if not waitable or time.monotonic() + RETRY_PAUSE_S >= deadline:
                return f"cannot connect to the database {_shown(params)}: {_one_line(exc, secrets)}"
        time.sleep(RETRY_PAUSE_S)


def _shown(params: dict[str, Any]) -> str:
    """The database as a URL a reader recognises, without its password."""
    user = f"{params['user']}@" if params.get("user") else ""
    port = f":{params['port']}" if params.get("port") else ""
    return f"postgresql://{user}{params.get('host') or 'localhost'}{port}/{params.get('dbname') or ''}"


def _passwords(url: str) -> list[str]:
    try:
        password = urlsplit(url).password
    except ValueError:  # a port that is not a number: the password is still the part before '@'
        password = None
    return [password] if password else []


def _one_line(exc: BaseException, secrets: list[str]) -> str:
    text = " ".join(str(exc).split())
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
