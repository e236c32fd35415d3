"""A second trace backend: a real Arize Phoenix as `collector.destinations`, beside the real
MLflow, behind the real collector on the config the program generates.

- Selected by instrumentation scope (`openinference.*`), Phoenix receives the OpenInference
  traces whole (their FastAPI server span too, whichever of a trace's spans arrives first) and
  nothing else; MLflow receives everything, routed to experiments as without Phoenix. Both hold
  0 orphans and no probe noise, and both show the token counts.
- Fed every trace, Phoenix shows GenAI-convention spans' token counts without any mapping.
- Phoenix stopped for 60 s under traffic: MLflow stores every span once and its exporters see no
  failure; Phoenix's queue holds what it missed and delivers it when Phoenix is back. With a queue
  too small for the outage, what does not fit is dropped for Phoenix alone and counted.
- The post-deploy check reads its trace back from Phoenix, proves another destination's exporter
  sent its trace, leaves nothing in Phoenix, and fails naming the destination when Phoenix is down."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
from mlflow import MlflowClient

from components.collector import HTTP_PORT, METRICS_PORT
from tests.support.collector import (
    SETTLE_SECONDS,
    CollectorProcess,
    StoredSpan,
    configmap_config,
    program_with_real_ids,
    span_counts_in_mlflow,
    stored_spans,
)
from tests.support.otlp import (
    FASTAPI_SCOPE,
    ScopedSpan,
    genai_trace,
    openinference_trace,
    post_http,
    probe_trace,
    scoped_request,
)
from tests.support.phoenix import PhoenixProcess, PhoenixSpan
from tests.support.processes import free_port, kubelet_for, wait_until
from tests.support.traffic import SteadySender

EXPERIMENTS = [
    {"name": "px-default", "default": True},
    {"name": "px-agents", "services": ["agent"]},
    {"name": "px-chat", "services": ["chat-api"]},
]
ROUTE_OF = {"agent": "px-agents", "chat-api": "px-chat", "llama-stack": "px-default"}
ARRIVAL_TIMEOUT = 90
OUTAGE_SECONDS = 60


def program_for(mlflow_server, phoenix: PhoenixProcess, project: str, select: dict | None = None,
                queue_size: str = "16Mi"):
    destination = {"name": "phoenix", "endpoint": phoenix.url, "headers": {"x-project-name": project},
                   "queueSize": queue_size, "readBack": "phoenix", **({"select": select} if select else {})}
    return program_with_real_ids(mlflow_server.url, EXPERIMENTS, collector={"destinations": [destination]})


def key(span) -> tuple[str, str, str, str]:
    return span.trace_id, span.span_id, span.parent_id, span.name


def sent_key(scoped: ScopedSpan) -> tuple[str, str, str, str]:
    span = scoped.span
    return span.trace_id.hex(), span.span_id.hex(), span.parent_span_id.hex(), span.name


def orphans(spans: list) -> list[str]:
    present = {(s.trace_id, s.span_id) for s in spans}
    return [s.name for s in spans if s.parent_id and (s.trace_id, s.parent_id) not in present]


@dataclass
class Delivery:
    sent: dict[str, list[ScopedSpan]]  # service -> spans, noise included
    noise: set[str]  # span IDs (hex) of the probe requests
    mlflow: dict[str, list[StoredSpan]]  # experiment name -> what MLflow holds
    phoenix: list[PhoenixSpan]
    usage: dict[str, tuple[int, int]]  # trace ID -> (input, output) tokens its LLM span reported


def send_mix(collector: CollectorProcess) -> tuple[dict[str, list[ScopedSpan]], set[str], dict]:
    """OpenInference traces (one whole; one whose non-matching server span arrives first, alone; one
    whose server span arrives last, alone), GenAI traces and probe noise, over several requests."""
    usage = {}

    def traced(build, model: str, prompt: int, completion: int) -> list[ScopedSpan]:
        trace = build(model, prompt, completion)
        usage[trace[0].span.trace_id.hex()] = (prompt, completion)
        return trace

    whole, root_first, root_last = (traced(openinference_trace, "gpt-4o", p, c) for p, c in ((40, 9), (31, 12),
                                                                                          (17, 5)))
    chats = [traced(genai_trace, "llama-3.1-8b", i, o) for i, o in ((120, 30), (64, 16))]
    noise = [ScopedSpan(FASTAPI_SCOPE, s) for s in probe_trace("/healthz", "new", "kube-probe/1.30")
             + probe_trace("/v1/models", "old", "python-requests/2.32")]
    post_http(collector.http_url, scoped_request({"agent": whole + root_first[:1], "chat-api": chats[0],
                                                  "llama-stack": noise}))
    time.sleep(1.5)  # the matching spans of root_first arrive later, in a request of their own
    post_http(collector.http_url, scoped_request({"agent": root_first[1:] + root_last[1:], "chat-api": chats[1]}))
    time.sleep(1.5)  # root_last's server span after its trace was selected
    post_http(collector.http_url, scoped_request({"agent": root_last[:1]}))
    sent = {"agent": whole + root_first + root_last, "chat-api": chats[0] + chats[1], "llama-stack": noise}
    return sent, {s.span.span_id.hex() for s in noise}, usage


@pytest.fixture(scope="module")
def selected(mlflow_server, collector_binary, phoenix, workdir) -> Delivery:
    """Phoenix selects whole traces with an OpenInference span; MLflow takes everything."""
    program = program_for(mlflow_server, phoenix, "selected", select={"scopes": ["openinference.*"]})
    ids = program.outputs["experimentIds"]
    collector = CollectorProcess(collector_binary, program, mlflow_server.url, workdir / "collector-phoenix").start()
    try:
        sent, noise, usage = send_mix(collector)
        real = {service: [s for s in spans if s.span.span_id.hex() not in noise] for service, spans in sent.items()}
        expected_mlflow = {name: sum(len(spans) for service, spans in real.items() if ROUTE_OF[service] == name)
                           for name in ids}
        expected_phoenix = len(real["agent"])

        def arrived():
            return all(len(stored_spans(mlflow_server.url, ids[name])) >= count
                       for name, count in expected_mlflow.items()) \
                and len(phoenix.spans("selected")) >= expected_phoenix

        wait_until(arrived, ARRIVAL_TIMEOUT, "the mix in MLflow and in Phoenix", collector.process, collector.log)
        time.sleep(SETTLE_SECONDS)  # anything still held (noise, an unselected trace) would show now
        return Delivery(sent, noise, {name: stored_spans(mlflow_server.url, i) for name, i in ids.items()},
                        phoenix.spans("selected"), usage)
    finally:
        collector.stop()


def test_phoenix_receives_exactly_the_selected_traces_whole(selected):
    expected = {sent_key(s) for s in selected.sent["agent"]}  # every span of the OpenInference traces
    assert len(expected) == 9
    assert sorted(key(s) for s in selected.phoenix) == sorted(expected)  # each once, server spans included
    assert orphans(selected.phoenix) == []
    genai = {s.span.trace_id.hex() for s in selected.sent["chat-api"]}
    assert not [s.name for s in selected.phoenix if s.trace_id in genai]


def test_mlflow_still_receives_every_trace_routed_by_service_without_orphans_or_noise(selected):
    for name, spans in selected.mlflow.items():
        expected = {sent_key(s) for service, scoped in selected.sent.items() if ROUTE_OF[service] == name
                    for s in scoped if s.span.span_id.hex() not in selected.noise}
        assert sorted(key(s) for s in spans) == sorted(expected), name
        assert orphans(spans) == [], name
    assert selected.noise and not [s for spans in selected.mlflow.values() for s in spans
                                   if s.span_id in selected.noise]


def test_token_counts_show_in_both_backends(selected, mlflow_server, phoenix):
    client = MlflowClient(tracking_uri=mlflow_server.url)
    shown = {}
    for name in ("px-agents", "px-chat"):
        experiment = client.get_experiment_by_name(name).experiment_id
        for trace in client.search_traces(locations=[experiment], max_results=100, include_spans=False):
            shown[trace.info.trace_id.removeprefix("tr-")] = trace.info.token_usage
    for trace_id, (prompt, completion) in selected.usage.items():
        assert shown[trace_id] == {"input_tokens": prompt, "output_tokens": completion,
                                   "total_tokens": prompt + completion}, trace_id
    stored = phoenix.stored_token_counts("selected")
    llm_spans = {s.span_id: s.trace_id for s in selected.phoenix if s.name == "ChatCompletion"}
    assert len(llm_spans) == 3
    for span_id, trace_id in llm_spans.items():
        prompt, completion = selected.usage[trace_id]
        assert stored[span_id] == (prompt, completion, prompt + completion)


def test_phoenix_fed_every_trace_counts_genai_tokens_without_a_mapping(mlflow_server, collector_binary, phoenix,
                                                                      workdir):
    program = program_for(mlflow_server, phoenix, "everything")
    collector = CollectorProcess(collector_binary, program, mlflow_server.url, workdir / "collector-phoenix-all")
    collector.start()
    try:
        chat = genai_trace("llama-3.1-8b", 13, 5)
        post_http(collector.http_url, scoped_request({"chat-api": chat}))
        llm_span = chat[1].span.span_id.hex()
        wait_until(lambda: llm_span in phoenix.stored_token_counts("everything"), ARRIVAL_TIMEOUT,
                   "the GenAI trace in Phoenix", collector.process, collector.log)
    finally:
        collector.stop()
    assert phoenix.stored_token_counts("everything")[llm_span] == (13, 5, 18)
    stored = {s.span_id: s for s in phoenix.spans("everything")}
    assert stored[llm_span].span_kind == "LLM"  # classed from gen_ai.operation.name, so its tokens count
    assert len([s for s in stored.values() if s.trace_id == chat[0].span.trace_id.hex()]) == 4


def test_phoenix_down_for_a_minute_costs_mlflow_nothing_and_phoenix_gets_it_all_afterwards(
        mlflow_server, collector_binary, phoenix, workdir):
    program = program_for(mlflow_server, phoenix, "outage")
    experiment = program.outputs["experimentIds"]["px-chat"]
    before, _ = span_counts_in_mlflow(mlflow_server.url, experiment)
    collector = CollectorProcess(collector_binary, program, mlflow_server.url, workdir / "collector-phoenix-outage")
    collector.start()
    sender = SteadySender(collector.http_url, "chat-api", interval=0.1)
    try:
        sender.start()
        time.sleep(10)
        phoenix.stop()
        time.sleep(OUTAGE_SECONDS)
        phoenix.start()
        time.sleep(10)
        accepted = sender.finish()
        assert sender.retried_requests == 0  # the collector never refused a client meanwhile

        wait_until(lambda: span_counts_in_mlflow(mlflow_server.url, experiment)[0] - before >= accepted,
                   ARRIVAL_TIMEOUT, "every accepted span in MLflow", collector.process, collector.log)
        wait_until(lambda: len(phoenix.spans("outage")) >= accepted, ARRIVAL_TIMEOUT + 60,
                   "every accepted span in Phoenix after its outage", collector.process, collector.log)
        time.sleep(SETTLE_SECONDS)
        totals = collector.metric_totals_by_exporter()
    finally:
        sender.halt()
        collector.stop()
    spans, distinct = span_counts_in_mlflow(mlflow_server.url, experiment)
    assert (spans - before, distinct - before) == (accepted, accepted)  # each once
    in_phoenix = phoenix.spans("outage")
    assert len({(s.trace_id, s.span_id) for s in in_phoenix}) == len(in_phoenix) == accepted
    mlflow_exporter = next(e for e in totals if e.endswith("/px-chat"))
    assert totals[mlflow_exporter].get("otelcol_exporter_send_failed_spans", 0) == 0
    assert totals["otlp_http/to_phoenix"].get("otelcol_exporter_send_failed_spans", 0) == 0  # retried, not failed
    assert totals["otlp_http/to_phoenix"].get("otelcol_exporter_enqueue_failed_spans", 0) == 0


def test_a_queue_too_small_for_the_outage_drops_for_phoenix_alone_and_counts_it(mlflow_server, collector_binary,
                                                                               phoenix, workdir):
    program = program_for(mlflow_server, phoenix, "small-queue", queue_size="256Ki")  # the smallest accepted
    experiment = program.outputs["experimentIds"]["px-chat"]
    before, _ = span_counts_in_mlflow(mlflow_server.url, experiment)
    collector = CollectorProcess(collector_binary, program, mlflow_server.url, workdir / "collector-phoenix-small")
    collector.start()
    sender = SteadySender(collector.http_url, "chat-api", interval=0.02)
    phoenix.stop()
    try:
        sender.start()
        time.sleep(30)
        accepted = sender.finish()
        wait_until(lambda: span_counts_in_mlflow(mlflow_server.url, experiment)[0] - before >= accepted,
                   ARRIVAL_TIMEOUT, "every accepted span in MLflow", collector.process, collector.log)
        dropped = collector.metric_totals_by_exporter()["otlp_http/to_phoenix"]
    finally:
        sender.halt()
        collector.stop()
        phoenix.start()
    assert span_counts_in_mlflow(mlflow_server.url, experiment) == (before + accepted, before + accepted)
    assert sender.retried_requests == 0
    assert 0 < dropped.get("otelcol_exporter_enqueue_failed_spans", 0) <= accepted


def run_check(program, mlflow_server, collector: CollectorProcess, postgres, workdir) -> tuple[int, str]:
    """The check Job's pod, with the Services' addresses mapped to the processes."""
    rewrites = {"mlflow.mlflow.svc:5000": f"127.0.0.1:{mlflow_server.port}",
                f"otel-collector.mlflow.svc:{HTTP_PORT}": f"127.0.0.1:{collector.ports.http}",
                f"otel-collector.mlflow.svc:{METRICS_PORT}": f"127.0.0.1:{collector.ports.metrics}"}
    kubelet = kubelet_for(program, workdir / "phoenix-check", postgres, mlflow_server.port, rewrites=rewrites)
    (job,) = [j for j in program.kinds("Job") if j.name == "trace-check"]
    done = kubelet.run_pod_to_completion(job, timeout=120)
    return done.returncode, (done.stdout + done.stderr).strip()


def test_the_check_reads_phoenix_back_proves_the_other_exporter_and_names_the_destination_that_fails(
        mlflow_server, collector_binary, phoenix, postgres, workdir):
    destinations = [
        {"name": "phoenix", "endpoint": phoenix.url, "headers": {"X-Project-Name": "checked"},
         "select": {"scopes": ["openinference.*"]}, "readBack": "phoenix", "queueSize": "8Mi"},
        {"name": "other", "endpoint": phoenix.url, "headers": {"x-project-name": "other"},
         "select": {"services": ["other-app"]}, "queueSize": "8Mi"},  # no read-back: proven by its exporter's count
    ]
    program = program_with_real_ids(mlflow_server.url, EXPERIMENTS, collector={"destinations": destinations},
                                    verify={"timeoutSeconds": 30})
    ids = program.outputs["experimentIds"]
    collector = CollectorProcess(collector_binary, program, mlflow_server.url, workdir / "collector-phoenix-check")
    collector.start()
    try:
        before = {name: len(stored_spans(mlflow_server.url, i)) for name, i in ids.items()}
        code, output = run_check(program, mlflow_server, collector, postgres, workdir)
        assert code == 0, output
        assert "phoenix: read back from Phoenix; other: sent" in output, output
        # the check deletes its traces (by trace ID) from the Phoenix it reads, which here holds both projects
        assert phoenix.spans("checked") == [] and phoenix.spans("other") == []
        assert {name: len(stored_spans(mlflow_server.url, i)) for name, i in ids.items()} == before

        phoenix.stop()
        try:
            code, output = run_check(program, mlflow_server, collector, postgres, workdir)
        finally:
            phoenix.start()
        assert code == 1, output
        assert "destination 'phoenix'" in output and "otlp_http/to_phoenix has sent 0 spans" in output, output
        assert "holds no span of it in project 'checked'" in output, output
        assert {name: len(stored_spans(mlflow_server.url, i)) for name, i in ids.items()} == before

        # nothing listens where the other destination points: its exporter never sends
        unreachable = [destinations[0], {**destinations[1], "endpoint": f"http://127.0.0.1:{free_port()}"}]
        broken = program_with_real_ids(mlflow_server.url, EXPERIMENTS, collector={"destinations": unreachable},
                                       verify={"timeoutSeconds": 30})
        collector.configure(configmap_config(broken), mlflow_server.url)
        collector.restart()
        code, output = run_check(broken, mlflow_server, collector, postgres, workdir)
        assert code == 1, output
        assert "destination 'other'" in output and "the collector's exporter sent nothing to it" in output, output
        assert "otlp_http/to_other has sent 0 spans and failed 0 since the check began" in output, output
    finally:
        collector.stop()
