"""Each upstream's way of saying "the prompt does not fit" becomes one ContextLengthExceeded."""

from __future__ import annotations

from ghost.llm.overflow import context_overflow

LLAMA_CPP = {"error": {"code": 400, "message": "the request exceeds the available context size, try increasing it",
                       "type": "exceed_context_size_error", "n_prompt_tokens": 12691, "n_ctx": 8192}}
VLLM = {"object": "error", "type": "BadRequestError", "param": None, "code": 400, "message": (
    "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens "
    "(4000 in the messages, 1000 in the completion). Please reduce the length of the messages or completion.")}
VLLM_NEW = {"error": {"type": "BadRequestError", "code": 400, "message": (
    "This model's maximum context length is 4096 tokens and your request has 4500 input tokens.")}}
LLAMA_CPP_PYTHON = {"error": {"message": "This model's maximum context length is 8192 tokens. However, you requested "
                              "12691 tokens (12691 in the messages, 0 in the completion). Please reduce the length "
                              "of the messages or completion.", "type": "invalid_request_error",
                              "param": "messages", "code": "context_length_exceeded"}}


def test_llama_cpp_numbers_are_read() -> None:
    error = context_overflow(400, LLAMA_CPP)
    assert error is not None and (error.needed, error.allowed) == (12691, 8192)
    assert error.status_code == 400 and error.error_type == "context_length_exceeded"
    assert "12,691" in error.message and "8,192" in error.message


def test_vllm_and_openai_style_messages_are_read() -> None:
    for body, needed in ((VLLM, 5000), (VLLM_NEW, 4500), (LLAMA_CPP_PYTHON, 12691)):
        error = context_overflow(400, body)
        assert error is not None and error.allowed in (4096, 8192) and error.needed == needed


def test_other_errors_are_not_overflows() -> None:
    assert context_overflow(400, {"error": {"message": "bad temperature", "type": "invalid_request_error"}}) is None
    assert context_overflow(500, LLAMA_CPP) is None
    assert context_overflow(400, None) is None
    assert context_overflow(400, {"error": "plain string"}) is None
