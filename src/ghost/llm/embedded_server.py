"""The bundled model server: llama-cpp-python's OpenAI-compatible server, with a chat handler of
Ghost's own for tool calls. Runs in the model server's process, never in Ghost's:

    python -m ghost.llm.embedded_server --model FILE --chat_format ghost-tools [server options]

Why not llama-cpp-python's `chatml-function-calling` as it is (checked with 0.3.x against
Ghost's agent, which streams every reply and sends its tools on every round):
- with tools but no `tool_choice` it leaves the tools out of the prompt (OpenAI's default is "auto");
- with "auto", a plain answer comes out empty (the answer is generated under the tool-name grammar),
  a streamed request that picks a tool fails ("Automatic streaming tool choice is not supported"),
  and `max_tokens` is ignored.
The handler here keeps its idea — ChatML, the reply's opening and the tool arguments generated
under grammars (see ghost.llm.toolcalls) — and answers as an OpenAI server would, streamed or not.
Its request model also refuses `content: null` on an assistant message that carries tool calls
(valid OpenAI, and what an agent sends back on its next round); `NullContentAsEmpty` fixes that
on the way in.

Structured output: the stock server's request model knows OpenAI's `json_object` but not
`json_schema` (a 500 quoting its own traceback); `adapted_chat_body` rewrites a `json_schema`
format into the `json_object` + `schema` form it takes, and `handle_chat` generates the answer
(never the tool choice) under that schema's grammar. Embeddings: the model is loaded with
`--embedding True`, which llama-cpp-python 0.3.36 allows beside generation (same tokens out; the
cost is in `bench/embedded_embeddings.py`); a model whose GGUF names no pooling (a chat model such
as SmolLM2 would give one vector per token) is mean-pooled (`pool_by_mean_unless_declared`).

Three more things the stock server does not do:
- it answers only Ghost: the key Ghost generated, its loopback Host, no CORS
  (`ghost.llm.embedded_gate`);
- llama.cpp's extra buffer types (weights repacked for AMX and other CPU-specific kernels) are off
  unless `--ghost_extra_buffers True`: on CPUs with AMX, a batched decode of the repacked weights
  crashes inside `llama_decode` (llama-cpp-python 0.3.36). llama-cpp-python has no option for the
  `use_extra_bufts` field of `llama_model_params`, so `load_with_extra_buffers` sets it on the
  parameters `Llama` asks llama.cpp for. `GET /ghost/status` reports what the model was loaded with.
- a chat request without `max_tokens` gets `--ghost_max_tokens` (llama.cpp's default is "until
  the context is full": minutes, for a small model that does not stop).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import uvicorn
import llama_cpp
import llama_cpp.llama_cpp as llama_c
from llama_cpp import Llama, llama_chat_format
from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar
from llama_cpp.server.app import create_app
from llama_cpp.server.cli import add_args_from_model, parse_model_from_args
from llama_cpp.server.settings import ModelSettings, ServerSettings, Settings

from ghost.llm.embedded_gate import KEY_ENV, GhostOnly
from ghost.llm.embedded_requests import CheckedRequests, GrammarCheck, refuse_null_grammar_samplers, usable_grammar
from ghost.llm.gguf import GGUFError, read_metadata
from ghost.llm.toolcalls import (CALL, END, MESSAGE, Reply, chosen_tool, forced_tool, opening_grammar,
                                 render_prompt, repeats_a_call, tool_by_name, tool_rounds_since_user, usage_of)

CHAT_FORMAT = "ghost-tools"
OPENING_MAX_TOKENS = 32  # `functions.<a long tool name>:` fits
ARGUMENTS_MAX_TOKENS = 1024  # floor for tool arguments (a file's content can be long)
# Tool rounds the model may take for one user message before it must answer; set by main() from
# --ghost_tool_rounds. A small model tends to call tools forever when always offered them.
TOOL_ROUNDS = 1
MAX_TOKENS = 512  # for a chat request that sets none; set by main() from --ghost_max_tokens
# llama.cpp's grammar parser on the model's vocabulary (ghost.llm.embedded_requests); set by main()
GRAMMARS: GrammarCheck | None = None
# The llama_model_params handed out while the model loads (Llama keeps and loads with that very
# struct): read back by GET /ghost/status, so a test sees what llama.cpp was really given.
LOADED_PARAMS: list[Any] = []
SAMPLING = ("temperature", "top_p", "top_k", "min_p", "typical_p", "presence_penalty", "frequency_penalty",
            "repeat_penalty", "tfs_z", "mirostat_mode", "mirostat_tau", "mirostat_eta", "seed",
            "logit_bias", "logits_processor")


def schema_grammar(schema: dict[str, Any]) -> LlamaGrammar:
    """The grammar of a JSON schema; any JSON's for a schema llama.cpp's converter does not handle
    or whose grammar its parser refuses (a `pattern` it cannot translate: sampling under it would
    crash the process)."""
    any_json = LlamaGrammar.from_string(JSON_GBNF, verbose=False)
    try:
        grammar = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
    except Exception:  # noqa: BLE001 - the converter raises anything from AssertionError to KeyError
        return any_json
    return usable_grammar(GRAMMARS, grammar, any_json) if GRAMMARS is not None else grammar


def arguments_grammar(tool: dict[str, Any]) -> LlamaGrammar:
    return schema_grammar((tool.get("function") or {}).get("parameters") or {"type": "object"})


def _stops(stop: Any) -> list[str]:
    extra = [stop] if isinstance(stop, str) else list(stop or [])
    return [END, *extra]


def handle_chat(llama: Llama, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
                tool_choice: Any = None, stream: bool = False, max_tokens: int | None = None,
                stop: Any = None, **kwargs: Any) -> dict[str, Any] | Iterator[dict[str, Any]]:
    """The chat handler llama-cpp-python calls (registered as `ghost-tools`)."""
    # The client's own value wins; "no limit" (Ollama's num_predict -1 arrives as max_tokens -1,
    # which llama.cpp reads as "until the context is full") gets the default too.
    max_tokens = MAX_TOKENS if max_tokens is None or max_tokens <= 0 else max_tokens
    turn = ChatTurn(llama, stream, max_tokens, _stops(stop), {k: kwargs[k] for k in SAMPLING if kwargs.get(k) is not None},
                    answer_grammar=format_grammar(kwargs.get("response_format")))
    tools = [] if tool_choice == "none" else list(tools or [])
    prompt = render_prompt(messages, tools)
    name = forced_tool(tool_choice)
    if name is None and tools and (tool_choice == "required" or tool_rounds_since_user(messages) < TOOL_ROUNDS):
        name = turn.choose(prompt, tools, allow_message=tool_choice != "required")
    tool = tool_by_name(tools, name) if name else None
    if tool is not None:
        call = turn.arguments(f"{prompt}{CALL}{name}:\n", tool)
        if not repeats_a_call(messages, call["function"]):  # small models loop on one call
            return turn.tool_reply(call)
    return turn.answer(f"{prompt}{MESSAGE}\n" if tools else prompt)


class ChatTurn:
    """The llama.cpp calls of one chat request, and the reply they make."""

    def __init__(self, llama: Llama, stream: bool, max_tokens: int | None, stops: list[str],
                 sampling: dict[str, Any], answer_grammar: LlamaGrammar | None = None) -> None:
        self.llama, self.stream, self.max_tokens, self.stops, self.sampling = llama, stream, max_tokens, stops, sampling
        # the answer's own grammar (a response_format); tool choice and arguments keep theirs
        self.answer_sampling = {**sampling, "grammar": answer_grammar} if answer_grammar is not None else sampling
        self.reply = Reply(Path(llama.model_path).stem)
        self.steps: list[dict[str, Any]] = []

    def _complete(self, **kwargs: Any) -> dict[str, Any]:
        self.steps.append(self.llama.create_completion(stream=False, **kwargs))
        return self.steps[-1]

    def choose(self, prompt: str, tools: list[dict[str, Any]], allow_message: bool) -> str | None:
        """The tool the model opens its reply with, or None for an answer (greedy: no dice here)."""
        names = [t["function"]["name"] for t in tools]
        grammar = LlamaGrammar.from_string(opening_grammar(names, allow_message), verbose=False)
        opening = self._complete(prompt=prompt, max_tokens=OPENING_MAX_TOKENS, temperature=0, grammar=grammar)
        return chosen_tool(opening["choices"][0]["text"])

    def arguments(self, prompt: str, tool: dict[str, Any]) -> dict[str, Any]:
        done = self._complete(prompt=prompt, max_tokens=max(self.max_tokens or 0, ARGUMENTS_MAX_TOKENS),
                              grammar=arguments_grammar(tool), **self.sampling)
        return self.reply.tool_call(tool["function"]["name"], done["choices"][0]["text"].strip())

    def tool_reply(self, call: dict[str, Any]) -> dict[str, Any] | Iterator[dict[str, Any]]:
        if self.stream:
            return self.reply.stream_tool_call(call, usage_of(*self.steps))
        message = {"role": "assistant", "content": None, "tool_calls": [call]}
        return self.reply.completion(message, "tool_calls", usage_of(*self.steps))

    def answer(self, prompt: str) -> dict[str, Any] | Iterator[dict[str, Any]]:
        if self.stream:
            # The usage a streamed reply ends with (llama.cpp's streamed completion has none).
            prompt_tokens = len(self.llama.tokenize(prompt.encode(), special=True))
            earlier = usage_of(*self.steps)["completion_tokens"] if self.steps else 0
            return self.reply.stream_text(self.llama.create_completion(
                prompt=prompt, max_tokens=self.max_tokens, stop=self.stops, stream=True, **self.answer_sampling),
                prompt_tokens, earlier)
        done = self._complete(prompt=prompt, max_tokens=self.max_tokens, stop=self.stops, **self.answer_sampling)
        choice = done["choices"][0]
        message = {"role": "assistant", "content": choice["text"].lstrip("\r\n")}
        return self.reply.completion(message, choice.get("finish_reason") or "stop", usage_of(*self.steps))


# --- the server ------------------------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
CHAT_PATH = "/v1/chat/completions"
STATUS_PATH = "/ghost/status"


def format_grammar(response_format: Any) -> LlamaGrammar | None:
    """The grammar a `response_format` (as the server's request model passed it) puts the answer
    under: a schema's, else any JSON object's; None for text."""
    if not isinstance(response_format, dict) or response_format.get("type") != "json_object":
        return None
    schema = response_format.get("schema")
    if isinstance(schema, dict) and schema:
        return schema_grammar(schema)
    return LlamaGrammar.from_string(JSON_GBNF, verbose=False)


def schema_format(response_format: Any) -> Any:
    """OpenAI's `{"type": "json_schema", "json_schema": {"schema": ...}}` in the server's
    `{"type": "json_object", "schema": ...}` form; any other value as it is."""
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return response_format
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    return {"type": "json_object", **({"schema": schema} if isinstance(schema, dict) else {})}


def adapted_chat_body(body: bytes) -> bytes:
    """A chat request as the stock server's request model takes it: `content: null` on an assistant
    message as "", a `json_schema` response format in its `json_object` + `schema` form."""
    try:
        request = json.loads(body)
        messages = request["messages"]
    except (ValueError, KeyError, TypeError):
        return body  # not ours to judge: the server's own validation answers
    for message in messages if isinstance(messages, list) else []:
        if isinstance(message, dict) and message.get("role") == "assistant" and message.get("content") is None:
            message["content"] = ""
    if isinstance(request, dict) and "response_format" in request:
        request["response_format"] = schema_format(request["response_format"])
    return json.dumps(request).encode()


null_content_as_empty = adapted_chat_body  # its first job, under the name the tests know


class NullContentAsEmpty:
    """ASGI middleware: chat requests reach the server as `adapted_chat_body` makes them."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == STATUS_PATH:
            return await _send_json(send, load_status())
        if scope["type"] != "http" or scope["path"] != CHAT_PATH or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        body = adapted_chat_body(await _read_body(receive))
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
        scope = {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()  # from here on: the client's disconnect, as usual
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _read_body(receive: Receive) -> bytes:
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _send_json(send: Send, data: dict[str, Any]) -> None:
    body = json.dumps(data).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def load_status() -> dict[str, Any]:
    params = LOADED_PARAMS[-1] if LOADED_PARAMS else None
    return {"model_loaded": params is not None,
            "extra_buffers": bool(params.use_extra_bufts) if params is not None else None,
            "max_tokens": MAX_TOKENS, "tool_rounds": TOOL_ROUNDS}


def load_with_extra_buffers(enabled: bool) -> None:
    """Make every model this process loads use (or not) llama.cpp's extra buffer types."""
    default_params = llama_c.llama_model_default_params

    def model_params() -> Any:
        params = default_params()
        params.use_extra_bufts = enabled
        LOADED_PARAMS.append(params)
        return params

    llama_c.llama_model_default_params = model_params


def declared_pooling(model_path: str) -> int | None:
    """The pooling type the GGUF file names (`<architecture>.pooling_type`), or None."""
    try:
        metadata = read_metadata(Path(model_path))
    except (OSError, GGUFError):
        return None
    value = metadata.get(f"{metadata.get('general.architecture')}.pooling_type")
    return value if isinstance(value, int) else None


def pool_by_mean_unless_declared() -> None:
    """Models this process loads pool their embeddings by mean unless their file names a pooling.

    A chat model names none, and llama.cpp then returns one vector per token, which is not what
    `/v1/embeddings` answers. llama-cpp-python's server has no pooling option, so the `Llama` it
    constructs gets the default here (as `load_with_extra_buffers` does for the model parameters)."""
    base = llama_cpp.Llama

    class MeanPooled(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if "pooling_type" not in kwargs and declared_pooling(str(kwargs.get("model_path", ""))) is None:
                kwargs["pooling_type"] = llama_c.LLAMA_POOLING_TYPE_MEAN
            super().__init__(*args, **kwargs)

    llama_cpp.Llama = MeanPooled


def _flag(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError("expected True or False")
    return text.lower() == "true"


def main() -> None:
    global TOOL_ROUNDS, MAX_TOKENS, GRAMMARS
    llama_chat_format.register_chat_completion_handler(CHAT_FORMAT)(handle_chat)
    parser = argparse.ArgumentParser(description="Ghost's bundled model server (llama-cpp-python).")
    add_args_from_model(parser, Settings)
    parser.add_argument("--ghost_tool_rounds", type=int, default=TOOL_ROUNDS)
    parser.add_argument("--ghost_max_tokens", type=int, default=MAX_TOKENS)
    parser.add_argument("--ghost_extra_buffers", type=_flag, default=False)
    args = parser.parse_args()
    key = os.environ.pop(KEY_ENV, "")  # out of the environment that llama.cpp and its children see
    TOOL_ROUNDS, MAX_TOKENS = args.ghost_tool_rounds, args.ghost_max_tokens
    load_with_extra_buffers(args.ghost_extra_buffers)
    pool_by_mean_unless_declared()
    print(f"ghost: loading the model with llama.cpp's extra buffer types "
          f"{'on' if args.ghost_extra_buffers else 'off'}", flush=True)
    server: ServerSettings = parse_model_from_args(ServerSettings, args)
    model: ModelSettings = parse_model_from_args(ModelSettings, args)
    GRAMMARS = GrammarCheck(model.model)
    refuse_null_grammar_samplers(GRAMMARS)
    app = create_app(server_settings=server, model_settings=[model])
    checked = CheckedRequests(NullContentAsEmpty(app), GRAMMARS, model.model_alias or Path(model.model).stem)
    uvicorn.run(GhostOnly(checked, key, server.port), host=server.host, port=server.port, log_level="info")


if __name__ == "__main__":
    main()
