"""The `ghost` command. `ghost serve` flags are generated from `ghost.config.Settings`."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, get_args

from pydantic import ValidationError

from ghost.config import Settings


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    for name, field in Settings.model_fields.items():
        env = f"GHOST_{name.upper()}"
        default = field.default if isinstance(field.default, (int, float)) else f"'{field.default}'"
        default = "unset" if field.default is None else default
        help_text = f"{field.description} [env {env}; default: {default}]"
        if field.annotation is bool:
            parser.add_argument(_flag(name), action="store_true", default=None, help=help_text)
        else:
            choices = get_args(field.annotation) or None
            parser.add_argument(_flag(name), dest=name, default=None, metavar=name.upper(),
                                choices=choices, help=help_text)


def settings_from_args(args: argparse.Namespace) -> Settings:
    given: dict[str, Any] = {k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None}
    return Settings(**given)


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    # httpx logs every upstream request at INFO; Ghost's access log already covers them.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from ghost.app import create_app

    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        print(f"ghost: invalid setting: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    if reason := settings.refuse_reason():
        print(f"ghost: {reason}", file=sys.stderr)
        return 2
    if settings.insecure and settings.api_key in ("", "ghost-secret-123"):
        logging.getLogger("ghost").warning(
            "!!! INSECURE: serving %s with a public or empty API key; anyone who can reach it can "
            "run code in the sandbox !!!", settings.host)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level,
                access_log=False,
                timeout_graceful_shutdown=settings.shutdown_grace_seconds)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ghost", description="Ghost, a self-hosted AI agent server.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="Run the Ghost server.")
    add_settings_flags(serve)
    serve.set_defaults(handler=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)
