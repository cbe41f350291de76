"""The bundled model server's error bodies as the proxy scrubs them (`ghost.api.proxy.scrub`); end
to end with the real bundled model in tests/test_embedded.py."""

from __future__ import annotations

import json

from ghost.api.proxy.scrub import scrubbed_body

TRACE = 'Traceback (most recent call last):\n  File "/opt/v/app.py", line 9, in f\n    g()\nValueError: bad /opt/v/m.gguf'


def test_every_string_of_a_json_body_is_scrubbed_and_the_shape_kept() -> None:
    body = json.dumps({"error": {"message": TRACE, "type": "internal_server_error", "param": None, "code": 7},
                       "detail": [{"loc": ["body", "input"], "msg": TRACE}]}).encode()
    text, content_type = scrubbed_body(body)
    assert content_type == b"application/json"
    out = json.loads(text)
    assert out == {"error": {"message": "ValueError: bad <path>", "type": "internal_server_error", "param": None,
                             "code": 7}, "detail": [{"loc": ["body", "input"], "msg": "ValueError: bad <path>"}]}


def test_a_body_that_is_not_json_is_scrubbed_as_text() -> None:
    text, content_type = scrubbed_body(TRACE.encode() + b"\xff")
    assert content_type.startswith(b"text/plain") and text.decode().startswith("ValueError: bad <path>")
    assert b"/opt/v" not in text


def test_json_nested_too_deep_is_scrubbed_as_text_not_walked() -> None:
    deep = b"[" * 5000 + json.dumps(TRACE).encode() + b"]" * 5000
    text, content_type = scrubbed_body(deep)
    assert content_type.startswith(b"text/plain") and b"/opt/v" not in text and b'File "' not in text
