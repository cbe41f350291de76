"""Info routes: what Ollama and OpenAI clients see when they ask Ghost about itself."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime

import httpx
import ollama
import openai
import pytest

from ghost import OLLAMA_COMPAT_VERSION, __version__
from ghost.testing.fake_upstream import DEFAULT_MODEL, FakeUpstream
from ghost.testing.server import TEST_KEY, GhostServer, free_port


@pytest.fixture(scope="module")
def two_models(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhostServer]:
    server = GhostServer("--upstream-url", upstream.url, "--model", "alpha, beta:7b",
                         home=tmp_path_factory.mktemp("two-models"))
    with server:
        yield server


@pytest.fixture(scope="module")
def down(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhostServer]:
    unused = f"http://127.0.0.1:{free_port()}"
    with GhostServer("--upstream-url", unused, home=tmp_path_factory.mktemp("down")) as server:
        yield server


def test_root_says_ollama_is_running(anon: httpx.Client) -> None:
    response = anon.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == "Ollama is running"


def test_head_root_has_no_body(anon: httpx.Client) -> None:
    response = anon.head("/")
    assert response.status_code == 200
    assert response.content == b""


def test_version(anon: httpx.Client) -> None:
    assert anon.get("/api/version").json() == {"version": OLLAMA_COMPAT_VERSION}


def test_tags_shape(anon: httpx.Client) -> None:
    models = anon.get("/api/tags").json()["models"]
    # the upstream's model when --model is unset, and its plain variant (no agent, for title tasks)
    assert [m["name"] for m in models] == [DEFAULT_MODEL, f"{DEFAULT_MODEL}-plain"]
    entry = models[0]
    assert entry["model"] == DEFAULT_MODEL
    assert re.fullmatch(r"[0-9a-f]{64}", entry["digest"])
    assert isinstance(entry["size"], int)
    datetime.fromisoformat(entry["modified_at"])
    assert entry["details"]["format"] == "gguf"
    assert entry["details"]["family"] == "qwen3"
    assert entry["details"]["families"] == ["qwen3"]


def test_show_shape(anon: httpx.Client) -> None:
    body = anon.post("/api/show", json={"model": DEFAULT_MODEL}).json()
    for field in ("modelfile", "template", "parameters", "details", "model_info", "capabilities"):
        assert field in body, field
    assert body["capabilities"] == ["completion", "tools"]
    details = body["details"]
    assert details["format"] == "gguf" and details["family"] == "qwen3" and details["families"] == ["qwen3"]
    assert "parameter_size" in details and "quantization_level" in details
    assert body["model_info"]["general.architecture"] == "qwen3"


def test_show_takes_the_old_name_field_and_defaults_to_the_served_model(anon: httpx.Client) -> None:
    assert anon.post("/api/show", json={"name": DEFAULT_MODEL}).status_code == 200
    assert anon.post("/api/show").status_code == 200
    assert anon.post("/api/show", json={}).status_code == 200


def test_show_accepts_latest_tag(anon: httpx.Client) -> None:
    assert anon.post("/api/show", json={"model": f"{DEFAULT_MODEL}:latest"}).status_code == 200


def test_show_unknown_model_is_404(anon: httpx.Client) -> None:
    response = anon.post("/api/show", json={"model": "no-such-model"})
    assert response.status_code == 404
    assert response.json() == {"error": "model 'no-such-model' not found"}  # Ollama's error shape


def test_show_rejects_non_object_body(anon: httpx.Client) -> None:
    response = anon.post("/api/show", json=["a"])
    assert response.status_code == 422
    assert response.json() == {"error": "request body must be a JSON object"}


def test_openai_models_shape(client: httpx.Client) -> None:
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    model, plain = body["data"]
    assert (model["id"], plain["id"]) == (DEFAULT_MODEL, f"{DEFAULT_MODEL}-plain")
    assert model["object"] == "model"
    assert isinstance(model["created"], int)
    assert isinstance(model["owned_by"], str)


def test_configured_model_list(two_models: GhostServer) -> None:
    with httpx.Client(base_url=two_models.url, headers=two_models.headers, timeout=30) as http:
        listed = ["alpha", "alpha-plain", "beta:7b", "beta:7b-plain"]
        assert [m["name"] for m in http.get("/api/tags").json()["models"]] == listed
        assert [m["id"] for m in http.get("/v1/models").json()["data"]] == listed
        assert http.post("/api/show", json={"model": "beta:7b"}).status_code == 200
        assert http.post("/api/show", json={"model": "beta:7b-plain"}).json()["details"]["family"] == "qwen3"
        assert http.post("/api/show", json={"model": "beta"}).status_code == 404
        assert http.post("/api/show", json={"model": DEFAULT_MODEL}).status_code == 404
        assert http.get("/api/health").json()["model"] == "alpha"


# --- real clients ------------------------------------------------------------------------------


def test_ollama_client_list_and_show(ghost: GhostServer) -> None:
    client = ollama.Client(host=ghost.url)
    listed = client.list()
    assert [m.model for m in listed.models] == [DEFAULT_MODEL, f"{DEFAULT_MODEL}-plain"]
    assert listed.models[0].details.family == "qwen3"
    shown = client.show(DEFAULT_MODEL)
    assert shown.capabilities == ["completion", "tools"]
    assert shown.details.format == "gguf"
    assert shown.modelinfo["general.architecture"] == "qwen3"
    with pytest.raises(ollama.ResponseError) as excinfo:
        client.show("missing-model")
    assert excinfo.value.status_code == 404


def test_openai_client_models_list(ghost: GhostServer) -> None:
    client = openai.OpenAI(base_url=ghost.url + "/v1", api_key=TEST_KEY, max_retries=0)
    assert [m.id for m in client.models.list()] == [DEFAULT_MODEL, f"{DEFAULT_MODEL}-plain"]
    wrong = openai.OpenAI(base_url=ghost.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()


# --- health ------------------------------------------------------------------------------------


def test_health_fields(client: httpx.Client, ghost: GhostServer, upstream: FakeUpstream) -> None:
    body = client.get("/api/health").json()
    assert body["status"] == "ok"
    assert body["version"] == __version__
    assert body["model"] == DEFAULT_MODEL and body["models"] == [DEFAULT_MODEL]
    assert body["upstream"]["url"] == upstream.url
    assert body["upstream"]["reachable"] is True
    assert isinstance(body["upstream"]["latency_ms"], float | int) and body["upstream"]["latency_ms"] >= 0
    assert isinstance(body["sandbox"]["backend"], str)
    assert isinstance(body["sandbox"]["isolated"], bool)
    assert body["storage"] == str(ghost.home.resolve())
    assert body["uptime_s"] >= 0
    assert body["in_flight_turns"] == 0
    # The probe really asked the upstream.
    assert any(r["path"] == "/v1/models" for r in upstream.requests)


def test_health_with_upstream_down_is_degraded_not_an_error(down: GhostServer) -> None:
    response = httpx.get(down.url + "/api/health", headers=down.headers, timeout=30)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["upstream"]["reachable"] is False
    assert body["upstream"]["error"]
    assert body["model"] == "ghost"  # nothing configured, nothing discovered
