"""Skill tools: create_skill, list_skills, delete_skill — and every acquired skill as a tool.

How a skill gets its arguments: one JSON object on standard input. Its result: what it prints.
Chosen over argv because JSON keeps types and nesting, has no length limit worth meeting, and
never appears in a process list.
"""

from __future__ import annotations

from typing import Any

from ghost.errors import ToolError
from ghost.sandbox.base import ExecResult
from ghost.tools.base import ToolResult
from ghost.tools.execute import format_result, summary
from ghost.tools.registry import Tool
from ghost.tools.skill_store import MAX_DESCRIPTION_CHARS, Skill, SkillStore, check_schema_size, normalise_parameters
from ghost.tools.schema import validate


class SkillTools:
    """The skill-management tools, and the ToolProvider that offers each skill as a tool."""

    def __init__(self, store: SkillStore, code_max_chars: int) -> None:
        self.store = store
        self.code_max_chars = code_max_chars

    def functions(self) -> list[Any]:
        return [self.create_skill, self.list_skills, self.delete_skill]

    async def create_skill(self, name: str, description: str, parameters: dict[str, Any], code: str,
                           test_arguments: dict[str, Any]) -> ToolResult:
        """Save a reusable skill: a Python script that becomes a tool you can call by its name.
        The script receives its arguments as one JSON object on standard input (for example
        `import json, sys; args = json.load(sys.stdin)`) and its result is what it prints. It
        runs in the sandbox folder. Ghost runs it once with test_arguments and keeps it only if
        that run exits with code 0 and prints something.

        Args:
            name: Tool name for the skill: letters, digits and _, not starting with a digit.
            description: What the skill does and returns, for choosing it later.
            parameters: JSON schema of the arguments object, e.g. {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}.
            code: The Python script.
            test_arguments: Arguments for the test run; must fit the parameters schema.
        """
        skill = self._validated(name, description, parameters, code, test_arguments)
        result = await self.store.create(skill, code, test_arguments)
        report = format_result(result, self.store.executor.limits.timeout_s)
        if self.store.get(name) is None:
            why = "it did not exit with code 0" if not result.ok else "it printed nothing"
            return ToolResult(f"skill {name!r} was NOT saved: its test run failed ({why}).\n{report}",
                              ok=False, summary=f"create_skill {name}: test failed")
        return ToolResult(f"skill {name!r} saved; call it as the tool {name!r}.\nTest run: {report}",
                          summary=f"created skill {name}")

    def _validated(self, name: str, description: str, parameters: dict[str, Any], code: str,
                   test_arguments: dict[str, Any]) -> Skill:
        self.store.check_name(name)
        if not description.strip() or len(description) > MAX_DESCRIPTION_CHARS:
            raise ToolError(f"description must be 1 to {MAX_DESCRIPTION_CHARS} characters")
        if not code.strip() or len(code) > self.code_max_chars or "\0" in code:
            raise ToolError(f"code must be 1 to {self.code_max_chars:,} characters, without NUL")
        schema = normalise_parameters(parameters)
        check_schema_size(schema, self.store.schema_max_chars)
        errors = validate(schema, test_arguments, "test_arguments")
        if errors:
            raise ToolError("test_arguments do not fit parameters: " + "; ".join(errors))
        return Skill(name=name, description=description.strip(), parameters=schema)

    async def list_skills(self) -> ToolResult:
        """List your acquired skills with their parameters and health."""
        skills = self.store.all()
        if not skills:
            return ToolResult("no skills yet; create_skill makes one", summary="skills: none")
        return ToolResult("\n".join(self._line(s) for s in skills), summary=f"skills: {len(skills)}")

    def _line(self, skill: Skill) -> str:
        params = ", ".join(skill.parameters.get("properties", {})) or "no parameters"
        health = (f" [FAILING: {skill.failures} failed calls in a row]" if self.store.is_failing(skill)
                  else f" [{skill.failures} recent failures]" if skill.failures else "")
        return f"{skill.name}({params}): {skill.description}{health}"

    async def delete_skill(self, name: str) -> ToolResult:
        """Delete an acquired skill.

        Args:
            name: The skill's name.
        """
        await self.store.delete(name)
        return ToolResult(f"deleted skill {name!r}", summary=f"deleted skill {name}")

    # --- ToolProvider: every skill as a tool ----------------------------------------------------
    def tools(self) -> list[Tool]:
        return [self._tool(skill) for skill in self.store.by_recent_use()]

    def _tool(self, skill: Skill) -> Tool:
        async def run(**arguments: Any) -> ToolResult:
            return self._result(skill.name, await self.store.call(skill.name, arguments))

        note = " (acquired skill; failing lately)" if self.store.is_failing(skill) else " (acquired skill)"
        return Tool(skill.name, skill.description + note, skill.parameters, run, source="skill")

    def _result(self, name: str, result: ExecResult) -> ToolResult:
        if result.ok:
            return ToolResult(result.stdout if result.stdout.strip() else "(the skill printed nothing)",
                              summary=summary(name, result))
        return ToolResult(f"skill {name!r} failed.\n" + format_result(result, self.store.executor.limits.timeout_s),
                          ok=False, summary=summary(name, result))

    async def prompt_summary(self, max_chars: int) -> str:
        skills = self.store.all()
        if not skills:
            return ""
        lines = ["Acquired skills (call them as tools):"]
        for skill in skills:
            line = f"- {self._line(skill)}"[:300]
            if sum(len(x) + 1 for x in lines) + len(line) > max_chars:
                lines.append(f"- … {len(skills) - len(lines) + 1} more (list_skills)")
                break
            lines.append(line)
        return "\n".join(lines)[:max_chars]

