"""The README's "Send your first trace", as a newcomer follows it, against the real collector
(with the dev stack's config, its experiment IDs real) and the real MLflow: the example chat
service (`examples/chat_service`) with the OpenTelemetry SDK, and MLflow's own tracing SDK
exporting over OTLP. What the walkthrough promises is what is checked: each chat request is one
trace in the experiment its `service.name` maps to, with its model call under it and the token
usage shown; the readiness probes leave no trace; a service that no experiment names lands in
the default one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient

from tests.support.collector import CollectorProcess, program_with_real_ids
from tests.support.processes import free_port, stop, wait_until

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "chat_service" / "chat_service.py"
ARRIVAL_TIMEOUT = 60
SETTLE_SECONDS = 5  # after the last expected trace, time for one that should not come
QUESTIONS = ["What is MLflow?", "Which port does OTLP over HTTP use?", "Thanks!"]


@pytest.fixture(scope="module")
def walkthrough(mlflow_server, collector_binary, workdir):
    """Experiments as the walkthrough declares them (fresh names: the session's MLflow is shared),
    and the collector of that stack."""
    suffix = uuid.uuid4().hex[:6]
    names = {"chat": f"chat-{suffix}", "default": f"default-{suffix}"}
    run = program_with_real_ids(mlflow_server.url, [{"name": names["default"], "default": True},
                                                     {"name": names["chat"], "services": [f"chat-api-{suffix}"]}])
    collector = CollectorProcess(collector_binary, run, mlflow_server.url, workdir / "collector-first-trace").start()
    yield run.outputs["experimentIds"], names, f"chat-api-{suffix}", collector
    collector.stop()


def traces_in(mlflow_url: str, experiment_id: str) -> list:
    return MlflowClient(tracking_uri=mlflow_url).search_traces(locations=[experiment_id], max_results=100)


def test_the_example_chat_service_makes_one_trace_per_chat_with_its_token_usage_and_none_per_probe(
        walkthrough, mlflow_server, workdir):
    ids, names, service, collector = walkthrough
    port = free_port()
    log = workdir / "chat-service.log"
    # The SDK's default batch delay (5 s) outlasts the requests: the spans leave at the SIGTERM's flush.
    env = {**os.environ, "OTEL_SERVICE_NAME": service, "OTEL_EXPORTER_OTLP_ENDPOINT": collector.http_url}
    env.pop("OTEL_BSP_SCHEDULE_DELAY", None)
    with log.open("wb") as output:
        app = subprocess.Popen([sys.executable, str(EXAMPLE), "--port", str(port)], env=env, stdout=output,
                               stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: requests.get(f"{url}/v1/models", timeout=2).status_code == 200, 30, "chat service",
                   app, log)
        for _ in range(5):  # the kubelet's readiness probe, dropped by its route
            assert requests.get(f"{url}/v1/models", headers={"User-Agent": "kube-probe/1.32"},
                                timeout=5).status_code == 200
        # a probe of a route no noise rule names: dropped by the kubelet's user agent alone
        assert requests.get(f"{url}/", headers={"User-Agent": "kube-probe/1.32"}, timeout=5).status_code == 404
        answers = [requests.post(f"{url}/v1/chat/completions", timeout=10,
                                 json={"messages": [{"role": "user", "content": question}]}).json()
                   for question in QUESTIONS]
    finally:
        stop(app)  # SIGTERM: the example flushes what its batch processor holds
    assert app.returncode == 0, log.read_text()

    expected_usage = sorted((a["usage"]["prompt_tokens"], a["usage"]["completion_tokens"]) for a in answers)
    wait_until(lambda: len(traces_in(mlflow_server.url, ids[names["chat"]])) >= len(QUESTIONS), ARRIVAL_TIMEOUT,
               "the chat traces in MLflow")
    time.sleep(SETTLE_SECONDS)
    stored = traces_in(mlflow_server.url, ids[names["chat"]])
    assert len(stored) == len(QUESTIONS)  # one per chat; none of the probes, sent by the same service
    shown = []
    for trace in stored:
        assert sorted(span.name for span in trace.data.spans) == ["POST /v1/chat/completions",
                                                                 "chat llama-3.2-3b-instruct"]
        usage = trace.info.token_usage
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
        shown.append((usage["input_tokens"], usage["output_tokens"]))
    assert sorted(shown) == expected_usage


def test_mlflows_tracing_sdk_exports_through_the_collector_into_the_default_experiment(walkthrough, mlflow_server,
                                                                                      workdir):
    """The walkthrough's second path: `@mlflow.trace` with MLflow's OTLP exporter pointed at the
    collector; its service is in no experiment's `services`, so the default experiment holds it."""
    ids, names, _, collector = walkthrough
    service = f"rag-notebook-{uuid.uuid4().hex[:6]}"
    code = (
        "import mlflow\n"
        "@mlflow.trace(span_type='LLM')\n"
        "def answer(question):\n"
        "    return 'MLflow stores traces.'\n"
        "answer('What does MLflow store?')\n"
    )
    env = {**os.environ, "OTEL_SERVICE_NAME": service, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
           "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{collector.http_url}/v1/traces"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          cwd=workdir)
    assert done.returncode == 0, done.stderr
    def answered(experiment: str) -> list:
        return [t for t in traces_in(mlflow_server.url, ids[names[experiment]])
                if [span.name for span in t.data.spans] == ["answer"]]

    wait_until(lambda: answered("default"), ARRIVAL_TIMEOUT, "the SDK's trace in the default experiment")
    time.sleep(SETTLE_SECONDS)
    assert len(answered("default")) == 1 and answered("chat") == []
