"""Minimal OTLP/HTTP protobuf payloads, built with opentelemetry-proto."""

from __future__ import annotations

import os
import time

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
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
