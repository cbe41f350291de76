"""The environment sandboxed commands get: built from nothing, never copied from Ghost's own.

Ghost's environment may hold its API key, the upstream's key and GHOST_* settings; none of it
is passed on. Only these fixed, harmless values are.
"""

from __future__ import annotations


def sandbox_env(home: str, tmp: str) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": tmp,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "USER": "sandbox",
        "LOGNAME": "sandbox",
        "TERM": "dumb",
        "PYTHONUNBUFFERED": "1",  # output written before a timeout kill is not lost in a buffer
        "PYTHONDONTWRITEBYTECODE": "1",  # no __pycache__ litter in the user's files
        "PYTHONIOENCODING": "utf-8",
    }
