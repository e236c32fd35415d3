"""The stack's in-cluster trace jobs, shipped in a ConfigMap and run by the MLflow
image's Python (standard library only):

    python trace_jobs.py verify     after every change: traces flow to their experiments, noise does not
    python trace_jobs.py retention  on a schedule: delete traces older than each experiment's limit

Settings come from the environment, set by `components/trace_upkeep.py`:
MLFLOW_URL, MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (basic auth,
absent without it), COLLECTOR_URL (verify), TRACE_JOB_PLAN (JSON) and, for a
further destination that the check reads back with a token, the variable the
plan names.

A failure prints one line, naming the broken hop and where to look, and exits 1.
The pod's `terminationMessagePolicy: FallbackToLogsOnError` makes that line the
container's termination message, which `pulumi up` shows when the Job fails.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

POLL_SECONDS = 1.0
ROUNDS = 3  # sends of the synthetic traces before a misrouting is reported
ROUND_PAUSE_SECONDS = 5  # between them: a collector pod of the previous config drains meanwhile
REQUEST_TIMEOUT = 10
TRACE_PREFIX = "tr-"  # MLflow's ID of an OTLP trace: this prefix and the OTel trace ID in hex
SPAN_KIND_SERVER = 2
CHECK_ATTRIBUTE = "mlflow_tracing.check"  # carried by every synthetic span, set to the run's ID
MAX_VERDICT = 1500  # characters of a failure line
# The collector's metrics before sending, through the Service (each scrape reaches one pod): until
# this many scrapes in a row meet no pod not met before, at most BASELINE_MAX_SCRAPES.
BASELINE_QUIET_SCRAPES = 8
BASELINE_MAX_SCRAPES = 40


class HopFailure(Exception):
    """A broken hop of the trace path: its message is the line the job prints."""


class Misrouted(HopFailure):
    """A trace stored where the config does not send it, or noise stored. Right after a rollout
    this may come from a collector pod of the previous config that is still draining, so the
    check tries again before it says so."""


class Unreachable(Exception):
    """No HTTP answer at all (connection refused, DNS, timeout)."""


@dataclass(frozen=True)
class Http:
    """JSON over HTTP with optional basic auth or a bearer token; an HTTP error is an answer, not an
    exception."""

    base_url: str
    username: str | None = None
    password: str | None = None
    token: str | None = None

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, dict]:
        status, raw = self.call_raw(method, path, body)
        return status, _json(raw)

    def call_raw(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.base_url.rstrip('/')}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if self.username is not None:
            token = base64.b64encode(f"{self.username}:{self.password or ''}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        elif self.token is not None:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            reason = getattr(error, "reason", error)
            raise Unreachable(f"{method} {self.base_url}{path}: {reason}") from error


def _json(raw: bytes) -> dict:
    try:
        value = json.loads(raw or b"{}")
    except ValueError:
        return {"text": raw[:200].decode(errors="replace")}
    return value if isinstance(value, dict) else {}


def mlflow_from_env() -> Http:
    return Http(os.environ["MLFLOW_URL"], os.environ.get("MLFLOW_TRACKING_USERNAME"),
                os.environ.get("MLFLOW_TRACKING_PASSWORD"))


def experiment_stage(mlflow: Http, experiment_id: str) -> tuple[int, str]:
    """(HTTP status, lifecycle stage) of an experiment, by ID."""
    status, body = mlflow.call("GET", "/api/2.0/mlflow/experiments/get?"
                               + urllib.parse.urlencode({"experiment_id": experiment_id}))
    return status, body.get("experiment", {}).get("lifecycle_stage", "")


def delete_traces(mlflow: Http, experiment_id: str, **selection: Any) -> int:
    """DeleteTraces in one experiment: by `request_ids`, or `max_timestamp_millis` and `max_traces`."""
    status, body = mlflow.call("POST", "/api/2.0/mlflow/traces/delete-traces",
                               {"experiment_id": experiment_id, **selection})
    if status != 200:
        raise HopFailure(f"MLflow refused to delete traces in experiment {experiment_id}: HTTP {status} {body}")
    return int(body.get("traces_deleted", 0))


# --- verify -----------------------------------------------------------------------------------


def otlp_span(service: str, name: str, attributes: dict[str, str], scope: str = "mlflow-tracing") -> tuple[str, dict]:
    """(OTel trace ID in hex, OTLP/JSON resourceSpans) of one finished root span."""
    trace_id, span_id = os.urandom(16).hex(), os.urandom(8).hex()
    now = time.time_ns()
    span = {
        "traceId": trace_id, "spanId": span_id, "name": name, "kind": SPAN_KIND_SERVER,
        "startTimeUnixNano": str(now - 1_000_000), "endTimeUnixNano": str(now),
        "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attributes.items()],
    }
    return trace_id, {
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"scope": {"name": scope}, "spans": [span]}],
    }


@dataclass
class Probe:
    """One synthetic trace and where it must (or, for noise, must not) be stored."""

    what: str  # for messages
    trace_id: str  # OTel, hex
    expected: str | None  # experiment ID; None for noise
    found_in: str | None = None
    destination: dict | None = None  # the further destination this trace is selected for

    @property
    def mlflow_id(self) -> str:
        return TRACE_PREFIX + self.trace_id


def _looking_at(namespace: str, component: str) -> str:
    return f"kubectl -n {namespace} get pods -l app.kubernetes.io/name={component}; " \
           f"kubectl -n {namespace} logs -l app.kubernetes.io/name={component} --tail=50"


def check_experiments(mlflow: Http, plan: dict, deadline: float) -> None:
    """Every experiment the collector exports to exists and is active, and the check's own user
    may read it."""
    for experiment in plan["experiments"]:
        while True:
            try:
                status, stage = experiment_stage(mlflow, experiment["id"])
            except Unreachable as error:
                if time.monotonic() > deadline:
                    raise HopFailure(f"MLflow unreachable: {error}. Look at: "
                                     f"{_looking_at(plan['namespace'], 'mlflow')}") from None
                time.sleep(POLL_SECONDS)
                continue
            if status >= 500 and time.monotonic() < deadline:
                time.sleep(POLL_SECONDS)
                continue
            break
        name, experiment_id = experiment["name"], experiment["id"]
        if status == 401:
            raise HopFailure(
                f"sign-in refused: MLflow answers HTTP 401 to the check's own user (Secret "
                f"{plan.get('credentialsSecret') or 'none: auth is off in the stack'}); MLflow holds another password "
                f"for it, or no such user. Run `pulumi up`: it refreshes the MLflow users and sets them again")
        if status == 403:
            raise HopFailure(
                f"permission refused: the check's user may not read experiment {name!r} (ID {experiment_id}, HTTP "
                f"403): its READ grant was revoked in MLflow. Run `pulumi up`: it refreshes the grants and puts them "
                f"back")
        if status == 404:
            raise HopFailure(
                f"export refused: the collector exports experiment {name!r} to ID {experiment_id}, which MLflow does "
                f"not have (HTTP 404): the ID is stale. Run `pulumi up` (it refreshes and re-creates the experiment)")
        if status != 200:
            raise HopFailure(f"MLflow answered HTTP {status} for experiment {name!r} (ID {experiment_id}). "
                             f"Look at: {_looking_at(plan['namespace'], 'mlflow')}")
        if stage != "active":
            raise HopFailure(
                f"export goes to a deleted experiment: {name!r} (ID {experiment_id}) is {stage} in MLflow, so its "
                f"traces are hidden. Restore it, or run `pulumi up`, which refreshes and restores it")


def send_through_collector(collector_url: str, plan: dict, probes: list[Probe], run_id: str,
                           deadline: float) -> None:
    """One OTLP/JSON request with a synthetic trace per experiment and the noise request."""
    resource_spans = []
    for experiment in plan["experiments"]:
        trace_id, spans = otlp_span(experiment["service"], "mlflow-tracing check", {CHECK_ATTRIBUTE: run_id})
        probes.append(Probe(f"the trace of experiment {experiment['name']!r} (service {experiment['service']!r})",
                            trace_id, experiment["id"]))
        resource_spans.append(spans)
    for destination in plan.get("destinations", []):
        trace_id, spans = otlp_span(destination["service"], "mlflow-tracing check", {CHECK_ATTRIBUTE: run_id},
                                    scope=destination["scope"])
        probes.append(Probe(f"the trace for destination {destination['name']!r} (service "
                            f"{destination['service']!r}, scope {destination['scope']!r})", trace_id,
                            destination["experimentId"], destination=destination))
        resource_spans.append(spans)
    noise = plan["noise"]
    trace_id, spans = otlp_span(noise["service"], noise["name"], {**noise["attributes"], CHECK_ATTRIBUTE: run_id})
    probes.append(Probe(f"the probe request {noise['name']!r}", trace_id, None))
    resource_spans.append(spans)

    collector = Http(collector_url)
    while True:
        try:
            status, body = collector.call("POST", "/v1/traces", {"resourceSpans": resource_spans})
            break
        except Unreachable as error:
            if time.monotonic() > deadline:
                raise HopFailure(f"collector unreachable: {error}. Look at: "
                                 f"{_looking_at(plan['namespace'], 'otel-collector')}; its NetworkPolicy") from None
            time.sleep(POLL_SECONDS)
    if status != 200:
        raise HopFailure(f"collector refused OTLP: HTTP {status} {body}. Look at: "
                         f"{_looking_at(plan['namespace'], 'otel-collector')}")


def trace_location(mlflow: Http, probe: Probe) -> str | None:
    """The experiment ID that holds the probe's trace, or None while none of the experiments the
    check reads holds it."""
    status, body = mlflow.call("GET", f"/api/3.0/mlflow/traces/{probe.mlflow_id}")
    # A user without admin rights gets 403 for a trace MLflow does not hold (yet): it can be told
    # from "not stored" only in the experiments it reads, which are the ones the collector routes to.
    if status in (403, 404):
        return None
    if status >= 500:  # a pod rolling or overloaded: retried until the deadline, like no answer
        raise Unreachable(f"GET {mlflow.base_url}/api/3.0/mlflow/traces/{probe.mlflow_id}: HTTP {status}")
    if status != 200:
        raise HopFailure(f"MLflow answered HTTP {status} when reading trace {probe.mlflow_id}: {body}")
    location = body.get("trace", {}).get("trace_info", {}).get("trace_location", {})
    return str(location.get("mlflow_experiment", {}).get("experiment_id"))


def await_delivery(mlflow: Http, plan: dict, probes: list[Probe], deadline: float) -> None:
    """Poll MLflow until every synthetic trace is stored; then give the noise the same time to show."""
    names = {e["id"]: e["name"] for e in plan["experiments"]}
    sent = time.monotonic()
    pending = [p for p in probes if p.expected is not None]
    last_error: Unreachable | None = None
    while pending:
        try:
            for probe in list(pending):
                probe.found_in = trace_location(mlflow, probe)
                if probe.found_in is None:
                    continue
                if probe.found_in != probe.expected:
                    raise Misrouted(
                        f"trace in the wrong experiment: {probe.what} is stored in experiment {probe.found_in} "
                        f"({names.get(probe.found_in, 'not one of the stack')}), not {probe.expected}. Look at the "
                        f"routing table in the collector's ConfigMap and the experiments' `services`")
                pending.remove(probe)
            last_error = None
        except Unreachable as error:
            last_error = error
        if pending and time.monotonic() > deadline:
            if last_error is not None:
                raise HopFailure(f"MLflow unreachable: {last_error}. Look at: "
                                 f"{_looking_at(plan['namespace'], 'mlflow')}")
            raise HopFailure(
                f"timeout: after {plan['timeoutSeconds']} s MLflow holds no trace for "
                f"{', '.join(p.what for p in pending)}; the collector accepted it. Look at: "
                f"{_looking_at(plan['namespace'], 'otel-collector')} (export errors name MLflow's answer: 401, its "
                f"MLflow user's password; 403, its EDIT grant on the experiment)")
        if pending:
            time.sleep(POLL_SECONDS)
    # The noise travelled in the same request, but a batch may split it from the traces: give it as
    # long as the traces took, at least the batch timeout and a second, within the deadline.
    grace = max(plan["noiseGraceSeconds"], time.monotonic() - sent)
    time.sleep(max(0.0, min(grace, deadline - time.monotonic())))
    for probe in probes:
        if probe.expected is None:
            probe.found_in = trace_location(mlflow, probe)
            if probe.found_in is not None:
                raise Misrouted(
                    f"noise stored: {probe.what} was stored in experiment {probe.found_in} "
                    f"({names.get(probe.found_in, 'not one of the stack')}): no rule of `collector.noise` drops it. "
                    f"Look at the filter/noise processor in the collector's ConfigMap")


def phoenix_for(destination: dict) -> Http:
    token_env = destination.get("tokenEnv")
    return Http(destination["url"], token=os.environ.get(token_env) if token_env else None)


def exporter_counts(collector_metrics: Http) -> tuple[str, dict[str, tuple[float, float]]]:
    """(the answering collector pod's instance ID, exporter -> (spans sent, spans that failed to
    send)), from one scrape of the collector's own metrics."""
    status, raw = collector_metrics.call_raw("GET", "")
    if status != 200:
        raise Unreachable(f"GET {collector_metrics.base_url}: HTTP {status}")
    instance, counts = "", {}  # type: str, dict[str, tuple[float, float]]
    for line in raw.decode(errors="replace").splitlines():
        if line.startswith("target_info{"):
            instance = line.split('service_instance_id="', 1)[-1].split('"', 1)[0]
        for metric, index in (("otelcol_exporter_sent_spans{", 0), ("otelcol_exporter_send_failed_spans{", 1)):
            if line.startswith(metric) and 'exporter="' in line:
                exporter = line.split('exporter="', 1)[1].split('"', 1)[0]
                pair = list(counts.get(exporter, (0.0, 0.0)))
                pair[index] += float(line.rsplit(" ", 1)[1])
                counts[exporter] = (pair[0], pair[1])
    return instance, counts


def exporter_baseline(collector_metrics: Http, deadline: float) -> dict[str, dict[str, tuple[float, float]]]:
    """collector pod (instance ID) -> its exporters' counts before the check sends. Only a pod met here
    can show a rise later: one met first after sending may have sent the check's trace already."""
    baseline: dict[str, dict[str, tuple[float, float]]] = {}
    quiet = 0
    for _ in range(BASELINE_MAX_SCRAPES):
        if quiet >= BASELINE_QUIET_SCRAPES or time.monotonic() > deadline:
            break
        try:
            instance, counts = exporter_counts(collector_metrics)
        except Unreachable:
            quiet += 1
            continue
        quiet = quiet + 1 if instance in baseline else 0
        baseline.setdefault(instance, counts)
    return baseline


def stored_in_phoenix(destination: dict, probe: Probe) -> bool:
    """Whether the destination's Phoenix holds the probe's trace in its project."""
    status, body = phoenix_for(destination).call(
        "GET", f"/v1/projects/{urllib.parse.quote(destination['project'])}/spans?"
        + urllib.parse.urlencode({"trace_id": probe.trace_id, "limit": 10}))
    if status == 404:  # the project does not exist yet: nothing stored in it so far
        return False
    if status in (401, 403):
        held = "the bearer token in the destination's auth Secret is not valid there" if destination.get("tokenEnv") \
            else "Phoenix asks for sign-in and the destination has no auth: give it auth type bearer (an API key)"
        raise HopFailure(f"destination {destination['name']!r}: Phoenix at {destination['url']} refused the check's "
                         f"read (HTTP {status}): {held}")
    if status != 200:
        raise Unreachable(f"GET {destination['url']}/v1/projects/{destination['project']}/spans: HTTP {status}")
    return any(span.get("context", {}).get("trace_id") == probe.trace_id for span in body.get("data", []))


def read_back_probes(destination: dict, probes: list[Probe]) -> list[Probe]:
    """The check's traces a Phoenix destination must hold: its own, and with no selection every trace
    sent (the clean-up deletes them only once they are stored: Phoenix stores after it answers)."""
    return [p for p in probes if p.destination is destination or (destination["selectsAll"] and p.expected is not None)]


def await_destinations(plan: dict, probes: list[Probe], baseline: dict, collector_metrics: Http,
                       deadline: float) -> None:
    """Each further destination's trace: read back from Phoenix where the destination says so, else the
    destination's exporter shown delivering (its sent spans rose, since the check began, on a collector
    pod met before sending)."""
    for probe in [p for p in probes if p.destination is not None]:
        destination = probe.destination
        assert destination is not None
        awaited = read_back_probes(destination, probes) if destination["readBack"] == "phoenix" else []
        while True:
            try:
                if destination["readBack"] == "phoenix":
                    awaited = [p for p in awaited if not stored_in_phoenix(destination, p)]
                    if not awaited:
                        break
                else:
                    instance, counts = exporter_counts(collector_metrics)
                    sent, _ = counts.get(destination["exporter"], (0.0, 0.0))
                    if instance in baseline and sent > baseline[instance].get(destination["exporter"], (0.0, 0.0))[0]:
                        break
            except Unreachable:
                pass  # a pod rolling, Phoenix restarting: until the deadline
            if time.monotonic() > deadline:
                raise HopFailure(destination_timeout(plan, destination, baseline, collector_metrics))
            time.sleep(POLL_SECONDS)


def destination_timeout(plan: dict, destination: dict, baseline: dict, collector_metrics: Http) -> str:
    """The verdict when a destination's trace did not show: what its exporter reports, if anything."""
    try:
        instance, counts = exporter_counts(collector_metrics)
        sent, failed = counts.get(destination["exporter"], (0.0, 0.0))
        sent_before, failed_before = baseline.get(instance, {}).get(destination["exporter"], (0.0, 0.0))
        since = " since the check began" if instance in baseline else " in all"
        figures = (f"its exporter {destination['exporter']} has sent {sent - sent_before:.0f} spans and failed "
                   f"{failed - failed_before:.0f}{since}")
    except Unreachable as error:
        figures = f"the collector's metrics are unreachable ({error})"
    where = (f"Phoenix at {destination['url']} holds no span of it in project {destination['project']!r}"
             if destination["readBack"] == "phoenix"
             else f"the collector's exporter sent nothing to it from the {len(baseline)} collector pods met before "
                  f"sending")
    return (f"destination {destination['name']!r}: after {plan['timeoutSeconds']} s {where}; {figures}. MLflow "
            f"stored the same trace. Look at: {_looking_at(plan['namespace'], 'otel-collector')} (export errors "
            f"name {destination['exporter']} and the destination's answer; a send counts as failed only once its "
            f"retries give up, after 10 min)")


def remove_probes(mlflow: Http, probes: list[Probe], plan: dict) -> None:
    """Delete every synthetic trace that reached MLflow, and from each destination the check reads
    (Phoenix), all of them (a destination that takes every trace got the experiments' too): the
    check leaves nothing behind where it can delete."""
    by_experiment: dict[str, list[str]] = {}
    for probe in probes:
        if probe.found_in is not None:
            by_experiment.setdefault(probe.found_in, []).append(probe.mlflow_id)
    for experiment_id, trace_ids in by_experiment.items():
        delete_traces(mlflow, experiment_id, request_ids=trace_ids)
    for destination in plan.get("destinations", []):
        if destination["readBack"] == "phoenix":
            phoenix = phoenix_for(destination)
            for probe in probes:
                status, _ = phoenix.call("DELETE", f"/v1/traces/{probe.trace_id}")
                if status not in (204, 404):
                    raise HopFailure(f"destination {destination['name']!r}: Phoenix refused to delete the check's "
                                     f"trace {probe.trace_id} (HTTP {status})")


def verify(plan: dict, mlflow: Http, collector_url: str) -> str:
    """The whole check; returns the success line or raises HopFailure."""
    began = time.monotonic()
    deadline = began + plan["timeoutSeconds"]
    run_id = os.urandom(8).hex()
    check_experiments(mlflow, plan, deadline)
    collector_metrics = Http(plan.get("collectorMetricsUrl", ""))
    round_number = 0
    while True:
        round_number += 1
        probes: list[Probe] = []
        try:
            counted = [d for d in plan.get("destinations", []) if d["readBack"] == "none"]
            baseline = exporter_baseline(collector_metrics, deadline) if counted else {}
            send_through_collector(collector_url, plan, probes, run_id, deadline)
            await_delivery(mlflow, plan, probes, deadline)
            await_destinations(plan, probes, baseline, collector_metrics, deadline)
        except HopFailure as failure:
            try:
                remove_probes(mlflow, probes, plan)
            except (Unreachable, HopFailure):
                pass  # the verdict matters more than the clean-up
            last_round = round_number == ROUNDS or time.monotonic() + ROUND_PAUSE_SECONDS > deadline
            if not isinstance(failure, Misrouted) or last_round:
                raise
            time.sleep(ROUND_PAUSE_SECONDS)
            continue
        try:
            remove_probes(mlflow, probes, plan)
        except Unreachable as error:
            raise HopFailure(f"clean-up failed: the traces arrived, but deleting them did not: {error}") from None
        routed = ", ".join(f"{e['service']} -> {e['name']} ({e['id']})" for e in plan["experiments"])
        further = "".join(f"; {d['name']}: {'read back from Phoenix' if d['readBack'] == 'phoenix' else 'sent'}"
                          for d in plan.get("destinations", []))
        return (f"ok: traces flow through the collector to MLflow ({routed}){further}; the probe request was "
                f"dropped; {time.monotonic() - began:.1f} s, round {round_number}")


# --- retention ---------------------------------------------------------------------------------


def retention(plan: dict, mlflow: Http, report: Callable[[str], None], now_ms: int | None = None) -> bool:
    """Delete traces older than each experiment's limit, at most `batchSize` per request,
    until a request deletes fewer. Experiments that are gone or soft-deleted are left alone.
    Each experiment is reported as it is done; one failing does not stop the others.
    Returns whether every experiment was handled."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    handled = True
    for experiment in plan["experiments"]:
        name, experiment_id, days = experiment["name"], experiment["id"], experiment["days"]
        try:
            report(f"{name} ({experiment_id}): {expire(mlflow, experiment_id, days, plan['batchSize'], now_ms)}")
        except (HopFailure, Unreachable) as failure:
            report(f"{name} ({experiment_id}): failed: {failure}")
            handled = False
    return handled


def expire(mlflow: Http, experiment_id: str, days: int, batch: int, now_ms: int) -> str:
    """One experiment's retention; what was done, in words."""
    status, stage = experiment_stage(mlflow, experiment_id)
    if status == 404 or (status == 200 and stage != "active"):
        return f"{'gone' if status == 404 else stage}; left alone"
    if status != 200:
        raise HopFailure(f"MLflow answered HTTP {status}")
    cutoff = now_ms - days * 86_400_000
    deleted = 0
    while True:
        count = delete_traces(mlflow, experiment_id, max_timestamp_millis=cutoff, max_traces=batch)
        deleted += count
        if count < batch:
            return f"deleted {deleted} traces older than {days} days"


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in ("verify", "retention"):
        print("usage: trace_jobs.py verify|retention", file=sys.stderr)
        return 2
    plan = json.loads(os.environ["TRACE_JOB_PLAN"])
    mlflow = mlflow_from_env()
    if argv[1] == "retention":
        return 0 if retention(plan, mlflow, lambda line: print(f"retention: {line}", flush=True)) else 1
    try:
        print(verify(plan, mlflow, os.environ["COLLECTOR_URL"]))
    except HopFailure as failure:
        print(one_line(f"verify failed: {failure}"), flush=True)
        return 1
    except Unreachable as error:
        print(one_line(f"verify failed: MLflow unreachable: {error}"), flush=True)
        return 1
    return 0


def one_line(message: str) -> str:
    """The verdict, short enough that the termination message (the log's last 2048 bytes) keeps its start."""
    return message if len(message) <= MAX_VERDICT else message[:MAX_VERDICT - 3] + "..."


if __name__ == "__main__":
    sys.exit(main(sys.argv))
