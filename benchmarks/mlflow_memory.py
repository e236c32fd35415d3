"""Memory of the declared MLflow server: the whole process tree's PSS beside the
declared memory limit.

Starts real PostgreSQL (Debian's packages) and the MLflow container exactly as
the stack declares it (workers, job execution, env), idle and after a burst of
OTLP traffic, and prints medians of repeated samples. Exits non-zero when the
headroom under the limit is below 25%.

    .venv/bin/python -m benchmarks.mlflow_memory                   # the dev stack's defaults
    .venv/bin/python -m benchmarks.mlflow_memory --auth basic                     # as every other stack runs
    .venv/bin/python -m benchmarks.mlflow_memory --workers 4 --job-execution --memory-limit 4300Mi
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests
from mlflow import MlflowClient

from components.config import MEMORY_HEADROOM, merge_over, quantity_bytes
from tests.support import k8s
from tests.support.otlp import one_span_request
from tests.support.processes import MlflowProcess, PostgresCluster, free_port, kubelet_for, run_job
from tests.support.procfs import process_tree, pss_bytes
from tests.support.program import PORT_FORWARD, run_program, stack_values

MIB = 1024 * 1024


def sample(root: int, count: int, interval: float) -> tuple[float, float, int]:
    """Median and max PSS in MiB over `count` samples, and the process count."""
    figures, processes = [], 0
    for _ in range(count):
        tree = process_tree(root)
        processes = max(processes, len(tree))
        figures.append(pss_bytes(tree) / MIB)
        time.sleep(interval)
    return statistics.median(figures), max(figures), processes


def send_traffic(url: str, traces: int, credentials: tuple[str, str] | None) -> None:
    """OTLP traces into one experiment, then the search the UI makes."""
    if credentials:  # MLflow's client signs in with these
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = credentials
    client = MlflowClient(tracking_uri=url)
    experiment_id = client.create_experiment(f"bench-{time.time_ns()}")
    for number in range(traces):
        body, _ = one_span_request("bench", f"chat-{number}", {"gen_ai.usage.input_tokens": 12})
        requests.post(f"{url}/v1/traces", data=body, timeout=30, auth=credentials, headers={
            "Content-Type": "application/x-protobuf", "x-mlflow-experiment-id": experiment_id}).raise_for_status()
    client.search_traces(locations=[experiment_id], max_results=100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", default="dev")
    parser.add_argument("--workers", type=int, help="override mlflow.workers")
    parser.add_argument("--job-execution", action="store_true", help="set mlflow.jobExecution true")
    parser.add_argument("--auth", choices=("basic", "none"), help="override mlflow.auth.kind")
    parser.add_argument("--memory-limit", help="override mlflow.resources.limits.memory, e.g. 4Gi")
    parser.add_argument("--samples", type=int, default=15)
    parser.add_argument("--traces", type=int, default=300)
    args = parser.parse_args()

    changes: dict = {}
    if args.workers:
        changes["workers"] = args.workers
    if args.job_execution:
        changes["jobExecution"] = True
    if args.auth:
        changes["auth"] = {"kind": args.auth}
        if args.auth == "basic":
            # `pulumi up` through a port-forward, so that the admin password never crosses the dev
            # stack's plain-HTTP Ingress; the server itself does not depend on it.
            changes["apiUrl"] = PORT_FORWARD
    if args.memory_limit:
        changes["resources"] = {"limits": {"memory": args.memory_limit}}
    declared = run_program(args.stack, mlflow=merge_over(stack_values(args.stack).get("mlflow", {}), changes))
    container = k8s.container(declared.get("Deployment", "mlflow"), "mlflow")
    limit_mib = quantity_bytes(container["resources"]["limits"]["memory"]) / MIB
    env = {name: entry.get("value") for name, entry in k8s.env_of(container).items()}
    workers = k8s.arg_after(container["command"], "--workers")

    workdir = Path(tempfile.mkdtemp(prefix="mlflow-memory-"))
    workdir.chmod(0o755)
    secrets = {s.name: s.outputs["stringData"] for s in declared.kinds("Secret")}
    database = secrets["postgres-credentials"]
    admin = secrets.get("mlflow-auth-secret")
    postgres = PostgresCluster(workdir / "pg", database["username"], database["password"]).start()
    server = None
    try:
        port = free_port()
        kubelet = kubelet_for(declared, workdir, postgres, port)
        run_job(kubelet, "postgres-init")
        server = MlflowProcess(kubelet, declared, port, workdir / "mlflow.log")
        server.migrate()
        server.start()
        time.sleep(10)  # workers finish importing before the idle figure
        idle = sample(server.process.pid, args.samples, 1.0)
        send_traffic(server.url, args.traces, (admin["username"], admin["password"]) if admin else None)
        loaded = sample(server.process.pid, args.samples, 1.0)
    finally:
        if server:
            server.stop()
        postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    app = " --app-name basic-auth" if "--app-name" in container["command"] else ""
    print(f"stack {args.stack}:{app} --workers {workers}, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="
          f"{env['MLFLOW_SERVER_ENABLE_JOB_EXECUTION']}, started in {server.started_in:.1f}s")
    for label, (median, peak, processes) in (("idle", idle), (f"after {args.traces} traces", loaded)):
        print(f"  PSS {label:>18}: median {median:7.0f} MiB, max {peak:7.0f} MiB over {args.samples} samples "
              f"({processes} processes)")
    peak = max(idle[1], loaded[1])
    headroom = 1 - peak / limit_mib
    print(f"  declared limit: {limit_mib:.0f} MiB; headroom at the max: {headroom:.0%} "
          f"(required >= {MEMORY_HEADROOM:.0%})")
    return 0 if headroom >= MEMORY_HEADROOM else 1


if __name__ == "__main__":
    sys.exit(main())
