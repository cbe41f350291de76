"""Which database `--database-url` names: SQLite (the default, a file in Ghost's home) or PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from ghost.store.db import Database, SqliteDatabase

SQLITE_PREFIX = "sqlite://"
POSTGRES_PREFIXES = ("postgresql://", "postgres://")


def check_url(url: str) -> str:
    """`url` if Ghost can open it, else ValueError saying what is accepted."""
    if url == "" or url.startswith(POSTGRES_PREFIXES):
        return url
    if url.startswith(SQLITE_PREFIX) and url[len(SQLITE_PREFIX):].startswith("/") and len(url) > len(SQLITE_PREFIX) + 1:
        return url
    raise ValueError("database URL: empty (SQLite in Ghost's home), sqlite:///absolute/path/ghost.db, "
                     "or postgresql://user@host:port/dbname")


def database_for(url: str, default_path: Path, *, pool_size: int = 8) -> Database:
    """The (unopened) database `url` names; an empty URL is SQLite at `default_path`."""
    url = check_url(url)
    if url.startswith(POSTGRES_PREFIXES):
        from ghost.store.postgres import PostgresDatabase  # psycopg is loaded only when it is used

        return PostgresDatabase(url, pool_size=pool_size)
    return SqliteDatabase(Path(url[len(SQLITE_PREFIX):]) if url else default_path)
