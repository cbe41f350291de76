"""The bundled model's tool-call protocol (ghost.llm.toolcalls) and its chat handler
(ghost.llm.embedded_server), driven by a scripted stand-in for llama.cpp: no model is loaded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from ghost.llm import embedded_server
from ghost.llm.embedded_server import handle_chat, null_content_as_empty
from ghost.llm.toolcalls import (Reply, chosen_tool, first_sentence, opening_grammar, render_prompt, repeats_a_call,
                                 tool_rounds_since_user)

LIST_FILES = {"type": "function", "function": {
    "name": "list_files", "description": "List files in a folder\nof the sandbox.",
    "parameters": {"type": "object", "properties": {"path": {"type": "string"}, "recursive": {"type": "boolean"}},
                   "required": ["path"]}}}
READ_FILE = {"type": "function", "function": {
    "name": "read_file", "description": "Read a file.",
    "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}}
TOOLS = [LIST_FILES, READ_FILE]


def call(name: str, arguments: str, id_: str = "c1") -> dict[str, Any]:
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": arguments}}


# --- the prompt ------------------------------------------------------------------------------------

def test_prompt_lists_the_tools_in_the_system_message_and_ends_on_the_assistant() -> None:
    prompt = render_prompt([{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": [{"type": "text", "text": "hi"}]}], TOOLS)
    assert prompt.startswith("<|im_start|>system\nBe brief.\n\nYou can use these tools:\n")
    assert "- list_files(path: string, recursive?: boolean): List files in a folder of the sandbox\n" in prompt
    assert "<|im_start|>user\nhi<|im_end|>\n" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_prompt_shows_earlier_calls_results_and_answers_in_the_protocol() -> None:
    prompt = render_prompt([
        {"role": "user", "content": "list"},
        {"role": "assistant", "content": None, "tool_calls": [call("list_files", '{"path": "."}')]},
        {"role": "tool", "tool_call_id": "c1", "content": "a.txt"},
        {"role": "assistant", "content": "There is a.txt."},
    ], TOOLS)
    assert '<|im_start|>assistant\nfunctions.list_files:\n{"path": "."}<|im_end|>' in prompt
    assert "<|im_start|>tool\na.txt<|im_end|>" in prompt
    assert "<|im_start|>assistant\nmessage:\nThere is a.txt.<|im_end|>" in prompt


def test_prompt_without_tools_is_plain_chatml() -> None:
    prompt = render_prompt([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], [])
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n<|im_start|>assistant\n"


def test_tool_descriptions_are_cut_to_their_first_sentence() -> None:
    assert first_sentence("Read a file.  Slices of\nlines for big ones. More.") == "Read a file"
    long = first_sentence("word " * 60)
    assert long.endswith("…") and len(long) <= 101


def test_opening_grammar_allows_a_message_or_a_known_tool() -> None:
    assert opening_grammar(["list_files", "read_file"], True) == (
        'root ::= "functions." name ":" | "message:"\nname ::= "list_files" | "read_file"\n')
    assert '"message:"' not in opening_grammar(["list_files"], False)
    assert chosen_tool("functions.read_file:") == "read_file"
    assert chosen_tool("message:") is None


def test_tool_rounds_and_repeats_count_since_the_last_user_message() -> None:
    messages = [
        {"role": "user", "content": "old"},
        {"role": "assistant", "content": None, "tool_calls": [call("read_file", '{"path": "x"}')]},
        {"role": "tool", "content": "..."},
        {"role": "user", "content": "new"},
        {"role": "assistant", "content": None, "tool_calls": [call("list_files", '{"path": "."}')]},
        {"role": "tool", "content": "..."},
    ]
    assert tool_rounds_since_user(messages) == 1
    assert repeats_a_call(messages, {"name": "list_files", "arguments": '{ "path" : "." }'})
    assert not repeats_a_call(messages, {"name": "read_file", "arguments": '{"path": "x"}'})  # before "new"
    assert not repeats_a_call(messages, {"name": "list_files", "arguments": '{"path": "docs"}'})


def test_streamed_text_drops_the_protocols_line_break_and_keeps_the_finish_reason() -> None:
    pieces = [{"choices": [{"text": t, "finish_reason": f}]} for t, f in [("\n", None), ("Hi", None), (" there", "length")]]
    chunks = list(Reply("m").stream_text(pieces, prompt_tokens=5))
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""}, {"content": "Hi"}, {"content": " there"}, {}]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}


def test_streamed_usage_counts_the_opening_and_not_a_bare_end_chunk() -> None:
    pieces = [{"choices": [{"text": t, "finish_reason": f}]} for t, f in [("Hi", None), ("", "stop")]]
    chunks = list(Reply("m").stream_text(pieces, prompt_tokens=7, earlier_tokens=2))
    assert chunks[-1]["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    call = Reply("m").tool_call("list_files", "{}")
    usage = {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}
    assert list(Reply("m").stream_tool_call(call, usage))[-1]["usage"] == usage


def test_null_assistant_content_becomes_empty_for_llama_cpp() -> None:
    body = json.dumps({"messages": [{"role": "assistant", "content": None, "tool_calls": []},
                                    {"role": "user", "content": None}]}).encode()
    fixed = json.loads(null_content_as_empty(body))
    assert fixed["messages"][0]["content"] == "" and fixed["messages"][1]["content"] is None
    assert null_content_as_empty(b"not json") == b"not json"


# --- the handler, with a scripted llama ----------------------------------------------------------------

class ScriptedLlama:
    """Answers create_completion with the next scripted text; records what it was asked."""

    model_path = "/models/tiny.gguf"

    def __init__(self, *texts: str) -> None:
        self.texts = list(texts)
        self.calls: list[dict[str, Any]] = []

    def tokenize(self, text: bytes, special: bool = False) -> list[int]:
        return list(range(len(text.split())))  # one token a word: enough to count with

    def create_completion(self, **kwargs: Any) -> dict[str, Any] | Iterator[dict[str, Any]]:
        self.calls.append(kwargs)
        text = self.texts.pop(0)
        usage = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
        if kwargs.get("stream"):
            words = [w if i == 0 else " " + w for i, w in enumerate(text.split(" "))]
            return iter([{"choices": [{"text": w, "finish_reason": None}]} for w in words]
                        + [{"choices": [{"text": "", "finish_reason": "stop"}]}])
        return {"choices": [{"text": text, "finish_reason": "stop"}], "usage": usage}


def deltas(chunks: Iterator[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c["choices"][0]["delta"] for c in chunks]


def test_a_chosen_tool_streams_as_one_tool_call() -> None:
    llama = ScriptedLlama("functions.list_files:", '{"path": "."}')
    chunks = list(handle_chat(llama, [{"role": "user", "content": "list"}], tools=TOOLS, stream=True))
    tool_calls = deltas(iter(chunks))[1]["tool_calls"]
    assert tool_calls[0]["function"] == {"name": "list_files", "arguments": '{"path": "."}'}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert llama.calls[0]["grammar"] is not None and llama.calls[0]["temperature"] == 0
    assert llama.calls[1]["prompt"].endswith("<|im_start|>assistant\nfunctions.list_files:\n")


def test_a_chosen_message_streams_the_answer_with_max_tokens() -> None:
    llama = ScriptedLlama("message:", "Nothing to do.")
    reply = handle_chat(llama, [{"role": "user", "content": "hi"}], tools=TOOLS, stream=True, max_tokens=7)
    assert "".join(d.get("content") or "" for d in deltas(reply)) == "Nothing to do."
    assert llama.calls[1]["max_tokens"] == 7 and llama.calls[1]["prompt"].endswith("message:\n")


def test_a_chat_without_max_tokens_gets_the_servers_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded_server, "MAX_TOKENS", 33)
    llama = ScriptedLlama("Fine.", "Fine.", "Fine.")
    for given in (None, -1, 0):  # unset, or "no limit" (which llama.cpp reads as "fill the context")
        handle_chat(llama, [{"role": "user", "content": "hi"}], stream=False, max_tokens=given)
    assert [call["max_tokens"] for call in llama.calls] == [33, 33, 33]
    own = ScriptedLlama("Fine.")
    handle_chat(own, [{"role": "user", "content": "hi"}], stream=False, max_tokens=900)
    assert own.calls[0]["max_tokens"] == 900  # the client's own value wins


def test_a_streamed_answer_ends_with_its_usage() -> None:
    llama = ScriptedLlama("message:", "Nothing to do.")
    chunks = list(handle_chat(llama, [{"role": "user", "content": "hi"}], tools=TOOLS, stream=True))
    usage = chunks[-1]["usage"]
    # the opening's 2 tokens (its usage) and the answer's 3 streamed ones; the prompt, tokenized
    assert usage["completion_tokens"] == 2 + 3
    assert usage["prompt_tokens"] == len(llama.calls[1]["prompt"].split())


def test_after_the_allowed_tool_rounds_the_model_must_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded_server, "TOOL_ROUNDS", 1)
    llama = ScriptedLlama("Here it is.")
    messages = [{"role": "user", "content": "list"},
                {"role": "assistant", "content": None, "tool_calls": [call("list_files", '{"path": "."}')]},
                {"role": "tool", "tool_call_id": "c1", "content": "a.txt"}]
    reply = handle_chat(llama, messages, tools=TOOLS, stream=False)
    assert reply["choices"][0]["message"] == {"role": "assistant", "content": "Here it is."}
    assert len(llama.calls) == 1 and "grammar" not in llama.calls[0]  # no choice offered


def test_a_repeated_call_is_replaced_by_an_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded_server, "TOOL_ROUNDS", 5)
    llama = ScriptedLlama("functions.list_files:", '{"path": "."}', "Done.")
    messages = [{"role": "user", "content": "list"},
                {"role": "assistant", "content": None, "tool_calls": [call("list_files", '{"path": "."}')]},
                {"role": "tool", "tool_call_id": "c1", "content": "a.txt"}]
    reply = handle_chat(llama, messages, tools=TOOLS, stream=False)
    assert reply["choices"][0]["message"]["content"] == "Done."
    assert reply["usage"]["completion_tokens"] == 6  # opening + arguments + answer


def test_a_forced_tool_skips_the_choice_and_no_tools_means_plain_chat() -> None:
    llama = ScriptedLlama('{"path": "a.txt"}')
    forced = {"type": "function", "function": {"name": "read_file"}}
    reply = handle_chat(llama, [{"role": "user", "content": "x"}], tools=TOOLS, tool_choice=forced)
    assert reply["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "read_file"
    assert len(llama.calls) == 1

    plain = ScriptedLlama("\nhello")
    reply = handle_chat(plain, [{"role": "user", "content": "x"}], tools=TOOLS, tool_choice="none", stop="END")
    assert reply["choices"][0]["message"]["content"] == "hello"
    assert "You can use these tools" not in plain.calls[0]["prompt"]
    assert plain.calls[0]["stop"] == ["<|im_end|>", "END"]
