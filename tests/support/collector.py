"""The real OpenTelemetry Collector for the integration suite.

`build_collector` runs collector/build.sh (the OpenTelemetry Collector Builder
at the deployed version, cached under the git-ignored .cache/otelcol) and fails
loudly when Go or the module proxy is missing. `CollectorProcess` runs the
binary from a config the program generated, with the addresses a cluster
provides mapped to this machine: listeners on loopback free ports, MLflow's
Service URL to the test's MLflow, the queue volume to a temp dir.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import requests
import yaml
from mlflow import MlflowClient

from components.collector import (
    BATCH_TIMEOUT_SECONDS,
    COMPONENT,
    EXPERIMENT_HEADER,
    GRPC_PORT,
    HEALTH_PORT,
    HTTP_PORT,
    METRICS_PORT,
    PASSWORD_ENV,
    QUEUE_DIR,
    USERNAME_ENV,
    render_config,
)
from tests.support.images import collector_image
from tests.support.k8s import integral
from tests.support.kubelet import container_argv, identity_for, new_filesystem, reachable, set_volume_ownership
from tests.support.processes import free_port, run_build, stop, wait_until
from tests.support.program import PROJECT_DIR, ProgramRun, RecordingMocks, run_program

BUILD_SCRIPT = PROJECT_DIR / "collector" / "build.sh"
BUILD_TIMEOUT = 1800  # a cold build took ~6 min here; a warm one ~5 s
START_TIMEOUT = 30
# How long to watch for spans that should not come (probe noise, duplicates) once the expected ones
# arrived: a batch's wait in the collector, its export and MLflow storing it (~1.7 CPU s per 512 spans).
SETTLE_SECONDS = BATCH_TIMEOUT_SECONDS + 3
# Throwaway credentials for configs with basic auth; the collector reads them from its env.
TEST_CREDENTIALS = {USERNAME_ENV: "collector-test", PASSWORD_ENV: "collector-test-password"}


def build_collector() -> Path:
    """The path of the built otelcol-mlflow binary; raises with the build's output on failure."""
    binary = Path(run_build(BUILD_SCRIPT, BUILD_TIMEOUT, "Go and the Go module proxy"))
    if not os.access(binary, os.X_OK):
        raise RuntimeError(f"collector/build.sh printed {binary}, which is not an executable")
    return binary


def configmap_config(run: ProgramRun) -> dict:
    """The collector config the program put into its ConfigMap."""
    config_map = next(c for c in run.kinds("ConfigMap") if c.name == "collector-config")
    return yaml.safe_load(config_map.outputs["data"]["collector.yaml"])


def pod_checksum(run: ProgramRun) -> str:
    template = run.get("Deployment", "otel-collector").outputs["spec"]["template"]
    return template["metadata"]["annotations"]["checksum/config"]


class RealIdMocks(RecordingMocks):
    """Program mocks whose experiment resources output the IDs of real MLflow experiments."""

    def __init__(self, ids: dict[str, str]):
        super().__init__()
        self.real_ids = ids

    def new_resource(self, args):
        resource_id, outputs = super().new_resource(args)
        if "experiment_id" in outputs:
            outputs["experiment_id"] = self.real_ids[args.inputs["name"]]
            self.registered[-1].outputs["experiment_id"] = outputs["experiment_id"]
        return resource_id, outputs


def validate(binary: Path, config: dict, directory: Path) -> subprocess.CompletedProcess:
    """`otelcol validate`: every component's own validation, OTTL parsing included."""
    path = directory / "validate.yaml"
    path.write_text(render_config(config))
    return subprocess.run([str(binary), "validate", f"--config={path}"], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **TEST_CREDENTIALS})


@dataclass(frozen=True)
class LoopbackPorts:
    grpc: int
    http: int
    health: int
    metrics: int

    @classmethod
    def free(cls) -> LoopbackPorts:
        return cls(free_port(), free_port(), free_port(), free_port())


def on_loopback(config: dict, ports: LoopbackPorts, mlflow_url: str, queue_dir: Path) -> dict:
    """The config with the cluster's addresses mapped to this machine. Only the
    values the program declares for a pod are replaced; anything else fails here."""
    local = copy.deepcopy(config)
    protocols = local["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == f"0.0.0.0:{GRPC_PORT}"
    assert protocols["http"]["endpoint"] == f"0.0.0.0:{HTTP_PORT}"
    protocols["grpc"]["endpoint"] = f"127.0.0.1:{ports.grpc}"
    protocols["http"]["endpoint"] = f"127.0.0.1:{ports.http}"
    health = local["extensions"]["health_check"]
    assert health["endpoint"] == f"0.0.0.0:{HEALTH_PORT}"
    health["endpoint"] = f"127.0.0.1:{ports.health}"
    (reader,) = local["service"]["telemetry"]["metrics"]["readers"]
    prometheus = reader["pull"]["exporter"]["prometheus"]
    assert prometheus == {"host": "0.0.0.0", "port": METRICS_PORT}
    prometheus.update(host="127.0.0.1", port=ports.metrics)
    for exporter in local["exporters"].values():
        if EXPERIMENT_HEADER not in exporter.get("headers", {}):
            continue  # a further destination: its endpoint is the one the test configured
        assert exporter["endpoint"].startswith("http://mlflow.")
        exporter["endpoint"] = mlflow_url
    if "file_storage" in local["extensions"]:
        storage = local["extensions"]["file_storage"]
        assert storage["directory"] == QUEUE_DIR
        storage["directory"] = str(queue_dir)
    return local


class CollectorProcess:
    """otelcol-mlflow on loopback, run as the run's collector container is (its user, groups,
    capabilities and read-only root; its queue volume walked with its fsGroup at each start, as
    a kubelet mounts a claim); a stop and a new start keep its ports and queue directory."""

    def __init__(self, binary: Path, run: ProgramRun, mlflow_url: str, directory: Path,
                 env: dict[str, str] | None = None, config: dict | None = None):
        """`env`: the container's env as a kubelet resolves it, by default throwaway credentials;
        `config`: the collector's config, by default the run's ConfigMap."""
        self.env = env if env is not None else TEST_CREDENTIALS
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        reachable(directory)
        workload = next(r for r in run.resources if r.kind in ("Deployment", "StatefulSet")
                        and r.k8s_name == COMPONENT)
        self.pod = integral(workload.outputs["spec"]["template"]["spec"])
        (self.container,) = self.pod["containers"]
        self.image = collector_image(self.container["image"], binary)
        self.ports = LoopbackPorts.free()
        self.config_file = directory / "collector.yaml"
        self.log = directory / "collector.log"
        self.process: subprocess.Popen | None = None
        self.configure(config if config is not None else configmap_config(run), mlflow_url)

    def configure(self, config: dict, mlflow_url: str) -> None:
        """Write a (new) config; it takes effect at the next start, like a rolled pod."""
        self.config = on_loopback(config, self.ports, mlflow_url, self.directory / "queue")
        self.config_file.write_text(render_config(self.config))
        self.config_file.chmod(0o644)  # a ConfigMap volume's file: readable, not writable, by the container

    def start(self) -> CollectorProcess:
        queue = self.directory / "queue"
        if not queue.exists():
            new_filesystem(queue)
        context = self.pod.get("securityContext") or {}
        set_volume_ownership(queue, context.get("fsGroup"), context.get("fsGroupChangePolicy"))
        identity = identity_for(self.pod, self.container, self.image, cri_o=False)
        writable = [queue] if (self.container.get("securityContext") or {}).get("readOnlyRootFilesystem") else None
        argv = container_argv([*self.image.entrypoint, f"--config={self.config_file}"], identity, self.directory,
                              writable)
        env = {"PATH": self.image.path, "HOME": identity.home, **self.env}
        self.process = subprocess.Popen(argv, env=env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, cwd="/",
                                        start_new_session=True)
        wait_until(lambda: requests.get(f"http://127.0.0.1:{self.ports.health}/", timeout=2).status_code == 200,
                   START_TIMEOUT, "collector", self.process, self.log)
        return self

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.http}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.ports.grpc}"

    def stop(self) -> None:
        """SIGTERM, as the kubelet sends on a rollout: the collector shuts down gracefully."""
        if self.process:
            stop(self.process, timeout=30)

    def restart(self) -> None:
        self.stop()
        self.start()

    def _samples(self) -> list[tuple[str, str, float]]:
        """(metric name, label text, value) of each sample of the collector's own metrics (its Prometheus
        telemetry endpoint)."""
        metrics = requests.get(f"http://127.0.0.1:{self.ports.metrics}/metrics", timeout=5).text
        samples = []
        for line in metrics.splitlines():
            if line and not line.startswith("#"):
                series, value = line.rsplit(" ", 1)
                name, _, labels = series.partition("{")
                samples.append((name, labels, float(value)))
        return samples

    def metric_totals(self) -> dict[str, float]:
        """The collector's own metrics, each summed over its labels."""
        totals: dict[str, float] = {}
        for name, _, value in self._samples():
            totals[name] = totals.get(name, 0.0) + value
        return totals

    def metric_totals_by_exporter(self) -> dict[str, dict[str, float]]:
        """exporter -> its metrics (`otelcol_exporter_*`), each summed over the other labels."""
        totals: dict[str, dict[str, float]] = {}
        for name, labels, value in self._samples():
            exporter = re.search(r'exporter="([^"]+)"', labels)
            if exporter:
                per_exporter = totals.setdefault(exporter.group(1), {})
                per_exporter[name] = per_exporter.get(name, 0.0) + value
        return totals

    def queued_batches(self) -> int:
        """Batches waiting in the exporters' queues (`otelcol_exporter_queue_size`)."""
        return int(self.metric_totals().get("otelcol_exporter_queue_size", 0))

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


@dataclass(frozen=True)
class StoredSpan:
    trace_id: str
    span_id: str
    parent_id: str
    name: str


def program_with_real_ids(mlflow_url: str, experiments: list[dict], **overrides) -> ProgramRun:
    """The dev stack with these experiments, whose resources output the IDs the
    real MLflow holds for their names (created here when missing), as `pulumi up`
    would after the provider created them."""
    client = MlflowClient(tracking_uri=mlflow_url)
    ids = {}
    for experiment in experiments:
        found = client.get_experiment_by_name(experiment["name"])
        ids[experiment["name"]] = found.experiment_id if found else client.create_experiment(experiment["name"])
    return run_program("dev", mocks=RealIdMocks(ids), experiments=experiments, **overrides)


def stored_spans(mlflow_url: str, experiment_id: str, traces: Collection[str] | None = None) -> list[StoredSpan]:
    """Every span MLflow holds in the experiment, read through its API; with `traces` (hex trace
    ids), only theirs: a deployed stack's canary stores and deletes a trace of its own in the
    default experiment every few minutes, so a whole-experiment count can shift under a test."""
    client = MlflowClient(tracking_uri=mlflow_url)
    found, token = [], None
    while True:
        page = client.search_traces(locations=[experiment_id], max_results=500, page_token=token)
        for trace in page:
            trace_id = trace.info.trace_id.removeprefix("tr-")
            if traces is None or trace_id in traces:
                found += [StoredSpan(trace_id, s.span_id, s.parent_id or "", s.name) for s in trace.data.spans]
        token = page.token
        if not token:
            return found


def span_counts_in_mlflow(mlflow_url: str, experiment_id: str,
                          traces: Collection[str] | None = None) -> tuple[int, int]:
    """(spans, distinct (trace, span) ids) MLflow holds in the experiment (of `traces` only, when given)."""
    spans = stored_spans(mlflow_url, experiment_id, traces)
    return len(spans), len({(s.trace_id, s.span_id) for s in spans})


def wait_stored_once(mlflow_url: str, experiment_id: str, traces: Collection[str], spans: int, timeout: float,
                     what: str) -> None:
    """Until MLflow holds `spans` spans of `traces` in the experiment; then, after the time a late
    duplicate would take to arrive, that it holds each of them exactly once."""
    wait_until(lambda: span_counts_in_mlflow(mlflow_url, experiment_id, traces)[0] >= spans, timeout, what)
    time.sleep(3)
    assert span_counts_in_mlflow(mlflow_url, experiment_id, traces) == (spans, spans), what
