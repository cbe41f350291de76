"""The server process's heap after start: its long-lived objects set aside from the collector.

A started Ghost holds ~150,000 objects that live as long as the process (modules, routes, schemas,
services). Python's full collection walks all of them, ~100–150 ms each time on a loaded machine,
and full collections come sooner when a turn's objects outlive a collection or two (a traced turn's
spans wait seconds in the exporter's queue). Frozen once at start (`gc.freeze`), they are never
walked again: a full collection then costs what the objects made since start cost.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Collect the garbage of the start, then freeze what survives. Only for the server process:
    whatever is frozen is never collected, so a process that builds many apps (tests) would keep
    every one of them."""
    gc.collect()
    gc.freeze()
