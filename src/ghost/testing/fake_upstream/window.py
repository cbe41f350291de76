"""A simulated context window: counting a request's tokens, and refusing (or cutting) one too long
the way a real server of that kind does."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal

from starlette.responses import JSONResponse, Response


@dataclass
class ContextWindow:
    """A window of `tokens`, counted as characters / `chars_per_token`, on a server of `kind`."""

    tokens: int = 4096
    kind: Literal["llama.cpp", "vllm", "ollama", "silent"] = "llama.cpp"  # silent: no probe, no check
    chars_per_token: float = 4.0  # a little under: the client must calibrate its estimate
    tokenize: bool = True  # llama.cpp: serve /tokenize
    advertise: bool = True  # answer the window probe of `kind`
    ollama_num_ctx_parameter: bool = True  # Ollama /api/show: num_ctx in parameters, else model_info only
    ollama_default_ctx: int = 2048  # Ollama's window when a request sends no options.num_ctx

    def count_text(self, text: str) -> int:
        return math.ceil(len(text) / self.chars_per_token)

    def count_message(self, message: dict[str, Any]) -> int:
        content = message.get("content")
        parts = [content] if isinstance(content, str) else [
            p.get("text", "") for p in content or [] if isinstance(p, dict)]
        for call in message.get("tool_calls") or []:
            parts += [call["function"]["name"], str(call["function"].get("arguments", ""))]
        return self.count_text("\n".join(str(p) for p in parts)) + 4

    def count(self, body: dict[str, Any]) -> int:
        tools = self.count_text(json.dumps(body["tools"])) if body.get("tools") else 0
        return sum(self.count_message(m) for m in body.get("messages") or []) + tools

    def advertises(self, kind: str) -> bool:
        return self.kind == kind and self.advertise


@dataclass(frozen=True)
class WindowCheck:
    """One chat request against the window: its token count, the refusal if it does not fit, and
    whether Ollama-style it was cut instead (`body["messages_seen"]` then holds what was kept)."""

    tokens: int
    refusal: Response | None = None
    cut: bool = False


def check_window(window: ContextWindow, body: dict[str, Any]) -> WindowCheck:
    """What a real server of the window's kind does with this request's prompt."""
    if window.kind == "ollama":
        return _ollama_cut(body, window)
    prompt = window.count(body)
    if window.kind == "llama.cpp" and prompt > window.tokens:
        return WindowCheck(prompt, JSONResponse({"error": {
            "code": 400, "message": "the request exceeds the available context size, try increasing it",
            "type": "exceed_context_size_error", "n_prompt_tokens": prompt, "n_ctx": window.tokens}},
            status_code=400))
    reply = int(body.get("max_tokens") or 0)
    if window.kind == "vllm" and prompt + reply > window.tokens:
        return WindowCheck(prompt, JSONResponse({"object": "error", "message": (
            f"This model's maximum context length is {window.tokens} tokens. However, you requested "
            f"{prompt + reply} tokens ({prompt} in the messages, {reply} in the completion). Please "
            f"reduce the length of the messages or completion."), "type": "BadRequestError",
            "param": None, "code": 400}, status_code=400))
    return WindowCheck(prompt)


def _ollama_cut(body: dict[str, Any], window: ContextWindow) -> WindowCheck:
    """Ollama's way: drop the oldest messages (the system prompt first) until the rest fits."""
    num_ctx = (body.get("options") or {}).get("num_ctx") or window.ollama_default_ctx
    messages = body.get("messages") or []
    while messages and window.count({**body, "messages": messages}) > num_ctx:
        messages = messages[1:]
    cut = len(messages) < len(body.get("messages") or [])
    if cut:
        body["messages_seen"] = messages
    return WindowCheck(window.count({**body, "messages": messages}), cut=cut)


def ollama_show(window: ContextWindow) -> dict[str, Any]:
    """Ollama's `/api/show` answer: num_ctx in its parameters, or only the model's own length."""
    parameters = f"num_ctx {window.tokens}\nstop <|im_end|>" if window.ollama_num_ctx_parameter else "stop <|im_end|>"
    length = window.tokens if not window.ollama_num_ctx_parameter else 131072
    return {"parameters": parameters, "model_info": {"general.architecture": "llama", "llama.context_length": length}}
