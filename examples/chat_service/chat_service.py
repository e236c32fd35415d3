"""A small chat service that traces as an LLM application does, for a first trace in MLflow.

Each `POST /v1/chat/completions` makes one trace: the request's server span and, under it, the
model call's client span with the GenAI semantic conventions' token usage
(`gen_ai.usage.input_tokens` / `output_tokens`), which MLflow shows as the trace's token usage.
`GET /v1/models` is the readiness probe: its spans are the noise the collector's filter drops.
The "model" only echoes the last message (no model server needed); tokens are counted as words.

    pip install -r examples/chat_service/requirements.txt
    OTEL_SERVICE_NAME=chat-api OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 \\
        python examples/chat_service/chat_service.py --port 8080    # in a pod: --host 0.0.0.0
    curl -s localhost:8080/v1/chat/completions -d '{"messages": [{"role": "user", "content": "hi"}]}'

The SDK reads the standard variables: `OTEL_SERVICE_NAME` (the collector routes by it to an
experiment), `OTEL_EXPORTER_OTLP_ENDPOINT` (the collector's OTLP/HTTP port, 4318). SIGTERM or
Ctrl-C flushes the spans still buffered before the process ends.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from contextlib import AbstractContextManager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

MODEL = "llama-3.2-3b-instruct"
CHAT_ROUTE = "/v1/chat/completions"
MODELS_ROUTE = "/v1/models"
MAX_BODY = 1 << 20
FLUSH_TIMEOUT_MILLIS = 10_000

provider = TracerProvider(resource=Resource.create())  # service.name from OTEL_SERVICE_NAME
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
tracer = trace.get_tracer("chat_service", tracer_provider=provider)


def words(text: str) -> int:
    return len(text.split())


def complete(messages: list[dict], model: str) -> tuple[str, dict[str, int]]:
    """The model call, traced as a GenAI client span: the reply and its token usage."""
    with tracer.start_as_current_span(f"chat {model}", kind=trace.SpanKind.CLIENT) as span:
        prompt = " ".join(str(m.get("content", "")) for m in messages)
        reply = f"You said: {messages[-1].get('content', '')}" if messages else "Say something."
        usage = {"prompt_tokens": words(prompt), "completion_tokens": words(reply)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        span.set_attributes({
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "llama_stack",
            "gen_ai.request.model": model,
            "gen_ai.response.model": model,
            "gen_ai.usage.input_tokens": usage["prompt_tokens"],
            "gen_ai.usage.output_tokens": usage["completion_tokens"],
        })
        return reply, usage


class BadRequest(ValueError):
    pass


def chat_messages(body: bytes) -> list[dict]:
    """The request's messages: a JSON object with a list of {role, content} objects."""
    try:
        request = json.loads(body or b"{}")
    except ValueError as error:
        raise BadRequest(f"not JSON: {error}") from None
    messages = request.get("messages") if isinstance(request, dict) else None
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise BadRequest('expected {"messages": [{"role": "user", "content": "..."}]}')
    return messages


class ChatHandler(BaseHTTPRequestHandler):
    timeout = 30  # a client that stalls is dropped, not waited for

    def _traced(self, method: str) -> AbstractContextManager[trace.Span]:
        """The request's server span, named and attributed as an HTTP instrumentation does (the
        collector's filter recognises probes by route and by user agent)."""
        url = urlsplit(self.path)
        route = url.path if url.path in (CHAT_ROUTE, MODELS_ROUTE) else None
        attributes = {"http.request.method": method, "url.path": url.path, "url.scheme": "http",
                      "server.port": self.server.server_address[1],
                      "user_agent.original": self.headers.get("User-Agent", "")}
        if url.query:
            attributes["url.query"] = url.query
        if route:
            attributes["http.route"] = route
        return tracer.start_as_current_span(f"{method} {route}" if route else method,
                                            kind=trace.SpanKind.SERVER, attributes=attributes)

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        span = trace.get_current_span()
        span.set_attribute("http.response.status_code", status)
        if status >= 400:
            span.set_attribute("error.type", str(status))
        if status >= 500:
            span.set_status(trace.StatusCode.ERROR)

    def do_GET(self) -> None:  # noqa: N802 - the http.server name
        with self._traced("GET"):
            if urlsplit(self.path).path == MODELS_ROUTE:
                self._reply(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
            else:
                self._reply(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:  # noqa: N802 - the http.server name
        with self._traced("POST"):
            if urlsplit(self.path).path != CHAT_ROUTE:
                self._reply(404, {"error": f"no route {self.path}"})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
                if not 0 <= length <= MAX_BODY:
                    raise BadRequest(f"Content-Length must be 0 to {MAX_BODY}")
                messages = chat_messages(self.rfile.read(length))
            except (BadRequest, ValueError) as error:
                self._reply(400, {"error": str(error)})
                return
            reply, usage = complete(messages, MODEL)
            self._reply(200, {"object": "chat.completion", "model": MODEL, "usage": usage,
                              "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}}]})

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the http.server signature
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


def stop(*_: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal must not cut the flush short
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt  # out of serve_forever, into the flush below


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), ChatHandler)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"chat service on http://{args.host}:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()  # handler threads are daemons: nothing waits for a stalled client
        provider.force_flush(FLUSH_TIMEOUT_MILLIS)  # exports what the batch processor still holds
        provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
