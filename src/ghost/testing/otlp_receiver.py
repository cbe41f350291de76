"""A tiny OTLP/HTTP trace receiver for tests and benchmarks: a real HTTP server on loopback that
takes `POST /v1/traces` (protobuf `ExportTraceServiceRequest`, plain or gzip) and keeps the spans.

`keep=False` reads and drops them undecoded (a benchmark's sink, costing its process little).
Every request's path and headers are noted (`requests`), so a test can see what an exporter's
settings made it send; `paths` are the paths that take spans (others get 404).
"""

from __future__ import annotations

import gzip
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict[str, Any]
    status_code: int
    resource: dict[str, Any] = field(default_factory=dict)


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(v) for v in any_value.array_value.values)
    return getattr(any_value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def decode(body: bytes) -> list[ReceivedSpan]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(ReceivedSpan(span.name, span.trace_id.hex(), span.span_id.hex(),
                                          span.parent_span_id.hex(), span.kind, _attributes(span.attributes),
                                          span.status.code, resource))
    return spans


class OtlpReceiver:
    def __init__(self, keep: bool = True, paths: tuple[str, ...] = ("/v1/traces",)) -> None:
        self.keep = keep
        self.paths = paths
        self.spans: list[ReceivedSpan] = []
        self.requests: list[tuple[str, dict[str, str]]] = []  # (path, headers lower-cased), if keep
        self.exports = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if receiver.keep:
                    with receiver._lock:
                        receiver.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path not in receiver.paths:
                    self.send_response(404)
                    self.end_headers()
                    return
                receiver._take(decode(body) if receiver.keep else [])
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _take(self, spans: list[ReceivedSpan]) -> None:
        with self._lock:
            self.exports += 1
            if self.keep:
                self.spans.extend(spans)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "OtlpReceiver":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def snapshot(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self.spans)

    def wait_for(self, predicate: Any, timeout: float = 30.0) -> list[ReceivedSpan]:
        """The spans once `predicate(spans)` holds (polled), else AssertionError with what came."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            spans = self.snapshot()
            if predicate(spans):
                return spans
            time.sleep(0.05)
        raise AssertionError(f"spans never matched; received: {[s.name for s in self.snapshot()]}")
