"""The client's tools as the model sees them: renamed where a name is also one of Ghost's.

A client may send a tool whose name Ghost's own tools use (Open WebUI sends `create_skill`). Both
must stay reachable, so the client's goes to the model as `client__<name>` (its description says
whose it is), a call to it is named back before it is returned to the client, and earlier calls in
the conversation the client sends — always the client's, since Ghost's own rounds stay inside a
turn — are renamed the same way, so the model reads one consistent history.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ghost.events import ToolCall

CLIENT_PREFIX = "client__"


class ClientTools:
    def __init__(self, tools: list[dict[str, Any]], ghost_names: set[str]) -> None:
        self.clashing = {t["function"]["name"] for t in tools} & ghost_names
        self.schemas = [self._renamed_schema(t) for t in tools]
        self._original = {s["function"]["name"]: t["function"]["name"] for s, t in zip(self.schemas, tools)}

    def model_name(self, name: str) -> str:
        return CLIENT_PREFIX + name if name in self.clashing else name

    def owns(self, model_name: str) -> bool:
        """Whether the model's call to `model_name` goes back to the client."""
        return model_name in self._original

    def for_client(self, call: ToolCall) -> ToolCall:
        return dataclasses.replace(call, name=self._original[call.name])

    def tool_choice_for_model(self, choice: Any) -> Any:
        """`tool_choice` naming a renamed tool, renamed too (e.g. `{"function": {"name": ...}}`)."""
        function = choice.get("function") if isinstance(choice, dict) else None
        if not isinstance(function, dict) or function.get("name") not in self.clashing:
            return choice
        return {**choice, "function": {**function, "name": self.model_name(function["name"])}}

    def history_for_model(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not self.clashing:
            return messages
        return [self._renamed_calls(m) if m.get("tool_calls") else m for m in messages]

    def _renamed_schema(self, tool: dict[str, Any]) -> dict[str, Any]:
        function = tool["function"]
        if function["name"] not in self.clashing:
            return tool
        note = f"(The client's own tool `{function['name']}`, not Ghost's tool of that name.) "
        return {**tool, "function": {**function, "name": self.model_name(function["name"]),
                                     "description": note + str(function.get("description") or "")}}

    def _renamed_calls(self, message: dict[str, Any]) -> dict[str, Any]:
        calls = [{**c, "function": {**c["function"], "name": self.model_name(c["function"]["name"])}}
                 for c in message["tool_calls"]]
        return {**message, "tool_calls": calls}
