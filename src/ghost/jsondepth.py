"""How deep a JSON text nests, found before parsing it, at the speed of a few regex passes.

Python's json parser recurses once per level: 50,000 nested brackets raise RecursionError (a 500),
and a few thousand parse but then break whatever walks the result (validation, re-encoding).
`too_deep` answers without recursion and without building anything: string literals are cut out
(a bracket inside a string is text), everything but brackets is dropped, braces become square
brackets (depth does not care which kind; a mismatch is the parser's business), and then the
innermost pairs `[]` are removed pass by pass with `bytes.replace`, each pass taking exactly one
level off every branch. Regex substitution with millions of matches is far too slow for this.

`nests_deeper` answers the same question of a value already parsed, walking its containers level
by level (no recursion): much cheaper than `too_deep` when the text is mostly strings (a chat's
messages), since it looks at containers, never at characters. Parsing first is safe because
Python's parser raises RecursionError past the recursion limit rather than crashing; a text that
nests that deep is measured by `too_deep` instead.
"""

from __future__ import annotations

import re
from typing import Any

# A JSON string literal, escapes included, written so the regex engine never backtracks.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_BRACES_AS_SQUARE = bytes.maketrans(b"{}", b"[]")


def too_deep(text: bytes, limit: int) -> bool:
    """True if `text` nests arrays/objects more than `limit` levels deep.

    Malformed JSON is left to the parser (False), unless it already nests too deep.
    """
    if text.count(b"[") + text.count(b"{") <= limit:  # the usual case: nothing to look at
        return False
    brackets = _STRING.sub(b"", text).translate(_BRACES_AS_SQUARE, _NOT_BRACKET)
    run = b"[" * (limit + 1)
    for _ in range(limit + 1):
        if run in brackets:  # the common attack ([[[[...) ends here, in one pass
            return True
        stripped = brackets.replace(b"[]", b"")
        if not stripped or stripped == brackets:  # all matched, or mismatched: the parser decides
            return False
        brackets = stripped
    return True


def nests_deeper(value: Any, limit: int) -> bool:
    """True if the parsed JSON `value` nests arrays/objects more than `limit` levels deep."""
    level = [value] if type(value) is dict or type(value) is list else []
    for _ in range(limit):
        level = [child for node in level for child in (node.values() if type(node) is dict else node)
                 if type(child) is dict or type(child) is list]
        if not level:
            return False
    return bool(level)
