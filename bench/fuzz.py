"""Schema fuzzing, the long run: schemathesis against a real Ghost's own /openapi.json.

The same harness as tests/test_fuzz.py (ghost.testing.fuzz), with as many examples as you like
and a fresh random seed each run (printed, so a run can be repeated). Ghost runs on the scripted
fake upstream with a temporary home and small upload/archive caps; nothing outside that home is
written, and it is removed at the end (unless --keep).

Run:  python bench/fuzz.py [--examples 200] [--auth key,bearer,none] [--seed N] [--only /api/chat]
                           [--open] [--rejection] [--keep]
Prints cases per operation and auth variant with the statuses seen, then every distinct problem
(5xx, undocumented status or content type, schema violation, hang) with a curl line to replay it;
exits 1 if there was any.
"""

from __future__ import annotations

import argparse
import logging
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ghost.testing.fake_upstream import FakeUpstream  # noqa: E402
from ghost.testing.fuzz import Fuzzer, answered_without_key, auths, scenarios  # noqa: E402
from ghost.testing.server import TEST_KEY, GhostServer  # noqa: E402

READ_TIMEOUT_S = 2.0
CAPS = {
    "GHOST_MAX_REQUEST_BYTES": "262144",
    "GHOST_PROXY_MAX_BODY_BYTES": "262144",
    "GHOST_UPLOAD_MAX_BYTES": "262144",
    "GHOST_WORKSPACE_SAVE_MAX_BYTES": "8388608",
    "GHOST_WORKSPACE_LOAD_MAX_BYTES": "8388608",
    "GHOST_WORKSPACE_LOAD_MAX_ENTRIES": "1000",
    "GHOST_WORKSPACE_WAIT_S": "2",
    "GHOST_READ_TIMEOUT": str(READ_TIMEOUT_S),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=200, help="per operation, generation mode and auth")
    parser.add_argument("--auth", default="key,bearer,none", help="comma-separated: key, bearer, none")
    parser.add_argument("--seed", type=int, default=None, help="default: a fresh random one")
    parser.add_argument("--only", default="", help="fuzz only operations whose 'METHOD /path' contains this")
    parser.add_argument("--open", action="store_true",
                        help="read the document as served (objects open to unknown fields: slower, "
                        "and unknown request fields get fuzzed too)")
    parser.add_argument("--rejection", action="store_true",
                        help="also require schema-invalid requests to be refused (advisory: Ghost passes "
                        "some fields to the upstream unchecked)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds before a request counts as a hang")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home (and its server log)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    home = Path(tempfile.mkdtemp(prefix="ghost-fuzz-"))
    upstream = FakeUpstream().start()
    # The fake's scripted mid-stream breaks make its uvicorn log an error each: expected here.
    logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
    try:
        with GhostServer("--upstream-url", upstream.url, home=home / "home", env=CAPS) as ghost:
            fuzzer = Fuzzer(ghost.url, max_examples=args.examples, timeout=args.timeout, seed=seed,
                            skip=lambda method, path: args.only not in f"{method} {path}")
            if args.rejection:
                from schemathesis.specs.openapi.checks import negative_data_rejection
                fuzzer.checks.append(negative_data_rejection)
            schema = fuzzer.load(closed=not args.open)
            started = time.perf_counter()
            for name in args.auth.split(","):
                fuzzer.run(schema, auths(TEST_KEY)[name.strip()])
            if not args.only:
                scenarios(fuzzer, schema, auths(TEST_KEY)["key"], upstream, upstream_timeout_s=READ_TIMEOUT_S)
            seconds = time.perf_counter() - started
            print(f"seed {seed}, {args.examples} examples per operation, mode and auth, {seconds:.0f} s")
            print(fuzzer.report.summary())
            leaks = answered_without_key(fuzzer.report, schema)
            if leaks:
                print("answered without the key:\n  " + "\n  ".join(leaks))
            failed = bool(fuzzer.report.problems or leaks)
            if failed:
                print(f"\nserver log: {ghost.log_path}" if args.keep else "\n(--keep keeps the server log)")
            return 1 if failed else 0
    finally:
        upstream.stop()
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
