"""Plain builders for what every workload of the stack shares: labels, security
contexts and the config checksum that rolls pods when their config changes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import pulumi

from components.config import PROJECT, Autoscaling

CHECKSUM_ANNOTATION = "checksum/config"
# On a Job that failed, the next `pulumi up` replaces it (runs it again) instead of waiting on it again.
RERUN_IF_FAILED = {"pulumi.com/replaceUnready": "true"}
# How long `pulumi up` waits for a Job that may stop MLflow, back up, restore or migrate a large database
# (pulumi-kubernetes waits 10 minutes by default; a Job still running then would be replaced, so killed,
# by the next `up`).
LONG_JOB_TIMEOUTS = pulumi.CustomTimeouts(create="60m", update="60m")


def labels_for(component: str) -> dict[str, str]:
    """The recommended `app.kubernetes.io/*` labels of one component."""
    return {
        "app.kubernetes.io/name": component,
        "app.kubernetes.io/instance": PROJECT,
        "app.kubernetes.io/part-of": PROJECT,
        "app.kubernetes.io/managed-by": "pulumi",
    }


def selector_for(component: str) -> dict[str, str]:
    """The stable subset of `labels_for` that selectors match on."""
    labels = labels_for(component)
    return {key: labels[key] for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance")}


def spread_across_nodes(component: str) -> list[dict]:
    """Replicas on different nodes where the cluster has them; a one-node cluster still schedules them all."""
    return [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": {"matchLabels": selector_for(component)}}]


def disruption_budget_spec(component: str) -> dict:
    """Voluntary disruptions (node drains, cluster upgrades) take one pod at a time, whatever the count."""
    return {"maxUnavailable": 1, "selector": {"matchLabels": selector_for(component)}}


def cpu_autoscaler_spec(autoscaling: Autoscaling, kind: str, name: str) -> dict:
    """An autoscaling/v2 HorizontalPodAutoscaler on the average CPU use, as a share of the requests."""
    return {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": kind, "name": name},
        "minReplicas": autoscaling.min_replicas,
        "maxReplicas": autoscaling.max_replicas,
        "metrics": [{"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": autoscaling.target_cpu_percent}}}],
    }


def replica_count(replicas: int, autoscaling: Autoscaling) -> dict:
    """The workload's `replicas`, left out when an autoscaler owns the count: a value here
    would be re-applied by every `pulumi up` and fight the autoscaler."""
    return {} if autoscaling.enabled else {"replicas": replicas}


def pod_security_context(platform: str, uid: int, data_volume: bool = False) -> dict:
    """Non-root pod settings. OpenShift's restricted-v2 assigns UIDs and fsGroup
    from the namespace range and rejects fixed ones, so they are only set on
    plain Kubernetes.

    With a `data_volume` (a claim that outlives the pod), the kubelet re-walks the volume
    at a mount only when its root no longer carries the fsGroup (`OnRootMismatch`): by
    default it chgrps and makes group-writable every file and directory at every mount,
    which takes long on a large volume and undoes modes a server relies on (PostgreSQL's
    0700 data directory)."""
    context: dict = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    if platform == "kubernetes":
        context.update(runAsUser=uid, runAsGroup=uid, fsGroup=uid)
    if data_volume:
        context["fsGroupChangePolicy"] = "OnRootMismatch"
    return context


def container_security_context(read_only_root: bool = False) -> dict:
    """What Pod Security `restricted` and OpenShift `restricted-v2` both accept."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": read_only_root,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def secret_env(secret_name: pulumi.Input[str], keys: dict[str, str]) -> list[dict]:
    """Env vars read from one Secret: {ENV_NAME: Secret key}, in that order.
    `secret_name` may be a Pulumi output (the Secret's generated name)."""
    return [{"name": env, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": key}}}
            for env, key in keys.items()]


def claim_spec(size: str, access_mode: str, storage_class: str | None) -> dict:
    """A PersistentVolumeClaim spec; without a storage class the cluster's default one serves it."""
    spec: dict = {"accessModes": [access_mode], "resources": {"requests": {"storage": size}}}
    if storage_class:
        spec["storageClassName"] = storage_class
    return spec


def content_checksum(*contents: str) -> str:
    """sha256 over config contents, for a pod-template annotation."""
    digest = hashlib.sha256()
    for content in contents:
        digest.update(content.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def template_revision(template: dict) -> pulumi.Output[str]:
    """A checksum of a pod template (which may hold outputs): it changes whenever the pods do."""
    return pulumi.Output.from_input(template).apply(
        lambda resolved: content_checksum(json.dumps(resolved, sort_keys=True)))


def service_host(service: str, namespace: str) -> str:
    """The cluster-wide DNS name of a Service: `<svc>.<ns>.svc` resolves through every
    pod's DNS search path whatever the cluster domain (`cluster.local` is only the default)."""
    return f"{service}.{namespace}.svc"


@dataclass(frozen=True)
class NamespaceRef:
    """A namespace as components need it: its name for DNS names, and a
    reference for `metadata.namespace` that carries the dependency on the
    Namespace resource when the stack creates it."""

    name: str
    ref: Any


@dataclass(frozen=True)
class Scraping:
    """How a Prometheus finds a workload's metrics: `exposed` turns them on; `annotated` adds
    the prometheus.io/* pod annotations the usual pod-scrape configs follow (without the
    Prometheus Operator, whose ServiceMonitors need none)."""

    exposed: bool = False
    annotated: bool = False

    def annotations(self, port: int, path: str = "/metrics") -> dict[str, str]:
        if not (self.exposed and self.annotated):
            return {}
        return {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": path}


NOT_SCRAPED = Scraping()
