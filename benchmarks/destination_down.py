"""The collector's memory while a further destination is down (docs/configuration.md, "More than one trace backend").

Starts the real collector on the config the program generates for the dev stack plus one
destination whose endpoint nothing listens on, and sends it chat traces as fast as it accepts
them for a while. MLflow's exporters point at a loopback OTLP sink that answers 200 at once, so
what grows is the collector's own memory, not MLflow's backlog. Per `queueSize` (and once without
a destination): spans accepted, what reached the sink, the down destination's queue at the end
and the spans dropped for it (`otelcol_exporter_enqueue_failed_spans`), and the collector's PSS,
median and peak of one sample a second after the first 10 s.

    .venv/bin/python -m benchmarks.destination_down                     # ~6 min: none, 4Mi, 16Mi, 48Mi
    .venv/bin/python -m benchmarks.destination_down --seconds 30 --queue-size 16Mi
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support.collector import CollectorProcess, build_collector
from tests.support.otlp import chat_trace, export_request
from tests.support.processes import free_port
from tests.support.procfs import pss_bytes
from tests.support.program import run_program

MIB = 2**20
CLIENTS = 4
TRACES_PER_REQUEST = 64  # 256 spans a request


class CountingSink(ThreadingHTTPServer):
    """MLflow's OTLP endpoint as a sink: every request answered 200 at once, its spans counted."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SinkHandler)
        self.spans = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _SinkHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (the http.server API)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest.FromString(body)
        count = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        sink: CountingSink = self.server  # type: ignore[assignment]
        with sink.lock:
            sink.spans += count
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def run_once(binary: Path, workdir: Path, queue_size: str | None, seconds: float) -> dict:
    destinations = [] if queue_size is None else [
        {"name": "down", "endpoint": f"http://127.0.0.1:{free_port()}", "queueSize": queue_size}]
    run = run_program("dev", collector={"destinations": destinations})
    sink = CountingSink()
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    collector = CollectorProcess(binary, run, sink.url, workdir / f"collector-{queue_size or 'none'}").start()
    accepted, halt = [0], threading.Event()
    lock = threading.Lock()

    def client() -> None:
        session = requests.Session()
        while not halt.is_set():
            spans = [s for _ in range(TRACES_PER_REQUEST) for s in chat_trace("llama-3.1-8b", 10, 5)]
            body = export_request({"chat-api": spans}).SerializeToString()
            response = session.post(f"{collector.http_url}/v1/traces", data=body, timeout=30,
                                    headers={"Content-Type": "application/x-protobuf"})
            if response.status_code == 200:
                with lock:
                    accepted[0] += len(spans)

    pss: list[float] = []
    try:
        threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        began = time.monotonic()
        while time.monotonic() - began < seconds:
            time.sleep(1)
            if time.monotonic() - began > 10:
                assert collector.process is not None
                pss.append(pss_bytes([collector.process.pid]) / MIB)
        halt.set()
        for thread in threads:
            thread.join(30)
        time.sleep(3)  # the batch timeout and MLflow's queue drain into the sink
        totals = collector.metric_totals_by_exporter().get("otlp_http/to_down", {})
    finally:
        collector.stop()
        sink.shutdown()
    return {
        "queueSize": queue_size or "-", "accepted": accepted[0], "sink": sink.spans,
        "queued": totals.get("otelcol_exporter_queue_size", 0),
        "dropped": totals.get("otelcol_exporter_enqueue_failed_spans", 0),
        "pss_median_mib": statistics.median(pss), "pss_peak_mib": max(pss),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--queue-size", action="append", help="a destination's queueSize (repeatable)")
    args = parser.parse_args()
    sizes: list[str | None] = [None, *(args.queue_size or ["4Mi", "16Mi", "48Mi"])]
    binary = build_collector()
    rows = []
    with tempfile.TemporaryDirectory(prefix="destination-down-") as directory:
        workdir = Path(directory)
        workdir.chmod(0o755)  # the collector runs as its declared user
        for size in sizes:
            rows.append(run_once(binary, workdir, size, args.seconds))
            row = rows[-1]
            print(f"queueSize {row['queueSize']:>5}: accepted {row['accepted']:>8} spans, sink {row['sink']:>8}, "
                  f"down's queue {row['queued']:>10.0f}, dropped for it {row['dropped']:>8.0f}; collector PSS "
                  f"median {row['pss_median_mib']:.0f} MiB, peak {row['pss_peak_mib']:.0f} MiB", flush=True)
    lost = [r for r in rows if r["sink"] < r["accepted"]]
    if lost:
        print(f"MLflow's side lost spans with a destination down: {lost}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
