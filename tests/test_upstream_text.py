"""`ghost.errors.upstream_text`: an upstream's error text without stack frames or file paths (pure)."""

from __future__ import annotations

import pytest

from ghost.errors import error_text, upstream_text

PYTHON = '''Traceback (most recent call last):
  File "/usr/lib/python3/dist-packages/llama_cpp/server/app.py", line 376, in create_chat_completion
    llama = prepare_request_resources(body, llama_proxy, body_model, kwargs)
            ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/home/svc/venv/lib/llama.py", line 20, in f
    raise ValueError("bad")

During handling of the above exception, another exception occurred:

ValueError: Model path does not exist: /models/team/smol.gguf'''


def test_a_python_traceback_keeps_only_the_exception_line() -> None:
    assert upstream_text(PYTHON) == "ValueError: Model path does not exist: <path>"


@pytest.mark.parametrize("stack,kept", [
    ("Error: boom\n    at Object.<anonymous> (/home/u/app.js:10:5)\n    at Module._compile (node:internal/x:1:14)",
     "Error: boom"),
    ("java.lang.IllegalStateException: no model\n\tat com.acme.Server.run(Server.java:42)\n\tat java.base/Thread.run",
     "java.lang.IllegalStateException: no model"),
])
def test_node_and_java_stack_lines_go(stack: str, kept: str) -> None:
    assert upstream_text(stack) == kept


def test_paths_go_but_urls_routes_and_words_stay() -> None:
    text = ("POST /v1/chat/completions failed at http://127.0.0.1:8080/v1/x (see /var/log/llama/server.log, "
            "C:\\Users\\me\\model.gguf); ratio 5/3 and/or a/b")
    assert upstream_text(text) == ("POST /v1/chat/completions failed at http://127.0.0.1:8080/v1/x (see <path>, "
                                   "<path>); ratio 5/3 and/or a/b")


def test_text_that_was_only_a_stack_says_so() -> None:
    assert upstream_text('Traceback (most recent call last):\n  File "/x/y.py", line 1, in z\n    z()') \
        == "(the upstream's error text was only a stack trace)"


def test_error_text_scrubs_an_error_object_and_a_string() -> None:
    assert error_text({"message": PYTHON, "type": "server_error"}) == "ValueError: Model path does not exist: <path>"
    assert error_text("plain words") == "plain words"
