"""The model names Ghost answers to: each served model, and its plain variant.

A served model (`--model`) runs the agent. Its plain variant, `<name>-plain`, relays a chat
straight to the upstream — no agent, no tools of Ghost's, no system prompt, no stored history —
for the title, tag and summary tasks chat UIs run in the background (Open WebUI's "Task Model").
The suffix goes on the end of the whole name, so `qwen3:8b` gets `qwen3:8b-plain`: one colon, as
Ollama clients and Open WebUI's model picker expect.
"""

from __future__ import annotations

from dataclasses import dataclass

PLAIN_SUFFIX = "-plain"


@dataclass(frozen=True)
class ModelChoice:
    name: str  # the served model (the agent's name, also for the plain variant)
    plain: bool  # the client asked for the plain variant

    @property
    def listed_name(self) -> str:
        return plain_name(self.name) if self.plain else self.name


def plain_name(served: str) -> str:
    return served + PLAIN_SUFFIX


def listed_models(served: list[str]) -> list[ModelChoice]:
    """Every name a client may ask for, in list order: each served model, then its plain variant."""
    return [choice for name in served for choice in (ModelChoice(name, False), ModelChoice(name, True))]


def resolve_model(asked: str, served: list[str]) -> ModelChoice | None:
    """What `asked` names, or None. As in Ollama, "name" and "name:latest" are one model.

    A served name wins over a plain variant, should one served model be called like another's."""
    for candidate in (asked, asked.removesuffix(":latest")):
        if candidate in served:
            return ModelChoice(candidate, False)
        base = candidate.removesuffix(PLAIN_SUFFIX)
        if base != candidate and base in served:
            return ModelChoice(base, True)
    return None
