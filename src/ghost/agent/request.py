"""Turn a chat request body (OpenAI- or Ollama-shaped) into one normalised `ChatRequest`.

Pure functions: no I/O. Messages come out OpenAI-shaped, since that is what the upstream speaks.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from ghost.llm.think import strip_think
from ghost.errors import Unprocessable

_SESSION_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_BASE64 = re.compile(r"[A-Za-z0-9+/=\r\n\t ]*")  # line breaks allowed, as base64 encoders add them
_ROLES = {"system", "user", "assistant", "tool", "developer"}
# OpenAI sampling fields passed through to the upstream as given.
_PASSTHROUGH = ("temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed",
                "presence_penalty", "frequency_penalty", "response_format", "logit_bias", "user")
# Ollama `options` -> OpenAI field.
_OLLAMA_OPTIONS = {"temperature": "temperature", "top_p": "top_p", "num_predict": "max_tokens",
                   "stop": "stop", "seed": "seed", "presence_penalty": "presence_penalty",
                   "frequency_penalty": "frequency_penalty"}


@dataclass
class ChatRequest:
    messages: list[dict[str, Any]]
    model: str
    stream: bool
    session_id: str | None = None  # asked for by the client; the service decides where it is stored
    client_tools: list[dict[str, Any]] = field(default_factory=list)
    sampling: dict[str, Any] = field(default_factory=dict)
    include_usage: bool = False
    tool_choice: Any = None


def parse_chat_request(body: dict[str, Any], *, default_stream: bool, default_model: str,
                       session_header: str | None = None) -> ChatRequest:
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise Unprocessable("messages: must be a non-empty list")
    return ChatRequest(
        messages=normalise_messages(raw_messages),
        model=_model(body, default_model),
        stream=_flag(body, "stream", default_stream),
        session_id=optional_session_id(body.get("session_id") or session_header),
        client_tools=normalise_tools(body.get("tools")),
        sampling=sampling_params(body),
        include_usage=bool((body.get("stream_options") or {}).get("include_usage"))
        if isinstance(body.get("stream_options"), dict) else False,
        tool_choice=body.get("tool_choice"),
    )


def _model(body: dict[str, Any], default: str) -> str:
    model = body.get("model", default)
    if model in (None, ""):
        return default
    if not isinstance(model, str):
        raise Unprocessable("model: must be a string")
    return model


def _flag(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise Unprocessable(f"{name}: must be true or false")
    return value


def optional_session_id(value: Any) -> str | None:
    """A valid session id, or None when none is given."""
    return None if value in (None, "") else session_id(value)


def session_id(value: Any) -> str:
    if value in (None, ""):
        return "default"  # workspace routes: the session of an archive saved or loaded without an id
    if not isinstance(value, str) or not _SESSION_ID.fullmatch(value):
        raise Unprocessable("session_id: 1-128 characters of letters, digits and . _ : -")
    return value


def sampling_params(body: dict[str, Any]) -> dict[str, Any]:
    params = {name: body[name] for name in _PASSTHROUGH if body.get(name) is not None}
    options = body.get("options")
    if options is not None and not isinstance(options, dict):
        raise Unprocessable("options: must be an object")
    for name, target in _OLLAMA_OPTIONS.items():
        if options and options.get(name) is not None:
            params.setdefault(target, options[name])
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        if name in params and (isinstance(params[name], bool) or not isinstance(params[name], (int, float))):
            raise Unprocessable(f"{name}: must be a number")
    for name in ("max_tokens", "max_completion_tokens", "seed"):
        if name in params and (isinstance(params[name], bool) or not isinstance(params[name], int)):
            raise Unprocessable(f"{name}: must be an integer")
    if "max_tokens" in params and params["max_tokens"] < 0:  # Ollama's num_predict -1 = no limit
        del params["max_tokens"]
    return params


def normalise_tools(tools: Any) -> list[dict[str, Any]]:
    if tools in (None, []):
        return []
    if not isinstance(tools, list):
        raise Unprocessable("tools: must be a list")
    out = []
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise Unprocessable(f"tools[{index}]: expected {{'type': 'function', 'function': {{'name': ...}}}}")
        out.append({"type": "function", "function": function})
    return out


# --- messages ----------------------------------------------------------------------------------

def normalise_messages(messages: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise Unprocessable(f"messages[{index}]: needs a role of {sorted(_ROLES)}")
        out.append(_normalise_message(message, index, out))
    return out


def _normalise_message(message: dict[str, Any], index: int, earlier: list[dict[str, Any]]) -> dict[str, Any]:
    role = message["role"]
    result: dict[str, Any] = {"role": role, "content": _content(message, index)}
    if role == "assistant":
        if isinstance(result["content"], str):
            result["content"] = strip_think(result["content"])
        if message.get("tool_calls"):
            if not isinstance(message["tool_calls"], list):
                raise Unprocessable(f"messages[{index}].tool_calls: must be a list")
            result["tool_calls"] = [_tool_call(call, index) for call in message["tool_calls"]]
            result["content"] = result["content"] or None
    if role == "tool":
        call_id = _optional_string(message.get("tool_call_id"), f"messages[{index}].tool_call_id")
        result["tool_call_id"] = call_id or _matching_call_id(message, earlier)
    if isinstance(message.get("name"), str):
        result["name"] = message["name"]
    return result


def _content(message: dict[str, Any], index: int) -> Any:
    content = message.get("content")
    if content is None:
        content = ""
    if not isinstance(content, (str, list)):
        raise Unprocessable(f"messages[{index}].content: must be a string or a list of parts")
    images = message.get("images")
    if not images:
        return content
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise Unprocessable(f"messages[{index}].images: must be a list of base64 strings")
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
    return parts + [{"type": "image_url", "image_url": {"url": _data_url(image, f"messages[{index}].images[{n}]")}}
                    for n, image in enumerate(images)]


def _data_url(image: str, where: str) -> str:
    if image.startswith("data:"):
        return image
    if not _BASE64.fullmatch(image):
        raise Unprocessable(f"{where}: must be base64 (or a data: URL)")
    head = _decoded_head(image)
    mime = "image/png" if head.startswith(b"\x89PNG") else "image/gif" if head.startswith(b"GIF8") \
        else "image/webp" if head[8:12] == b"WEBP" else "image/jpeg"
    return f"data:{mime};base64,{image}"


def _decoded_head(image: str) -> bytes:
    """The first bytes of a base64 image, enough to tell its type; b"" if they do not decode alone."""
    head = image[:16]
    try:
        return base64.b64decode(head + "=" * (-len(head) % 4), validate=False)
    except binascii.Error:  # e.g. whitespace inside the first characters shifted the 4-character groups
        return b""


def _tool_call(call: Any, index: int) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise Unprocessable(f"messages[{index}].tool_calls: each needs function.name")
    arguments = function.get("arguments", {})
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    call_id = _optional_string(call.get("id"), f"messages[{index}].tool_calls[].id")
    return {"id": call_id or f"call_{uuid.uuid4().hex[:12]}", "type": "function",
            "function": {"name": function["name"], "arguments": arguments}}


def _optional_string(value: Any, where: str) -> str | None:
    """A call id: a string or nothing (ids are matched in sets, so a list would crash the pairing)."""
    if value is not None and not isinstance(value, str):
        raise Unprocessable(f"{where}: must be a string")
    return value


def _matching_call_id(message: dict[str, Any], earlier: list[dict[str, Any]]) -> str:
    """Ollama tool results carry no call id: pair them with the latest call of that tool name."""
    wanted = message.get("tool_name") or message.get("name")
    answered = {m.get("tool_call_id") for m in earlier if m["role"] == "tool"}
    for previous in reversed(earlier):
        for call in reversed(previous.get("tool_calls") or []):
            if call["id"] not in answered and (wanted is None or call["function"]["name"] == wanted):
                return call["id"]
    return f"call_{uuid.uuid4().hex[:12]}"
