"""What the stack gives a Prometheus: the alert rules, the scrape objects and a Grafana
dashboard, each computed from plain data by the functions below.

Every rule and panel reads the namespace's own series (`namespace="<ns>"`, the label the
Prometheus Operator and the usual pod-annotation scrape configs set), so several stacks can
share one Prometheus. The metric names are the exposition's of the collector at telemetry
level `detailed` and of MLflow's `--expose-prometheus` (tests/integration/test_monitoring.py
reads them from the real processes); `kube_*` series come from kube-state-metrics.

| alert | hop | from |
|---|---|---|
| TraceCollectorDown | the collector | its metrics gone |
| TraceIntakeRefusing | clients -> collector | otelcol_receiver_refused_spans |
| TraceExportRejected | collector -> a destination (401/403/404/400) | otelcol_exporter_send_failed_spans, permanent |
| TraceExportFailing | collector -> a destination, retries given up | otelcol_exporter_send_failed_spans, retryable |
| TraceExportServerErrors | collector -> a destination (5xx, 429) | http_client_request_duration_count by status |
| TraceExportStalled | collector -> a destination (down, 5xx, timeouts) | queued spans, none sent |
| TraceExportQueueFilling | a destination's queue above 80 % | otelcol_exporter_queue_size / _capacity |
| TracesDropped | a full queue | otelcol_exporter_enqueue_failed_spans |
| MlflowDown | MLflow | its metrics gone |
| MlflowServerErrors | MLflow -> PostgreSQL/artifacts | mlflow_http_request_total{status=~"5.."}, ingest errors |
| TracesNotStored | the whole path | spans past the noise filter, none ingested by MLflow |
| PostgresDown | the bundled PostgreSQL | kube_statefulset_status_replicas_ready |
| TraceCanaryFailing / TraceRetentionFailing | the CronJobs | kube_cronjob_status_last_* |
| TraceCheckFailed | the post-deploy Job | kube_job_status_failed |
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
import yaml

from components import collector, mlflow, postgres
from components.config import Monitoring, StackConfig
from components.kube import NamespaceRef, labels_for
from components.trace_upkeep import (
    CANARY_CRONJOB_NAME,
    CHECK_JOB_PREFIX,
    DEADLINE_MARGIN_SECONDS,
    RETENTION_CRONJOB_NAME,
)

COMPONENT = "monitoring"
RULES_FILE = "mlflow-tracing.rules.yaml"
DASHBOARD_FILE = "mlflow-tracing.json"
RUNBOOK = "docs/operations.md#monitoring"
# What the scrapes ask for: Prometheus 3 otherwise negotiates UTF-8 names, and the collector then
# serves its OpenTelemetry names as they are (`otel.signal`, `http.client.request.duration`), which
# no rule written for the classic names (`otel_signal`, ...) matches. The 0.0.4 text format has
# only classic names: every Prometheus since 2.49 stores the same series (measured with 3.16).
SCRAPE_PROTOCOLS = ["PrometheusText0.0.4"]


@dataclass(frozen=True)
class RuleTiming:
    """How long a condition must hold and over which window rates are taken. The defaults are
    what ships; tests shorten them to watch alerts pend, fire and resolve within minutes."""

    window: str = "5m"  # rate() window of the collector's and MLflow's counters
    hold: str = "5m"  # `for` of the rate alerts
    short_hold: str = "1m"  # `for` of the alerts on a level (a queue's, PostgreSQL's readiness)
    down_after: str = "3m"  # a process's metrics gone this long: down
    stored_window: str = "20m"  # spans must be stored within it: two canary runs at the default schedule
    canary_hold: str = "10m"  # at least; longer when a canary run may take longer (Watched.canary_run_seconds)
    retention_hold: str = "1h"  # components.trace_upkeep.RETENTION_DEADLINE_SECONDS


@dataclass(frozen=True)
class Watched:
    """What the stack runs that its rules watch."""

    namespace: str
    mlflow_scraped: bool  # MLflow's /metrics is readable (no auth in front of it)
    bundled_postgres: bool
    canary: bool
    retention: bool
    check: bool
    canary_run_seconds: int = 0  # the longest a canary run takes (its Job's deadline)


def watched_by(config: StackConfig) -> Watched:
    return Watched(namespace=config.namespace, mlflow_scraped=config.mlflow_scraped,
                   bundled_postgres=config.postgres.mode == "bundled", canary=config.monitoring.canary.enabled,
                   retention=any(days is not None for days in config.retention_limits.values()),
                   check=config.verify.enabled,
                   canary_run_seconds=config.verify.timeout_seconds + DEADLINE_MARGIN_SECONDS)


def _minutes(duration: str) -> int:
    return int(duration.removesuffix("m")) if duration.endswith("m") else 0


def _alert(name: str, expr: str, hold: str, severity: str, summary: str, description: str) -> dict:
    return {
        "alert": name, "expr": expr, "for": hold,
        "labels": {"severity": severity},
        "annotations": {"summary": summary, "description": f"{description} Runbook: {RUNBOOK} ({name})."},
    }


def alert_rules(watched: Watched, timing: RuleTiming = RuleTiming()) -> dict:
    """The Prometheus rule file (`groups`) of one stack."""
    ns = f'namespace="{watched.namespace}"'
    w = timing.window
    rules = [
        _alert("TraceCollectorDown", f"absent_over_time(otelcol_process_uptime{{{ns}}}[{timing.down_after}])",
               "0m", "critical", "No OpenTelemetry Collector of {{ $labels.namespace }} reports metrics",
               f"No collector in {watched.namespace} was scraped for {timing.down_after}: applications' spans "
               "are refused or lost at the first hop (clients -> collector)."),
        _alert("TraceIntakeRefusing",
               f"sum by (namespace, receiver) (rate(otelcol_receiver_refused_spans{{{ns}}}[{w}])) > 0",
               timing.hold, "warning", "The collector refuses spans ({{ $labels.receiver }})",
               "Clients -> collector: the collector answers 503 to OTLP clients, almost always the memory "
               "limiter at its limit. Raise collector.resources.limits.memory or add replicas."),
        _alert("TraceExportRejected",
               "sum by (namespace, exporter, error_type) (rate(otelcol_exporter_send_failed_spans"
               f'{{{ns}, error_permanent="true"}}[{w}])) > 0',
               "0m", "critical", "{{ $labels.exporter }} rejects spans: {{ $labels.error_type }}",
               "Collector -> destination: the destination answered a permanent error and the spans are "
               "dropped. Unauthenticated = 401 and PermissionDenied = 403 (credentials or grants), "
               "Unimplemented = 404 (a wrong experiment ID or path), InvalidArgument = 400."),
        _alert("TraceExportFailing",
               "sum by (namespace, exporter, error_type) (rate(otelcol_exporter_send_failed_spans"
               f'{{{ns}, error_permanent="false"}}[{w}])) > 0',
               "0m", "critical", "{{ $labels.exporter }} gave up retrying: {{ $labels.error_type }}",
               "Collector -> destination: the destination kept failing (5xx, 429, timeouts, refused "
               "connections) until the retries ran out, and the spans are dropped."),
        _alert("TraceExportServerErrors",
               "sum by (namespace, server_address, http_response_status_code) (rate(http_client_request_duration_count"
               f'{{{ns}, http_response_status_code=~"5..|429"}}[{w}])) > 0',
               timing.hold, "warning",
               "{{ $labels.server_address }} answers {{ $labels.http_response_status_code }} to the collector",
               "Collector -> destination: the destination at this address fails exports; the collector retries "
               "them (TraceExportStalled and TraceExportFailing follow if it does not recover)."),
        _alert("TraceExportStalled",
               f"max by (namespace, exporter) (otelcol_exporter_queue_size{{{ns}}} > 0) "
               "unless on (namespace, exporter) "
               f"sum by (namespace, exporter) (rate(otelcol_exporter_sent_spans{{{ns}}}[{w}]) > 0)",
               timing.hold, "critical", "{{ $labels.exporter }} holds spans and sends none",
               "Collector -> destination: the exporter is retrying (destination down, 5xx, timeouts); "
               "spans wait in its queue until they are sent or the retries give up."),
        _alert("TraceExportQueueFilling",
               f"max by (namespace, exporter) (otelcol_exporter_queue_size{{{ns}}} "
               f"/ otelcol_exporter_queue_capacity{{{ns}}}) > 0.8",
               timing.short_hold, "warning",
               "{{ $labels.exporter }}'s queue is {{ $value | humanizePercentage }} full",
               "Collector -> destination: when the queue is full, new spans for this destination are dropped."),
        _alert("TracesDropped",
               f"sum by (namespace, exporter) (rate(otelcol_exporter_enqueue_failed_spans{{{ns}}}[{w}])) > 0",
               "0m", "critical", "{{ $labels.exporter }} drops spans: its queue is full",
               "Collector -> destination: spans are lost. The destination has been failing longer than its "
               "queue holds; see TraceExportStalled."),
    ]
    if watched.mlflow_scraped:
        rules += [
            _alert("MlflowDown", f"absent_over_time(mlflow_exporter_info{{{ns}}}[{timing.down_after}])",
                   "0m", "critical", "No MLflow server of {{ $labels.namespace }} reports metrics",
                   f"No MLflow pod in {watched.namespace} was scraped for {timing.down_after}: the collector "
                   "queues spans, the UI and the API are down."),
            _alert("MlflowServerErrors",
                   f'sum by (namespace) (rate(mlflow_http_request_total{{{ns}, status=~"5.."}}[{w}])) > 0 or '
                   f"sum by (namespace) (rate(mlflow_trace_ingestion_server_errors_total{{{ns}}}[{w}])) > 0",
                   timing.hold, "warning", "MLflow answers 5xx",
                   "MLflow -> PostgreSQL or the artifact store: MLflow fails requests or trace ingest; its "
                   "log names the cause (database unreachable, artifact store refused)."),
            _alert("TracesNotStored",
                   "sum by (namespace) (rate(otelcol_processor_outgoing_items"
                   f'{{{ns}, processor="filter/noise", otel_signal="traces"}}[{timing.stored_window}])) > 0 '
                   "unless on (namespace) "
                   f"sum by (namespace) (rate(mlflow_spans_ingested_total{{{ns}}}[{timing.stored_window}])) > 0",
                   "0m", "critical", "Spans arrive at the collector but MLflow stores none",
                   f"The whole path: spans passed the noise filter in the last {timing.stored_window} (the "
                   "canary's at least) and MLflow ingested none. See the export alerts for the hop."),
        ]
    if watched.bundled_postgres:
        rules.append(_alert(
            "PostgresDown",
            f'kube_statefulset_status_replicas_ready{{{ns}, statefulset="{postgres.SERVICE_NAME}"}} < 1',
            timing.short_hold, "critical", "The bundled PostgreSQL is not ready",
            "MLflow -> PostgreSQL: MLflow cannot store or read traces; see the postgres pod's events and log."))
    # the canary's alert waits out a run in progress, however long its timeout makes it
    canary_hold = f"{max(_minutes(timing.canary_hold), -(-watched.canary_run_seconds // 60) + 2)}m" \
        if watched.canary_run_seconds else timing.canary_hold
    for cronjob, wanted, hold in ((CANARY_CRONJOB_NAME, watched.canary, canary_hold),
                                  (RETENTION_CRONJOB_NAME, watched.retention, timing.retention_hold)):
        if not wanted:
            continue
        selector = f'{ns}, cronjob="{cronjob}"'
        name = "TraceCanaryFailing" if cronjob == CANARY_CRONJOB_NAME else "TraceRetentionFailing"
        rules.append(_alert(
            name,
            f"kube_cronjob_status_last_schedule_time{{{selector}}} > on (namespace, cronjob) "
            f"kube_cronjob_status_last_successful_time{{{selector}}} or "
            f"kube_cronjob_status_last_schedule_time{{{selector}}} unless on (namespace, cronjob) "
            f"kube_cronjob_status_last_successful_time{{{selector}}}",
            hold, "critical" if cronjob == CANARY_CRONJOB_NAME else "warning",
            f"The {cronjob} CronJob's last run did not succeed",
            "The canary sends the post-deploy check's traces and reads them back: the path from an "
            "application to a stored trace is broken; its pod's last line names the hop."
            if cronjob == CANARY_CRONJOB_NAME else
            "Traces past their retention are not deleted; the job's last line says why."))
    if watched.check:
        rules.append(_alert(
            "TraceCheckFailed", f'kube_job_status_failed{{{ns}, job_name=~"{CHECK_JOB_PREFIX}.*"}} > 0',
            "0m", "warning", "The post-deploy check failed",
            "The last `pulumi up` ended with a failed check; its pod's last line names the hop."))
    return {"groups": [{"name": f"mlflow-tracing-{watched.namespace}", "rules": rules}]}


def _panel(title: str, unit: str, queries: dict[str, str], position: int) -> dict:
    return {
        "type": "timeseries", "title": title, "id": position + 1,
        "gridPos": {"x": (position % 2) * 12, "y": (position // 2) * 8, "w": 12, "h": 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
                    for i, (legend, expr) in enumerate(queries.items())],
    }


def dashboard_panels(namespace: str, *, mlflow_scraped: bool, canary: bool, window: str = "5m") -> list[dict]:
    ns = f'namespace="{namespace}"'

    def rate(metric: str, by: str = "") -> str:
        """Per `by`; or in total, 0 rather than no data while a counter has not been created yet."""
        if by:
            return f"sum by ({by}) (rate({metric}{{{ns}}}[{window}]))"
        return f"sum (rate({metric}{{{ns}}}[{window}])) or vector(0)"

    def p95(metric: str, by: str) -> str:
        return f"histogram_quantile(0.95, sum by (le, {by}) (rate({metric}{{{ns}}}[{window}])))"

    panels = [
        ("Spans in", "cps", {"accepted": rate("otelcol_receiver_accepted_spans"),
                             "refused": rate("otelcol_receiver_refused_spans"),
                             "probe noise dropped": rate("otelcol_processor_filter_spans_filtered")}),
        ("Spans exported per experiment and destination", "cps",
         {"{{exporter}}": rate("otelcol_exporter_sent_spans", "exporter")}),
        ("Spans failed or dropped per destination", "cps",
         {"failed {{exporter}} {{error_type}}": rate("otelcol_exporter_send_failed_spans", "exporter, error_type"),
          "dropped {{exporter}}": rate("otelcol_exporter_enqueue_failed_spans", "exporter")}),
        ("Export queue use", "percentunit",
         {"{{exporter}}": f"max by (exporter) (otelcol_exporter_queue_size{{{ns}}} "
                          f"/ otelcol_exporter_queue_capacity{{{ns}}})"}),
        ("Export latency p95 per destination", "s",
         {"{{server_address}}": p95("http_client_request_duration_bucket", "server_address")}),
        ("Export responses per destination", "reqps",
         {"{{server_address}} {{http_response_status_code}}":
          rate("http_client_request_duration_count", "server_address, http_response_status_code")}),
    ]
    if mlflow_scraped:
        panels += [
            ("MLflow spans stored", "cps", {"ingested": rate("mlflow_spans_ingested_total"),
                                            "ingest 5xx": rate("mlflow_trace_ingestion_server_errors_total")}),
            ("MLflow OTLP ingest latency p95", "s",
             {"/v1/traces": "histogram_quantile(0.95, sum by (le) "
                            f"(rate(mlflow_otlp_request_duration_seconds_bucket{{{ns}}}[{window}])))"}),
            # prometheus_flask_exporter as MLflow sets it up labels requests by method and status, not route
            ("MLflow API requests by status", "reqps",
             {"{{method}} {{status}}": rate("mlflow_http_request_total", "method, status")}),
            ("MLflow API latency p95", "s",
             {"{{method}} {{status}}": p95("mlflow_http_request_duration_seconds_bucket", "method, status")}),
        ]
    if canary:
        panels.append(("Canary: time since its last successful run", "s",
                       {"canary": f'time() - max(kube_cronjob_status_last_successful_time{{{ns}, '
                                  f'cronjob="{CANARY_CRONJOB_NAME}"}})'}))
    return [_panel(title, unit, queries, i) for i, (title, unit, queries) in enumerate(panels)]


def dashboard(namespace: str, *, mlflow_scraped: bool, canary: bool) -> dict:
    """The Grafana dashboard (JSON model) of one stack."""
    return {
        # at most 40 characters, distinct per namespace
        "uid": f"mlflow-tracing-{namespace[:16]}-{hashlib.sha256(namespace.encode()).hexdigest()[:8]}",
        "title": f"MLflow tracing ({namespace})",
        "tags": ["mlflow-tracing"], "timezone": "browser", "schemaVersion": 39, "refresh": "1m",
        "time": {"from": "now-6h", "to": "now"},
        "panels": dashboard_panels(namespace, mlflow_scraped=mlflow_scraped, canary=canary),
    }


def service_monitor_spec(component: str, port: str) -> dict:
    """A ServiceMonitor of one Service's pods; `namespace` is set by the Prometheus Operator."""
    return {
        "selector": {"matchLabels": {"app.kubernetes.io/name": component}},
        "scrapeProtocols": SCRAPE_PROTOCOLS,
        "endpoints": [{"port": port, "path": "/metrics", "interval": "30s"}],
    }


def scraped_services(mlflow_scraped: bool) -> dict[str, str]:
    """Service (component) -> the port name its metrics are on."""
    return {collector.COMPONENT: "metrics", **({mlflow.COMPONENT: "http"} if mlflow_scraped else {})}


class StackMonitoring(pulumi.ComponentResource):
    """The alert rules (a PrometheusRule, or a ConfigMap for a Prometheus without the operator), the
    ServiceMonitors with the operator, and the dashboard's ConfigMap for the Grafana sidecar."""

    def __init__(self, name: str, *, config: Monitoring, watched: Watched, namespace: NamespaceRef,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-tracing:index:StackMonitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        labels = {**labels_for(COMPONENT), **config.labels}
        rules = alert_rules(watched)
        if config.prometheus_operator:
            k8s.apiextensions.CustomResource(
                f"{name}-rules", api_version="monitoring.coreos.com/v1", kind="PrometheusRule",
                metadata={"namespace": namespace.ref, "labels": labels}, spec=rules, opts=child)
            for component, port in scraped_services(watched.mlflow_scraped).items():
                k8s.apiextensions.CustomResource(
                    f"{name}-{component}", api_version="monitoring.coreos.com/v1", kind="ServiceMonitor",
                    metadata={"namespace": namespace.ref, "labels": labels},
                    spec=service_monitor_spec(component, port), opts=child)
        else:
            k8s.core.v1.ConfigMap(f"{name}-rules", metadata={"namespace": namespace.ref, "labels": labels},
                                  data={RULES_FILE: yaml.safe_dump(rules, sort_keys=False)}, opts=child)
        k8s.core.v1.ConfigMap(
            f"{name}-dashboard",
            metadata={"namespace": namespace.ref, "labels": {**labels_for(COMPONENT), **config.dashboard_labels}},
            data={DASHBOARD_FILE: json.dumps(dashboard(watched.namespace, mlflow_scraped=watched.mlflow_scraped,
                                                       canary=watched.canary), indent=1)},
            opts=child)
        self.register_outputs({})
