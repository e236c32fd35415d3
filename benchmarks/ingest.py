"""Ingest throughput and latency of the trace path: through the collector, and direct to MLflow.

Starts real PostgreSQL (Debian's packages), the MLflow container as a stack declares it with
basic auth on (as every stack but dev runs), and the real collector on the config the program
generates, everything on loopback as the integration suite runs them. A few batches down each
path warm the workers up; then, in one run:

1. direct: one OTLP client posting 512-span batches to MLflow as fast as it answers, then N clients;
2. collector, saturated: one client offering several times the direct rate; what MLflow stores
   per second then is the knee of the curve;
3. collector, paced at fractions of the knee;
4. a noise mix at half the knee: probe requests outnumber chat traces 5 to 1.

Per step: spans sent, stored (counted in PostgreSQL) and lost once the pipeline drained; the
latency from a span's end to its trace showing in MLflow's trace search (p50/p95/p99 over one
chat trace in SAMPLE_EVERY, spread over each client batch), and how long the searches took;
CPU seconds per 1,000 spans and peak PSS of MLflow, the collector and PostgreSQL; the
collector's own counters (queue, refusals, failed sends). Prints a table, writes JSON with
--json, and exits 1 when a goal is missed, 2 when the run itself failed (naming the process
that ended).

    .venv/bin/python -m benchmarks.ingest                              # ~8 min
    .venv/bin/python -m benchmarks.ingest --quick --json ingest.json   # ~4 min
    .venv/bin/python -m benchmarks.ingest --quick --workers 4          # a point of the cost curve
    .venv/bin/python -m benchmarks.ingest --quick --replicas 2         # two MLflows, one PostgreSQL
    .venv/bin/python -m benchmarks.ingest --quick --uvicorn-opts '--loop asyncio --http h11'

MLflow runs from the -full image's own install (tests/support/images.py), so by default with its
server stack, uvicorn[standard]: uvloop and httptools.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import requests
from mlflow import MlflowClient
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from components.config import merge_over
from tests.support import k8s
from tests.support.balancer import RoundRobinProxy
from tests.support.collector import CollectorProcess, RealIdMocks, build_collector, configmap_config
from tests.support.otlp import chat_trace, export_request, probe_trace
from tests.support.processes import MlflowProcess, PostgresCluster, free_port, kubelet_for, run_job
from tests.support.procfs import cpu_seconds, process_tree, pss_bytes
from tests.support.program import PORT_FORWARD, run_program, stack_values

EXPERIMENT = "bench-ingest"
SERVICE = "llama-stack"
# The sampled traces of each batch carry this trace tag (a root-span attribute `mlflow.traceTag.<key>`,
# as MLflow's own span processor sends tags over OTLP), so the trace search can find the samples alone.
SAMPLE_TAG = "latency_sample"
CLIENT_BATCH_SPANS = 512  # an OpenTelemetry SDK's BatchSpanProcessor exports at most 512 spans a request
SAMPLE_EVERY = 8  # one chat trace in this many is a latency sample (16 of a 512-span batch of chats)
NOISE_PER_CHAT = 5  # probe requests per chat trace in the noise mix
PROBES = (("/v1/models", "new", "python-httpx/0.28"), ("/v1/health", "new", "kube-probe/1.30"))
WARMUP_SHARE = 0.2  # the stored rate is measured after this share of a step
WARMUP_BATCHES = 4  # client batches down each path before the first step
# How often the trace search is asked for the sampled traces: latencies are late by up to this much
# plus the search's own time (reported). Without MLflow's credential cache each search also costs a
# password hash (~0.13 CPU s), so --auth-cache-seconds 0 runs should poll less often (--poll-seconds).
POLL_SECONDS = 0.25
DRAIN_TIMEOUT = 240  # after a step, the longest wait for the pipeline to store what it accepted
STALL_SECONDS = 30  # no progress this long with an empty queue ends the drain: the rest is lost
COLLECTOR_GAIN_GOAL = 1.2  # through the collector, at least this times one direct client
P95_GOAL_SECONDS = 2.0  # p95 latency at half the knee
MIB = 1024 * 1024
SATURATED = "collector saturated"
DROP_COUNTERS = ("otelcol_exporter_send_failed_spans", "otelcol_exporter_enqueue_failed_spans")
# The collector's counters a step reports (deltas): received, refused, filtered, exported, batch sizes.
COUNTERS = ("otelcol_receiver_accepted_spans", "otelcol_receiver_refused_spans",
            "otelcol_processor_filter_spans_filtered", "otelcol_exporter_sent_spans", *DROP_COUNTERS,
            "otelcol_processor_batch_batch_send_size_sum",
            "otelcol_processor_batch_batch_send_size_count", "otelcol_processor_batch_timeout_trigger_send",
            "otelcol_processor_batch_batch_size_trigger_send")


@dataclass(frozen=True)
class Target:
    """Where a client posts OTLP/HTTP, and what it sends along."""

    url: str
    headers: dict[str, str]
    auth: tuple[str, str] | None = None


def client_batch(noise_per_chat: int) -> tuple[bytes, int, int, list[tuple[str, int]]]:
    """(serialized request, real spans, all spans, [(sampled trace id, its end in ns)]) of one batch of
    chat traces, each followed by `noise_per_chat` probe requests. Every SAMPLE_EVERY-th chat trace,
    from the first, is a sample: when the collector splits the batch, samples travel in every export
    request, so the latencies are those of the batch's traces, early and late alike."""
    spans: list[Span] = []
    chats: list[list[Span]] = []
    while len(spans) < CLIENT_BATCH_SPANS:
        chats.append(chat_trace("llama-3.1-8b", 120, 30))
        spans += chats[-1]
        for number in range(noise_per_chat):
            spans += probe_trace(*PROBES[number % len(PROBES)])
    samples = []
    for chat in chats[::SAMPLE_EVERY]:
        root = chat[0]
        root.attributes.append(KeyValue(key=f"mlflow.traceTag.{SAMPLE_TAG}", value=AnyValue(string_value="1")))
        samples.append((root.trace_id.hex(), root.end_time_unix_nano))
    real = sum(len(chat) for chat in chats)
    return export_request({SERVICE: spans}).SerializeToString(), real, len(spans), samples


class LatencyProbe(threading.Thread):
    """Looks for the sampled traces through MLflow's trace search and notes, for each, the time
    from its span's end to the search first returning it."""

    def __init__(self, mlflow_url: str, experiment_id: str, poll_seconds: float):
        super().__init__(daemon=True)
        self.client, self.experiment_id = MlflowClient(tracking_uri=mlflow_url), experiment_id
        self.poll_seconds = poll_seconds
        self.pending: dict[str, int] = {}  # trace id -> end of its root span, ns since the epoch
        self.seconds: list[float] = []
        self.search_seconds: list[float] = []  # how long each search took: a part of every latency
        self.error: Exception | None = None
        self._lock, self._halt = threading.Lock(), threading.Event()

    def expect(self, trace_id: str, end_ns: int) -> None:
        with self._lock:
            self.pending[trace_id] = end_ns

    def run(self) -> None:
        while not self._halt.wait(self.poll_seconds):
            with self._lock:
                oldest = min(self.pending.values(), default=None)
            if oldest is None:
                continue
            try:
                self._search(oldest // 1_000_000 - 1000)
            except Exception as error:  # any failure: raised again by finish(), with the step
                self.error = error
                return

    def _search(self, since_ms: int) -> None:
        token = None
        while True:
            began = time.monotonic()
            page = self.client.search_traces(
                locations=[self.experiment_id], max_results=500, include_spans=False, page_token=token,
                filter_string=f"tags.{SAMPLE_TAG} = '1' AND trace.timestamp_ms >= {since_ms}")
            now = time.time_ns()
            self.search_seconds.append(time.monotonic() - began)
            with self._lock:
                for trace in page:
                    end = self.pending.pop(trace.info.trace_id.removeprefix("tr-"), None)
                    if end is not None:
                        self.seconds.append((now - end) / 1e9)
            token = page.token
            if not token:
                return

    def finish(self, timeout: float) -> int:
        """Wait (bounded) for the pending samples; stop; the number never seen."""
        deadline = time.monotonic() + timeout
        while self.pending and self.error is None and time.monotonic() < deadline:
            time.sleep(self.poll_seconds)
        self._halt.set()
        self.join(30)
        if self.error:
            raise RuntimeError(f"MLflow's trace search failed: {self.error}") from self.error
        return len(self.pending)


class Client(threading.Thread):
    """An application's OTLP exporter: batches posted one at a time, paced to `rate` spans/s or
    as fast as the target answers. A refused batch is counted, not retried."""

    def __init__(self, target: Target, rate: float | None, noise_per_chat: int, until: float,
                 latency: LatencyProbe):
        super().__init__(daemon=True)
        self.target, self.rate, self.noise_per_chat, self.until, self.latency = (
            target, rate, noise_per_chat, until, latency)
        self.sent = self.accepted = self.accepted_real = self.refused = 0
        self.refusals: dict[str, int] = {}

    def run(self) -> None:
        session = requests.Session()
        session.trust_env = False
        next_send = time.monotonic()
        while time.monotonic() < self.until:
            body, real, total, samples = client_batch(self.noise_per_chat)
            try:
                answer = str(session.post(self.target.url, data=body, headers=self.target.headers,
                                          auth=self.target.auth, timeout=60).status_code)
            except requests.RequestException as error:
                answer = type(error).__name__
            self.sent += total
            if answer == "200":
                self.accepted += total
                self.accepted_real += real
                for trace_id, end_ns in samples:
                    self.latency.expect(trace_id, end_ns)
            else:
                self.refused += total
                self.refusals[answer] = self.refusals.get(answer, 0) + 1
            if self.rate:
                next_send += total / self.rate
                time.sleep(max(0.0, next_send - time.monotonic()))


class PeakSampler(threading.Thread):
    """Once a second: the PSS of each process tree, and the collector's queue; keeps the peaks."""

    def __init__(self, roots: dict[str, list[int]], collector: CollectorProcess):
        super().__init__(daemon=True)
        self.roots, self.collector = roots, collector
        self.peak_mib = dict.fromkeys(roots, 0.0)
        self.queue_peak = 0
        self.error: requests.RequestException | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        while True:
            for name, pids in self.roots.items():
                self.peak_mib[name] = max(self.peak_mib[name], pss_bytes(processes_under(pids)) / MIB)
            try:
                self.queue_peak = max(self.queue_peak, self.collector.queued_batches())
            except requests.RequestException as error:
                self.error = error
                return
            if self._halt.wait(1.0):
                return

    def finish(self) -> None:
        self._halt.set()
        self.join(30)
        if self.error:
            raise RuntimeError(f"the collector's metrics endpoint failed: {self.error}") from self.error


@dataclass(frozen=True)
class Step:
    name: str
    path: str  # "direct" or "collector"
    clients: int = 1
    offered: float | None = None  # spans/s of each client; None: as fast as the target answers
    noise_per_chat: int = 0


@dataclass
class StepResult:
    name: str
    path: str
    clients: int
    offered_per_s: float | None
    seconds: float
    sent: int  # spans the clients posted
    accepted: int  # spans in batches the target answered 200
    refused: int  # spans in batches the target refused (the client knows; backpressure)
    refusals: dict[str, int]
    expected_stored: int  # accepted spans that are not probe noise
    stored: int  # counted in PostgreSQL once drained
    stored_per_s: float  # stored while the clients were sending, after the warm-up
    lost: int
    collector_drops: int  # spans the collector counted as failed to send or to enqueue
    stored_noise: int
    drain_seconds: float
    latency_samples: int
    latency_unseen: int
    p50: float | None
    p95: float | None
    p99: float | None
    search_p50: float | None  # seconds a trace search took (the latencies include one)
    search_p95: float | None
    cpu_per_1k: dict[str, float | None]  # CPU seconds per 1,000 spans, per process tree
    peak_mib: dict[str, float]
    queue_peak_batches: int
    mlflow_processes_cpu: list[float]  # CPU seconds of each MLflow process in the step: how the workers shared it
    collector_counters: dict[str, float] = field(default_factory=dict)


def processes_under(roots: list[int]) -> list[int]:
    """The roots and all their descendants."""
    return [pid for root in roots for pid in process_tree(root)]


def percentile(values: list[float], share: float) -> float | None:
    """Nearest-rank percentile; a sample never seen counts as infinitely late."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


class Bench:
    """The running stack: PostgreSQL, MLflow (basic auth) and the collector, with one experiment."""

    def __init__(self, args: argparse.Namespace, workdir: Path):
        self.args, self.workdir = args, workdir
        changes: dict = {"auth": {"kind": "basic"}, "apiUrl": PORT_FORWARD}
        if args.auth_cache_seconds is not None:
            changes["auth"]["credentialCacheSeconds"] = args.auth_cache_seconds
        if args.workers:
            changes["workers"] = args.workers
        if args.replicas > 1:  # as a stack runs several replicas: artifacts on a volume they can share
            changes.update(replicas=args.replicas, artifacts={"accessMode": "ReadWriteMany"})
        self.mlflow_settings = merge_over(stack_values("dev").get("mlflow", {}), changes)
        self.declared = run_program("dev", mlflow=self.mlflow_settings)
        if args.uvicorn_opts:  # e.g. the plain asyncio/h11 stack, beside the image's uvloop/httptools
            server = k8s.container(self.declared.get("Deployment", "mlflow"), "mlflow")
            server["command"] += ["--uvicorn-opts", args.uvicorn_opts]
        secrets = {s.name: s.outputs["stringData"] for s in self.declared.kinds("Secret")}
        database, admin = secrets["postgres-credentials"], secrets["mlflow-auth-secret"]
        self.admin = (admin["username"], admin["password"])
        container = k8s.container(self.declared.get("Deployment", "mlflow"), "mlflow")
        self.workers = int(k8s.arg_after(container["command"], "--workers"))
        self.postgres = PostgresCluster(workdir / "pg", database["username"], database["password"])
        self.servers: list[MlflowProcess] = []  # the MLflow replicas
        self.balancer: RoundRobinProxy | None = None  # their Service, with more than one
        self.collector: CollectorProcess | None = None

    @property
    def mlflow_url(self) -> str:
        return self.balancer.url if self.balancer else self.servers[0].url

    def start(self) -> None:
        binary = build_collector()
        self.postgres.start()
        ports = [free_port() for _ in range(self.args.replicas)]
        kubelets = [kubelet_for(self.declared, self.workdir / f"mlflow-{n}", self.postgres, port)
                    for n, port in enumerate(ports)]
        run_job(kubelets[0], "postgres-init")
        self.servers = [MlflowProcess(kubelet, self.declared, port, self.workdir / f"mlflow-{n}.log")
                        for n, (kubelet, port) in enumerate(zip(kubelets, ports, strict=True))]
        self.servers[0].migrate()
        for server in self.servers:
            server.start()
        if len(ports) > 1:
            self.balancer = RoundRobinProxy(lambda: ports)
        # MLflow's client (the trace search) signs in with these.
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = self.admin
        created = requests.post(f"{self.mlflow_url}/api/2.0/mlflow/experiments/create", auth=self.admin, timeout=30,
                                json={"name": EXPERIMENT, "tags": [
                                    {"key": "mlflow.experimentKind", "value": "genai_development"}]})
        created.raise_for_status()
        self.experiment_id = created.json()["experiment_id"]
        run = run_program("dev", mocks=RealIdMocks({EXPERIMENT: self.experiment_id}), mlflow=self.mlflow_settings,
                          experiments=[{"name": EXPERIMENT, "default": True}])
        container = k8s.container(run.get("Deployment", "otel-collector"), "otel-collector")
        env = kubelets[0].env(container, {})  # the pod's env: the admin's credentials from the Secret
        self.config = with_overrides(configmap_config(run), self.args)
        self.collector = CollectorProcess(binary, run, self.mlflow_url, self.workdir / "collector",
                                          env=env, config=self.config).start()

    def stop(self) -> None:
        for process in (self.collector, *self.servers, self.postgres):
            if process:
                process.stop()
        if self.balancer:
            self.balancer.close()

    def exited(self) -> list[str]:
        """The processes of the stack that have ended (a run's error usually starts there)."""
        processes = {"PostgreSQL": self.postgres.process,
                     "the collector": self.collector.process if self.collector else None,
                     **{f"MLflow {n}": server.process for n, server in enumerate(self.servers)}}
        return [name for name, process in processes.items() if process is not None and process.poll() is not None]

    def target(self, path: str) -> Target:
        assert self.collector
        if path == "direct":
            return Target(f"{self.mlflow_url}/v1/traces", {
                "Content-Type": "application/x-protobuf", "x-mlflow-experiment-id": self.experiment_id}, self.admin)
        return Target(f"{self.collector.http_url}/v1/traces", {"Content-Type": "application/x-protobuf"})

    def stored(self, noise: bool = False) -> int:
        only_noise = " AND name LIKE 'GET %'" if noise else ""
        return int(self.postgres.psql(f"SELECT count(*) FROM spans WHERE experiment_id = {int(self.experiment_id)}"
                                      f"{only_noise}", database="mlflow"))

    def roots(self) -> dict[str, list[int]]:
        """The root processes of each part of the stack, by name."""
        assert self.collector and self.collector.process and self.postgres.process
        return {"mlflow": [server.process.pid for server in self.servers if server.process],
                "collector": [self.collector.process.pid], "postgres": [self.postgres.process.pid]}

    def counters(self) -> dict[str, float]:
        assert self.collector
        totals = self.collector.metric_totals()
        return {name: totals.get(name, 0.0) for name in COUNTERS}

    def warm_up(self) -> None:
        """A few batches down each path, stored before anything is measured: each MLflow worker compiles
        its SQL statements and caches the verified credential at its first requests, which would
        otherwise be counted in the first step (its latencies were several seconds longer)."""
        stored_before, expected = self.stored(), 0
        drops_before = sum(self.counters()[name] for name in DROP_COUNTERS)
        for path in ("direct", "collector"):
            target = self.target(path)
            for _ in range(WARMUP_BATCHES):  # a connection each, so usually to every worker (the kernel picks)
                body, real, _, _ = client_batch(0)
                with requests.Session() as session:
                    session.trust_env = False
                    session.post(target.url, data=body, headers=target.headers, auth=target.auth,
                                 timeout=60).raise_for_status()
                expected += real
        stored = self._drain(stored_before, expected, drops_before)
        if stored != expected:
            raise RuntimeError(f"warm-up: {stored} of {expected} spans stored")

    def run(self, step: Step, seconds: float) -> StepResult:
        assert self.collector
        roots = self.roots()
        stored_before, noise_before, counters_before = self.stored(), self.stored(noise=True), self.counters()
        cpu_before = {name: cpu_seconds(processes_under(pids)) for name, pids in roots.items()}
        mlflow_cpu_before = {pid: cpu_seconds([pid]) for pid in processes_under(roots["mlflow"])}
        latency = LatencyProbe(self.mlflow_url, self.experiment_id, self.args.poll_seconds)
        peaks = PeakSampler(roots, self.collector)
        began = time.monotonic()
        clients = [Client(self.target(step.path), step.offered, step.noise_per_chat, began + seconds, latency)
                   for _ in range(step.clients)]
        for thread in (latency, peaks, *clients):
            thread.start()
        time.sleep(WARMUP_SHARE * seconds)
        window_start, window_stored = time.monotonic(), self.stored()
        for client in clients:
            client.join(seconds + 90)  # a post times out after 60 s
            if client.is_alive():
                raise RuntimeError(f"{step.name}: a client did not stop")
        window = time.monotonic() - window_start
        stored_per_s = (self.stored() - window_stored) / window
        sending_ended = time.monotonic()
        expected = sum(c.accepted_real for c in clients)
        stored = self._drain(stored_before, expected, drops_before=sum(counters_before[n] for n in DROP_COUNTERS))
        drain_seconds = time.monotonic() - sending_ended
        unseen = latency.finish(timeout=10)
        peaks.finish()
        cpu = {name: cpu_seconds(processes_under(pids)) - cpu_before[name] for name, pids in roots.items()}
        mlflow_processes_cpu = sorted((round(cpu_seconds([pid]) - used, 1) for pid, used in mlflow_cpu_before.items()),
                                      reverse=True)
        counters = self.counters()
        delta = {name: value - counters_before.get(name, 0.0) for name, value in counters.items()}
        accepted = sum(c.accepted for c in clients)
        per_span_count = {"mlflow": stored, "postgres": stored,
                          "collector": accepted if step.path == "collector" else 0}
        latencies = latency.seconds + [float("inf")] * unseen
        refusals: dict[str, int] = {}
        for client in clients:
            for answer, count in client.refusals.items():
                refusals[answer] = refusals.get(answer, 0) + count
        return StepResult(
            name=step.name, path=step.path, clients=step.clients,
            offered_per_s=step.offered * step.clients if step.offered else None, seconds=seconds,
            sent=sum(c.sent for c in clients), accepted=accepted, refused=sum(c.refused for c in clients),
            refusals=refusals, expected_stored=expected, stored=stored, stored_per_s=stored_per_s,
            lost=expected - stored, collector_drops=int(sum(delta.get(name, 0) for name in DROP_COUNTERS)),
            stored_noise=self.stored(noise=True) - noise_before, drain_seconds=drain_seconds,
            latency_samples=len(latencies), latency_unseen=unseen, p50=percentile(latencies, 0.5),
            p95=percentile(latencies, 0.95), p99=percentile(latencies, 0.99),
            search_p50=percentile(latency.search_seconds, 0.5), search_p95=percentile(latency.search_seconds, 0.95),
            cpu_per_1k={name: (cpu[name] / count * 1000 if count else None) for name, count in per_span_count.items()},
            peak_mib=peaks.peak_mib, queue_peak_batches=peaks.queue_peak, mlflow_processes_cpu=mlflow_processes_cpu,
            collector_counters={name: value for name, value in delta.items() if value},
        )

    def _drain(self, stored_before: int, expected: int, drops_before: float) -> int:
        """Spans stored since `stored_before` once all `expected` arrived, or the collector counted the
        rest as dropped (since `drops_before`), or nothing moved for STALL_SECONDS with an empty queue, or
        DRAIN_TIMEOUT passed."""
        assert self.collector
        deadline = time.monotonic() + DRAIN_TIMEOUT
        last, moved_at = -1, time.monotonic()
        while True:
            stored = self.stored() - stored_before
            dropped = sum(self.counters()[name] for name in DROP_COUNTERS) - drops_before
            if stored != last:
                last, moved_at = stored, time.monotonic()
            stalled = time.monotonic() - moved_at > STALL_SECONDS and self.collector.queued_batches() == 0
            if stored >= expected - dropped or stalled or time.monotonic() > deadline:
                return stored
            time.sleep(1.0)


def with_overrides(config: dict, args: argparse.Namespace) -> dict:
    """The generated config with the batch and exporter settings given on the command line, to
    compare candidates for the defaults; without options it is the generated config unchanged."""
    tuned = copy.deepcopy(config)
    batch = tuned["processors"]["batch"]
    if args.batch_size:
        batch["send_batch_size"] = args.batch_size
        batch["send_batch_max_size"] = 2 * args.batch_size
    if args.batch_timeout:
        batch["timeout"] = args.batch_timeout
    for exporter in tuned["exporters"].values():
        if args.consumers:
            exporter["sending_queue"]["num_consumers"] = args.consumers
        if args.queue_size:
            exporter["sending_queue"]["queue_size"] = args.queue_size
        if args.compression:
            exporter["compression"] = args.compression
        if args.no_keep_alive:
            exporter["disable_keep_alives"] = True
    return tuned


def goals(results: list[StepResult], knee: float, direct_one: float) -> list[tuple[str, bool, str]]:
    by_name = {r.name: r for r in results}
    half = by_name["collector 0.5 knee"]
    saturated = by_name[SATURATED]
    below = [r for r in results if r.path == "collector" and r.name != SATURATED]
    noise = by_name["collector noise mix"]
    return [
        (f"through the collector >= {COLLECTOR_GAIN_GOAL}x one direct client at saturation",
         knee >= COLLECTOR_GAIN_GOAL * direct_one,
         f"{knee:.0f} vs {direct_one:.0f} spans/s = {knee / direct_one:.2f}x"),
        (f"p95 latency < {P95_GOAL_SECONDS:.0f} s at half the knee",
         half.p95 is not None and half.p95 < P95_GOAL_SECONDS,
         f"p95 {half.p95:.2f} s over {half.latency_samples} samples" if half.p95 is not None else "no sample"),
        ("0 spans lost below the knee", all(r.lost == 0 for r in below),
         ", ".join(f"{r.name}: {r.lost}" for r in below)),
        ("beyond the knee: queued or refused, every drop counted by the collector",
         saturated.lost <= saturated.collector_drops,
         f"queue peak {saturated.queue_peak_batches} batches, {saturated.refused} spans refused, "
         f"{saturated.lost} lost, {saturated.collector_drops} counted as dropped"),
        ("0 probe spans stored", all(r.stored_noise == 0 for r in results),
         f"{sum(r.stored_noise for r in results)} stored of {noise.sent - noise.expected_stored} sent in the mix"),
    ]


def figure(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else ("inf" if value == float("inf") else f"{value:.{digits}f}")


def exported_batch(result: StepResult) -> float | None:
    """Spans per request the collector's batch processor sent on average in the step."""
    count = result.collector_counters.get("otelcol_processor_batch_batch_send_size_count")
    return result.collector_counters["otelcol_processor_batch_batch_send_size_sum"] / count if count else None


def print_table(results: list[StepResult]) -> None:
    header = (f"{'step':<22} {'offered/s':>9} {'sent':>7} {'stored/s':>8} {'lost':>5} {'p50 s':>6} {'p95 s':>6} "
              f"{'p99 s':>6} {'search p95':>10} {'CPU s/1k: mlflow':>16} {'coll':>5} {'pg':>5} "
              f"{'peak MiB: mlflow':>16} {'coll':>5} "
              f"{'queue':>5} {'batch':>5} {'refused':>7} {'drops':>5}")
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r.name:<22} {figure(r.offered_per_s, 0):>9} {r.sent:>7} {r.stored_per_s:>8.0f} {r.lost:>5} "
              f"{figure(r.p50):>6} {figure(r.p95):>6} {figure(r.p99):>6} {figure(r.search_p95):>10} "
              f"{figure(r.cpu_per_1k['mlflow']):>16} "
              f"{figure(r.cpu_per_1k['collector']):>5} {figure(r.cpu_per_1k['postgres']):>5} "
              f"{r.peak_mib['mlflow']:>16.0f} {r.peak_mib['collector']:>5.0f} {r.queue_peak_batches:>5} "
              f"{figure(exported_batch(r), 0):>5} "
              f"{r.refused:>7} {r.collector_drops:>5}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--step-seconds", type=float,
                        help="how long each step sends (default 30, 15 with --quick; the saturated step twice that)")
    parser.add_argument("--quick", action="store_true", help="paced steps at 0.5 and 0.9 of the knee only (~4 min)")
    parser.add_argument("--clients", type=int, default=4, help="clients of the direct N-client step (default 4)")
    parser.add_argument("--overload", type=float, default=4.0,
                        help="the saturated step offers this times the single direct client's rate (default 4)")
    parser.add_argument("--workers", type=int, help="override mlflow.workers")
    parser.add_argument("--replicas", type=int, default=1,
                        help="MLflow replicas sharing the PostgreSQL, behind a round-robin balancer (default 1)")
    parser.add_argument("--poll-seconds", type=float, default=POLL_SECONDS,
                        help=f"how often the latency probe searches for its traces (default {POLL_SECONDS})")
    parser.add_argument("--auth-cache-seconds", type=int, help="override mlflow.auth.credentialCacheSeconds")
    parser.add_argument("--uvicorn-opts",
                        help="added to MLflow's server as --uvicorn-opts, e.g. '--loop asyncio --http h11' for the "
                             "plain server stack instead of the -full image's uvloop/httptools")
    parser.add_argument("--batch-size", type=int,
                        help="override the batch processor's send_batch_size (and send_batch_max_size, to twice it)")
    parser.add_argument("--batch-timeout", help="override the batch processor's timeout, e.g. 1s")
    parser.add_argument("--consumers", type=int, help="override the exporters' sending_queue.num_consumers")
    parser.add_argument("--queue-size", type=int, help="override the exporters' sending_queue.queue_size")
    parser.add_argument("--compression", help="override the exporters' compression, e.g. none")
    parser.add_argument("--no-keep-alive", action="store_true",
                        help="the exporters open a connection per request (disable_keep_alives)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    if args.replicas < 1:
        parser.error("--replicas must be at least 1")
    seconds = args.step_seconds or (15 if args.quick else 30)
    fractions = (0.5, 0.9) if args.quick else (0.25, 0.5, 0.75, 0.9)

    workdir = Path(tempfile.mkdtemp(prefix="mlflow-tracing-bench-"))
    workdir.chmod(0o755)
    bench = Bench(args, workdir)
    load_before = os.getloadavg()
    results: list[StepResult] = []
    try:
        bench.start()
        bench.warm_up()

        def run(step: Step) -> StepResult:
            # The saturated step runs twice as long: its exports take seconds each.
            result = bench.run(step, 2 * seconds if step.name == SATURATED else seconds)
            results.append(result)
            print(f"  {step.name}: {result.stored_per_s:.0f} spans/s stored, {result.lost} lost, "
                  f"p95 {figure(result.p95)} s", flush=True)
            return result

        direct_one = run(Step("direct, 1 client", "direct")).stored_per_s
        run(Step(f"direct, {args.clients} clients", "direct", clients=args.clients))
        knee = run(Step(SATURATED, "collector", offered=args.overload * direct_one)).stored_per_s
        for fraction in fractions:
            run(Step(f"collector {fraction} knee", "collector", offered=fraction * knee))
        run(Step("collector noise mix", "collector", offered=0.5 * knee * (4 + 3 * NOISE_PER_CHAT) / 4,
                 noise_per_chat=NOISE_PER_CHAT))
    except (RuntimeError, OSError, subprocess.SubprocessError, requests.RequestException) as error:
        ended = bench.exited()
        print(f"benchmark aborted: {error}" + (f" ({', '.join(ended)} no longer running)" if ended else ""),
              file=sys.stderr)
        return 2
    finally:
        bench.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    checked = goals(results, knee, direct_one)
    print(f"\nMLflow: {args.replicas} replica(s) of --workers {bench.workers}, basic auth; {os.cpu_count()} cores, "
          f"load average {load_before[0]:.1f} before / {os.getloadavg()[0]:.1f} after; {seconds:.0f} s steps; knee "
          f"{knee:.0f} spans/s (the collector saturated), one direct client {direct_one:.0f} spans/s")
    print_table(results)
    print()
    for goal, passed, detail in checked:
        print(f"{'PASS' if passed else 'FAIL'}  {goal}: {detail}")
    if args.json:
        args.json.write_text(json.dumps({
            "cores": os.cpu_count(), "load_average_before": load_before[0], "load_average_after": os.getloadavg()[0],
            "mlflow_workers": bench.workers, "mlflow_replicas": args.replicas, "step_seconds": seconds,
            "uvicorn_opts": args.uvicorn_opts or "",
            "knee_spans_per_s": knee,
            "direct_one_client_spans_per_s": direct_one,
            "collector": {"batch": bench.config["processors"]["batch"],
                          "exporter": next(iter(bench.config["exporters"].values()))},
            "steps": [asdict(r) for r in results],
            "goals": [{"goal": g, "passed": p, "detail": d} for g, p, d in checked],
        }, indent=2, default=str))
    return 0 if all(passed for _, passed, _ in checked) else 1


if __name__ == "__main__":
    sys.exit(main())
