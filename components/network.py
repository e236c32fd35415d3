"""NetworkPolicies: each server of the stack accepts connections only from its
clients.

    postgres:5432         <- mlflow, the migration Job, the database-creation Job, the backups and
                             the upgrade gate (its backup and restore)
    cnpg instances:5432   <- mlflow, the migration Job, the backups, the upgrade gate, each other (replication),
                   :8000  <- each other, the CloudNativePG operator (which also needs 5432)
    mlflow:5000           <- its own namespace (the collector), the ingress namespaces, the scraper's
                             namespaces when Prometheus reads its /metrics
    otel-collector:4317/8 <- its own namespace, the OTLP namespaces
                  :8888   <- the post-deploy check and the canary, the scraper's namespaces

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
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components import backup, collector, mlflow, postgres, sso, trace_upkeep, upgrade
from components.config import NAMESPACE_NAME_LABEL, NetworkPolicies, Postgres
from components.kube import NamespaceRef, labels_for, selector_for

# The pods that talk to PostgreSQL, by the component name of their labels: MLflow's, the backups'
# and the upgrade gate's, and the bundled server's database-creation Job.
DATABASE_CLIENTS = (mlflow.COMPONENT, mlflow.MIGRATION_COMPONENT, backup.COMPONENT, upgrade.COMPONENT)
POSTGRES_CLIENTS = (*DATABASE_CLIENTS, postgres.INIT_COMPONENT)
CNPG_OPERATOR_LABELS = {"app.kubernetes.io/name": "cloudnative-pg"}  # the operator's pod, as its manifests label it
# Peer: every pod in the policy's own namespace.
OWN_NAMESPACE: dict[str, dict] = {"podSelector": {}}


@dataclass(frozen=True)
class Scrapers:
    """Where Prometheus runs (namespace selectors) and whether it reads MLflow's /metrics too."""

    namespaces: tuple[Mapping[str, str], ...] = ()
    mlflow: bool = False


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


def _rule(sources: list[dict], ports: tuple[int, ...]) -> dict:
    return {"from": sources, "ports": [{"protocol": "TCP", "port": port} for port in ports]}


def _policy(name: str, pods: dict[str, str], rules: list[dict]) -> dict:
    """{metadata, spec} of a policy admitting only what `rules` list to the `pods` selected."""
    return {
        "metadata": {"name": name, "labels": labels_for(name)},
        "spec": {"podSelector": {"matchLabels": pods}, "policyTypes": ["Ingress"], "ingress": rules},
    }


def _ingress_policy(component: str, sources: list[dict], ports: tuple[int, ...]) -> dict:
    """A policy letting `sources` reach the component's pods on `ports`."""
    return _policy(component, selector_for(component), [_rule(sources, ports)])


def _cnpg_policy(operator_namespace: str) -> dict:
    """The CloudNativePG instances: MLflow's clients, their own replication and status
    traffic, and the operator, which must reach every instance on 8000 and 5432."""
    instances = {postgres.CNPG_CLUSTER_LABEL: postgres.CNPG_CLUSTER}
    operator = {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: operator_namespace}},
                "podSelector": {"matchLabels": CNPG_OPERATOR_LABELS}}
    both = (postgres.PORT, postgres.CNPG_STATUS_PORT)
    return _policy(postgres.COMPONENT, instances, [
        _rule([_pods_named(c) for c in DATABASE_CLIENTS], (postgres.PORT,)),
        _rule([{"podSelector": {"matchLabels": instances}}], both),
        _rule([operator], both),
    ])


def network_policies_for(config: NetworkPolicies, *, postgres_config: Postgres,
                         scrapers: Scrapers = Scrapers(), sign_in: bool = False) -> list[dict]:
    """The policies of the stack, each as {metadata, spec} without a namespace.
    An external PostgreSQL server is not ours to fence. With `sign_in` (auth kind oidc) the
    ingress controller reaches only the sign-in proxy; MLflow's own port stays in the namespace."""
    mlflow_scrapers = scrapers.namespaces if scrapers.mlflow else ()
    ingress = _namespaces(config.ingress_namespaces)
    mlflow_rules = [_rule([OWN_NAMESPACE, *_namespaces(mlflow_scrapers)], (mlflow.PORT,)),
                    _rule(ingress, (sso.PROXY_PORT,))] if sign_in else \
        [_rule([OWN_NAMESPACE, *ingress, *_namespaces(mlflow_scrapers)], (mlflow.PORT,))]
    policies = [
        _policy(mlflow.COMPONENT, selector_for(mlflow.COMPONENT), [rule for rule in mlflow_rules if rule["from"]]),
        _policy(collector.COMPONENT, selector_for(collector.COMPONENT), [
            _rule([OWN_NAMESPACE, *_namespaces(config.otlp_namespaces)], (collector.GRPC_PORT, collector.HTTP_PORT)),
            # the post-deploy check and the canary prove a further destination's exporter sent its trace by these
            # counts; Prometheus reads them
            _rule([_pods_named(trace_upkeep.COMPONENT), _pods_named(trace_upkeep.CANARY_COMPONENT),
                   *_namespaces(scrapers.namespaces)], (collector.METRICS_PORT,)),
        ]),
    ]
    if postgres_config.mode == "bundled":
        policies.append(
            _ingress_policy(postgres.COMPONENT, [_pods_named(c) for c in POSTGRES_CLIENTS], (postgres.PORT,))
        )
    elif postgres_config.cnpg:
        policies.append(_cnpg_policy(postgres_config.cnpg.operator_namespace))
    return policies


class StackNetworkPolicies(pulumi.ComponentResource):
    """The stack's NetworkPolicies in its namespace."""

    def __init__(self, name: str, *, config: NetworkPolicies, namespace: NamespaceRef, postgres_config: Postgres,
                 scrapers: Scrapers = Scrapers(), sign_in: bool = False, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-tracing:index:StackNetworkPolicies", name, None, opts)
        policies = network_policies_for(config, postgres_config=postgres_config, scrapers=scrapers, sign_in=sign_in)
        for policy in policies:
            metadata = policy["metadata"]
            k8s.networking.v1.NetworkPolicy(
                f"{name}-{metadata['name']}",
                metadata={**metadata, "namespace": namespace.ref},
                spec=policy["spec"],
                opts=pulumi.ResourceOptions(parent=self),
            )
        self.register_outputs({"policies": [policy["metadata"]["name"] for policy in policies]})
