"""Steady OTLP traffic as an application sends it, and the count of what MLflow
stored, for the suites that prove nothing is lost."""

from __future__ import annotations

import threading
import time

import requests

from tests.support.otlp import chat_trace, export_request, post_http
from tests.support.processes import PostgresCluster


class SteadySender(threading.Thread):
    """An application's exporter: one 4-span chat trace per `interval` over OTLP/HTTP
    to `url`; a request that is refused (a collector restarting) is retried until
    accepted, and only accepted spans are counted. `trace_ids` (hex) names every trace
    sent, so a count in MLflow can leave out traces that are not the sender's."""

    def __init__(self, url: str, service: str, interval: float):
        super().__init__(daemon=True)
        self.url, self.service, self.interval = url, service, interval
        self.accepted_spans, self.retried_requests = 0, 0
        self.trace_ids: set[str] = set()
        self.error: Exception | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            trace = chat_trace("llama-3.1-8b", 10, 5)
            request = export_request({self.service: trace})
            self.trace_ids.add(trace[0].trace_id.hex())
            deadline = time.monotonic() + 30
            while True:
                try:
                    post_http(self.url, request)
                    break
                except requests.RequestException as error:
                    if time.monotonic() > deadline:
                        self.error = error
                        return
                    self.retried_requests += 1
                    time.sleep(0.2)
            self.accepted_spans += len(trace)
            self._halt.wait(self.interval)

    def halt(self) -> None:
        self._halt.set()

    def finish(self) -> int:
        """Stop sending; the number of spans the collector accepted."""
        self.halt()
        self.join(40)
        assert not self.is_alive() and self.error is None, self.error
        return self.accepted_spans


def span_counts(postgres: PostgresCluster, experiment_id: str) -> tuple[int, int]:
    """(spans, distinct span ids) MLflow's database holds for the experiment."""
    row = postgres.psql(f"SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM spans "
                        f"WHERE experiment_id = {int(experiment_id)}", database="mlflow")
    stored, distinct = row.split("|")
    return int(stored), int(distinct)
