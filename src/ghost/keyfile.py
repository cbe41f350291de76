"""The API key in force: made at Ghost's first start and kept in GHOST_HOME (read by the client),
and the check every start makes of it (`settings_in_force`: a weak key on a public bind is refused).

The file is created with O_EXCL and mode 0600 in one step, so there is no moment at which another
local user could read it, and two Ghosts starting at once on one home agree on one key.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

from ghost.config import Settings
from ghost.private import private_dir

KEY_BYTES = 32  # 256 bits, as url-safe base64: 43 characters


class KeyFileError(Exception):
    """The key file exists but cannot be trusted or read."""


class StartRefused(Exception):
    """This configuration must not serve: the message says why and what to change."""


def read_key(path: Path) -> str | None:
    """The key stored at `path`, or None if there is none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise KeyFileError(f"cannot read the API key file {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # checked on the fd: fdopen refuses a folder itself
        os.close(fd)
        raise KeyFileError(f"the API key file {path} is not a regular file")
    with os.fdopen(fd, "rb") as handle:
        key = handle.read(4096).decode("utf-8", "replace").strip()
    if not key:
        raise KeyFileError(f"the API key file {path} is empty; delete it to generate a new key")
    return key


def tighten_mode(path: Path) -> None:
    """A key file others can read is made private (an older copy, a careless restore)."""
    info = path.stat()
    if info.st_mode & 0o077:
        path.chmod(0o600)


def load_or_create_key(path: Path) -> tuple[str, bool]:
    """The stored key, or a new one written to `path` (mode 0600). Returns (key, created)."""
    existing = read_key(path)
    if existing is not None:
        tighten_mode(path)
        return existing, False
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(KEY_BYTES)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:  # another Ghost on this home was quicker: use its key
        return read_key(path) or key, False
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(key + "\n")
    except OSError:  # a full disk: leave no half-written key behind to be trusted next time
        path.unlink(missing_ok=True)
        raise
    return key, True


def with_resolved_key(settings: Settings) -> Settings:
    """Settings whose api_key is the one in force: configured, or the generated one from home."""
    if settings.no_auth or settings.api_key is not None:
        return settings
    key, created = load_or_create_key(settings.key_path)
    log = logging.getLogger("ghost")
    if created:
        log.warning("generated a new API key, kept in %s (mode 0600). Clients send it as "
                    "X-Ghost-Key or Authorization: Bearer:\n\n    %s\n", settings.key_path, key)
    else:
        log.info("API key: the generated one in %s (`ghost key` prints it)", settings.key_path)
    return settings.model_copy(update={"api_key": key})


def warn_about_weak_auth(settings: Settings) -> None:
    """Log, loudly, what a weak key or --no-auth lets others do (the start was allowed: loopback
    or --insecure)."""
    weak = settings.weak_key()
    if weak is None:
        return
    log = logging.getLogger("ghost")
    if settings.no_auth:
        log.warning("!!! NO AUTH: --no-auth is set: any program on this machine%s can run code in "
                    "the sandbox; only the Host and CORS checks stand in the way !!!",
                    "" if settings.bind_is_loopback() else " and anyone who can reach " + settings.host)
    if not settings.bind_is_loopback():
        log.warning("!!! INSECURE: serving %s with %s; anyone who can reach it can run code in the "
                    "sandbox !!!", settings.host, weak)
    elif not settings.no_auth:
        log.warning("the API key is weak (%s): any local program can guess it", weak)


def settings_in_force(settings: Settings) -> Settings:
    """The settings a Ghost serves with, made once per app (`ghost.app.create_app` calls this, so
    `ghost serve` and a program embedding the app get the same rule): a configuration that must
    not serve is refused (StartRefused), the home is made private, the key is the configured or the
    generated one, and a weak key is warned about."""
    if reason := settings.refuse_reason():
        raise StartRefused(reason)
    try:
        private_dir(settings.home)  # before the key file is made in it
        resolved = with_resolved_key(settings)
    except (KeyFileError, OSError) as exc:
        raise StartRefused(str(exc)) from exc
    warn_about_weak_auth(resolved)
    return resolved
