"""The guard-removal check: take each guard out of a copy of Ghost's source, run the tests named
for it, and report which removals no test noticed.

    python tests/guards/run.py                 # every guard (`make guards`)
    python tests/guards/run.py -k zip          # only guards whose name contains "zip"
    python tests/guards/run.py --proofs        # the honest-test proofs instead (see guards.py)
    python tests/guards/run.py --check         # only check that every snippet is still found
    python tests/guards/run.py --each          # each named test alone: every one must notice
    python tests/guards/run.py --rotate N --size K   # K entries, a slice that moves on with N (CI)

For each entry of `guards.GUARDS` the source tree (`src/`) is copied to a temporary folder, the
entry's edit is applied there, and pytest runs the entry's node ids with `PYTHONPATH` pointing at
the copy (the tests start Ghost as `python -m ghost`, and `clean_env` keeps `PYTHONPATH`, so the
servers run the edited copy too). A removal is *noticed* when those tests fail. Before any edit, the
union of all named tests runs once on the untouched source: they must pass there, or a failure
would prove nothing. An edit whose snippet is no longer found (or found twice) stops the run at
once, so the list cannot rot silently when the code moves on.

Exit status: 0 when every removal was noticed, 1 when one was not, 2 when the list or the
baseline is broken. `--report FILE` writes the table as Markdown.
"""

from __future__ import annotations

import argparse
import builtins
import os
import re
import shutil
import subprocess
import symtable
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from guards import GUARDS, PROOFS, Removal  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "src"
PER_REMOVAL_TIMEOUT_S = 1800
# pytest-timeout, thread method (it works even when the main thread is stuck in C): a test that
# hangs without its guard ends the run with a failure and a stack dump, instead of blocking it.
PER_TEST_TIMEOUT_S = 300
_FAILED = re.compile(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$", re.MULTILINE)
_FAILURE_LINE = re.compile(r"^E +(\S.*)$", re.MULTILINE)


class ListRotted(Exception):
    """An entry's snippet is not in its file exactly once: the entry must be brought up to date."""


@dataclass(frozen=True)
class Outcome:
    removal: Removal
    noticed: bool
    detail: str  # the first failing test, or why nothing was noticed
    seconds: float
    failure: str = ""  # the first failure line pytest printed: what the tests saw go wrong


def edited(removal: Removal, text: str, old: str, new: str) -> str:
    count = text.count(old)
    if count != 1:
        where = "not found" if count == 0 else f"found {count} times"
        raise ListRotted(f"{removal.name}: the snippet is {where} in its file:\n{old}")
    return text.replace(old, new)


def check_list(removals: list[Removal]) -> None:
    for removal in removals:
        after: dict[str, str] = {}
        for file, old, new in removal.edits():
            after[file] = edited(removal, after.get(file) or (SOURCE / "ghost" / file).read_text(), old, new)
        for file, text in after.items():
            check_still_runs(removal, file, (SOURCE / "ghost" / file).read_text(), text)
        if not removal.tests:
            raise ListRotted(f"{removal.name}: no tests named")


def check_still_runs(removal: Removal, file: str, before: str, after: str) -> None:
    """An edit must take the guard out, not break the file: one that uses a name the file never
    imports (say `shutil`) fails at its first call, and the tests then notice an error, not the
    missing guard."""
    try:
        new_names = undefined_names(after, file) - undefined_names(before, file)
    except SyntaxError as exc:
        raise ListRotted(f"{removal.name}: the edited {file} does not compile: {exc}") from None
    if new_names:
        raise ListRotted(f"{removal.name}: the edit uses {', '.join(sorted(new_names))}, "
                         f"which {file} never defines or imports")


def undefined_names(text: str, file: str) -> set[str]:
    """Module-level names the code reads that it neither assigns, imports nor gets from builtins."""
    module = symtable.symtable(text, file, "exec")
    known = {s.get_name() for s in module.get_symbols() if s.is_assigned() or s.is_imported()}
    known |= set(dir(builtins))
    missing: set[str] = set()
    tables = [module]
    while tables:
        table = tables.pop()
        missing |= {s.get_name() for s in table.get_symbols() if s.is_referenced()
                    and (table is module or s.is_global()) and s.get_name() not in known}
        tables += table.get_children()
    return missing


def copy_with(removal: Removal | None, into: Path) -> Path:
    """A copy of src/ with `removal` applied; returns the folder to put on PYTHONPATH."""
    target = into / "src"
    shutil.copytree(SOURCE, target, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for file, old, new in removal.edits() if removal is not None else []:
        path = target / "ghost" / file
        path.write_text(edited(removal, path.read_text(), old, new))
    return target


def run_tests(source: Path, tests: tuple[str, ...], log: Path) -> tuple[int, str]:
    """pytest on `tests` against the source at `source`: (exit status, its output)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(source), os.environ.get("PYTHONPATH")])),
           "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "400"}  # wide: pytest cuts summary lines to fit
    _check_import(source, env)
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-rfE",
               f"--timeout={PER_TEST_TIMEOUT_S}", "--timeout-method=thread", *_skip_plugins(tests), *tests]
    try:
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, errors="replace",
                              timeout=PER_REMOVAL_TIMEOUT_S)
        status, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        status, output = -1, f"timed out after {PER_REMOVAL_TIMEOUT_S} s\n{exc.stdout or ''}"
    log.write_text(output)
    return status, output


def _skip_plugins(tests: tuple[str, ...]) -> list[str]:
    """schemathesis' pytest plugin costs seconds of imports per run; only the fuzz tests need it."""
    return [] if any("test_fuzz" in test for test in tests) else ["-p", "no:schemathesis"]


def _check_import(source: Path, env: dict[str, str]) -> None:
    """The copy, not the installed tree, must be what `import ghost` finds."""
    found = subprocess.run([sys.executable, "-c", "import ghost; print(ghost.__file__)"], env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    if not Path(found).resolve().is_relative_to(source.resolve()):
        raise RuntimeError(f"`import ghost` finds {found}, not the edited copy under {source}")


def try_removal(removal: Removal, scratch: Path) -> Outcome:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=scratch) as folder:
        source = copy_with(removal, Path(folder))
        status, output = run_tests(source, removal.tests, scratch / f"{_slug(removal.name)}.log")
    seconds = time.monotonic() - started
    if status == 1:  # tests ran and failed
        failed = _FAILED.findall(output)
        return Outcome(removal, True, f"`{failed[0]}`" if failed else "a test failed", seconds,
                       first_failure(output))
    why = {0: "all named tests passed", -1: "timed out"}.get(status, f"pytest exit status {status} (not a test failure)")
    return Outcome(removal, False, why, seconds)


def first_failure(output: str) -> str:
    """pytest's first `E` line, printable and short. Printed under each noticed removal: a test can
    fail on a side effect of the edit (an error, a missed phase) rather than on the harm the guard
    prevents, and only this line tells the two apart."""
    found = _FAILURE_LINE.search(output)
    text = found.group(1) if found else ""
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= 160 else text[:157] + "..."


def try_each(removal: Removal, scratch: Path) -> Outcome:
    """Every named test alone against the removal: a test that passes without the guard does not
    guard it, and is named in the outcome."""
    started = time.monotonic()
    passed = []
    with tempfile.TemporaryDirectory(dir=scratch) as folder:
        source = copy_with(removal, Path(folder))
        for number, test in enumerate(removal.tests):
            status, _ = run_tests(source, (test,), scratch / f"{_slug(removal.name)}-{number}.log")
            if status != 1:
                passed.append(test)
    seconds = time.monotonic() - started
    if passed:
        return Outcome(removal, False, "not noticed by " + ", ".join(f"`{t}`" for t in passed), seconds)
    return Outcome(removal, True, f"each of the {len(removal.tests)} named tests", seconds)


def rotation_slice(removals: list[Removal], turn: int, size: int) -> list[Removal]:
    """`size` entries, starting `turn * size` entries into the list (wrapping): consecutive turns
    (e.g. CI runs numbered by commit) take consecutive slices, so every entry runs in turn."""
    if not removals or size >= len(removals):
        return removals
    start = turn * size % len(removals)
    return [removals[(start + i) % len(removals)] for i in range(size)]


def commit_turn() -> int:
    """A number that changes with every commit: the commit count where the clone has the history
    (consecutive commits check consecutive slices), else the commit's hash (a shallow CI clone);
    without git, the day."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    try:
        if git("rev-parse", "--is-shallow-repository") == "false":
            return int(git("rev-list", "--count", "HEAD"))
        return int(git("rev-parse", "HEAD")[:12], 16)
    except (OSError, subprocess.CalledProcessError, ValueError):
        return int(time.time() // 86400)


def baseline(removals: list[Removal], scratch: Path) -> None:
    """Every named test must pass on the untouched source, or its failing later proves nothing."""
    tests = tuple(dict.fromkeys(test for removal in removals for test in removal.tests))
    with tempfile.TemporaryDirectory(dir=scratch) as folder:
        status, output = run_tests(copy_with(None, Path(folder)), tests, scratch / "baseline.log")
    if status != 0:
        print(output[-4000:])
        raise SystemExit(f"the named tests do not pass on the untouched source (exit {status}); fix that first")
    print(f"baseline: {len(tests)} named tests pass on the untouched source")


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def table(outcomes: list[Outcome]) -> str:
    lines = ["| guard removed | what the edit does | tests run | noticed? | by |", "|---|---|---|---|---|"]
    for o in outcomes:
        tests = ", ".join(f"`{t.removeprefix('tests/')}`" for t in o.removal.tests)
        verdict = "yes" if o.noticed else "**NO**"
        lines.append(f"| {o.removal.name} | {o.removal.why} | {tests} | {verdict} | {o.detail} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", dest="match", default="", help="only entries whose name contains this")
    parser.add_argument("--proofs", action="store_true", help="run the honest-test proofs, not the guards")
    parser.add_argument("--check", action="store_true", help="only check that every snippet is found")
    parser.add_argument("--no-baseline", action="store_true", help="skip the run on the untouched source")
    parser.add_argument("--report", type=Path, help="also write the table to this Markdown file")
    parser.add_argument("--shard", default="1/1", help="I/N: only every N-th entry from the I-th (to run "
                        "N processes side by side)")
    parser.add_argument("--each", action="store_true", help="run each named test alone; report tests that "
                        "pass without their guard")
    parser.add_argument("--rotate", metavar="N|commit", help="only the N-th slice of --size entries (wraps "
                        "around); `commit`: N from the checked-out commit, so each commit checks another slice")
    parser.add_argument("--size", type=int, default=8, help="entries in a --rotate slice")
    args = parser.parse_args()
    index, count = (int(n) for n in args.shard.split("/"))
    removals = [r for r in (PROOFS if args.proofs else GUARDS) if args.match.lower() in r.name.lower()]
    removals = removals[index - 1::count]
    if args.rotate is not None:
        turn = commit_turn() if args.rotate == "commit" else int(args.rotate)
        removals = rotation_slice(removals, turn, args.size)
    try:
        check_list(removals)
    except ListRotted as exc:
        print(f"the list is out of date: {exc}", file=sys.stderr)
        return 2
    print(f"{len(removals)} entries, every snippet found once: {', '.join(r.name for r in removals)}"
          if args.rotate is not None else f"{len(removals)} entries, every snippet found once")
    if args.check or not removals:
        return 0
    scratch = Path(tempfile.mkdtemp(prefix="ghost-guards-"))
    if not args.no_baseline:
        baseline(removals, scratch)
    outcomes = []
    for removal in removals:
        outcome = (try_each if args.each else try_removal)(removal, scratch)
        print(f"{'noticed    ' if outcome.noticed else 'NOT NOTICED'}  {removal.name}  "
              f"({outcome.detail}, {outcome.seconds:.0f} s)", flush=True)
        if outcome.failure:
            print(f"             it saw: {outcome.failure}", flush=True)
        outcomes.append(outcome)
    report = table(outcomes)
    print("\n" + report)
    print(f"\npytest logs: {scratch}")
    if args.report:
        args.report.write_text(report + "\n")
    missed = [o for o in outcomes if not o.noticed]
    print(f"\n{len(outcomes) - len(missed)} of {len(outcomes)} removals noticed")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
