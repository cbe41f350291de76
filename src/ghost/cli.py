"""The `ghost` command. `ghost serve` flags are generated from `ghost.config.Settings`."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import sys
from collections.abc import Callable
from typing import Any, Literal, get_args, get_origin

from pydantic import ValidationError

from ghost.client.commands import add_client_commands
from ghost.config import ConfigFileError, Settings, TraceSettings
from ghost.keyfile import KeyFileError, StartRefused, read_key


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
            choices = get_args(field.annotation) if get_origin(field.annotation) is Literal else None
            parser.add_argument(_flag(name), dest=name, default=None, metavar=name.upper(),
                                choices=choices, help=help_text)


def settings_from_args(args: argparse.Namespace) -> Settings:
    given: dict[str, Any] = {k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None}
    return Settings(**given)


def invalid_settings(exc: ValidationError) -> str:
    """One line per wrong value, naming the setting, whichever source (flag, variable, file) gave it."""
    return "\n".join(f"ghost: invalid setting {'.'.join(map(str, error['loc'])) or '?'}: {error['msg']} "
                     f"(given: {error['input']!r})" for error in exc.errors())


def configure_logging(level: str, log_format: str = "text") -> None:
    from ghost.observe.logs import log_handler

    logging.basicConfig(level=level.upper(), handlers=[log_handler(log_format)])
    # httpx logs every upstream request at INFO; Ghost's access log already covers them.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def cmd_serve(args: argparse.Namespace) -> int:
    from ghost.store.reachable import unreachable_reason

    try:
        settings = settings_from_args(args)
        TraceSettings()  # the tracing variables checked here too: a bad one is this message, not a traceback
    except ValidationError as exc:
        print(invalid_settings(exc), file=sys.stderr)
        return 2
    except ConfigFileError as exc:
        print(f"ghost: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    if reason := settings.refuse_reason():  # create_app refuses it too; here before seconds of imports
        print(f"ghost: {reason}", file=sys.stderr)
        return 2
    import uvicorn

    from ghost.api.slowclients import server_limits
    from ghost.app import create_app

    try:
        app = create_app(settings)  # refuses a weak key on a public bind; resolves the key
    except StartRefused as exc:
        print(f"ghost: {exc}", file=sys.stderr)
        return 2
    settings = app.state.settings  # the settings in force
    if reason := unreachable_reason(settings.database_url):  # one line, not the start-up's traceback
        print(f"ghost: {reason}", file=sys.stderr)
        return 1
    # JSON logs: uvicorn's own loggers go through Ghost's handler rather than its text config.
    log_config: dict[str, Any] = {} if settings.log_format == "text" else {"log_config": None}
    app.state.freeze_heap = True  # this process serves this one app: its start-up heap is for life
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                            access_log=False, **log_config, timeout_graceful_shutdown=settings.shutdown_grace_seconds,
                            **server_limits(settings))
    draining_server(uvicorn.Server, config, settings.drain_seconds, app.state.readiness.drain).run()
    return 0


def draining_server(base: Any, config: Any, drain_s: float, on_drain: Callable[[], None]) -> Any:
    """uvicorn's server, with SIGTERM's stop put off by `drain_s` seconds after `on_drain()`.

    Readiness turns false at once while requests are still served; only then does uvicorn close the
    listener and give running requests the grace period. A second signal stops at once, and the
    exit status still says SIGTERM (uvicorn re-raises the captured signal).
    """

    class DrainingServer(base):  # type: ignore[misc,valid-type]
        _drain_timer: threading.Timer | None = None

        def handle_exit(self, sig: int, frame: Any) -> None:
            if sig != signal.SIGTERM or drain_s <= 0 or self._drain_timer is not None or self.should_exit:
                return super().handle_exit(sig, frame)
            self._captured_signals.append(sig)
            on_drain()
            logging.getLogger("ghost").info("SIGTERM: draining for %gs (ready answers 503), then stopping",
                                            drain_s)
            # uvicorn's main loop polls should_exit; a timer thread setting it is all it takes.
            self._drain_timer = threading.Timer(drain_s, self._stop_after_drain)
            self._drain_timer.daemon = True
            self._drain_timer.start()

        def _stop_after_drain(self) -> None:
            self.should_exit = True

    return DrainingServer(config)


def cmd_key(args: argparse.Namespace) -> int:
    """`ghost key`: print the generated key kept in GHOST_HOME (for a client on this machine)."""
    try:
        settings = Settings(**({"home": args.home} if args.home else {}))
        key = read_key(settings.key_path)
    except (ValidationError, ConfigFileError, KeyFileError) as exc:
        print(f"ghost: {exc}", file=sys.stderr)
        return 1
    if key is None:
        print(f"ghost: no generated key in {settings.home} yet: start `ghost serve` once", file=sys.stderr)
        return 1
    print(key)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ghost", description="Ghost, a self-hosted AI agent server.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="Run the Ghost server.")
    add_settings_flags(serve)
    serve.set_defaults(handler=cmd_serve)
    key = commands.add_parser("key", help="Print the API key Ghost generated (kept in GHOST_HOME).")
    key.add_argument("--home", help="Ghost's home directory [env GHOST_HOME; default: ~/.ghost]")
    key.set_defaults(handler=cmd_key)
    add_client_commands(commands)  # chat, workspace, upload, download: ghost.client
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)
