"""Tool schemas: derived from typed Python functions, and a validator for the JSON-schema subset.

A built-in tool is an async function with type hints and a Google-style docstring:

    async def read_file(self, path: str, offset: int = 0) -> ToolResult:
        '''Read a text file.

        Args:
            path: File to read, relative to the sandbox.
            offset: Lines to skip.
        '''

`function_schema` turns it into the OpenAI parameters schema, refusing at registration any
parameter without a supported type or a description. Acquired skills bring their own schema,
checked by `check_schema` against the same subset `validate` understands — so every schema
Ghost hands the model is one it can enforce.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, Union

JSON_TYPES = {"object", "array", "string", "integer", "number", "boolean", "null"}
# Keywords that only annotate; accepted and not enforced.
ANNOTATIONS = {"title", "description", "default", "examples", "format", "$schema", "$comment"}
ENFORCED = {"type", "properties", "required", "additionalProperties", "items", "enum",
            "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems"}
MAX_DEPTH = 8
_ARG_LINE = re.compile(r"^ {4}(\w+)\s*(?:\([^)]*\))?:\s*(.*)$")


class SchemaError(ValueError):
    """A function or schema a tool cannot be built from (a programming or model error)."""


# --- from Python functions ----------------------------------------------------------------------

def function_schema(fn: Callable[..., Any]) -> tuple[str, str, dict[str, Any]]:
    """(name, description, parameters schema) of a typed, documented function."""
    doc = inspect.getdoc(fn) or ""
    description, arg_docs = _split_docstring(doc)
    if not description:
        raise SchemaError(f"{fn.__name__}: a tool needs a docstring")
    hints = typing.get_type_hints(fn)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for param in inspect.signature(fn).parameters.values():
        if param.name == "self":
            continue
        if param.name not in arg_docs:
            raise SchemaError(f"{fn.__name__}: parameter {param.name!r} is not described under Args:")
        properties[param.name] = {**type_schema(hints.get(param.name, Any), fn.__name__),
                                  "description": arg_docs[param.name]}
        if param.default is inspect.Parameter.empty:
            required.append(param.name)
        else:
            properties[param.name]["default"] = param.default
    schema = {"type": "object", "properties": properties, "required": required, "additionalProperties": False}
    return fn.__name__, description, schema


def _split_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The text before `Args:` (the description) and each argument's description."""
    head, _, args = doc.partition("\nArgs:\n")
    arg_docs: dict[str, str] = {}
    current = None
    for line in args.splitlines():
        match = _ARG_LINE.match(line)
        if match:
            current = match.group(1)
            arg_docs[current] = match.group(2).strip()
        elif current and line.startswith(" " * 8):
            arg_docs[current] += " " + line.strip()
        elif line.strip():
            break  # another section (Returns:, ...) ends the arguments
    return " ".join(head.split()), arg_docs


def type_schema(hint: Any, where: str) -> dict[str, Any]:
    if hint is Any:
        return {}
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    simple = {str: "string", int: "integer", float: "number", bool: "boolean"}
    if hint in simple:
        return {"type": simple[hint]}
    if origin is Literal:
        return {"type": "string", "enum": list(args)}
    if origin is list:
        return {"type": "array", "items": type_schema(args[0] if args else Any, where)}
    if origin is dict or hint is dict:
        return {"type": "object"}
    if origin in (Union, types.UnionType) and type(None) in args and len(args) == 2:
        inner = type_schema(next(a for a in args if a is not type(None)), where)
        return {**inner, "type": [inner["type"], "null"]} if "type" in inner else inner
    raise SchemaError(f"{where}: type {hint!r} has no JSON schema here")


# --- checking foreign schemas ---------------------------------------------------------------------

def check_schema(schema: Any, depth: int = 0) -> None:
    """Raise SchemaError unless `schema` uses only what `validate` enforces."""
    if not isinstance(schema, dict):
        raise SchemaError("a schema must be a JSON object")
    if depth > MAX_DEPTH:
        raise SchemaError(f"schema nested deeper than {MAX_DEPTH} levels")
    unknown = set(schema) - ENFORCED - ANNOTATIONS
    if unknown:
        raise SchemaError(f"unsupported schema keywords {sorted(unknown)}; use only "
                          f"{sorted(ENFORCED)} (and descriptions)")
    for name in _types_of(schema):
        if name not in JSON_TYPES:
            raise SchemaError(f"unknown type {name!r}; use one of {sorted(JSON_TYPES)}")
    properties = schema.get("properties", {})
    if not isinstance(properties, dict):
        raise SchemaError("'properties' must be an object")
    for sub in properties.values():
        check_schema(sub, depth + 1)
    if "items" in schema:
        check_schema(schema["items"], depth + 1)
    _check_keyword_shapes(schema)


def _check_keyword_shapes(schema: dict[str, Any]) -> None:
    if not isinstance(schema.get("required", []), list) or not all(
            isinstance(r, str) for r in schema.get("required", [])):
        raise SchemaError("'required' must be a list of property names")
    if not isinstance(schema.get("additionalProperties", True), bool):
        raise SchemaError("'additionalProperties' must be true or false here")
    if "enum" in schema and not isinstance(schema["enum"], list):
        raise SchemaError("'enum' must be a list")
    for key in ("minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems"):
        if key in schema and (isinstance(schema[key], bool) or not isinstance(schema[key], (int, float))):
            raise SchemaError(f"'{key}' must be a number")


def _types_of(schema: dict[str, Any]) -> list[str]:
    declared = schema.get("type", [])
    types_ = declared if isinstance(declared, list) else [declared]
    if not all(isinstance(t, str) for t in types_):
        raise SchemaError("'type' must be a string or a list of strings")
    return types_


# --- validating values ----------------------------------------------------------------------------

def validate(schema: dict[str, Any], value: Any, where: str = "arguments") -> list[str]:
    """Every way `value` breaks `schema`, as short sentences; [] when it fits."""
    declared = _types_of(schema)
    if declared and not any(_is_type(value, t) for t in declared):
        return [f"{where} must be {' or '.join(declared)}, not {_json_type(value)}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where} must be one of {schema['enum']}"]
    errors = _bounds(schema, value, where)
    if isinstance(value, dict):
        errors += _object_errors(schema, value, where)
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            errors += validate(schema["items"], item, f"{where}[{index}]")
    return errors


def _object_errors(schema: dict[str, Any], value: dict[str, Any], where: str) -> list[str]:
    properties = schema.get("properties", {})
    errors = [f"{where}: missing required field {name!r}" for name in schema.get("required", [])
              if name not in value]
    if schema.get("additionalProperties", True) is False:
        errors += [f"{where}: unknown field {name!r} (expected: {', '.join(properties) or 'none'})"
                   for name in value if name not in properties]
    for name, item in value.items():
        if name in properties:
            errors += validate(properties[name], item, f"{where}.{name}" if where != "arguments" else name)
    return errors


def _bounds(schema: dict[str, Any], value: Any, where: str) -> list[str]:
    errors = []
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{where} must be at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{where} must be at most {schema['maximum']}")
    if isinstance(value, (str, list)):
        low, high = ("minLength", "maxLength") if isinstance(value, str) else ("minItems", "maxItems")
        if low in schema and len(value) < schema[low]:
            errors.append(f"{where} must have at least {schema[low]} {'characters' if isinstance(value, str) else 'items'}")
        if high in schema and len(value) > schema[high]:
            errors.append(f"{where} must have at most {schema[high]} {'characters' if isinstance(value, str) else 'items'}")
    return errors


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return _json_type(value) == name


def _json_type(value: Any) -> str:
    for python_type, name in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
                              (list, "array"), (dict, "object"), (type(None), "null")):
        if isinstance(value, python_type):
            return name
    return type(value).__name__
