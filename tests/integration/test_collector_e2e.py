"""End to end: the collector config the program generates, run by the real
collector between OTLP clients (HTTP and gRPC) and the real MLflow + PostgreSQL.
The experiments exist in that MLflow, and the program's config carries their IDs."""

import time
from dataclasses import dataclass

import pytest
from mlflow import MlflowClient

from tests.support.collector import (
    SETTLE_SECONDS,
    CollectorProcess,
    StoredSpan,
    configmap_config,
    pod_checksum,
    program_with_real_ids,
    stored_spans,
)
from tests.support.otlp import (
    SentSpan,
    chat_trace,
    export_grpc,
    export_request,
    post_http,
    probe_trace,
    sent_spans,
)
from tests.support.processes import wait_until

DEFAULT = "e2e-llamastack-traces"
EXPERIMENTS = [
    {"name": DEFAULT, "default": True},
    {"name": "e2e-chat", "services": ["chat-api", "chat-worker"]},
    {"name": "e2e-agents", "services": ["agent"]},
]
ROUTE_OF = {"chat-api": "e2e-chat", "chat-worker": "e2e-chat", "agent": "e2e-agents",
            "llama-stack": DEFAULT, "billing-api": DEFAULT}  # billing-api is in no experiment's services
ARRIVAL_TIMEOUT = 60


def probes() -> list:
    """LLaMA Stack's model-list polling and kubelet probes, old and new HTTP conventions."""
    return [*probe_trace("/v1/models", "new", "python-httpx/0.28"),
            *probe_trace("/v1/models", "old", "python-requests/2.32"),
            *probe_trace("/v1/health", "new", "kube-probe/1.30"),
            *probe_trace("/healthz", "old", "kube-probe/1.29")]


@pytest.fixture(scope="module")
def program(mlflow_server):
    return program_with_real_ids(mlflow_server.url, EXPERIMENTS)


@pytest.fixture(scope="module")
def ids(program):
    return program.outputs["experimentIds"]


@dataclass
class Delivery:
    sent: list[SentSpan]
    stored: dict[str, list[StoredSpan]]  # experiment name -> what MLflow holds
    usage: dict[str, dict[str, int]]  # trace id -> the token usage its LLM span reported


def chats(usage: dict, *tokens: tuple[int, int]) -> list:
    """Chat-completion traces with these (input, output) token counts, noted in `usage`."""
    spans = []
    for input_tokens, output_tokens in tokens:
        trace = chat_trace("llama-3.1-8b", input_tokens, output_tokens)
        usage[trace[0].trace_id.hex()] = {"input_tokens": input_tokens, "output_tokens": output_tokens,
                                          "total_tokens": input_tokens + output_tokens}
        spans += trace
    return spans


@pytest.fixture(scope="module")
def delivered(mlflow_server, collector_binary, program, ids, workdir) -> Delivery:
    """Send the mix through the collector, over HTTP and over gRPC, and read back
    what MLflow stored once every real span arrived."""
    collector = CollectorProcess(collector_binary, program, mlflow_server.url,
                                 workdir / "collector-e2e").start()
    usage: dict = {}
    over_http = {"llama-stack": probes() + chats(usage, (120, 30)),
                 "chat-api": chats(usage, (200, 50), (7, 3)),
                 "billing-api": chats(usage, (64, 16))}
    over_grpc = {"llama-stack": probes(),
                 "chat-worker": chats(usage, (11, 22)),
                 "agent": chats(usage, (300, 90)) + probe_trace("/v1/models", "new", "agent/1.0")}
    try:
        post_http(collector.http_url, export_request(over_http))
        export_grpc(collector.grpc_target, export_request(over_grpc))
        sent = sent_spans(over_http) + sent_spans(over_grpc)
        expected = {name: sum(ROUTE_OF[s.service] == name for s in sent if not is_probe(s)) for name in ids}

        def arrived():
            return all(len(stored_spans(mlflow_server.url, ids[name])) >= count for name, count in expected.items())

        wait_until(arrived, ARRIVAL_TIMEOUT, "the real spans in MLflow", collector.process, collector.log)
        time.sleep(SETTLE_SECONDS)  # anything still batched (probe spans, duplicates) would show now
        stored = {name: stored_spans(mlflow_server.url, experiment_id) for name, experiment_id in ids.items()}
    finally:
        collector.stop()
    return Delivery(sent, stored, usage)


def is_probe(span: SentSpan) -> bool:
    return span.name.startswith("GET ")


def test_the_program_config_carries_the_real_experiment_ids(program, ids, mlflow_server):
    client = MlflowClient(tracking_uri=mlflow_server.url)
    headers = {e["headers"]["x-mlflow-experiment-id"] for e in configmap_config(program)["exporters"].values()}
    assert headers == set(ids.values())
    assert {client.get_experiment(i).name for i in headers} == {e["name"] for e in EXPERIMENTS}


def test_no_probe_span_is_stored(delivered):
    probe_ids = {s.span_id for s in delivered.sent if is_probe(s)}
    assert len(probe_ids) == 9 * 3  # 9 probe requests (4 over each protocol, the agent's model list), 3 spans each
    for name, spans in delivered.stored.items():
        assert not [s.name for s in spans if s.span_id in probe_ids or s.name.startswith("GET ")], name


def test_no_stored_span_is_orphaned(delivered):
    for name, spans in delivered.stored.items():
        present = {(s.trace_id, s.span_id) for s in spans}
        orphans = [s.name for s in spans if s.parent_id and (s.trace_id, s.parent_id) not in present]
        assert not orphans, (name, orphans)


def test_every_real_span_is_stored_once_in_the_experiment_of_its_service(delivered):
    for name, spans in delivered.stored.items():
        expected = {(s.trace_id, s.span_id, s.parent_id, s.name) for s in delivered.sent
                    if not is_probe(s) and ROUTE_OF[s.service] == name}
        assert expected, name
        assert sorted((s.trace_id, s.span_id, s.parent_id, s.name) for s in spans) == sorted(expected), name


def test_an_unmapped_service_lands_in_the_default_experiment(delivered):
    billing = {s.span_id for s in delivered.sent if s.service == "billing-api"}
    assert len(billing) == 4
    assert billing <= {s.span_id for s in delivered.stored[DEFAULT]}


def test_token_usage_shows_on_each_chat_trace(delivered, mlflow_server, ids):
    client = MlflowClient(tracking_uri=mlflow_server.url)
    shown = {}
    for experiment_id in ids.values():
        for trace in client.search_traces(locations=[experiment_id], max_results=100, include_spans=False):
            shown[trace.info.trace_id.removeprefix("tr-")] = trace.info.token_usage
    assert len(delivered.usage) == 6
    assert {trace_id: shown.get(trace_id) for trace_id in delivered.usage} == delivered.usage


def test_remapping_a_service_rolls_the_pods_and_the_traffic_follows(mlflow_server, collector_binary, program,
                                                                    ids, workdir):
    moved = [{"name": DEFAULT, "default": True}, {"name": "e2e-chat", "services": ["chat-worker"]},
             {"name": "e2e-agents", "services": ["agent", "chat-api"]}]
    remapped = program_with_real_ids(mlflow_server.url, moved)
    assert remapped.outputs["experimentIds"] == ids  # the same experiments, only the routes change
    assert configmap_config(remapped) != configmap_config(program)
    assert pod_checksum(remapped) != pod_checksum(program)

    collector = CollectorProcess(collector_binary, program, mlflow_server.url,
                                 workdir / "collector-remap")
    try:
        for run, destination in ((program, "e2e-chat"), (remapped, "e2e-agents")):
            collector.configure(configmap_config(run), mlflow_server.url)
            collector.restart()  # the rolled pod: the old config's process ends, the new one starts
            trace = chat_trace("llama-3.1-8b", 5, 5)
            post_http(collector.http_url, export_request({"chat-api": trace}))
            trace_id = trace[0].trace_id.hex()
            wait_until(lambda trace_id=trace_id, destination=destination: any(
                           s.trace_id == trace_id for s in stored_spans(mlflow_server.url, ids[destination])),
                       ARRIVAL_TIMEOUT, f"chat-api's trace in {destination}", collector.process, collector.log)
            elsewhere = [name for name in ids if name != destination
                         and any(s.trace_id == trace_id for s in stored_spans(mlflow_server.url, ids[name]))]
            assert not elsewhere
    finally:
        collector.stop()
