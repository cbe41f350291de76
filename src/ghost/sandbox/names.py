"""File names as the model, the JSON routes and the archives see them: one escaped form.

Code in the sandbox can create any name the kernel allows: bytes that are not UTF-8
(`b'bad\\xff.txt'`), newlines, escape sequences, right-to-left overrides. Python hands such a name
to Ghost as a `str` holding lone surrogates (`surrogateescape`), which JSON and UTF-8 cannot carry,
and raw control characters would reach the model's context and terminals as they are. So every
name Ghost shows goes through `shown_name`, and every path it is given goes through `real_name`
(`ghost.sandbox.paths.split_relative` applies it to each component):

- a byte that is not part of valid UTF-8 is `\\xNN` (two lower-case hex digits);
- an ASCII control character (0x00-0x1F, 0x7F) is `\\xNN` too (the same byte);
- a backslash is `\\x5c` (so a backslash always starts an escape);
- a C1 control (U+0080-U+009F), a line or paragraph separator and the bidirectional controls
  (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069) are `\\uXXXX`;
- everything else, any printable character of any script, is itself: an ordinary name looks
  unchanged.

`real_name(shown_name(n)) == n` for every name the kernel allows, and `shown_name(real_name(s))
== s` for every escaped form `shown_name` makes. In a path given to Ghost, a backslash that does
not start `\\xNN` or `\\uXXXX` is refused, and an escape cannot stand for `/` or NUL.
"""

from __future__ import annotations

import re

from ghost.errors import UnsafePath

_BIDI = frozenset({0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)})
_ESCAPE = re.compile(r"\\(?:x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4}))")
# Quick test: a name with none of these characters is shown as it is.
_NEEDS_ESCAPE = re.compile("[\x00-\x1f\x7f-\x9f\\\\\u2028\u2029\ud800-\udfff"
                           + "".join(chr(c) for c in sorted(_BIDI)) + "]")


def _escape_char(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the undecodable byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x80:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def shown_name(name: str) -> str:
    """The escaped form of one file name (or of a link's target)."""
    if _NEEDS_ESCAPE.search(name) is None:
        return name
    return _NEEDS_ESCAPE.sub(lambda match: _escape_char(match.group()), name)


def shown_path(parts: list[str] | tuple[str, ...]) -> str:
    """A path below the sandbox, each component escaped, joined with '/'; '.' for none."""
    return "/".join(shown_name(part) for part in parts) or "."


def _unescape(match: re.Match[str]) -> str:
    byte, code = match.group(1), match.group(2)
    if byte is not None:
        value = int(byte, 16)
        return chr(value) if value < 0x80 else chr(0xDC00 + value)  # a raw byte, as os.fsdecode gives it
    return chr(int(code, 16))


def real_name(component: str) -> str:
    """The file name one component of a given path stands for (escapes undone)."""
    if "\\" not in component:
        return component
    if "\\" in _ESCAPE.sub("", component):
        raise UnsafePath("path contains a backslash that starts no escape: a backslash in a name is "
                         "written \\x5c, and '/' is the separator")
    name = _ESCAPE.sub(_unescape, component)
    if "/" in name or "\x00" in name:
        raise UnsafePath("an escape in a path cannot stand for '/' or NUL")
    return name
