"""A scaled-out stack in a namespace of its own, deployed by the real engine:
two MLflow replicas and two collectors behind their Services (the node agent
balances each Service's connections over its Ready pods), then switched to
`persistentQueue` with autoscaling under steady traffic: the collector's
Deployment is replaced by a StatefulSet with a claim per pod, and every span
accepted during the switch reaches MLflow, once."""

from __future__ import annotations

import time

import pytest

from components import collector as collector_component
from tests.support.collector import wait_stored_once
from tests.support.processes import wait_until
from tests.support.traffic import SteadySender

NAMESPACE = "scaled"
EXPERIMENT = "scaled-traces"
ARRIVAL_TIMEOUT = 150
SEND_INTERVAL = 0.25


def scaled_config(mlflow_url: str, collector: dict) -> dict:
    return {
        "namespace": NAMESPACE,
        "exposure": {"kind": "none"},
        "postgres": {"storageSize": "1Gi"},
        "mlflow": {"apiUrl": mlflow_url, "auth": {"kind": "none"}, "replicas": 2,
                   "artifacts": {"size": "1Gi", "accessMode": "ReadWriteMany"}},
        "collector": {"replicas": 2, **collector},
        "experiments": [{"name": EXPERIMENT, "default": True}],
    }


@pytest.fixture(scope="module")
def stack(project, mlflow_url):
    """Up once with two replicas of each (the collector a Deployment), destroyed at the module's end."""
    stack = project.stack("scaled", scaled_config(mlflow_url, {}))
    stack.up().check("up of the scaled stack")
    yield stack
    stack.destroy().check("destroy of the scaled stack")


def apps(cluster, kind: str, name: str) -> dict | None:
    return cluster.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/{kind}/{name}")


def stack_spec_of(stack, kind: str) -> dict:
    """The spec pulumi applied to the collector's workload of `kind`, as the state holds it."""
    (resource,) = [r for r in stack.resources() if r["type"] == f"kubernetes:apps/v1:{kind}"
                   and r.get("outputs", {}).get("metadata", {}).get("name") == "otel-collector"]
    return resource["inputs"]["spec"]


def test_two_replicas_of_each_are_ready_and_the_collectors_share_the_traffic(stack, cluster, node, otlp_url,
                                                                            mlflow_url):
    assert apps(cluster, "deployments", "mlflow")["status"]["readyReplicas"] == 2
    assert apps(cluster, "deployments", "otel-collector")["status"]["readyReplicas"] == 2
    for budget in ("mlflow", "otel-collector"):
        assert cluster.get(f"/apis/policy/v1/namespaces/{NAMESPACE}/poddisruptionbudgets/{budget}")
    sender = SteadySender(otlp_url, "scaled-app", SEND_INTERVAL)
    sender.start()
    time.sleep(10)
    sent = sender.finish()
    experiment_id = stack.outputs()["experimentIds"][EXPERIMENT]
    wait_stored_once(mlflow_url, experiment_id, sender.trace_ids, sent, ARRIVAL_TIMEOUT, f"{sent} spans in MLflow")
    collector_proxy = node.proxies[(NAMESPACE, collector_component.SERVICE_NAME, collector_component.HTTP_PORT)]
    assert len(collector_proxy.bytes_snapshot()) == 2  # both collector pods received spans


def test_switching_to_the_persistent_queue_replaces_the_deployment_and_loses_nothing(stack, cluster, otlp_url,
                                                                                    mlflow_url):
    experiment_id = stack.outputs()["experimentIds"][EXPERIMENT]
    sender = SteadySender(otlp_url, "switch-app", SEND_INTERVAL)
    sender.start()
    stack.configure(scaled_config(str(mlflow_url), {
        "persistentQueue": True, "queueVolume": {"size": "100Mi"},
        "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 3}}))
    try:
        stack.up().check("up switching the collector to a StatefulSet")
        time.sleep(5)
    finally:
        sent = sender.finish()
    wait_stored_once(mlflow_url, experiment_id, sender.trace_ids, sent, ARRIVAL_TIMEOUT,
                     f"{sent} spans sent during the switch in MLflow")
    assert apps(cluster, "deployments", "otel-collector") is None
    # The StatefulSet carries no replica count: the autoscaler brings it to minReplicas within its period.
    assert "replicas" not in stack_spec_of(stack, "StatefulSet")
    wait_until(lambda: apps(cluster, "statefulsets", "otel-collector")["status"].get("readyReplicas") == 2, 90,
               "two collector pods of the StatefulSet Ready")
    for ordinal in range(2):
        claim = cluster.get(f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims/queue-otel-collector-{ordinal}")
        assert claim["status"]["phase"] == "Bound"
    autoscaler = cluster.get(f"/apis/autoscaling/v2/namespaces/{NAMESPACE}/horizontalpodautoscalers/otel-collector")
    assert autoscaler["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"
