"""`ghost serve` freezes its start-up heap: the objects alive at start leave the collector's
generations, and what is made later is still collected."""

from __future__ import annotations

import subprocess
import sys

from ghost.testing.server import clean_env

PROBE = """
import gc, weakref
from ghost.app import create_app
from ghost.config import Settings
from ghost.heap import freeze_startup_heap

class Node: pass
before = gc.get_freeze_count()
freeze_startup_heap()
frozen = gc.get_freeze_count()
node = Node(); node.self = node  # a cycle made after the freeze: only the collector frees it
ref = weakref.ref(node); del node
gc.collect()
print(before, frozen, ref() is None)
"""


def test_the_startup_heap_is_frozen_and_later_garbage_still_collected() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120,
                         env=clean_env(), check=True).stdout.split()
    before, frozen, collected = int(out[0]), int(out[1]), out[2]
    assert before == 0 and frozen > 10_000  # Ghost's modules alone are tens of thousands of objects
    assert collected == "True"

