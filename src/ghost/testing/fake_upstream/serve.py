"""The fake as a process of its own (`python -m ghost.testing.fake_upstream`), as the benches run it."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict

from ghost.testing.fake_upstream.server import DEFAULT_MODEL, FakeUpstream


def main(upstream_class: type[FakeUpstream] = FakeUpstream,
         description: str = "Scripted fake OpenAI-compatible upstream.") -> None:
    """Serve one fake upstream until interrupted (`python -m ghost.testing.fake_upstream`, or a
    subclass's script); prints its URL as JSON on the first line."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    args = parser.parse_args()
    fake = upstream_class(model=args.model).start(args.port)
    print(json.dumps({"url": fake.url, "default_reply": asdict(fake.default_reply)}), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fake.stop()
