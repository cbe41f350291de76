"""The MCP server list: the `{"mcpServers": {...}}` JSON file desktop clients use, read and checked.

Each entry is checked on its own: a bad one is skipped with a reason (logged, and shown in
/api/health) while the others still start. A file that cannot be read or is not JSON gives no
servers and one reason for the whole file.

    {"mcpServers": {
        "time": {"command": "mcp-server-time", "args": ["--local-timezone", "UTC"]},
        "git":  {"command": "mcp-server-git", "args": ["--repository", "/sandbox/repo"],
                 "workdir": "sandbox"},
        "web":  {"url": "https://mcp.example.com/mcp", "headers": {"Authorization": "Bearer ..."}}
    }}
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# A server's name becomes the prefix of its tools' names and the name of its own directory.
SERVER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,23}$")
MAX_CONFIG_BYTES = 1024 * 1024
MAX_SERVERS = 64


class StdioServer(BaseModel):
    """A server Ghost starts as a child process and talks to over its stdin/stdout."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = ""
    command: str = Field(min_length=1, max_length=4096)
    args: tuple[str, ...] = Field(default=(), max_length=256)
    env: dict[str, str] = Field(default_factory=dict, max_length=128)
    sandbox: bool = True  # False: runs on the host with Ghost's user's rights (warned at start)
    network: bool = False  # inside the sandbox: network access
    workdir: Literal["own", "sandbox"] = "own"  # /sandbox is its own directory, or the agent's

    @field_validator("command", "args", "env")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        texts = [value] if isinstance(value, str) else list(value) if isinstance(value, tuple) else \
            [*value.keys(), *value.values()]
        if any("\0" in text for text in texts):
            raise ValueError("must not contain NUL characters")
        return value

    @model_validator(mode="after")
    def _host_servers_keep_out_of_the_sandbox(self) -> "StdioServer":
        # Code the model runs writes the agent's sandbox folder (a .gitconfig, a .npmrc, a config
        # file the server reads from its working directory or home): a server on the host working
        # there would act on it with Ghost's rights — root, when Ghost is root.
        if not self.sandbox and self.workdir == "sandbox":
            raise ValueError("an unsandboxed server (\"sandbox\": false) cannot work in the agent's sandbox "
                             "folder (\"workdir\": \"sandbox\"): the model's code writes that folder and the "
                             "server would act on it with Ghost's rights; sandbox the server instead")
        return self

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [name for name in value if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", name)]
        if bad:
            raise ValueError(f"invalid environment variable name {bad[0]!r}")
        return value


class HttpServer(BaseModel):
    """A server already running somewhere, reached over Streamable HTTP at exactly `url`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = ""
    url: str = Field(min_length=1, max_length=4096)
    headers: dict[str, str] = Field(default_factory=dict, max_length=64)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^\s/?#]+[^\s]*", value):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("headers")
    @classmethod
    def _header_values(cls, value: dict[str, str]) -> dict[str, str]:
        if any(re.search(r"[\r\n\0]", text) for text in [*value.keys(), *value.values()]):
            raise ValueError("header names and values must be single lines")
        return value


ServerConfig = StdioServer | HttpServer


@dataclass(frozen=True)
class McpConfig:
    servers: dict[str, ServerConfig] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # entry name -> why it was not used
    error: str = ""  # why the whole file was not used ("" when it was, or is absent)


def load_config(path: Path) -> McpConfig:
    """Read and check the file; a missing file is an empty configuration, not an error."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        return McpConfig()
    except OSError as exc:
        return McpConfig(error=f"cannot read {path.name}: {exc.strerror or exc}")
    if len(data) > MAX_CONFIG_BYTES:
        return McpConfig(error=f"{path.name} is larger than {MAX_CONFIG_BYTES} bytes")
    return parse_config(data, path.name)


def parse_config(data: bytes, where: str = "mcp.json") -> McpConfig:
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        return McpConfig(error=f"{where} is not valid JSON: {exc}")
    entries = document.get("mcpServers") if isinstance(document, dict) else None
    if not isinstance(entries, dict):
        return McpConfig(error=f'{where} must be an object with an "mcpServers" object')
    servers: dict[str, ServerConfig] = {}
    skipped: dict[str, str] = {}
    for name, entry in entries.items():
        checked = _entry(name, entry, servers)
        if isinstance(checked, str):
            skipped[name[:64]] = checked
        elif len(servers) >= MAX_SERVERS:
            skipped[name[:64]] = f"more than {MAX_SERVERS} servers configured"
        else:
            servers[name] = checked
    return McpConfig(servers, skipped)


def _entry(name: str, entry: Any, taken: dict[str, ServerConfig]) -> ServerConfig | str:
    """The checked entry, or why it is skipped."""
    if not SERVER_NAME.match(name):
        return ("server names are 1 to 24 letters, digits, '_' or '-', starting with a letter "
                "(they prefix the tools' names)")
    if tool_prefix(name) in {tool_prefix(other) for other in taken}:
        return "its name clashes with another server's once '-' becomes '_'"
    if not isinstance(entry, dict):
        return "an entry must be an object"
    kind = HttpServer if "url" in entry else StdioServer
    try:
        return kind.model_validate({**entry, "name": name})
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(part) for part in problem["loc"]) or "entry"
        return f"{where}: {problem['msg']}"


def tool_prefix(server_name: str) -> str:
    """What a server's tools' names start with (before the `__`)."""
    return server_name.replace("-", "_")
