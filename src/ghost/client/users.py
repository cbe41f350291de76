"""`ghost users add|list|remove|rotate`: user management over HTTP, with the admin's key.

Against the running server, like the other client commands: the server checks keys in its
database on every request, so what these commands change holds from the next request on.
A new key is printed alone on stdout (for a script to capture); notes go to stderr.
"""

from __future__ import annotations

import argparse
from urllib.parse import quote

from rich.console import Console

from ghost.client.connection import GhostConnection


def _path(name: str) -> str:
    return "/api/users/" + quote(name, safe="")


def _no_content(conn: GhostConnection, method: str, path: str) -> None:
    with conn.stream(method, path) as response:
        response.read()


def users_add(args: argparse.Namespace, conn: GhostConnection, out: Console, err: Console) -> int:
    made = conn.request("POST", "/api/users", json={"name": args.name, "role": args.role})
    out.print(made["key"])
    err.print(f"created {args.role} '{made['name']}' (key id {made.get('key_id')}); the key is shown only now")
    return 0


def users_list(args: argparse.Namespace, conn: GhostConnection, out: Console, err: Console) -> int:
    users = conn.request("GET", "/api/users")["users"]
    out.print(f"{'NAME':24} {'ROLE':9} {'KEYS':>4} {'TURNS':>7} {'SANDBOX BYTES':>14}")
    for user in users:
        usage = user.get("usage") or {}
        size = usage.get("sandbox_bytes")
        out.print(f"{user['name']:24} {user['role']:9} {user['keys']:>4} {usage.get('turns', 0):>7} "
                  f"{'-' if size is None else size:>14}")
    return 0


def users_remove(args: argparse.Namespace, conn: GhostConnection, out: Console, err: Console) -> int:
    _no_content(conn, "DELETE", _path(args.name) + ("?purge=true" if args.purge else ""))
    err.print(f"removed '{args.name}'" + (" and its workspace" if args.purge else "; its workspace is kept"))
    return 0


def users_rotate(args: argparse.Namespace, conn: GhostConnection, out: Console, err: Console) -> int:
    """A new key, then every older key of the user deleted."""
    listed = {u["name"]: u for u in conn.request("GET", "/api/users")["users"]}
    old = listed.get(args.name, {}).get("key_ids", [])
    made = conn.request("POST", _path(args.name) + "/keys")
    for key_id in old:
        _no_content(conn, "DELETE", f"{_path(args.name)}/keys/{quote(key_id, safe='')}")
    out.print(made["key"])
    err.print(f"new key for '{args.name}' (key id {made.get('key_id')}); {len(old)} old key(s) deleted")
    return 0
