"""Tests that need something of the machine (a writable memory cgroup, a tmpfs mount) fail where it
is missing, so that a CI without it does not stay green by skipping them. A machine that cannot
give it says so explicitly:

    GHOST_TEST_OPT_OUT=memory-cgroup,tmpfs pytest     # or GHOST_TEST_OPT_OUT=all

Then those tests are skipped, and the run ends with the count of tests skipped that way.
"""

from __future__ import annotations

import os

import pytest

OPT_OUT_VARIABLE = "GHOST_TEST_OPT_OUT"
CAPABILITIES = ("memory-cgroup", "tmpfs")
OPTED_OUT = "opted out"  # the start of the skip reason, which conftest counts


def opted_out(capability: str) -> bool:
    chosen = {name.strip() for name in os.environ.get(OPT_OUT_VARIABLE, "").split(",") if name.strip()}
    unknown = chosen - {*CAPABILITIES, "all"}
    if unknown:
        pytest.fail(f"{OPT_OUT_VARIABLE} names {sorted(unknown)}; it takes {', '.join(CAPABILITIES)} or all")
    return capability in chosen or "all" in chosen


def require(capability: str, available: bool, why_missing: str) -> None:
    """Fail the test when `capability` is missing, unless the run opted out of it (then skip)."""
    assert capability in CAPABILITIES, capability
    if available:
        return
    if opted_out(capability):
        pytest.skip(f"{OPTED_OUT} ({OPT_OUT_VARIABLE}={capability}): {why_missing}")
    pytest.fail(f"{why_missing}. This test needs a {capability}; on a machine that cannot give one, "
                f"set {OPT_OUT_VARIABLE}={capability} to skip it (the run then counts the tests skipped)",
                pytrace=False)
