"""NetworkPolicies: each server of the stack accepts connections only from its
clients.

    postgres:5432         <- mlflow, the migration Job, the database-creation Job
    mlflow:5000           <- its own namespace (the collector), the ingress namespaces
    otel-collector:4317/8 <- its own namespace, the OTLP namespaces

The policies restrict ingress only. Egress would have to allow DNS (whose pods
and labels differ per distribution), S3 and external PostgreSQL endpoints
(known by host name, which NetworkPolicy cannot match), so a default egress
list would break working setups while the ingress side already fences every
server. The kubelet's probes come from the node, which NetworkPolicy always
admits; `kubectl port-forward` enters the pod through the kubelet, not the pod
network, so no policy stops it either.
"""

from __future__ import annotations

from collections.abc import Mapping

import pulumi
import pulumi_kubernetes as k8s

from components import collector, mlflow, postgres
from components.config import NetworkPolicies
from components.kube import NamespaceRef, labels_for, selector_for

# The pods that talk to PostgreSQL, by the component name of their labels.
POSTGRES_CLIENTS = (mlflow.COMPONENT, mlflow.MIGRATION_COMPONENT, postgres.INIT_COMPONENT)
# Peer: every pod in the policy's own namespace.
OWN_NAMESPACE: dict[str, dict] = {"podSelector": {}}


def _pods_named(component: str) -> dict:
    """Peer: the component's pods in the policy's own namespace."""
    return {"podSelector": {"matchLabels": selector_for(component)}}


def _namespaces(selectors: tuple[Mapping[str, str], ...]) -> list[dict]:
    """Peers: every pod in the namespaces the selectors match (the empty
    podSelector says "every pod" explicitly; leaving it out means the same)."""
    return [
        {"namespaceSelector": {"matchLabels": dict(selector)} if selector else {}, "podSelector": {}}
        for selector in selectors
    ]


def _ingress_policy(component: str, sources: list[dict], ports: tuple[int, ...]) -> dict:
    """{metadata, spec} of a policy letting `sources` reach the component's pods on `ports`."""
    return {
        "metadata": {"name": component, "labels": labels_for(component)},
        "spec": {
            "podSelector": {"matchLabels": selector_for(component)},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": sources, "ports": [{"protocol": "TCP", "port": port} for port in ports]}],
        },
    }


def network_policies_for(config: NetworkPolicies, *, bundled_postgres: bool) -> list[dict]:
    """The policies of the stack, each as {metadata, spec} without a namespace.
    An external PostgreSQL server is not ours to fence."""
    policies = [
        _ingress_policy(mlflow.COMPONENT, [OWN_NAMESPACE, *_namespaces(config.ingress_namespaces)], (mlflow.PORT,)),
        _ingress_policy(
            collector.COMPONENT, [OWN_NAMESPACE, *_namespaces(config.otlp_namespaces)],
            (collector.GRPC_PORT, collector.HTTP_PORT),
        ),
    ]
    if bundled_postgres:
        policies.append(
            _ingress_policy(postgres.COMPONENT, [_pods_named(c) for c in POSTGRES_CLIENTS], (postgres.PORT,))
        )
    return policies


class StackNetworkPolicies(pulumi.ComponentResource):
    """The stack's NetworkPolicies in its namespace."""

    def __init__(self, name: str, *, config: NetworkPolicies, namespace: NamespaceRef, bundled_postgres: bool,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-tracing:index:StackNetworkPolicies", name, None, opts)
        policies = network_policies_for(config, bundled_postgres=bundled_postgres)
        for policy in policies:
            metadata = policy["metadata"]
            k8s.networking.v1.NetworkPolicy(
                f"{name}-{metadata['name']}",
                metadata={**metadata, "namespace": namespace.ref},
                spec=policy["spec"],
                opts=pulumi.ResourceOptions(parent=self),
            )
        self.register_outputs({"policies": [policy["metadata"]["name"] for policy in policies]})
