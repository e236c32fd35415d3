"""A small chat service that traces as an LLM application does, for a first trace in MLflow.

Each `POST /v1/chat/completions` makes one trace: the request's server span and, under it, the
model call's client span with the GenAI semantic conventions' token usage
(`gen_ai.usage.input_tokens` / `output_tokens`), which MLflow shows as the trace's token usage.
`GET /v1/models` is the readiness probe: its spans are the noise the collector's filter drops.
The "model" only echoes the last message (no model server needed); tokens are counted as words.

    pip install -r examples/chat_service/requirements.txt
    OTEL_SERVICE_NAME=chat-api OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 \\
        python examples/chat_service/chat_service.py --port 8080
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

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

MODEL = "llama-3.2-3b-instruct"
CHAT_ROUTE = "/v1/chat/completions"
MODELS_ROUTE = "/v1/models"

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


class ChatHandler(BaseHTTPRequestHandler):
    def _traced(self, method: str) -> AbstractContextManager[trace.Span]:
        """The request's server span, with the HTTP semantic conventions an instrumentation sets
        (the collector's filter recognises probes by route and by user agent)."""
        return tracer.start_as_current_span(f"{method} {self.path}", kind=trace.SpanKind.SERVER, attributes={
            "http.request.method": method, "url.path": self.path,
            "user_agent.original": self.headers.get("User-Agent", "")})

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        trace.get_current_span().set_attribute("http.response.status_code", status)

    def do_GET(self) -> None:  # noqa: N802 - the http.server name
        with self._traced("GET"):
            if self.path == MODELS_ROUTE:
                self._reply(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
            else:
                self._reply(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:  # noqa: N802 - the http.server name
        with self._traced("POST"):
            if self.path != CHAT_ROUTE:
                self._reply(404, {"error": f"no route {self.path}"})
                return
            try:
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                messages = list(request.get("messages", []))
            except (ValueError, TypeError, AttributeError):
                self._reply(400, {"error": 'expected JSON: {"messages": [{"role": "user", "content": "..."}]}'})
                return
            reply, usage = complete(messages, request.get("model", MODEL))
            self._reply(200, {"object": "chat.completion", "model": request.get("model", MODEL), "usage": usage,
                              "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}}]})

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the http.server signature
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


def stop(*_: object) -> None:
    raise KeyboardInterrupt  # out of serve_forever, into the flush below


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), ChatHandler)
    signal.signal(signal.SIGTERM, stop)
    print(f"chat service on http://{args.host}:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        provider.shutdown()  # exports what the batch processor still holds
    return 0


if __name__ == "__main__":
    sys.exit(main())
