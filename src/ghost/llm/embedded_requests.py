"""What the bundled model server does to a request before llama-cpp-python sees it: refuse what
would crash the process, and name the model by its public name. Runs in the model server's
process (`ghost.llm.embedded_server`), never in Ghost's, so a user's own upstream never meets it.

Why here: any key holder reaches the bundled model through Ghost's proxy with a body of their
own, and a crash of the model server takes chat away from every user while it restarts.
llama-cpp-python 0.3.36 hands a `grammar` to llama.cpp's parser and adds the sampler it returns
to the sampling chain unchecked; a grammar that does not parse makes that sampler NULL and the
process dies of SIGSEGV at the first token. So:

- a request's `grammar` is parsed first, by llama.cpp's own parser against the model's vocabulary
  (`GrammarCheck`): one that does not parse, or nests deeper than `GRAMMAR_MAX_NESTING` (the
  parser recurses once per level, and a deep enough grammar overflows its thread's stack), gets a
  400 in the OpenAI error shape naming the field;
- token ids to detokenize must be the vocabulary's (llama.cpp aborts the process on one past it);
- any grammar Ghost's own code builds (a `response_format` schema, a tool's parameters) goes
  through the same check (`parses`), and a NULL sampler raises instead of being chained
  (`refuse_null_grammar_samplers`), so nothing that slips past the checks can reach the crash.

A request that names no model gets the model's public name (its alias): llama-cpp-python would
otherwise answer with the GGUF file's absolute path in `model`.
"""

from __future__ import annotations

import ctypes
import json
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio.to_thread
import llama_cpp.llama_cpp as llama_c
from llama_cpp import _internals

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

# The paths whose bodies carry a grammar, token ids, or a model name llama-cpp-python answers with.
DETOKENIZE_PATH = "/extras/detokenize"
CHECKED_PATHS = frozenset({"/v1/completions", "/v1/chat/completions", "/v1/embeddings", DETOKENIZE_PATH})
GRAMMAR_FIELD = "grammar"
TOKENS_FIELD = "tokens"
GRAMMAR_ROOT = b"root"
# Parentheses nested deeper than this are refused before llama.cpp parses them. A JSON schema's
# grammar nests a few levels per level of the schema; hundreds is far past any real grammar and
# far below a thread stack's worth of the parser's recursion (tens of thousands).
GRAMMAR_MAX_NESTING = 512
MAX_BODY_BYTES = 64 * 2**20  # Ghost's proxy caps bodies first; this bounds a body sent around it


class GrammarCheck:
    """Parses grammars with llama.cpp's parser against the model's vocabulary (loaded alone, no
    weights, at the first check), and knows the vocabulary's size."""

    def __init__(self, model_path: str) -> None:
        self.model_path = model_path
        self._vocab: Any = None
        self._lock = threading.Lock()

    def error(self, grammar: str) -> str | None:
        """Why `grammar` cannot be used, or None. Blocking: call it off the event loop."""
        depth = nesting(grammar)
        if depth > GRAMMAR_MAX_NESTING:
            return f"nests {depth} levels deep; at most {GRAMMAR_MAX_NESTING} are allowed"
        if "\0" in grammar:
            return "contains a NUL character"
        with self._lock:
            sampler = llama_c.llama_sampler_init_grammar(self._vocabulary(), grammar.encode("utf-8"), GRAMMAR_ROOT)
            if not sampler:
                return "does not parse as a GBNF grammar with a `root` rule"
            llama_c.llama_sampler_free(sampler)
        return None

    def vocabulary_size(self) -> int:
        with self._lock:
            return int(llama_c.llama_vocab_n_tokens(self._vocabulary()))

    def _vocabulary(self) -> Any:
        if self._vocab is None:
            params = llama_c.llama_model_default_params()
            params.vocab_only = True
            model = llama_c.llama_model_load_from_file(self.model_path.encode(), params)
            if not model:
                raise RuntimeError(f"could not load the vocabulary of {self.model_path}")
            self._vocab = llama_c.llama_model_get_vocab(model)  # kept for the process's life
        return self._vocab


def nesting(grammar: str) -> int:
    """How deep the grammar's parentheses nest, outside its string literals and character classes."""
    depth = deepest = 0
    quote: str | None = None
    escaped = False
    for ch in grammar:
        if quote is not None:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
        elif ch in "\"[":
            quote = '"' if ch == '"' else "]"
        elif ch == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == ")":
            depth = max(depth - 1, 0)
    return deepest


def refusal(path: str, request: Any, check: GrammarCheck) -> tuple[str, str] | None:
    """(the field, the error message) of a request body that must not reach llama.cpp, or None.
    Blocking: call it off the event loop."""
    if not isinstance(request, dict):
        return None
    if path == DETOKENIZE_PATH:
        why = token_error(request.get(TOKENS_FIELD), check)
        return (TOKENS_FIELD, why) if why else None
    why = grammar_error(request.get(GRAMMAR_FIELD), check)
    return (GRAMMAR_FIELD, why) if why else None


def token_error(tokens: Any, check: GrammarCheck) -> str | None:
    if not isinstance(tokens, list):
        return None  # not a list: the server's own request model refuses it
    size = check.vocabulary_size()
    # Only plain integers: the server's request model would turn 1e12 or "999999999" into one.
    bad = [t for t in tokens if type(t) is not int or not 0 <= t < size]
    return f"`{TOKENS_FIELD}` holds {json.dumps(bad[0])[:40]}, not a token id (0 to {size - 1})" if bad else None


def grammar_error(grammar: Any, check: GrammarCheck) -> str | None:
    if grammar is None or grammar == "":
        return None  # no grammar: llama-cpp-python leaves it out
    if not isinstance(grammar, str):
        return f"`{GRAMMAR_FIELD}` must be a string (a GBNF grammar)"
    why = check.error(grammar)
    return f"`{GRAMMAR_FIELD}` {why}" if why else None


def unnamed(request: Any) -> bool:
    """A request that names no model (llama-cpp-python would answer with the GGUF file's path)."""
    return isinstance(request, dict) and request.get("model") in (None, "")


def refuse_null_grammar_samplers(check: GrammarCheck) -> None:
    """Make every grammar this process samples under pass `check` first, and a NULL grammar
    sampler an error instead of a crash (the last line behind the request checks)."""
    def chain(sampler_chain: Any, grammar: Any, init: Callable[..., Any], *args: Any) -> None:
        if (why := check.error(grammar._grammar)) is not None:
            raise ValueError(f"grammar {why}")
        sampler = init(grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8"), *args)
        if not sampler:
            raise ValueError("grammar does not parse")
        llama_c.llama_sampler_chain_add(sampler_chain.sampler, sampler)

    def add_grammar(self: Any, model: Any, grammar: Any) -> None:
        chain(self, grammar, lambda text, root: llama_c.llama_sampler_init_grammar(model.vocab, text, root))

    def add_grammar_lazy_patterns(self: Any, model: Any, grammar: Any, trigger_patterns: list[str],
                                  trigger_tokens: list[int]) -> None:
        patterns = (ctypes.c_char_p * len(trigger_patterns))(*(p.encode("utf-8") for p in trigger_patterns))
        tokens = (llama_c.llama_token * len(trigger_tokens))(*trigger_tokens)
        chain(self, grammar, lambda text, root: llama_c.llama_sampler_init_grammar_lazy_patterns(
            model.vocab, text, root, patterns, len(trigger_patterns), tokens, len(trigger_tokens)))

    _internals.LlamaSampler.add_grammar = add_grammar
    _internals.LlamaSampler.add_grammar_lazy_patterns = add_grammar_lazy_patterns


def usable_grammar(check: GrammarCheck, grammar: Any, fallback: Any) -> Any:
    """`grammar` (a LlamaGrammar Ghost built, e.g. from a JSON schema) if llama.cpp can use it,
    else `fallback`."""
    return grammar if check.error(grammar._grammar) is None else fallback


class CheckedRequests:
    """ASGI middleware: a request to a `CHECKED_PATHS` path is refused (400, naming the field) or
    passed on with the model named."""


    def __init__(self, app: App, check: GrammarCheck, alias: str) -> None:
        self.app, self.check, self.alias = app, check, alias

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in CHECKED_PATHS:
            return await self.app(scope, receive, send)
        body = await read_body(receive)
        if body is None:
            return await send_error(send, 413, f"the request body is larger than {MAX_BODY_BYTES} bytes")
        try:
            request = json.loads(body)
        except (ValueError, RecursionError):
            return await self.app(*replayed(scope, receive, body), send)  # the server's own validation answers
        refused = await anyio.to_thread.run_sync(refusal, scope["path"], request, self.check)
        if refused is not None:
            return await send_error(send, 400, refused[1], param=refused[0])
        if unnamed(request):
            request["model"] = self.alias
            body = json.dumps(request).encode()
        await self.app(*replayed(scope, receive, body), send)


async def read_body(receive: Receive) -> bytes | None:
    """The whole body, or None past `MAX_BODY_BYTES`."""
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def replayed(scope: Scope, receive: Receive, body: bytes) -> tuple[Scope, Receive]:
    """The scope and receive of a request whose body was read: `body` once, then the client's own
    messages (its disconnect)."""
    headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
    scope = {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
    replayed = False

    async def replay() -> dict[str, Any]:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return scope, replay


async def send_error(send: Send, status: int, message: str, param: str | None = None) -> None:
    error: dict[str, Any] = {"message": message, "type": "invalid_request_error"}
    if param is not None:
        error["param"] = param
    body = json.dumps({"error": error}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
