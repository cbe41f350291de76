"""The client subcommands of `ghost`: chat, workspace save|load, upload, download, mcp list, users.

Each handler gets a connection and two consoles (stdout for results, stderr for progress and
notes) and may raise ClientError; `run` turns that into `ghost: <message>` and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError
from rich.console import Console

from ghost.client import transfer
from ghost.client.mcp import print_mcp_servers
from ghost.client.chat import ChatSession, repl
from ghost.client.connection import ClientError, GhostConnection
from ghost.client.settings import ClientSettings
from ghost.client.terminal import SafeConsole, neutralise
from ghost.client.users import users_add, users_list, users_remove, users_rotate

Handler = Callable[[argparse.Namespace, GhostConnection, Console, Console], int]
_SETTING_FLAGS = ("url", "api_key", "session", "home")


def consoles() -> tuple[Console, Console]:
    # Piped output gets no colour or dim at all, on either stream.
    plain = not sys.stdout.isatty()
    # Model text is shown as written: no markup, emoji codes or highlighting, no hard wrapping;
    # and never its terminal control sequences (SafeConsole), piped or not.
    style = {"color_system": None if plain else "auto", "markup": False, "emoji": False,
             "highlight": False, "soft_wrap": True}
    out = SafeConsole(**style)
    err = SafeConsole(stderr=True, **style)
    return out, err


def run(handler: Handler, args: argparse.Namespace) -> int:
    given = {name: getattr(args, name) for name in _SETTING_FLAGS if getattr(args, name, None) is not None}
    try:
        settings = ClientSettings(**given)
    except ValidationError as exc:
        print(f"ghost: invalid setting: {neutralise(str(exc.errors()[0]['msg']))}", file=sys.stderr)
        return 2
    out, err = consoles()
    try:
        with GhostConnection(settings) as conn:
            return handler(args, conn, out, err)
    except ClientError as exc:
        print(f"ghost: {neutralise(str(exc))}", file=sys.stderr)  # may quote the server's words
        return 1
    except KeyboardInterrupt:
        print("ghost: interrupted", file=sys.stderr)
        return 130


# --- handlers ------------------------------------------------------------------------------------

def chat(args: argparse.Namespace, conn: GhostConnection, out: Console, err: Console) -> int:
    session = ChatSession(conn, out, err, model=args.model)
    question = " ".join(args.question).strip()
    if not question and not sys.stdin.isatty():
        question = sys.stdin.read().strip()  # `echo question | ghost chat`
    if question:
        session.ask(question)
    else:
        repl(session)
    return 0


def workspace_save(args: argparse.Namespace, conn: GhostConnection, out: Console, err: Console) -> int:
    saved = transfer.save_workspace(conn, _destination(args.file), err)
    err.print(f"saved the workspace to {saved}")
    return 0


def workspace_load(args: argparse.Namespace, conn: GhostConnection, out: Console, err: Console) -> int:
    result = transfer.load_workspace(conn, Path(args.file), err)
    history = result.get("chat_history") or []
    err.print(f"loaded {args.file}: {result.get('files', 0)} files, {len(history)} messages")
    return 0


def upload(args: argparse.Namespace, conn: GhostConnection, out: Console, err: Console) -> int:
    result = transfer.upload(conn, Path(args.file), args.path, err)
    err.print(f"uploaded {result.get('filename')} ({result.get('size')} bytes)")
    return 0


def download(args: argparse.Namespace, conn: GhostConnection, out: Console, err: Console) -> int:
    saved = transfer.download(conn, args.path, _destination(args.file) if args.file else None, err)
    if saved != transfer.STDOUT:
        err.print(f"saved {saved}")
    return 0


def mcp_list(args: argparse.Namespace, conn: GhostConnection, out: Console, err: Console) -> int:
    health = conn.request("GET", "/api/health")
    return print_mcp_servers(health.get("mcp"), out, err)


def _destination(name: str) -> Path | str:
    return name if name == transfer.STDOUT else Path(name)


# --- the parsers -----------------------------------------------------------------------------------

def _connection_flags() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="Ghost's address [env GHOST_URL; default: http://127.0.0.1:11435]")
    common.add_argument("--api-key", dest="api_key",
                        help="Ghost's API key [env GHOST_API_KEY; default: the generated one in --home]")
    common.add_argument("--home", help="Ghost's home, where its generated key is kept "
                        "[env GHOST_HOME; default: ~/.ghost]")
    common.add_argument("--session", help="session id for history and workspace [env GHOST_SESSION; default: default]")
    return common


def _add(commands: argparse._SubParsersAction, name: str, handler: Handler, help_text: str,
         common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
    parser.set_defaults(handler=lambda args: run(handler, args))
    return parser


def add_client_commands(commands: argparse._SubParsersAction) -> None:
    common = _connection_flags()
    chat_parser = _add(commands, "chat", chat, "Talk to a running Ghost (interactive without a question).", common)
    chat_parser.add_argument("question", nargs="*", help="ask this once, print the answer, exit")
    chat_parser.add_argument("--model", default="", help="model to ask for (default: Ghost's)")

    workspace = commands.add_parser("workspace", help="Save or load the whole workspace as a zip.")
    actions = workspace.add_subparsers(dest="workspace_command", required=True)
    _add(actions, "save", workspace_save, "Save the workspace to FILE (a zip; '-' for stdout).",
         common).add_argument("file")
    _add(actions, "load", workspace_load, "Replace the workspace with the zip FILE.", common).add_argument("file")

    up = _add(commands, "upload", upload, "Upload FILE into the sandbox (into folder PATH).", common)
    up.add_argument("file")
    up.add_argument("path", nargs="?", help="sandbox folder to put it in (default: the top)")
    down = _add(commands, "download", download, "Download PATH from the sandbox to FILE.", common)
    down.add_argument("path", help="file path inside the sandbox")
    down.add_argument("file", nargs="?", help="where to write it (default: its name, here; '-': stdout)")

    mcp = commands.add_parser("mcp", help="The MCP servers a running Ghost uses.")
    mcp_actions = mcp.add_subparsers(dest="mcp_command", required=True)
    _add(mcp_actions, "list", mcp_list, "List the MCP servers, their state and their tools.", common)

    users = commands.add_parser("users", help="Manage users and their keys (admin's key; docs/users.md).")
    user_actions = users.add_subparsers(dest="users_command", required=True)
    add = _add(user_actions, "add", users_add, "Create user NAME and print its key.", common)
    add.add_argument("name")
    add.add_argument("--role", choices=["user", "frontend", "admin"], default="user",
                     help="user (its own workspace), frontend (acts for its end users) or admin")
    _add(user_actions, "list", users_list, "List users, their keys and usage.", common)
    remove = _add(user_actions, "remove", users_remove, "Delete user NAME (its keys stop working at once).", common)
    remove.add_argument("name")
    remove.add_argument("--purge", action="store_true", help="also delete its workspace")
    _add(user_actions, "rotate", users_rotate, "Give user NAME a new key and delete its old ones.",
         common).add_argument("name")
