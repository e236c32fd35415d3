"""The monitoring deployed by the real engine: the canary CronJob, run by the real
kube-controller-manager's CronJob controller and the node agent, passes on a healthy stack and
leaves no trace behind, and fails naming MLflow when MLflow is gone; the rules and the dashboard
are in the cluster for a Prometheus and a Grafana to load."""

from __future__ import annotations

import json

import pytest
import yaml

from components import mlflow as mlflow_component
from components.config import parse_stack_config
from components.monitoring import DASHBOARD_FILE, RULES_FILE, alert_rules, watched_by
from components.trace_upkeep import CANARY_COMPONENT, CANARY_CRONJOB_NAME
from tests.support.collector import stored_spans
from tests.support.processes import wait_until

NAMESPACE = "monitored"
EXPERIMENT = "canary-watched"
RUN_TIMEOUT = 240  # the next minute's run, its pod's start and the check's round (or its 60 s timeout)


def stack_config(mlflow_url: str) -> dict:
    return {
        "namespace": NAMESPACE,
        "exposure": {"kind": "none"},
        "mlflow": {"apiUrl": mlflow_url, "auth": {"kind": "none"}},
        "experiments": [{"name": EXPERIMENT, "default": True}],
        "monitoring": {"canary": {"schedule": "* * * * *"}},
        # how long a run waits for MLflow before it fails, the canary's as the check's
        "verify": {"timeoutSeconds": 60},
    }


@pytest.fixture(scope="module")
def stack(project, mlflow_url):
    stack = project.stack("monitored", stack_config(mlflow_url))
    stack.up().check("up of the monitored stack")
    yield stack
    stack.destroy().check("destroy of the monitored stack")


def canary_jobs(cluster) -> list[dict]:
    found = cluster.get(f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs")["items"]
    return [j for j in found if j["metadata"]["labels"].get("app.kubernetes.io/name") == CANARY_COMPONENT]


def next_canary_run(cluster, after: set[str]) -> dict:
    """The first canary Job not in `after` that finished, succeeded or failed."""
    def finished() -> dict | None:
        for job in canary_jobs(cluster):
            status = job.get("status") or {}
            if job["metadata"]["name"] not in after and (status.get("succeeded") or status.get("failed")):
                return job
        return None

    wait_until(lambda: finished() is not None, RUN_TIMEOUT, "a canary run")
    job = finished()
    assert job is not None
    return job


def verdict(node, job: dict) -> str:
    (log,) = node.logs.glob(f"{NAMESPACE}-{job['metadata']['name']}-*-verify.log")
    return log.read_text().strip().splitlines()[-1]


def test_the_canary_passes_on_schedule_and_leaves_no_trace(stack, cluster, node, mlflow_url):
    cronjob = cluster.get(f"/apis/batch/v1/namespaces/{NAMESPACE}/cronjobs/{CANARY_CRONJOB_NAME}")
    assert cronjob["spec"]["schedule"] == "* * * * *"
    job = next_canary_run(cluster, after=set())
    assert (job["status"] or {}).get("succeeded") == 1, verdict(node, job)
    assert verdict(node, job).startswith("ok: traces flow through the collector to MLflow")
    experiment_id = stack.outputs()["experimentIds"][EXPERIMENT]
    assert stored_spans(mlflow_url, experiment_id) == []


def test_the_canary_fails_naming_mlflow_when_mlflow_is_gone(stack, cluster, node):
    seen = {j["metadata"]["name"] for j in canary_jobs(cluster)}
    scale = f"{cluster.url}/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{mlflow_component.SERVICE_NAME}/scale"
    session = cluster.session()
    session.patch(scale, json={"spec": {"replicas": 0}}, headers={"Content-Type": "application/merge-patch+json"},
                  timeout=10).raise_for_status()
    try:
        job = next_canary_run(cluster, after=seen)
        assert (job["status"] or {}).get("failed"), verdict(node, job)
        assert verdict(node, job).startswith("verify failed: MLflow")
    finally:
        session.patch(scale, json={"spec": {"replicas": 1}},
                      headers={"Content-Type": "application/merge-patch+json"}, timeout=10).raise_for_status()


def test_the_rules_and_the_dashboard_are_in_the_cluster(stack, cluster, mlflow_url):
    config_maps = cluster.get(f"/api/v1/namespaces/{NAMESPACE}/configmaps")["items"]
    (rules,) = [yaml.safe_load(c["data"][RULES_FILE]) for c in config_maps if RULES_FILE in (c.get("data") or {})]
    assert rules == alert_rules(watched_by(parse_stack_config(stack_config(mlflow_url))))
    assert {rule["alert"] for rule in rules["groups"][0]["rules"]} >= {
        "MlflowDown", "PostgresDown", "TraceCanaryFailing", "TraceCheckFailed", "TracesNotStored"}
    (dashboard,) = [c for c in config_maps if DASHBOARD_FILE in (c.get("data") or {})]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"][DASHBOARD_FILE])["title"] == f"MLflow tracing ({NAMESPACE})"
