"""Learn the upstream model's context window (and its tokenizer endpoint) once, at start.

`--context-window` wins. Otherwise the upstream is asked, in this order, and the first answer counts:
- the bundled model: the size it was launched with (`--embedded-context-size`); it tokenizes at
  `/extras/tokenize/count` (llama-cpp-python's server);
- llama.cpp's server: `GET /props` (`default_generation_settings.n_ctx`, or `n_ctx`); it tokenizes
  at `/tokenize`;
- Ollama: `POST /api/show` (`num_ctx` in its parameters, else the model's `<arch>.context_length`).
  Ollama cuts a longer prompt silently from the front, so every chat call then carries
  `options.num_ctx`. (Its OpenAI-compatible route may ignore that option; with a server-wide
  OLLAMA_CONTEXT_LENGTH smaller than the model's, set --context-window.)
- vLLM: `GET /v1/models` (`max_model_len` of the model).
Else `--context-window-default`, logged as a guess.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from ghost.config import Settings
from ghost.llm.endpoint import UpstreamEndpoint

log = logging.getLogger("ghost.context")
PROBE_TIMEOUT_S = 3.0
LLAMA_CPP_TOKENIZE = "/tokenize"  # {"content": text} -> {"tokens": [...]}
BUNDLED_TOKENIZE = "/extras/tokenize/count"  # {"input": text} -> {"count": n}
_NUM_CTX = re.compile(r"^\s*num_ctx\s+(\d+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class UpstreamWindow:
    tokens: int
    source: str  # where the number came from, for logs and /api/health
    flavour: str = "unknown"  # "bundled" | "llama.cpp" | "ollama" | "vllm" | "unknown"
    tokenize_path: str = ""  # the upstream's tokenizer endpoint, if it has one
    chat_extra: dict[str, Any] = field(default_factory=dict)  # merged into every chat payload

    def as_info(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "source": self.source, "upstream": self.flavour,
                "tokenizer": self.tokenize_path or "estimate"}


async def learn_window(http: httpx.AsyncClient, endpoint: UpstreamEndpoint, model: str,
                       settings: Settings, bundled_size: int | None) -> UpstreamWindow:
    """The window to fit every call into; never raises (an unreachable upstream gives the default)."""
    found = _bundled(bundled_size) if bundled_size else await _probe(http, endpoint, model)
    if found is None:
        found = UpstreamWindow(settings.context_window_default, "default (the upstream did not say)")
        log.warning("context window: the upstream did not tell its size; assuming %d tokens "
                    "(set --context-window to the real one)", found.tokens)
    if settings.context_window:
        found = replace(found, tokens=settings.context_window, source="--context-window",
                        chat_extra=_ollama_extra(settings.context_window) if found.flavour == "ollama" else {})
    if settings.context_tokenizer == "estimate":
        found = replace(found, tokenize_path="")
    log.info("context window: %d tokens (%s); token counts: %s", found.tokens, found.source,
             found.tokenize_path or "estimated and calibrated")
    return found


def _bundled(size: int) -> UpstreamWindow:
    return UpstreamWindow(size, "the bundled model's --embedded-context-size", "bundled", BUNDLED_TOKENIZE)


async def _probe(http: httpx.AsyncClient, endpoint: UpstreamEndpoint, model: str) -> UpstreamWindow | None:
    if not endpoint.exists:
        return None
    headers = endpoint.headers()
    for probe in (_llama_cpp, _ollama, _vllm):
        try:
            found = await probe(http, endpoint, headers, model)
        except (httpx.HTTPError, ValueError, TypeError, AttributeError, KeyError):
            found = None  # not this kind of server (or not answering): try the next kind
        if found is not None:
            return found
    return None


async def _get_json(http: httpx.AsyncClient, method: str, url: str, headers: dict[str, str],
                    body: dict[str, Any] | None = None) -> Any:
    response = await http.request(method, url, headers=headers, json=body, timeout=PROBE_TIMEOUT_S)
    return response.json() if response.status_code == 200 else None


async def _llama_cpp(http: httpx.AsyncClient, endpoint: UpstreamEndpoint, headers: dict[str, str],
                     model: str) -> UpstreamWindow | None:
    props = await _get_json(http, "GET", endpoint.at("/props"), headers)
    if not isinstance(props, dict):
        return None
    settings = props.get("default_generation_settings")
    n_ctx = _positive((settings or {}).get("n_ctx") if isinstance(settings, dict) else None) or _positive(props.get("n_ctx"))
    return UpstreamWindow(n_ctx, "llama.cpp /props", "llama.cpp", LLAMA_CPP_TOKENIZE) if n_ctx else None


async def _ollama(http: httpx.AsyncClient, endpoint: UpstreamEndpoint, headers: dict[str, str],
                  model: str) -> UpstreamWindow | None:
    show = await _get_json(http, "POST", endpoint.at("/api/show"), headers, {"model": model})
    if not isinstance(show, dict):
        return None
    parameters = show.get("parameters")
    match = _NUM_CTX.search(parameters) if isinstance(parameters, str) else None
    if match:
        tokens, source = int(match.group(1)), "Ollama /api/show num_ctx"
    else:
        info = show.get("model_info") if isinstance(show.get("model_info"), dict) else {}
        lengths = [_positive(v) for k, v in info.items() if k.endswith(".context_length")]
        tokens, source = next((n for n in lengths if n), 0), "Ollama /api/show context_length"
    if not tokens:
        return None
    return UpstreamWindow(tokens, source, "ollama", "", _ollama_extra(tokens))


def _ollama_extra(tokens: int) -> dict[str, Any]:
    return {"options": {"num_ctx": tokens}}


async def _vllm(http: httpx.AsyncClient, endpoint: UpstreamEndpoint, headers: dict[str, str],
                model: str) -> UpstreamWindow | None:
    models = await _get_json(http, "GET", endpoint.at("/v1/models"), headers)
    entries = models.get("data") if isinstance(models, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and (entry.get("id") == model or len(entries) == 1):
            if tokens := _positive(entry.get("max_model_len")):
                return UpstreamWindow(tokens, "vLLM /v1/models max_model_len", "vllm")
    return None


def _positive(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
