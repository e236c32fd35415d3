"""Disruptions of a deployed stack on the real-engine suite's control plane: pods deleted as
a node drain, an eviction or a crashed node deletes them, under steady traffic, and the
checks that the stack came back through its controllers alone with every accepted span
stored once."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.support.cluster import ControlPlane
from tests.support.collector import wait_stored_once
from tests.support.nodeagent import NodeAgent
from tests.support.processes import wait_until
from tests.support.traffic import SteadySender

RECOVERY_TIMEOUT = 300
ARRIVAL_TIMEOUT = 180
SEND_INTERVAL = 0.25
COMPONENT_LABEL = "app.kubernetes.io/name"


def pods(cluster: ControlPlane, namespace: str, component: str | None = None) -> list[dict]:
    """The namespace's pods that still run or are starting (not those of finished Jobs)."""
    selector = f"?labelSelector={COMPONENT_LABEL}%3D{component}" if component else ""
    found = (cluster.get(f"/api/v1/namespaces/{namespace}/pods{selector}") or {}).get("items", [])
    return [p for p in found if p.get("status", {}).get("phase") not in ("Succeeded", "Failed")]


def delete_pods(cluster: ControlPlane, namespace: str, component: str | None = None) -> set[str]:
    """Delete the pods (of one component, or all: a drain); the uids of those deleted."""
    deleted = set()
    session = cluster.session()
    for pod in pods(cluster, namespace, component):
        meta = pod["metadata"]
        response = session.delete(f"{cluster.url}/api/v1/namespaces/{namespace}/pods/{meta['name']}", timeout=10)
        response.raise_for_status()
        deleted.add(meta["uid"])
    assert deleted, f"no pod of {component or 'any component'} in {namespace}"
    return deleted


def recovered(cluster: ControlPlane, namespace: str, replaced: set[str]) -> bool:
    """Every Deployment and StatefulSet of the namespace has all its replicas Ready again, and
    none of them is a pod in `replaced`."""
    for kind in ("deployments", "statefulsets"):
        for workload in (cluster.get(f"/apis/apps/v1/namespaces/{namespace}/{kind}") or {}).get("items", []):
            wanted = workload["spec"].get("replicas", 1)
            if (workload.get("status") or {}).get("readyReplicas", 0) != wanted:
                return False
    return not replaced & {p["metadata"]["uid"] for p in pods(cluster, namespace)}


def under_traffic(disrupt: Callable[[], set[str]], *, cluster: ControlPlane, namespace: str, otlp_url: str,
                  mlflow_url: str, experiment_id: str, service: str) -> int:
    """Steady traffic through the collector while `disrupt()` deletes pods; once the stack has
    recovered by itself, every span the collector accepted must be in MLflow exactly once.
    The number of spans sent."""
    sender = SteadySender(otlp_url, service, SEND_INTERVAL)
    sender.start()
    try:
        time.sleep(3)
        replaced = disrupt()
        wait_until(lambda: recovered(cluster, namespace, replaced), RECOVERY_TIMEOUT,
                   f"{namespace} recovered from the deletion of {len(replaced)} pod(s)")
        time.sleep(3)  # traffic through the recovered pods too
    finally:
        sent = sender.finish()
    wait_stored_once(mlflow_url, experiment_id, sender.trace_ids, sent, ARRIVAL_TIMEOUT,
                     f"the {sent} spans sent around the disruption in MLflow")
    return sent


def declared_identities(cluster: ControlPlane, namespace: str) -> dict[str, tuple[int, int, int]]:
    """pod -> (runAsUser, runAsGroup, fsGroup) its spec declares, for every pod the API still holds
    (finished Jobs' too: a container seen running a moment ago may have ended since)."""
    found = (cluster.get(f"/api/v1/namespaces/{namespace}/pods") or {}).get("items", [])
    keys = ("runAsUser", "runAsGroup", "fsGroup")
    return {p["metadata"]["name"]: tuple(p["spec"]["securityContext"][k] for k in keys) for p in found}


def process_identities(node: NodeAgent, namespace: str) -> dict[tuple[str, str], tuple[int, int, set[int]]]:
    """(pod, container) -> (uid, gid, supplementary groups) of each running container process."""
    found = {}
    for pod in list(node.pods.values()):
        if pod.namespace != namespace or pod.stopped.is_set():
            continue
        for name, process in pod.processes.items():
            if process.poll() is not None:
                continue
            status = dict(line.split(":\t", 1) for line in open(f"/proc/{process.pid}/status").read().splitlines()
                          if ":\t" in line)
            found[(pod.name, name)] = (int(status["Uid"].split()[0]), int(status["Gid"].split()[0]),
                                       {int(g) for g in status["Groups"].split()})
    return found
