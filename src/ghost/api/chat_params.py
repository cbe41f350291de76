"""The one list of what Ghost does with each OpenAI and Ollama chat parameter.

On an agent model a parameter is either applied — sent on the turn's upstream calls, the
constrained answer included — or refused with a 400 that names it: never dropped without a word.
A `-plain` model is a relay: every field the client sent goes to the upstream as it was sent
(`relayed`), Ghost's own fields (`session_id`) and Ollama's shapes aside, which are translated.
Fields that neither API defines are ignored on agent models (clients and front ends add their own)
and relayed on `-plain` ones. `docs/clients.md` ("Parameters") is this module in words.

Pure functions over the request body as received (a JSON object): no I/O.
"""

from __future__ import annotations

from typing import Any

from ghost.errors import BadRequest

# What the chat parser itself turns into the request: never relayed as a plain field.
STRUCTURAL = frozenset({"model", "messages", "stream", "stream_options", "tools", "tool_choice", "session_id"})

# OpenAI fields sent on every upstream call of an agent turn, as given.
APPLIED = ("temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed", "presence_penalty",
           "frequency_penalty", "response_format", "logit_bias", "user", "parallel_tool_calls", "reasoning_effort",
           "verbosity", "metadata", "service_tier", "store", "prompt_cache_key", "safety_identifier",
           # llama.cpp's and vLLM's sampling extensions of the OpenAI body
           "top_k", "min_p", "typical_p", "repeat_penalty", "repetition_penalty", "repeat_last_n", "mirostat",
           "mirostat_tau", "mirostat_eta", "tfs_z")

# Ollama `options` that are sampling: sent upstream under the OpenAI (or llama.cpp / vLLM) names.
# `repeat_penalty` goes under both llama.cpp's name and vLLM's; each server ignores the other's.
OLLAMA_SAMPLING: dict[str, tuple[str, ...]] = {
    "temperature": ("temperature",), "top_p": ("top_p",), "num_predict": ("max_tokens",), "stop": ("stop",),
    "seed": ("seed",), "presence_penalty": ("presence_penalty",), "frequency_penalty": ("frequency_penalty",),
    "top_k": ("top_k",), "min_p": ("min_p",), "typical_p": ("typical_p",),
    "repeat_penalty": ("repeat_penalty", "repetition_penalty"), "repeat_last_n": ("repeat_last_n",),
    "mirostat": ("mirostat",), "mirostat_tau": ("mirostat_tau",), "mirostat_eta": ("mirostat_eta",),
    "tfs_z": ("tfs_z",), "num_keep": ("n_keep",),
}

# Ollama `options` that load a model (context size, GPU layers, threads...): the upstream's model
# is loaded with its own settings, which no request of Ghost's can change.
# (`num_ctx` is not one of them: it becomes the turn's context window, see `context_window`.)
OLLAMA_LOAD_OPTIONS = frozenset({"num_batch", "num_gpu", "main_gpu", "low_vram", "f16_kv", "vocab_only",
                                 "use_mmap", "use_mlock", "num_thread", "numa", "logits_all", "embedding_only"})
# Ollama options with no counterpart on an OpenAI-compatible server.
OLLAMA_UNMAPPED_OPTIONS = frozenset({"penalize_newline"})

# Ollama's top-level fields the chat routes take: `format` becomes `response_format`, `options`
# sampling fields; `keep_alive` has nothing to do (Ghost keeps its models for as long as it runs)
# and `think` neither (the upstream's reasoning always arrives apart from the answer).
OLLAMA_FIELDS = frozenset({"format", "options", "keep_alive", "think", "images", "prompt", "system"})


def _refused_value(name: str, value: Any) -> str | None:
    """Why an agent model cannot take `name` with this value, or None when it can."""
    if name == "n":
        return None if value in (None, 1) else "an agent turn makes one answer; ask again for another"
    if name == "logprobs":
        return None if value in (None, False) else ("an agent turn's answer is made by several upstream calls "
                                                    "whose token log-probabilities it cannot return")
    if name == "top_logprobs":
        return None if value is None else "it needs `logprobs`, which an agent model refuses"
    if name in ("functions", "function_call"):
        return None if value is None else "the deprecated function-calling fields are not served; send `tools`"
    if name == "modalities":
        return None if value in (None, ["text"]) else "an agent model answers with text only"
    if name in ("audio", "prediction", "web_search_options", "suffix", "raw", "template", "context"):
        return None if value in (None, False, "", []) else "Ghost cannot apply it to an agent turn"
    return None


REFUSED = ("n", "logprobs", "top_logprobs", "functions", "function_call", "modalities", "audio", "prediction",
           "web_search_options", "suffix", "raw", "template", "context")
# /api/generate's fields that need a raw-completion server: the upstream is sent chat requests.
GENERATE_REFUSED = ("suffix", "raw", "template", "context")


def generate_refusal(payload: dict[str, Any]) -> str | None:
    """Why /api/generate cannot take this request — naming the field — or None."""
    for name in GENERATE_REFUSED:
        if (value := payload.get(name)) not in (None, False, "", []):
            return f"{name}: not supported: Ghost sends the upstream a chat request, which has no {name}"
    return None


def agent_refusal(payload: dict[str, Any]) -> str | None:
    """Why an agent model refuses this request — the message names the parameter — or None."""
    for name in REFUSED:
        if (why := _refused_value(name, payload.get(name))) is not None:
            return f"{name}: not supported on an agent model: {why}"
    options = payload.get("options")
    for name in sorted(options) if isinstance(options, dict) else []:
        if name in OLLAMA_LOAD_OPTIONS and options[name] is not None:
            return (f"options.{name}: not supported: the upstream's model is loaded with its own settings, "
                    "which a request cannot change")
        if name in OLLAMA_UNMAPPED_OPTIONS and options[name] is not None:
            return f"options.{name}: not supported: OpenAI-compatible servers have no such setting"
    return None


# What a `-plain` model cannot relay on Ollama's wire (/api/chat, /api/generate): its reply is one
# message, and Ghost's Ollama encoder carries no log-probabilities. OpenAI's wire relays them.
OLLAMA_RELAY_REFUSED = ("n", "logprobs", "top_logprobs")


def ollama_relay_refusal(payload: dict[str, Any]) -> str | None:
    """Why a `-plain` model on Ollama's wire refuses this request — naming the field — or None."""
    for name in OLLAMA_RELAY_REFUSED:
        if _refused_value(name, payload.get(name)) is not None:
            return (f"{name}: not relayed on Ollama's API, whose reply is one message without "
                    "log-probabilities; send it to /v1/chat/completions, where a -plain model relays the "
                    "upstream's reply as it is")
    return None


def relayed(payload: dict[str, Any]) -> dict[str, Any]:
    """The fields a `-plain` model sends to the upstream as the client sent them."""
    return {name: value for name, value in payload.items()
            if name not in STRUCTURAL and name not in OLLAMA_FIELDS}


def context_window(options: dict[str, Any] | None) -> int | None:
    """Ollama's `num_ctx` as the turn's context window: never sent upstream (it would reload the
    model), applied by fitting the conversation into it when it is smaller than the upstream's."""
    value = (options or {}).get("num_ctx")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def ollama_sampling(options: dict[str, Any]) -> dict[str, Any]:
    """The upstream fields Ollama's sampling `options` set (load options are `check_agent_params`'s)."""
    out: dict[str, Any] = {}
    for name, value in options.items():
        for target in OLLAMA_SAMPLING.get(name, ()):
            if value is not None:
                out[target] = value
    return out


def response_format(format_: Any) -> dict[str, Any] | None:
    """Ollama's `format` as OpenAI's `response_format`: "json" is JSON mode, an object a JSON schema."""
    if format_ is None or format_ == "":
        return None
    if format_ == "json":
        return {"type": "json_object"}
    if isinstance(format_, dict):
        name = format_.get("title")
        name = name if isinstance(name, str) and name.replace("_", "").replace("-", "").isalnum() \
            and len(name) <= 64 else "response"
        return {"type": "json_schema", "json_schema": {"name": name, "schema": format_, "strict": strict_ready(format_)}}
    raise BadRequest('format: must be "json" or a JSON schema (an object)')


def strict_ready(schema: Any) -> bool:
    """Whether the schema already meets OpenAI's strict-mode rules (every object closed, every property
    required): then it is sent `strict`, as Ollama constrains output; other schemas are sent as given,
    which llama.cpp, vLLM and Ollama still enforce and OpenAI itself accepts."""
    if isinstance(schema, list):
        return all(strict_ready(item) for item in schema)
    if not isinstance(schema, dict):
        return True
    if schema.get("type") == "object" or "properties" in schema:
        properties = schema.get("properties") or {}
        if schema.get("additionalProperties") is not False or set(schema.get("required") or []) != set(properties):
            return False
    return all(strict_ready(value) for key, value in schema.items() if key not in ("enum", "const", "default"))
