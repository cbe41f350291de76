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
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ghost.errors import GhostError, ToolError
from ghost.sandbox import fs, fspool
from ghost.sandbox.base import ExecResult, Executor
from ghost.sandbox.names import shown_name
from ghost.tools.schema import SchemaError, check_schema, validate

log = logging.getLogger("ghost.tools")
SKILLS_DIR = "acquired_skills"
SKILL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_SIDECAR_BYTES = 64 * 1024
MAX_DESCRIPTION_CHARS = 1000
MAX_SIDECAR_DEPTH = 32  # JSON nesting a sidecar may have; deeper is refused before parsing


def json_depth(text: str, limit: int) -> int:
    """How deep `text`'s arrays and objects nest, counting no further than `limit` + 1.

    Checked before `json.loads`, whose recursion a 3,000-level document would exhaust.
    """
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                break
        elif char in "]}":
            depth -= 1
    return deepest


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


def check_schema_size(schema: dict[str, Any], limit: int) -> None:
    """A skill's schema is sent upstream with every call that offers it: it must stay small."""
    size = len(json.dumps(schema, ensure_ascii=False, separators=(",", ":")))
    if size > limit:
        raise ToolError(f"the parameters schema is {size:,} characters; a skill's may have at most "
                        f"{limit:,} (--skill-schema-max-chars): drop descriptions and examples")


class SkillStore:
    def __init__(self, root: Path, executor: Executor, reserved: Callable[[], frozenset[str]], *,
                 max_count: int, failure_threshold: int, schema_max_chars: int = 4000) -> None:
        self.root = root
        self.executor = executor
        self.reserved = reserved
        self.max_count = max_count
        self.failure_threshold = failure_threshold
        self.schema_max_chars = schema_max_chars
        self._used: dict[str, float] = {}  # name -> last call in this process (else its creation time)
        self._skills: dict[str, Skill] = {}
        self.skipped: list[dict[str, str]] = []  # sidecars the last scan refused: name, reason
        self._lock = asyncio.Lock()
        self._stamp: tuple[int, int, int] | None = None  # the skills folder as the last scan saw it

    # --- reading ----------------------------------------------------------------------------------
    def all(self) -> list[Skill]:
        return sorted(self._skills.values(), key=lambda s: s.name)

    def by_recent_use(self) -> list[Skill]:
        """The skills, the most recently used (or made) first: when not all fit, the last are left out."""
        return sorted(self._skills.values(), key=lambda s: (-self._used.get(s.name, s.created_at), s.name))

    def get(self, name: str) -> Skill | None:
        return self._skills.get(name)

    def is_failing(self, skill: Skill) -> bool:
        return skill.failures >= self.failure_threshold

    async def scan(self) -> None:
        """Load every valid skill from disk (at start, and after a workspace load). Never raises
        for what the folder holds; skipped sidecars are kept in `skipped` for /api/health."""
        async with self._lock:
            self._skills, self.skipped = await fspool.run(self._scan)
        log.info("acquired skills: %s", ", ".join(self._skills) or "none")

    async def rescan_if_changed(self) -> bool:
        """Scan again if the skills folder changed since the last scan: a skill made, removed or
        updated by another replica sharing the workspace root. One fstat; True if it scanned."""
        if await fspool.run(self._folder_stamp) == self._stamp:
            return False
        await self.scan()
        return True

    def _folder_stamp(self) -> tuple[int, int, int] | None:
        # Skills are written by renames into the folder, so its mtime moves with every change.
        try:
            with self._folder() as fd:
                info = os.fstat(fd)
        except (OSError, ToolError):
            return None
        return info.st_ino, info.st_mtime_ns, info.st_ctime_ns

    async def scan_bounded(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self.scan(), timeout)
        except TimeoutError:
            log.error("the acquired-skills scan took longer than %gs; starting without skills", timeout)

    def report(self) -> dict[str, Any]:
        return {"loaded": len(self._skills), "skipped": self.skipped}

    def _scan(self) -> tuple[dict[str, Skill], list[dict[str, str]]]:
        self._stamp = self._folder_stamp()  # before reading: a change during the scan shows next time
        found: dict[str, Skill] = {}
        skipped: list[dict[str, str]] = []
        try:
            with self._folder() as folder:
                for name in sorted(os.listdir(folder)):
                    if not name.endswith(".json") or name.startswith("."):
                        continue
                    try:
                        skill = self._load(folder, name)
                    except (OSError, ValueError, TypeError, GhostError, RecursionError) as exc:
                        reason = exc.message if isinstance(exc, GhostError) else str(exc) or type(exc).__name__
                        log.warning("ignoring acquired skill %s: %s", shown_name(name), reason)
                        skipped.append({"name": shown_name(name), "reason": reason[:200]})  # JSON-safe
                        continue
                    if len(found) < self.max_count:
                        found[skill.name] = skill
        except FileNotFoundError:
            pass  # no skills yet
        except (OSError, GhostError) as exc:
            log.warning("no acquired skills loaded: %s", getattr(exc, "message", exc))
            skipped.append({"name": SKILLS_DIR, "reason": str(getattr(exc, "message", exc))[:200]})
        return found, skipped

    def _load(self, folder: int, sidecar: str) -> Skill:
        stem = sidecar[:-len(".json")]
        script = fs.lstat_at(folder, f"{stem}.py")
        if script is None or not stat.S_ISREG(script.st_mode):
            raise ValueError("the skill's files must be a regular .py and .json pair")
        with fs.closing(fs.open_regular(folder, sidecar, user_path=f"{SKILLS_DIR}/{sidecar}")) as fd:
            text = fs.read_capped(fd, MAX_SIDECAR_BYTES).decode("utf-8")
        if json_depth(text, MAX_SIDECAR_DEPTH) > MAX_SIDECAR_DEPTH:
            raise ValueError(f"sidecar JSON nested deeper than {MAX_SIDECAR_DEPTH} levels")
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("sidecar must hold a JSON object")
        return self._from_sidecar(stem, data)

    def _from_sidecar(self, name: str, data: dict[str, Any]) -> Skill:
        self.check_name(name, new=False)
        if data.get("name") != name or not isinstance(data.get("description"), str):
            raise ValueError("sidecar name or description is wrong")
        failures, created_at = data.get("failures", 0), data.get("created_at", 0.0)
        parameters = normalise_parameters(data.get("parameters", {}))
        check_schema_size(parameters, self.schema_max_chars)
        return Skill(name=name, description=data["description"][:MAX_DESCRIPTION_CHARS],
                     parameters=parameters,
                     failures=failures if isinstance(failures, int) and failures >= 0 else 0,
                     created_at=float(created_at) if isinstance(created_at, (int, float)) else 0.0)

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
        pending = await fspool.run(self._write_pending, skill.name, code.encode("utf-8"))
        try:
            result = await self._execute(pending, test_arguments)
            if not result.ok or not result.stdout.strip():
                return result
            async with self._lock:
                self.check_name(skill.name)  # another call may have taken the name meanwhile
                kept = replace(skill, created_at=time.time())
                await fspool.run(self._install, pending, kept)
                self._skills[kept.name] = kept
            return result
        finally:
            await fspool.run(self._unlink, pending)

    async def delete(self, name: str) -> None:
        async with self._lock:
            # A skill skipped at load (too big a schema, say) can be deleted too: its files are there.
            if name not in self._skills and f"{name}.json" not in {s["name"] for s in self.skipped}:
                raise ToolError(f"there is no skill named {name!r}")
            self._skills.pop(name, None)
            self._used.pop(name, None)
            self.skipped = [s for s in self.skipped if s["name"] != f"{name}.json"]
            for suffix in (".json", ".py"):
                await fspool.run(self._unlink, f"{name}{suffix}")

    async def call(self, name: str, arguments: dict[str, Any]) -> ExecResult:
        skill = self._skills.get(name)
        if skill is None:
            raise ToolError(f"there is no skill named {name!r}")
        errors = validate(skill.parameters, arguments)
        if errors:
            raise ToolError("; ".join(errors))
        if not await fspool.run(self._has_script, name):
            raise ToolError(f"the file of skill {name!r} is gone; delete_skill it and create it again")
        self._used[name] = time.time()
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
                await fspool.run(self._write_sidecar, updated)

    # --- files ------------------------------------------------------------------------------------
    @contextmanager
    def _folder(self, *, create: bool = False) -> Iterator[int]:
        """The skills folder's fd; ToolError if it is a link or a file."""
        try:
            with fs.folder(self.root, SKILLS_DIR, create=create) as fd:
                yield fd
        except (fs.ThroughLink, NotADirectoryError) as exc:
            raise ToolError(f"{SKILLS_DIR}/ must be a real folder, not a link or a file") from exc

    def _write_pending(self, name: str, code: bytes) -> str:
        """The code in a new `.pending-NAME-<random>.py` in the skills folder; its name."""
        with self._folder(create=True) as folder:
            fd, pending = fs.create_temp(folder, f".pending-{name}-", ".py")
            with fs.closing(fd):
                fs.write_all(fd, code)
        return pending

    def _unlink(self, file_name: str) -> None:
        try:
            with self._folder() as folder:
                fs.unlink_quietly(folder, file_name)
        except (OSError, ToolError):
            pass  # no folder (any more): nothing to remove

    def _has_script(self, name: str) -> bool:
        with self._folder() as folder:
            info = fs.lstat_at(folder, f"{name}.py")
        return info is not None and stat.S_ISREG(info.st_mode)

    def _install(self, pending: str, skill: Skill) -> None:
        with self._folder() as folder:
            os.rename(pending, f"{skill.name}.py", src_dir_fd=folder, dst_dir_fd=folder)
            self._write_sidecar_in(folder, skill)

    def _write_sidecar(self, skill: Skill) -> None:
        with self._folder() as folder:
            self._write_sidecar_in(folder, skill)

    @staticmethod
    def _write_sidecar_in(folder: int, skill: Skill) -> None:
        data = json.dumps(skill.sidecar(), indent=1, ensure_ascii=False).encode("utf-8")
        fs.replace_file(folder, f"{skill.name}.json", data, prefix=f".{skill.name}.json.tmp-")

    async def _execute(self, script: str, arguments: dict[str, Any]) -> ExecResult:
        data = json.dumps(arguments, ensure_ascii=False).encode("utf-8")
        return await self.executor.run([self.executor.python, f"{SKILLS_DIR}/{script}"], stdin=data)
