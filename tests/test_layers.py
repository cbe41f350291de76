"""The package layers written down in docs/architecture.md are the ones the imports follow.

Each package of `ghost` may import only from packages in lower layers (and from itself); the
layer table is read from the doc, so the doc and the code cannot drift apart silently.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "ghost"
DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
# A row of the doc's layer table: "| 3 | `tools`, `workspace` | ... |".
ROW = re.compile(r"^\|\s*(\d+)\s*\|([^|]+)\|")


def layers_in_doc() -> dict[str, int]:
    layers: dict[str, int] = {}
    for line in DOC.read_text().splitlines():
        if match := ROW.match(line):
            for name in re.findall(r"`([\w.]+)`", match.group(2)):
                layers[name] = int(match.group(1))
    return layers


def package_of(module: str) -> str:
    """`ghost.api.chat` -> `api`; `ghost.errors` -> `errors`; `ghost` -> `ghost` (its __init__)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "ghost"


def imports() -> list[tuple[str, str, int]]:
    """(importing package, imported package, line) for every import of Ghost's own modules."""
    found = []
    for path in SRC.rglob("*.py"):
        relative = path.relative_to(SRC.parent).with_suffix("")
        source = package_of(".".join(relative.parts[:-1] if relative.name == "__init__" else relative.parts))
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                else [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                if name == "ghost" or name.startswith("ghost."):
                    found.append((source, package_of(name), node.lineno))
    return found


def test_the_doc_names_every_package_once() -> None:
    layers = layers_in_doc()
    packages = {package_of("ghost." + p.stem) for p in SRC.glob("*.py") if p.stem != "__init__"}
    packages |= {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages | {"ghost"} == set(layers), "docs/architecture.md's layer table and src/ghost differ"


def test_every_import_points_down() -> None:
    layers = layers_in_doc()
    upward = sorted({f"{source} (layer {layers[source]}) imports {target} (layer {layers[target]})"
                     for source, target, _ in imports()
                     if source != target and layers[target] >= layers[source]})
    assert not upward, "imports that break the layer order:\n" + "\n".join(upward)


def test_the_check_finds_an_upward_import(monkeypatch: pytest.MonkeyPatch) -> None:
    # The probe itself: with `llm` moved above `agent` in the table, agent's imports of llm are upward.
    real = layers_in_doc()
    monkeypatch.setitem(globals(), "layers_in_doc", lambda: {**real, "llm": real["agent"] + 1})
    with pytest.raises(AssertionError, match="agent .* imports llm"):
        test_every_import_points_down()
