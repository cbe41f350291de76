"""Write docs/architecture.md's route table from the route table in code (`ghost.api.route_table`).

    python scripts/route_table_doc.py          # rewrite the table between the markers
    python scripts/route_table_doc.py --check  # exit 1 if the doc differs from the code

`make docs` runs the first; `tests/test_route_table.py` fails when the two differ.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ghost.api.route_table import markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
BEGIN = "<!-- route table: generated from ghost.api.route_table by `make docs`; edit the code, not this -->\n"
END = "<!-- end of the generated route table -->\n"


def split(text: str) -> tuple[str, str, str]:
    """The doc before the table, the table, the doc after it."""
    head, found, rest = text.partition(BEGIN)
    table, found_end, tail = rest.partition(END)
    if not found or not found_end:
        raise SystemExit(f"{DOC.name}: the route table's markers are missing")
    return head, table, tail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report whether the doc is up to date")
    args = parser.parse_args()
    head, table, tail = split(DOC.read_text())
    if table == markdown():
        return 0
    if args.check:
        print(f"{DOC.name}'s route table differs from ghost.api.route_table: run `make docs`", file=sys.stderr)
        return 1
    DOC.write_text(head + BEGIN + markdown() + END + tail)
    print(f"rewrote the route table in {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
