"""The package layers written down in docs/architecture.md are the ones the imports follow.

Each package of `ghost` may import only from packages in lower layers (and from itself); the
layer table is read from the doc, so the doc and the code cannot drift apart silently. Every form
an import can take counts: `import ghost.x`, `from ghost.x import y`, relative imports (`from . import
x`, `from ..api import y`), a module through its package (`from ghost import app`), and literal
`importlib.import_module("ghost.x")` / `__import__("ghost.x")`.
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


def module_name(path: Path) -> str:
    """`src/ghost/api/chat.py` -> `ghost.api.chat`; a package's `__init__.py` -> the package."""
    relative = path.relative_to(SRC.parent).with_suffix("")
    return ".".join(relative.parts[:-1] if relative.name == "__init__" else relative.parts)


def is_module(module: str) -> bool:
    where = SRC.parent.joinpath(*module.split("."))
    return where.with_suffix(".py").exists() or (where / "__init__.py").exists()


def absolute(module: str, level: int, importer: str, importer_is_package: bool) -> str:
    """The absolute name of `from <dots><module> import ...` written in `importer`."""
    if level == 0:
        return module
    base = importer.split(".")
    if not importer_is_package:
        base = base[:-1]  # a module's `.` is its package; a package's `.` is itself
    base = base[:len(base) - (level - 1)] if level > 1 else base
    return ".".join([*base, module] if module else base)


DYNAMIC_IMPORTS = {"import_module", "__import__"}  # importlib.import_module(...), __import__(...)


def _dynamic_target(node: ast.AST) -> str | None:
    """The module a literal `importlib.import_module("...")` or `__import__("...")` names."""
    if not isinstance(node, ast.Call) or not node.args:
        return None
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    first = node.args[0]
    if name in DYNAMIC_IMPORTS and isinstance(first, ast.Constant) and isinstance(first.value, str):
        return first.value
    return None


def imported_modules(source: str, importer: str, importer_is_package: bool = False) -> list[tuple[str, int]]:
    """(module, line) for every module of Ghost's that `source` (the text of module `importer`)
    imports: plain and relative imports, `from ghost import app` (a module through its package),
    and literal `importlib.import_module`/`__import__` calls."""
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = absolute(node.module or "", node.level, importer, importer_is_package)
            submodules = [f"{base}.{alias.name}" for alias in node.names if is_module(f"{base}.{alias.name}")]
            # `from ghost import app` imports the module ghost.app; `from ghost import __version__`
            # only the package's own name.
            targets = submodules + ([base] if len(submodules) < len(node.names) else [])
        else:
            targets = [target] if (target := _dynamic_target(node)) else []
        found += [(name, node.lineno) for name in targets if name == "ghost" or name.startswith("ghost.")]
    return found


def imports() -> list[tuple[str, str, int]]:
    """(importing package, imported package, line) for every import of Ghost's own modules."""
    found = []
    for path in SRC.rglob("*.py"):
        importer = module_name(path)
        for name, line in imported_modules(path.read_text(), importer, path.name == "__init__.py"):
            found.append((package_of(importer), package_of(name), line))
    return found


def test_the_doc_names_every_package_once() -> None:
    layers = layers_in_doc()
    packages = {package_of("ghost." + p.stem) for p in SRC.glob("*.py") if p.stem != "__init__"}
    packages |= {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages | {"ghost"} == set(layers), "docs/architecture.md's layer table and src/ghost differ"


def upward_imports(found: list[tuple[str, str, int]], layers: dict[str, int]) -> list[str]:
    return sorted({f"{source} (layer {layers[source]}) imports {target} (layer {layers[target]})"
                   for source, target, _ in found if source != target and layers[target] >= layers[source]})


def test_every_import_points_down() -> None:
    upward = upward_imports(imports(), layers_in_doc())
    assert not upward, "imports that break the layer order:\n" + "\n".join(upward)


def test_the_check_finds_an_upward_import(monkeypatch: pytest.MonkeyPatch) -> None:
    # The probe itself: with `llm` moved above `agent` in the table, agent's imports of llm are upward.
    real = layers_in_doc()
    monkeypatch.setitem(globals(), "layers_in_doc", lambda: {**real, "llm": real["agent"] + 1})
    with pytest.raises(AssertionError, match="agent .* imports llm"):
        test_every_import_points_down()


# Each form an upward import can take, planted in `ghost.store.planted` (layer 1) or in the package
# `ghost.store` itself; every one reaches `api` (layer 6). The checker runs on the text, not the repo.
PLANTED = {
    "plain import": ("ghost.store.planted", False, "import ghost.api.chat\n"),
    "from-import": ("ghost.store.planted", False, "from ghost.api.chat import router\n"),
    "relative, in a package's __init__": ("ghost.store", True, "from .. import api\n"),
    "relative, up a level": ("ghost.store.planted", False, "from ..api import chat\n"),
    "relative, up into a module": ("ghost.store.planted", False, "from ..api.chat import router\n"),
    "a module through its package": ("ghost.store.planted", False, "from ghost import app\n"),
    "importlib.import_module": ("ghost.store.planted", False,
                                "import importlib\nchat = importlib.import_module('ghost.api.chat')\n"),
    "import_module imported by name": ("ghost.store.planted", False,
                                       "from importlib import import_module\nimport_module('ghost.api')\n"),
    "__import__": ("ghost.store.planted", False, "__import__('ghost.api.chat')\n"),
}


@pytest.mark.parametrize("form", PLANTED)
def test_the_check_finds_each_form_of_upward_import(form: str) -> None:
    importer, is_package, source = PLANTED[form]
    found = [(package_of(importer), package_of(name), line)
             for name, line in imported_modules(source, importer, is_package)]
    upward = upward_imports(found, layers_in_doc())
    target = "app" if form == "a module through its package" else "api"
    assert any(f"store (layer 1) imports {target} " in line for line in upward), (form, found)


def test_names_of_the_package_itself_stay_in_layer_0() -> None:
    # `from ghost import __version__` is the package's own name, not a module of a higher layer;
    # a relative import inside a package resolves to that package.
    assert imported_modules("from ghost import __version__\n", "ghost.api.health") == [("ghost", 1)]
    assert imported_modules("from . import db\n", "ghost.store", True) == [("ghost.store.db", 1)]
    assert imported_modules("from .db import ADMIN\n", "ghost.store.users") == [("ghost.store.db", 1)]
