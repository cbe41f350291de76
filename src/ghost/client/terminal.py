"""What the `ghost` command prints: text from Ghost (model answers, tool activity, file names, error
messages) with every terminal control sequence made visible and inert.

Model text and tool output are written by whoever steered the model: a web page, a file in the
sandbox, a compromised upstream. Printed raw, their escape sequences drive the user's terminal:
`ESC[2J` clears the screen, `ESC]8;;URL ESC\\` plants a link whose text lies about its target,
`ESC]52;c;...` writes the clipboard, a carriage return or cursor movement paints a fake prompt
over real output, a DCS string talks to the terminal itself. So every control character that
could start or carry such a sequence is replaced by a visible escape before printing:

- C0 controls but newline and tab (ESC, BEL, backspace, a lone carriage return, ...) and DEL:
  `\\x1b`, `\\x07`, `\\x0d`, `\\x7f` ... (a `\\r\\n` line ending is just a newline);
- C1 controls (U+0080-U+009F; U+009B is a one-character CSI, U+009D an OSC, U+0090 a DCS):
  `\\u009b` ...;
- bidirectional overrides and isolates (U+202A-U+202E, U+2066-U+2069), which reorder what the
  line appears to say: `\\u202e` ...

With its introducer gone, what followed it (`[2J`, `]52;c;...`) is plain text: CSI, OSC, DCS,
SOS, PM and APC sequences all start with ESC or a C1 character. The client's own styling (Rich's
colours and dim text for activity) is added after this, so only it reaches the terminal.
"""

from __future__ import annotations

import re
from typing import Any

from rich.console import Console

_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}"


def neutralise(text: str) -> str:
    """`text` with every terminal control character shown as a visible escape (newline and tab kept)."""
    return _UNSAFE.sub(_visible, text.replace("\r\n", "\n"))


class SafeConsole(Console):
    """A Rich console that neutralises every string it is given to print. The client's own styling
    goes in `style=` or in `Text` objects it builds itself, which pass unchanged."""

    def print(self, *objects: Any, **kwargs: Any) -> None:  # noqa: A003 - Rich's own name
        super().print(*(neutralise(o) if isinstance(o, str) else o for o in objects), **kwargs)
