"""The monitoring's rules and dashboard against real processes.

- promtool (built from the Prometheus module) runs a fire case and a quiet case of every alert
  the program ships, at the shipped timings;
- a real Prometheus scrapes the real collector and the real MLflow (the declared containers,
  `--expose-prometheus` on), evaluates the same rules at shortened timings, and watches them go
  pending, firing and back under an MLflow outage, and fire on a wrong experiment ID;
- the metric names every rule and panel reads are the ones those processes exposed.
"""

from __future__ import annotations

import re
import subprocess
import time

import pytest
import requests
import yaml

from components.monitoring import SCRAPE_PROTOCOLS, RuleTiming, Watched, alert_rules, dashboard_panels
from tests.support.collector import CollectorProcess, configmap_config, program_with_real_ids
from tests.support.images import deployed_mlflow_image, mlflow_image
from tests.support.otlp import export_request, post_http, probe_trace
from tests.support.prometheus import PrometheusProcess, build_prometheus, promtool
from tests.support.traffic import SteadySender

NAMESPACE = "mlflow"
EVERYTHING = Watched(namespace=NAMESPACE, mlflow_scraped=True, bundled_postgres=True, canary=True,
                     retention=True, check=True)
# Seconds instead of minutes, so each alert pends, fires and resolves within the test.
FAST = RuleTiming(window="20s", hold="10s", short_hold="5s", down_after="15s", stored_window="30s",
                  canary_hold="10s", retention_hold="10s")
SMALL_QUEUE = 30  # batches per MLflow exporter: full within the outage (the shipped 5000 holds hours of this traffic)
ALERT_TIMEOUT = 150
SEND_INTERVAL = 0.2


@pytest.fixture(scope="module")
def binaries():
    return build_prometheus()


# --------------------------------------------------------------------------- promtool: every alert


def series(name: str, labels: dict[str, str], values: str) -> dict:
    text = ",".join(f'{key}="{value}"' for key, value in {"namespace": NAMESPACE, **labels}.items())
    return {"series": f"{name}{{{text}}}", "values": values}


# alert -> (labels of the alert beyond namespace/severity, input that fires it, input that does not, eval time)
CASES: dict[str, tuple[dict, list[dict], list[dict], str]] = {
    "TraceCollectorDown": ({}, [series("otelcol_process_uptime", {}, "1+60x5 _x10")],
                           [series("otelcol_process_uptime", {}, "1+60x20")], "10m"),
    "TraceIntakeRefusing": ({"receiver": "otlp"},
                            [series("otelcol_receiver_refused_spans", {"receiver": "otlp"}, "0+100x20")],
                            [series("otelcol_receiver_refused_spans", {"receiver": "otlp"}, "0x20")], "15m"),
    "TraceExportRejected": (
        {"exporter": "otlp_http/chat", "error_type": "Unimplemented"},
        [series("otelcol_exporter_send_failed_spans",
                {"exporter": "otlp_http/chat", "error_type": "Unimplemented", "error_permanent": "true"}, "0+10x20")],
        # retried failures are TraceExportStalled's
        [series("otelcol_exporter_send_failed_spans",
                {"exporter": "otlp_http/chat", "error_type": "Unavailable", "error_permanent": "false"}, "0+10x20")],
        "10m"),
    "TraceExportFailing": (
        {"exporter": "otlp_http/to_phoenix", "error_type": "Unavailable"},
        [series("otelcol_exporter_send_failed_spans",
                {"exporter": "otlp_http/to_phoenix", "error_type": "Unavailable", "error_permanent": "false"},
                "0+10x20")],
        # permanent failures are TraceExportRejected's
        [series("otelcol_exporter_send_failed_spans",
                {"exporter": "otlp_http/to_phoenix", "error_type": "Unimplemented", "error_permanent": "true"},
                "0+10x20")],
        "10m"),
    "TraceExportServerErrors": (
        {"server_address": "phoenix.tracing.svc", "http_response_status_code": "503"},
        [series("http_client_request_duration_count",
                {"server_address": "phoenix.tracing.svc", "http_response_status_code": "503"}, "0+4x20")],
        # client errors are not retried: TraceExportRejected's
        [series("http_client_request_duration_count",
                {"server_address": "phoenix.tracing.svc", "http_response_status_code": "404"}, "0+4x20")],
        "15m"),
    "TraceExportStalled": (
        {"exporter": "otlp_http/chat"},
        [series("otelcol_exporter_queue_size", {"exporter": "otlp_http/chat", "data_type": "traces"}, "5x30"),
         series("otelcol_exporter_sent_spans", {"exporter": "otlp_http/chat"}, "100x30")],
        # a busy exporter always holds something in its queue, and sends
        [series("otelcol_exporter_queue_size", {"exporter": "otlp_http/chat", "data_type": "traces"}, "5x30"),
         series("otelcol_exporter_sent_spans", {"exporter": "otlp_http/chat"}, "100+50x30")],
        "20m"),
    "TraceExportQueueFilling": (
        {"exporter": "otlp_http/chat"},
        [series("otelcol_exporter_queue_size", {"exporter": "otlp_http/chat", "data_type": "traces"}, "4500x10"),
         series("otelcol_exporter_queue_capacity", {"exporter": "otlp_http/chat", "data_type": "traces"}, "5000x10")],
        [series("otelcol_exporter_queue_size", {"exporter": "otlp_http/chat", "data_type": "traces"}, "3900x10"),
         series("otelcol_exporter_queue_capacity", {"exporter": "otlp_http/chat", "data_type": "traces"}, "5000x10")],
        "5m"),
    "TracesDropped": ({"exporter": "otlp_http/to_phoenix"},
                      [series("otelcol_exporter_enqueue_failed_spans", {"exporter": "otlp_http/to_phoenix"}, "0+5x20")],
                      # drops long ago, none now
                      [series("otelcol_exporter_enqueue_failed_spans", {"exporter": "otlp_http/to_phoenix"},
                              "0+5x3 15x12")], "14m"),
    "MlflowDown": ({}, [series("mlflow_exporter_info", {"version": "0.23.2"}, "1x5 _x10")],
                   [series("mlflow_exporter_info", {"version": "0.23.2"}, "1x20")], "10m"),
    "MlflowServerErrors": ({}, [series("mlflow_http_request_total", {"method": "GET", "status": "500"}, "0+10x20")],
                           [series("mlflow_http_request_total", {"method": "GET", "status": "404"}, "0+10x20")],
                           "15m"),
    "TracesNotStored": (
        {},
        [series("otelcol_processor_outgoing_items", {"processor": "filter/noise", "otel_signal": "traces"},
                "0+100x40")],
        [series("otelcol_processor_outgoing_items", {"processor": "filter/noise", "otel_signal": "traces"},
                "0+100x40"),
         series("mlflow_spans_ingested_total", {"protocol": "otlp"}, "0+100x40")],
        "30m"),
    "PostgresDown": ({"statefulset": "postgres"},
                     [series("kube_statefulset_status_replicas_ready", {"statefulset": "postgres"}, "0x10")],
                     [series("kube_statefulset_status_replicas_ready", {"statefulset": "postgres"}, "1x10")], "5m"),
    "TraceCanaryFailing": (
        {"cronjob": "trace-canary"},
        [series("kube_cronjob_status_last_schedule_time", {"cronjob": "trace-canary"}, "1000x60"),
         series("kube_cronjob_status_last_successful_time", {"cronjob": "trace-canary"}, "400x60")],
        # a run in progress for 5 minutes, then successful
        [series("kube_cronjob_status_last_schedule_time", {"cronjob": "trace-canary"}, "1000x19 2200x40"),
         series("kube_cronjob_status_last_successful_time", {"cronjob": "trace-canary"}, "1000x24 2200x35")],
        "30m"),
    "TraceRetentionFailing": (
        {"cronjob": "trace-retention"},
        # scheduled, never succeeded
        [series("kube_cronjob_status_last_schedule_time", {"cronjob": "trace-retention"}, "1000x90")],
        [series("kube_cronjob_status_last_schedule_time", {"cronjob": "trace-retention"}, "1000x90"),
         series("kube_cronjob_status_last_successful_time", {"cronjob": "trace-retention"}, "1000x90")],
        "80m"),
    "TraceCheckFailed": ({"job_name": "trace-check-5f2a9c1d"},
                         [series("kube_job_status_failed", {"job_name": "trace-check-5f2a9c1d"}, "1x10")],
                         # the canary's runs are the canary alert's
                         [series("kube_job_status_failed", {"job_name": "trace-canary-29400"}, "1x10")], "5m"),
}


def expanded(text: str, labels: dict[str, str]) -> str:
    """An annotation as Prometheus renders it, for the labels and values these cases use."""
    text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)
    return text.replace("{{ $value | humanizePercentage }}", "90%")


def test_every_shipped_alert_fires_on_its_condition_and_stays_quiet_otherwise(binaries, tmp_path):
    rules = alert_rules(EVERYTHING)
    shipped = {rule["alert"]: rule for rule in rules["groups"][0]["rules"]}
    assert set(shipped) == set(CASES)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    tests = []
    for alert, (labels, firing, quiet, at) in CASES.items():
        rule = shipped[alert]
        alert_labels = {"severity": rule["labels"]["severity"], "namespace": NAMESPACE, **labels}
        annotations = {key: expanded(value, alert_labels) for key, value in rule["annotations"].items()}
        tests.append({"interval": "1m", "input_series": firing, "alert_rule_test": [
            {"eval_time": at, "alertname": alert,
             "exp_alerts": [{"exp_labels": alert_labels, "exp_annotations": annotations}]}]})
        tests.append({"interval": "1m", "input_series": quiet,
                      "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": []}]})
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump({"rule_files": ["rules.yaml"], "tests": tests},
                                                        sort_keys=False))
    checked = promtool(binaries, "check", "rules", "rules.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    result = promtool(binaries, "test", "rules", "tests.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


# --------------------------------------------------------------------------- a real Prometheus


@pytest.fixture(scope="module")
def watched_path(declared, own_mlflow, collector_binary, binaries, workdir):
    """MLflow as declared (metrics on, as by default), the collector of a two-experiment stack, a
    second collector whose `chat` exporter carries an experiment ID MLflow does not have (as if
    pasted by hand), and a Prometheus scraping all three."""
    container = declared.get("Deployment", "mlflow").outputs["spec"]["template"]["spec"]["containers"][0]
    assert "--expose-prometheus" in container["command"]
    run = program_with_real_ids(own_mlflow.url, [{"name": "monitored", "default": True},
                                                       {"name": "monitored-chat", "services": ["chat-api"]}])
    config = configmap_config(run)
    for exporter in config["exporters"].values():
        exporter["sending_queue"]["queue_size"] = SMALL_QUEUE
    collector = CollectorProcess(collector_binary, run, own_mlflow.url, workdir / "collector-monitored",
                                 config=config).start()
    wrong = configmap_config(run)
    chat = next(e for e in wrong["exporters"].values()
                if e["headers"]["x-mlflow-experiment-id"] == run.outputs["experimentIds"]["monitored-chat"])
    chat["headers"]["x-mlflow-experiment-id"] = "987654321"
    misrouted = CollectorProcess(collector_binary, run, own_mlflow.url, workdir / "collector-wrong-id",
                                 config=wrong).start()
    watched = Watched(namespace=NAMESPACE, mlflow_scraped=True, bundled_postgres=False, canary=False,
                      retention=False, check=False)
    # scraped as the ServiceMonitors say (a pod-annotation scrape config must do the same: docs/operations.md)
    prometheus = PrometheusProcess(binaries, workdir / "prometheus", namespace=NAMESPACE,
                                   rules=alert_rules(watched, FAST), scrape_protocols=SCRAPE_PROTOCOLS,
                                   targets={"otel-collector": f"127.0.0.1:{collector.ports.metrics}",
                                            "otel-collector-wrong-id": f"127.0.0.1:{misrouted.ports.metrics}",
                                            "mlflow": f"127.0.0.1:{own_mlflow.port}"}).start()
    yield collector, misrouted, prometheus
    prometheus.stop()
    misrouted.stop()
    collector.stop()


OUTAGE_ALERTS = ("MlflowDown", "TraceExportStalled", "TraceExportQueueFilling", "TracesDropped", "TracesNotStored")
HOLDS = {rule["alert"]: rule["for"] for rule in alert_rules(EVERYTHING, FAST)["groups"][0]["rules"]}


def test_an_mlflow_outage_pends_fires_and_resolves_and_a_wrong_experiment_id_fires_the_404_alert(
        watched_path, own_mlflow):
    collector, misrouted, prometheus = watched_path
    senders = [SteadySender(collector.http_url, service, SEND_INTERVAL) for service in ("chat-api", "billing")]
    for sender in senders:
        sender.start()
    try:
        # healthy: every target up, traffic stored, probe noise dropped, API calls served, no alert
        post_http(collector.http_url, export_request({"chat-api": probe_trace("/v1/models", "new", "kube-probe/1.32")}))
        assert requests.get(f"{own_mlflow.url}/api/2.0/mlflow/experiments/search",
                            params={"max_results": 5}, timeout=10).status_code == 200
        time.sleep(25)
        assert prometheus.target_health() == {"otel-collector": "up", "otel-collector-wrong-id": "up", "mlflow": "up"}
        assert prometheus.query('sum(rate(mlflow_spans_ingested_total{namespace="mlflow"}[20s])) > 0')
        assert prometheus.alerts() == []

        own_mlflow.stop()
        outage = prometheus.watch(OUTAGE_ALERTS, "firing", ALERT_TIMEOUT)
        for alert in OUTAGE_ALERTS:
            # an alert with a hold pends first; one without fires at once
            if HOLDS[alert] != "0m":
                assert outage[alert]["pending"] < outage[alert]["firing"], (alert, outage[alert])
        stalled = {a["labels"]["exporter"] for a in prometheus.alerts() if a["labels"]["alertname"] ==
                   "TraceExportStalled"}
        assert stalled == {"otlp_http/monitored", "otlp_http/monitored-chat"}

        own_mlflow.start()
        recovery = prometheus.watch(OUTAGE_ALERTS, "inactive", ALERT_TIMEOUT)
        timeline = {alert: {"outage": outage[alert], "resolved after restart": recovery[alert]["inactive"]}
                    for alert in OUTAGE_ALERTS}
        print(f"\nalert states, seconds after MLflow stopped / restarted: {timeline}")
    finally:
        for sender in senders:
            sender.halt()
            sender.join(30)

    # the collector with a wrong ID: MLflow answers 404, the exporter drops the batch (permanent)
    wrong = SteadySender(misrouted.http_url, "chat-api", SEND_INTERVAL)
    wrong.start()
    try:
        prometheus.await_state("TraceExportRejected", "firing", ALERT_TIMEOUT)
    finally:
        wrong.halt()
        wrong.join(30)
    rejected = {(a["labels"]["exporter"], a["labels"]["error_type"]) for a in prometheus.alerts()
                if a["labels"]["alertname"] == "TraceExportRejected"}
    # 404 is Unimplemented, and only the exporter with the wrong ID meets it (another permanent error
    # of the exporters, around MLflow's restart, would be another alert's proof: shown, not asserted)
    assert {entry for entry in rejected if entry[1] == "Unimplemented"} == {
        ("otlp_http/monitored-chat", "Unimplemented")}, rejected


def names_in(expression: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    without_strings = re.sub(r'"[^"]*"', '""', expression)
    return {name for name in re.findall(r"([a-z_][a-z0-9_]*)\{", without_strings)}


def declared_by_mlflow() -> set[str]:
    """The metric names the deployed MLflow's OTLP endpoint registers, from its own registry's # HELP lines."""
    python = mlflow_image(deployed_mlflow_image()).path.split(":")[0] + "/python"
    code = "import prometheus_client, mlflow.server.otlp_metrics; print(prometheus_client.generate_latest().decode())"
    exposition = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True, timeout=120).stdout
    return set(re.findall(r"^# HELP (\S+) ", exposition, re.M))


def test_every_metric_the_rules_and_panels_read_is_one_the_real_processes_expose(watched_path):
    """Run after the outage test (module order): by then every lazily created series exists."""
    _, _, prometheus = watched_path
    exposed = set(requests.get(f"{prometheus.url}/api/v1/label/__name__/values", timeout=10).json()["data"])
    read = set()
    for rule in alert_rules(EVERYTHING)["groups"][0]["rules"]:
        read |= names_in(rule["expr"])
    for panel in dashboard_panels(NAMESPACE, mlflow_scraped=True, canary=True):
        for target in panel["targets"]:
            read |= names_in(target["expr"])
    from_kube_state_metrics = {name for name in read if name.startswith("kube_")}
    assert read - from_kube_state_metrics, read
    # a labelled counter shows no sample before its first event (MLflow's ingest 5xx): its name is
    # read from the declarations of the deployed MLflow's registry instead
    assert read - from_kube_state_metrics - exposed - declared_by_mlflow() == set()


def test_every_dashboard_query_returns_series_from_the_real_processes(watched_path):
    _, _, prometheus = watched_path
    empty = []
    for panel in dashboard_panels(NAMESPACE, mlflow_scraped=True, canary=False, window="10m"):
        for target in panel["targets"]:
            # the series themselves, not the 0 a total shows before its counter exists
            if not prometheus.query(target["expr"].removesuffix(" or vector(0)")):
                empty.append(target["expr"])
    # MLflow's ingest 5xx counter has a sample only after an ingest fails with a 5xx, which this test
    # does not provoke: its panel shows 0, and its name is the deployed MLflow's (declared_by_mlflow)
    unprovoked = [expr for expr in empty if names_in(expr) <= {"mlflow_trace_ingestion_server_errors_total"}]
    assert all(names_in(expr) <= declared_by_mlflow() for expr in unprovoked)
    assert [expr for expr in empty if expr not in unprovoked] == []
