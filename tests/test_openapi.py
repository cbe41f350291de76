"""The OpenAPI document: complete (every route, body and error) and agreeing with what is enforced.

These read the document in-process; tests/test_fuzz.py checks real responses against it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi import routing

from ghost.api.route_table import Shape, shape_for
from ghost.app import create_app
from ghost.config import Settings

ERROR_REF = "#/components/schemas/ErrorResponse"
OLLAMA_ERROR_REF = "#/components/schemas/OllamaError"
ANTHROPIC_ERROR_REF = "#/components/schemas/AnthropicError"


def error_ref(path: str) -> str:
    """The error shape a path's clients read: Ollama's, Anthropic's, or Ghost's own."""
    return {Shape.OLLAMA: OLLAMA_ERROR_REF, Shape.ANTHROPIC: ANTHROPIC_ERROR_REF}.get(shape_for(path), ERROR_REF)
OPEN_OPERATIONS = {("get", "/"), ("get", "/api/version"), ("get", "/api/tags"), ("post", "/api/show"),
                   ("get", "/api/health/live"), ("get", "/api/health/ready")}
# Each route that reads a body, and the media types it takes.
BODIES = {
    ("post", "/v1/chat/completions"): {"application/json"},
    ("post", "/chat"): {"application/json"},
    ("post", "/api/chat"): {"application/json"},
    ("post", "/api/generate"): {"application/json"},
    ("post", "/api/show"): {"application/json"},
    ("post", "/api/embed"): {"application/json"},
    ("post", "/api/embeddings"): {"application/json"},
    ("post", "/api/pull"): {"application/json"},
    ("post", "/api/workspace/save"): {"application/json"},
    ("post", "/api/workspace/load"): {"multipart/form-data", "application/zip", "application/octet-stream"},
    ("post", "/api/upload"): {"multipart/form-data"},
}


def unstarted_settings(home: Path) -> Settings:
    """Settings for an app only built, never started: its own home (create_app makes the key there)."""
    return Settings(upstream_url="http://127.0.0.1:9", home=home)


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return create_app(unstarted_settings(tmp_path_factory.mktemp("openapi"))).openapi()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, item in document["paths"].items() for method, op in item.items()]


def test_every_route_and_method_is_documented(document: dict[str, Any], tmp_path: Path) -> None:
    app = create_app(unstarted_settings(tmp_path))
    served = {(method.lower(), context.path_format)
              for context in routing.iter_route_contexts(app.routes)
              if isinstance(context.original_route, routing.APIRoute) and context.include_in_schema
              for method in context.methods}
    documented = {(method, path) for method, path, _ in operations(document)}
    assert served == documented
    assert len({op["operationId"] for _, _, op in operations(document)}) == len(documented)


def test_bodies_are_documented_with_their_media_types(document: dict[str, Any]) -> None:
    for (method, path), media_types in BODIES.items():
        body = document["paths"][path][method]["requestBody"]
        assert set(body["content"]) == media_types, path
    chat = document["paths"]["/v1/chat/completions"]["post"]["requestBody"]
    assert chat["required"] is True
    assert chat["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ChatRequest"}
    assert "messages" in document["components"]["schemas"]["ChatRequest"]["required"]


def test_security_matches_the_key_check(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["ghostKey"] == {**schemes["ghostKey"], "type": "apiKey", "in": "header", "name": "X-Ghost-Key"}
    assert schemes["bearer"]["scheme"] == "bearer"
    assert schemes["anthropicKey"] == {**schemes["anthropicKey"], "type": "apiKey", "in": "header", "name": "x-api-key"}
    for method, path, op in operations(document):
        if (method, path) in OPEN_OPERATIONS:
            assert op["security"] == [] and "401" not in op["responses"], path
        else:
            assert op["security"] == [{"ghostKey": []}, {"bearer": []}, {"anthropicKey": []}], path
            assert op["responses"]["401"]["content"]["application/json"]["schema"]["$ref"] == error_ref(path), path


def test_every_error_has_the_error_shape(document: dict[str, Any]) -> None:
    # Range errors of a download are Starlette's own plain-text answers (documented as such).
    plain_text = {("/api/download/{filename}", "400"), ("/api/download/{filename}", "416")}
    # A load balancer's probe answers "not ready" with its status body, as documented, not an error.
    probe_status = {("/api/health/ready", "503")}
    for method, path, op in operations(document):
        for status, response in op["responses"].items():
            assert response["headers"]["X-Request-ID"]["required"] is True
            if not (status.isdigit() and int(status) >= 400):
                continue
            content = response["content"]
            if (path, status) in probe_status:
                assert content == {"application/json": {"schema": {"$ref": "#/components/schemas/ReadyProbe"}}}
                continue
            if (path, status) in plain_text:
                assert "text/plain" in content, (path, status)
                content = {k: v for k, v in content.items() if k != "text/plain"}
            if content:  # Ollama's routes answer Ollama's shape, the Messages API's Anthropic's
                assert content == {"application/json": {"schema": {"$ref": error_ref(path)}}}, (path, status)
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_streams_and_files_are_documented(document: dict[str, Any]) -> None:
    def ok_types(path: str) -> set[str]:
        return set(document["paths"][path]["post" if path != "/api/download/{filename}" else "get"]
                   ["responses"]["200"]["content"])

    assert ok_types("/v1/chat/completions") == {"application/json", "text/event-stream"}
    assert ok_types("/api/chat") == {"application/json", "application/x-ndjson", "text/event-stream"}
    assert ok_types("/api/generate") == {"application/json", "application/x-ndjson"}
    assert ok_types("/api/workspace/save") == {"application/zip"}
    assert ok_types("/api/download/{filename}") == {"*/*"}  # its type guessed from its name
    proxy = document["paths"]["/{path}"]["get"]["responses"]
    assert "content" not in proxy["default"] and "content" not in proxy["200"]


def test_every_referenced_model_is_in_the_document(document: dict[str, Any]) -> None:
    text = str(document)
    names = {part.split("'")[0] for part in text.split("#/components/schemas/")[1:]}
    assert names <= set(document["components"]["schemas"])


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    # The OpenAPI 3.1 meta-schema as schemathesis ships it (it has no public name for it).
    from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

    assert document["openapi"].startswith("3.1")
    assert [str(error)[:200] for error in OPENAPI_31_VALIDATOR.iter_errors(document)] == []
