"""OTLP payloads built with opentelemetry-proto, and the two ways to send them
(OTLP/HTTP protobuf and OTLP/gRPC).

The traces imitate what an instrumented LLaMA Stack (FastAPI + ASGI
instrumentation) emits: a probe is a `GET <route>` SERVER span with two
`GET <route> http send` INTERNAL children that carry no URL attributes; a real
request is a chat-completion SERVER span with an LLM CLIENT child carrying
`gen_ai.*` usage attributes, a tool child and its own ASGI child."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import grpc
import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span


def _attributes(values: dict) -> list[KeyValue]:
    out = []
    for key, value in values.items():
        any_value = AnyValue(int_value=value) if isinstance(value, int) else AnyValue(string_value=str(value))
        out.append(KeyValue(key=key, value=any_value))
    return out


def one_span_request(service: str, name: str, attributes: dict | None = None) -> tuple[bytes, str]:
    """(serialized ExportTraceServiceRequest, trace id hex) of a single root span."""
    trace_id, span_id = os.urandom(16), os.urandom(8)
    now = time.time_ns()
    span = Span(trace_id=trace_id, span_id=span_id, name=name, kind=Span.SPAN_KIND_SERVER,
                start_time_unix_nano=now - 5_000_000, end_time_unix_nano=now,
                attributes=_attributes(attributes or {}))
    request = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=Resource(attributes=_attributes({"service.name": service})),
        scope_spans=[ScopeSpans(spans=[span])],
    )])
    return request.SerializeToString(), trace_id.hex()


@dataclass(frozen=True)
class SentSpan:
    service: str
    trace_id: str  # hex
    span_id: str  # hex
    parent_id: str  # hex, "" for a root
    name: str


def _span(trace_id: bytes, name: str, kind: int, attributes: dict, parent: Span | None = None) -> Span:
    now = time.time_ns()
    return Span(trace_id=trace_id, span_id=os.urandom(8), parent_span_id=parent.span_id if parent else b"",
                name=name, kind=kind, start_time_unix_nano=now - 20_000_000, end_time_unix_nano=now,
                attributes=_attributes(attributes))


def probe_trace(route: str, semconv: str, user_agent: str) -> list[Span]:
    """A health or model-list request: the root and its two ASGI `http send` children."""
    trace_id = os.urandom(16)
    if semconv == "old":
        http = {"http.method": "GET", "http.target": route, "http.user_agent": user_agent, "http.status_code": 200}
    else:
        http = {"http.request.method": "GET", "url.path": route, "user_agent.original": user_agent,
                "http.response.status_code": 200}
    root = _span(trace_id, f"GET {route}", Span.SPAN_KIND_SERVER, http)
    children = [_span(trace_id, f"GET {route} http send", Span.SPAN_KIND_INTERNAL, {"asgi.event.type": event},
                      root) for event in ("http.response.start", "http.response.body")]
    return [root, *children]


def chat_trace(model: str, input_tokens: int, output_tokens: int) -> list[Span]:
    """A chat completion: the request, its LLM call (with token usage), a tool call
    and the request's own ASGI child (kept: only noise routes are dropped by name)."""
    trace_id = os.urandom(16)
    root = _span(trace_id, "POST /v1/chat/completions", Span.SPAN_KIND_SERVER, {
        "http.request.method": "POST", "url.path": "/v1/chat/completions", "user_agent.original": "openai/1.99",
        "http.response.status_code": 200})
    llm = _span(trace_id, f"chat {model}", Span.SPAN_KIND_CLIENT, {
        "gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": model,
        "gen_ai.usage.input_tokens": input_tokens, "gen_ai.usage.output_tokens": output_tokens}, root)
    tool = _span(trace_id, "execute_tool get_weather", Span.SPAN_KIND_INTERNAL, {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "get_weather"}, root)
    send = _span(trace_id, "POST /v1/chat/completions http send", Span.SPAN_KIND_INTERNAL,
                 {"asgi.event.type": "http.response.start"}, root)
    return [root, llm, tool, send]


def export_request(spans_by_service: dict[str, list[Span]]) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(resource_spans=[
        ResourceSpans(resource=Resource(attributes=_attributes({"service.name": service})),
                      scope_spans=[ScopeSpans(spans=spans)])
        for service, spans in spans_by_service.items()
    ])


def sent_spans(spans_by_service: dict[str, list[Span]]) -> list[SentSpan]:
    return [SentSpan(service, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.name)
            for service, spans in spans_by_service.items() for s in spans]


def post_http(base_url: str, request: ExportTraceServiceRequest) -> None:
    """OTLP/HTTP protobuf; raises unless the receiver accepted the request."""
    response = requests.post(f"{base_url}/v1/traces", data=request.SerializeToString(), timeout=10,
                             headers={"Content-Type": "application/x-protobuf"})
    response.raise_for_status()


def export_grpc(target: str, request: ExportTraceServiceRequest) -> None:
    """OTLP/gRPC; raises unless the receiver accepted the request."""
    with grpc.insecure_channel(target) as channel:
        TraceServiceStub(channel).Export(request, timeout=10)


def aged_traces(service: str, count: int, age_seconds: float) -> ExportTraceServiceRequest:
    """`count` single-span traces of `service` that started `age_seconds` ago."""
    start = time.time_ns() - int(age_seconds * 1e9)
    spans = [Span(trace_id=os.urandom(16), span_id=os.urandom(8), name="chat", kind=Span.SPAN_KIND_SERVER,
                  start_time_unix_nano=start, end_time_unix_nano=start + 5_000_000) for _ in range(count)]
    return export_request({service: spans})


# Instrumentation scopes as the instrumentations name their tracers.
FASTAPI_SCOPE = "opentelemetry.instrumentation.fastapi"
GENAI_SCOPE = "opentelemetry.instrumentation.openai_v2"  # GenAI semantic conventions (gen_ai.*)
OPENINFERENCE_SCOPE = "openinference.instrumentation.openai"  # OpenInference conventions (llm.*)
OPENINFERENCE_CHAIN_SCOPE = "openinference.instrumentation.langchain"


@dataclass(frozen=True)
class ScopedSpan:
    scope: str
    span: Span


def openinference_trace(model: str, prompt_tokens: int, completion_tokens: int) -> list[ScopedSpan]:
    """An agent request instrumented with OpenInference under a FastAPI server span: the server
    span (not OpenInference), a CHAIN span and its LLM span with OpenInference token counts."""
    trace_id = os.urandom(16)
    root = _span(trace_id, "POST /agent/run", Span.SPAN_KIND_SERVER, {
        "http.request.method": "POST", "url.path": "/agent/run", "http.response.status_code": 200})
    chain = _span(trace_id, "AgentExecutor", Span.SPAN_KIND_INTERNAL, {"openinference.span.kind": "CHAIN"}, root)
    llm = _span(trace_id, "ChatCompletion", Span.SPAN_KIND_INTERNAL, {
        "openinference.span.kind": "LLM", "llm.model_name": model, "llm.provider": "openai",
        "llm.token_count.prompt": prompt_tokens, "llm.token_count.completion": completion_tokens,
        "llm.token_count.total": prompt_tokens + completion_tokens}, chain)
    return [ScopedSpan(FASTAPI_SCOPE, root), ScopedSpan(OPENINFERENCE_CHAIN_SCOPE, chain),
            ScopedSpan(OPENINFERENCE_SCOPE, llm)]


def genai_trace(model: str, input_tokens: int, output_tokens: int) -> list[ScopedSpan]:
    """`chat_trace` as its instrumentations emit it: the LLM span from the GenAI instrumentation,
    the rest from FastAPI's."""
    root, llm, tool, send = chat_trace(model, input_tokens, output_tokens)
    return [ScopedSpan(FASTAPI_SCOPE, root), ScopedSpan(GENAI_SCOPE, llm), ScopedSpan(FASTAPI_SCOPE, tool),
            ScopedSpan(FASTAPI_SCOPE, send)]


def scoped_request(spans_by_service: dict[str, list[ScopedSpan]]) -> ExportTraceServiceRequest:
    """One request: a ResourceSpans per service, a ScopeSpans per instrumentation scope in it."""
    resource_spans = []
    for service, scoped in spans_by_service.items():
        scopes: dict[str, list[Span]] = {}
        for item in scoped:
            scopes.setdefault(item.scope, []).append(item.span)
        resource_spans.append(ResourceSpans(
            resource=Resource(attributes=_attributes({"service.name": service})),
            scope_spans=[ScopeSpans(scope=InstrumentationScope(name=scope), spans=spans)
                         for scope, spans in scopes.items()]))
    return ExportTraceServiceRequest(resource_spans=resource_spans)
