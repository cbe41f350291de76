"""Acquired skills on disk: `acquired_skills/<name>.py` plus a `<name>.json` sidecar.

A skill is a Python script that runs in the sandbox. Its arguments arrive as one JSON object on
standard input; its result is what it prints to standard output; a non-zero exit is a failure.
The sidecar holds what the model needs to call it — description and parameters schema — and
its count of consecutive failures. Both files live in the sandbox, so a skill travels inside a
workspace archive and is found again by `scan` after a restart or a workspace load.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ghost.errors import ToolError, UnsafePath
from ghost.sandbox.base import ExecResult, Executor
from ghost.sandbox.paths import resolve_in_sandbox
from ghost.tools.schema import SchemaError, check_schema, validate

log = logging.getLogger("ghost.tools")
SKILLS_DIR = "acquired_skills"
SKILL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_SIDECAR_BYTES = 64 * 1024
MAX_DESCRIPTION_CHARS = 1000


@dataclass(frozen=True)
class Skill:
    name: str
    description: str
    parameters: dict[str, Any]
    failures: int = 0  # consecutive failed calls; reset by a success
    created_at: float = 0.0

    def sidecar(self) -> dict[str, Any]:
        return asdict(self)


def normalise_parameters(parameters: Any) -> dict[str, Any]:
    """A skill's parameters as an object schema Ghost can enforce (extra fields refused)."""
    if not isinstance(parameters, dict):
        raise ToolError("parameters must be a JSON schema object")
    schema = {"type": "object", "properties": {}, "additionalProperties": False, **parameters}
    if schema["type"] != "object":
        raise ToolError('parameters must describe an object: {"type": "object", "properties": {...}}')
    try:
        check_schema(schema)
    except SchemaError as exc:
        raise ToolError(f"parameters: {exc}") from exc
    return schema


class SkillStore:
    def __init__(self, root: Path, executor: Executor, reserved: Callable[[], frozenset[str]], *,
                 max_count: int, failure_threshold: int) -> None:
        self.root = root
        self.executor = executor
        self.reserved = reserved
        self.max_count = max_count
        self.failure_threshold = failure_threshold
        self._skills: dict[str, Skill] = {}
        self._lock = asyncio.Lock()

    # --- reading ----------------------------------------------------------------------------------
    def all(self) -> list[Skill]:
        return sorted(self._skills.values(), key=lambda s: s.name)

    def get(self, name: str) -> Skill | None:
        return self._skills.get(name)

    def is_failing(self, skill: Skill) -> bool:
        return skill.failures >= self.failure_threshold

    async def scan(self) -> None:
        """Load every valid skill from disk (at start, and after a workspace load)."""
        async with self._lock:
            self._skills = await asyncio.to_thread(self._scan)
        log.info("acquired skills: %s", ", ".join(self._skills) or "none")

    def _scan(self) -> dict[str, Skill]:
        try:
            folder = self._folder()
        except ToolError as exc:
            log.warning("no acquired skills loaded: %s", exc.message)
            return {}
        found: dict[str, Skill] = {}
        for sidecar in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            skill = self._load(sidecar)
            if skill is not None and len(found) < self.max_count:
                found[skill.name] = skill
        return found

    def _load(self, sidecar: Path) -> Skill | None:
        script = sidecar.with_suffix(".py")
        try:
            if sidecar.is_symlink() or script.is_symlink() or not script.is_file():
                raise ValueError("the skill's files must be a regular .py and .json pair")
            if sidecar.stat().st_size > MAX_SIDECAR_BYTES:
                raise ValueError("sidecar too large")
            data = json.loads(sidecar.read_text(encoding="utf-8"))
            skill = self._from_sidecar(sidecar.stem, data)
        except (OSError, ValueError, TypeError, ToolError) as exc:
            log.warning("ignoring acquired skill %s: %s", sidecar.name, exc)
            return None
        return skill

    def _from_sidecar(self, name: str, data: dict[str, Any]) -> Skill:
        self.check_name(name, new=False)
        if data.get("name") != name or not isinstance(data.get("description"), str):
            raise ValueError("sidecar name or description is wrong")
        failures = data.get("failures", 0)
        return Skill(name=name, description=data["description"][:MAX_DESCRIPTION_CHARS],
                     parameters=normalise_parameters(data.get("parameters", {})),
                     failures=failures if isinstance(failures, int) and failures >= 0 else 0,
                     created_at=float(data.get("created_at", 0.0)))

    # --- changing ---------------------------------------------------------------------------------
    def check_name(self, name: str, *, new: bool = True) -> None:
        if not isinstance(name, str) or not SKILL_NAME.match(name):
            raise ToolError(f"skill name {name!r} must match {SKILL_NAME.pattern} (letters, digits, _)")
        if name in self.reserved():
            raise ToolError(f"{name!r} is the name of a built-in tool; choose another")
        if new and name in self._skills:
            raise ToolError(f"a skill named {name!r} exists; delete_skill it first to replace it")
        if new and len(self._skills) >= self.max_count:
            raise ToolError(f"there are {self.max_count} skills already; delete one first")

    async def create(self, skill: Skill, code: str, test_arguments: dict[str, Any]) -> ExecResult:
        """Test `code` with `test_arguments`; keep the skill only if the test exits 0 with output."""
        self.check_name(skill.name)
        folder = await asyncio.to_thread(self._make_folder)
        pending = folder / f".pending-{skill.name}-{secrets.token_hex(4)}.py"
        await asyncio.to_thread(pending.write_text, code, "utf-8")
        try:
            result = await self._execute(pending.name, test_arguments)
            if not result.ok or not result.stdout.strip():
                return result
            async with self._lock:
                self.check_name(skill.name)  # another call may have taken the name meanwhile
                kept = replace(skill, created_at=time.time())
                await asyncio.to_thread(self._install, pending, kept)
                self._skills[kept.name] = kept
            return result
        finally:
            await asyncio.to_thread(pending.unlink, missing_ok=True)

    async def delete(self, name: str) -> None:
        async with self._lock:
            if name not in self._skills:
                raise ToolError(f"there is no skill named {name!r}")
            del self._skills[name]
            folder = self._folder()
            for suffix in (".json", ".py"):
                await asyncio.to_thread((folder / f"{name}{suffix}").unlink, missing_ok=True)

    async def call(self, name: str, arguments: dict[str, Any]) -> ExecResult:
        skill = self._skills.get(name)
        if skill is None:
            raise ToolError(f"there is no skill named {name!r}")
        errors = validate(skill.parameters, arguments)
        if errors:
            raise ToolError("; ".join(errors))
        if not (self._folder() / f"{name}.py").is_file():
            raise ToolError(f"the file of skill {name!r} is gone; delete_skill it and create it again")
        result = await self._execute(f"{name}.py", arguments)
        await self._record(name, ok=result.ok)
        return result

    async def _record(self, name: str, *, ok: bool) -> None:
        async with self._lock:
            skill = self._skills.get(name)
            if skill is None:
                return
            updated = replace(skill, failures=0 if ok else skill.failures + 1)
            if updated != skill:
                self._skills[name] = updated
                await asyncio.to_thread(self._write_sidecar, updated)

    # --- files ------------------------------------------------------------------------------------
    def _folder(self) -> Path:
        try:
            return resolve_in_sandbox(self.root, SKILLS_DIR)
        except UnsafePath as exc:
            raise ToolError(f"{SKILLS_DIR}/ is not usable: {exc.message}") from exc

    def _make_folder(self) -> Path:
        folder = self._folder()
        if folder.is_symlink():
            raise ToolError(f"{SKILLS_DIR}/ must be a real folder, not a link")
        folder.mkdir(exist_ok=True)
        return folder

    def _install(self, pending: Path, skill: Skill) -> None:
        os.replace(pending, pending.with_name(f"{skill.name}.py"))
        self._write_sidecar(skill)

    def _write_sidecar(self, skill: Skill) -> None:
        folder = self._folder()
        temp = folder / f".{skill.name}.json.tmp"
        temp.write_text(json.dumps(skill.sidecar(), indent=1, ensure_ascii=False), encoding="utf-8")
        os.replace(temp, folder / f"{skill.name}.json")

    async def _execute(self, script: str, arguments: dict[str, Any]) -> ExecResult:
        data = json.dumps(arguments, ensure_ascii=False).encode("utf-8")
        return await self.executor.run([self.executor.python, f"{SKILLS_DIR}/{script}"], stdin=data)
