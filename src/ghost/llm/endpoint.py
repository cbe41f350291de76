"""Where the upstream is and how to address it, as one value.

The upstream's address used to be copied into each of its users (the chat path, context
discovery, the tokenizer, the proxy's pool); now each reads it from the one `UpstreamEndpoint`
the `Upstream` service owns (`HttpUpstream.endpoint`). It is settled before anything starts: the
configured `--upstream-url`, or the bundled model's loopback port, which is chosen before its
server starts and kept across its restarts (`ghost.llm.embedded`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ghost.config import Settings
from ghost.observe.tracing import outgoing_headers


@dataclass(frozen=True)
class UpstreamEndpoint:
    """The upstream's base URL (no trailing slash; "" when there is none) and the key it wants."""

    url: str = ""
    api_key: str = ""

    @classmethod
    def configured(cls, settings: Settings) -> UpstreamEndpoint:
        """The upstream the settings name (`--upstream-url`, `--upstream-api-key`)."""
        return cls(settings.upstream_url, settings.upstream_api_key)

    @property
    def exists(self) -> bool:
        return bool(self.url)

    def at(self, path: str) -> str:
        """The URL of `path` (starting with "/") on the upstream."""
        return f"{self.url}{path}"

    def headers(self) -> dict[str, str]:
        """The key, and the current span's `traceparent` when tracing is on (so every request to the
        upstream, the agent's chat calls and the proxy's alike, continues the trace)."""
        headers = {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return {**headers, **outgoing_headers()}
