"""NetworkPolicies: who can reach what, judged by a small evaluator of the
Kubernetes NetworkPolicy semantics over the policies the program produces and
the labels its workloads really carry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import kubernetes_validate
import pytest

from components.config import ConfigError, namespace_selector, parse_stack_config
from components.kube import labels_for
from tests.support.k8s import K8S_VERSION, integral
from tests.support.program import RecordingMocks, run_program

NAME_LABEL = "kubernetes.io/metadata.name"
MLFLOW, POSTGRES, OTLP_GRPC, OTLP_HTTP, COLLECTOR_METRICS = 5000, 5432, 4317, 4318, 8888


# --------------------------------------------------------------------------- evaluator


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: Mapping[str, str] = field(default_factory=dict)
    namespace_labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def all_namespace_labels(self) -> dict[str, str]:
        """What the API server shows: the namespace's labels plus its name label."""
        return {**self.namespace_labels, NAME_LABEL: self.namespace}


def selects(selector: Mapping, labels: Mapping[str, str]) -> bool:
    """A label selector; the empty one matches everything."""
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        matched = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not matched:
            return False
    return True


def peer_admits(peer: Mapping, policy_namespace: str, source: Pod) -> bool:
    """podSelector alone: pods of the policy's namespace; namespaceSelector
    alone: every pod of those namespaces; both: the matching pods of those."""
    if "ipBlock" in peer:
        raise NotImplementedError("ipBlock peers are not evaluated")
    namespaces, pods = peer.get("namespaceSelector"), peer.get("podSelector")
    in_namespace = (
        source.namespace == policy_namespace if namespaces is None
        else selects(namespaces, source.all_namespace_labels)
    )
    return in_namespace and (pods is None or selects(pods, source.labels))


def port_admits(rule: Mapping, port: int) -> bool:
    if rule.get("protocol", "TCP") != "TCP":
        return False
    if "port" not in rule:
        return True
    if isinstance(rule["port"], str):
        raise NotImplementedError("named ports are not evaluated")
    return rule["port"] <= port <= rule.get("endPort", rule["port"])


def allowed(policies: list[dict], source: Pod, destination: Pod, port: int) -> bool:
    """May `source` open a TCP connection to `destination`:`port`? (ingress side)"""
    isolating = []
    for policy in policies:
        spec = policy["spec"]
        types = spec.get("policyTypes") or ["Ingress", *(["Egress"] if "egress" in spec else [])]
        if (policy["metadata"]["namespace"] == destination.namespace and "Ingress" in types
                and selects(spec["podSelector"], destination.labels)):
            isolating.append(policy)
    if not isolating:
        return True  # a pod no policy selects accepts everything
    return any(
        (not rule.get("from") or any(peer_admits(p, policy["metadata"]["namespace"], source) for p in rule["from"]))
        and (not rule.get("ports") or any(port_admits(r, port) for r in rule["ports"]))
        for policy in isolating
        for rule in policy["spec"].get("ingress") or []
    )


def test_the_evaluator_follows_the_networkpolicy_semantics():
    db = Pod("a", {"app": "db"})
    web, other = Pod("a", {"app": "web"}), Pod("b", {"app": "web"}, {"team": "x"})
    policy = lambda *rules: {"metadata": {"namespace": "a"},  # noqa: E731
                             "spec": {"podSelector": {"matchLabels": {"app": "db"}}, "ingress": list(rules)}}
    assert allowed([], other, db, 1)
    assert not allowed([policy()], web, db, 1)
    assert allowed([policy({})], other, db, 1)
    same_namespace_web = {"from": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": 5}]}
    assert allowed([policy(same_namespace_web)], web, db, 5)
    assert not allowed([policy(same_namespace_web)], web, db, 6)
    assert not allowed([policy(same_namespace_web)], other, db, 5)
    team_x, app_no = {"matchLabels": {"team": "x"}}, {"matchLabels": {"app": "no"}}
    both = {"from": [{"namespaceSelector": team_x, "podSelector": app_no}]}
    either = {"from": [{"namespaceSelector": team_x}, {"podSelector": app_no}]}
    assert not allowed([policy(both)], other, db, 1)
    assert allowed([policy(either)], other, db, 1)
    assert allowed([policy(), policy(either)], other, db, 1)  # policies add up
    assert allowed([policy({"from": [{"namespaceSelector": {"matchLabels": {NAME_LABEL: "b"}}}]})], other, db, 1)


# --------------------------------------------------------------------------- the program's pods and policies


def policies_of(run) -> list[dict]:
    return [integral(policy.outputs) for policy in run.kinds("NetworkPolicy")]


def stack_namespace(run) -> tuple[str, dict[str, str]]:
    """The stack's namespace name and the labels the program gives it (none when it exists already)."""
    name = run.outputs["namespace"]
    created = run.kinds("Namespace")
    return name, (created[0].outputs["metadata"]["labels"] if created else {})


def pod(run, component: str) -> Pod:
    """A pod of the workload whose template carries `app.kubernetes.io/name: <component>`."""
    (labels,) = [
        template["metadata"]["labels"]
        for resource in run.resources
        if (template := (resource.outputs.get("spec") or {}).get("template"))
        and template["metadata"]["labels"].get("app.kubernetes.io/name") == component
    ]
    name, namespace_labels = stack_namespace(run)
    return Pod(name, labels, namespace_labels)


def stranger(run) -> Pod:
    """A pod of the stack's namespace that belongs to none of its components."""
    name, namespace_labels = stack_namespace(run)
    return Pod(name, {"app": "debug-shell"}, namespace_labels)


INGRESS_NGINX = Pod("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
OPENSHIFT_ROUTER = Pod("openshift-ingress",
                       {"ingresscontroller.operator.openshift.io/deployment-ingresscontroller": "default"},
                       {"policy-group.network.openshift.io/ingress": "",
                        "network.openshift.io/policy-group": "ingress"})
APPS = Pod("apps", {"app": "chatbot"}, {"team": "ml"})
ELSEWHERE = Pod("elsewhere", {"app": "chatbot"})


def reach(run, source: Pod, component: str, port: int) -> bool:
    return allowed(policies_of(run), source, pod(run, component), port)


# --------------------------------------------------------------------------- who can reach what


@pytest.mark.parametrize("stack", ["dev", "openshift"])
def test_postgres_accepts_only_mlflow_the_migration_and_the_database_creation(stack_runs, stack):
    run = stack_runs[stack]
    for client in ("mlflow", "mlflow-migrate", "postgres-init"):
        assert reach(run, pod(run, client), "postgres", POSTGRES), client
        assert not reach(run, pod(run, client), "postgres", 22), client
    assert not reach(run, pod(run, "otel-collector"), "postgres", POSTGRES)
    assert not reach(run, stranger(run), "postgres", POSTGRES)
    assert not reach(run, INGRESS_NGINX, "postgres", POSTGRES)
    assert not reach(run, OPENSHIFT_ROUTER, "postgres", POSTGRES)


@pytest.mark.parametrize("stack", ["dev", "openshift"])
def test_mlflow_accepts_its_namespace_and_the_ingress_but_no_other_namespace(stack_runs, stack):
    run = stack_runs[stack]
    assert reach(run, pod(run, "otel-collector"), "mlflow", MLFLOW)
    assert reach(run, stranger(run), "mlflow", MLFLOW)
    assert not reach(run, pod(run, "otel-collector"), "mlflow", 5001)
    assert not reach(run, APPS, "mlflow", MLFLOW)
    assert not reach(run, ELSEWHERE, "mlflow", MLFLOW)
    router = {"dev": INGRESS_NGINX, "openshift": OPENSHIFT_ROUTER}[stack]
    not_the_router = {"dev": OPENSHIFT_ROUTER, "openshift": INGRESS_NGINX}[stack]
    assert reach(run, router, "mlflow", MLFLOW)
    assert not reach(run, not_the_router, "mlflow", MLFLOW)


@pytest.mark.parametrize("stack", ["dev", "openshift"])
def test_the_collector_accepts_otlp_from_its_own_namespace_only_by_default(stack_runs, stack):
    run = stack_runs[stack]
    for port in (OTLP_GRPC, OTLP_HTTP):
        assert reach(run, stranger(run), "otel-collector", port)
        assert not reach(run, APPS, "otel-collector", port)
        assert not reach(run, INGRESS_NGINX, "otel-collector", port)
    assert not reach(run, stranger(run), "otel-collector", COLLECTOR_METRICS)
    # the post-deploy check alone reads the collector's counts (a further destination's exporter)
    assert reach(run, pod(run, "trace-check"), "otel-collector", COLLECTOR_METRICS)
    assert not reach(run, pod(run, "mlflow"), "otel-collector", COLLECTOR_METRICS)


def test_otlp_namespaces_by_name_label_or_all():
    by_name = run_program("dev", networkPolicies={"otlpNamespaces": ["apps"]})
    for port in (OTLP_GRPC, OTLP_HTTP):
        assert reach(by_name, APPS, "otel-collector", port)
        assert not reach(by_name, ELSEWHERE, "otel-collector", port)
    assert not reach(by_name, APPS, "otel-collector", COLLECTOR_METRICS)
    assert not reach(by_name, APPS, "mlflow", MLFLOW)  # OTLP senders do not reach MLflow itself

    by_label = run_program("dev", networkPolicies={"otlpNamespaces": ["team=ml"]})
    assert reach(by_label, APPS, "otel-collector", OTLP_HTTP)
    assert not reach(by_label, Pod("apps2", namespace_labels={"team": "web"}), "otel-collector", OTLP_HTTP)

    everyone = run_program("dev", networkPolicies={"otlpNamespaces": ["*"]})
    assert reach(everyone, ELSEWHERE, "otel-collector", OTLP_GRPC)
    assert not reach(everyone, ELSEWHERE, "postgres", POSTGRES)
    for policy in policies_of(everyone):
        kubernetes_validate.validate(policy, K8S_VERSION, strict=True)


def test_ingress_namespaces_follow_the_exposure():
    gateway = run_program("dev", exposure={"kind": "httproute", "gateway": {"name": "gw", "namespace": "gateways"}})
    assert reach(gateway, Pod("gateways", {"app": "proxy"}), "mlflow", MLFLOW)
    assert not reach(gateway, INGRESS_NGINX, "mlflow", MLFLOW)

    unexposed = run_program("dev", exposure={"kind": "none"}, mlflow={"apiUrl": "http://localhost:5000"})
    assert not reach(unexposed, INGRESS_NGINX, "mlflow", MLFLOW)
    assert reach(unexposed, pod(unexposed, "otel-collector"), "mlflow", MLFLOW)

    traefik = run_program("dev", exposure={"className": "traefik"}, networkPolicies={"ingressNamespaces": ["traefik"]})
    assert reach(traefik, Pod("traefik"), "mlflow", MLFLOW)
    assert not reach(traefik, INGRESS_NGINX, "mlflow", MLFLOW)

    openshift_gateway = run_program("openshift", exposure={
        "kind": "httproute", "tls": {"enabled": True},
        "gateway": {"name": "gw", "namespace": "istio-gateways", "sectionName": "https"}})
    assert reach(openshift_gateway, Pod("istio-gateways", {"app": "proxy"}), "mlflow", MLFLOW)
    assert reach(openshift_gateway, Pod("openshift-ingress", namespace_labels={
        "policy-group.network.openshift.io/ingress": ""}), "mlflow", MLFLOW)


def test_an_external_postgres_gets_no_policy(stack_runs):
    run = run_program("dev", postgres={"mode": "external", "external": {"host": "db", "secretName": "pg"}})
    assert {p["metadata"]["name"] for p in policies_of(run)} == {"mlflow", "otel-collector"}
    assert {p["metadata"]["name"] for p in policies_of(stack_runs["dev"])} == {"mlflow", "otel-collector", "postgres"}


def test_switched_off_there_is_no_policy_and_everything_is_reachable():
    run = run_program("dev", networkPolicies={"enabled": False})
    assert policies_of(run) == []
    assert reach(run, ELSEWHERE, "postgres", POSTGRES)


@pytest.mark.parametrize("stack", ["dev", "openshift"])
def test_the_policies_are_valid_ingress_policies_in_the_stack_namespace(stack_runs, stack):
    policies = policies_of(stack_runs[stack])
    assert len(policies) == 3
    for policy in policies:
        kubernetes_validate.validate(policy, K8S_VERSION, strict=True)
        assert policy["metadata"]["namespace"] == "mlflow"
        assert policy["spec"]["policyTypes"] == ["Ingress"]  # egress stays open: see docs/security.md


# --------------------------------------------------------------------------- config


def test_namespace_entries_become_namespace_selectors():
    assert namespace_selector("*") == {}
    assert namespace_selector("apps") == {NAME_LABEL: "apps"}
    assert namespace_selector("team=ml") == {"team": "ml"}
    assert namespace_selector("policy-group.network.openshift.io/ingress=") == {
        "policy-group.network.openshift.io/ingress": ""}
    for bad in ("Apps_1", "=ml", "a/b/c=x", "team=m l", "-apps", "team=" + "x" * 64):
        assert namespace_selector(bad) is None, bad


@pytest.mark.parametrize(
    "values, key, fix",
    [
        ({"networkPolicies": {"otlpNamespaces": ["Apps_1"]}}, "networkPolicies.otlpNamespaces", "key=value"),
        ({"networkPolicies": {"ingressNamespaces": ["ingress nginx"]}}, "networkPolicies.ingressNamespaces",
         "namespace name"),
        ({"networkPolicies": {"ingressNamespaces": "ingress-nginx"}}, "networkPolicies.ingressNamespaces",
         "must be a list"),
        ({"networkPolicies": {"enabled": "yes"}}, "networkPolicies.enabled", "true or false"),
        ({"networkPolicies": {"egress": True}}, "networkPolicies.egress", "remove it"),
        # Another controller than ingress-nginx: no guess at its namespace.
        ({"exposure": {"className": "traefik"}}, "networkPolicies.ingressNamespaces", "'traefik' ingress controller"),
    ],
)
def test_bad_network_policy_config_names_the_key_and_the_fix(values, key, fix):
    with pytest.raises(ConfigError) as caught:
        parse_stack_config({"domain": "example.com", **values})
    assert any(p.startswith(f"{key}:") and fix in p for p in caught.value.problems), caught.value.problems


def test_bad_network_policy_config_stops_the_program_before_any_resource():
    mocks = RecordingMocks()
    with pytest.raises(Exception, match=r"networkPolicies.otlpNamespaces: 'Apps_1' is neither"):
        run_program("dev", mocks=mocks, networkPolicies={"otlpNamespaces": ["Apps_1"]})
    assert mocks.registered == []


def test_a_cnpg_cluster_admits_mlflow_its_own_instances_and_the_operator():
    run = run_program("dev", postgres={"mode": "cnpg", "cnpg": {"operatorNamespace": "pg-operators"}})
    policies = policies_of(run)
    (cluster,) = [r for r in run.resources if r.kind == "Cluster"]
    name, namespace_labels = stack_namespace(run)
    # What the operator puts on every instance pod of the Cluster: the label the policy must select.
    instance = Pod(name, {"cnpg.io/cluster": cluster.k8s_name, "cnpg.io/instanceRole": "primary"}, namespace_labels)
    peer = Pod(name, {"cnpg.io/cluster": cluster.k8s_name, "cnpg.io/instanceRole": "replica"}, namespace_labels)
    operator = Pod("pg-operators", {"app.kubernetes.io/name": "cloudnative-pg"})
    for client in (pod(run, "mlflow"), pod(run, "mlflow-migrate")):
        assert allowed(policies, client, instance, POSTGRES)
        assert not allowed(policies, client, instance, 8000)
    for port in (POSTGRES, 8000):
        assert allowed(policies, peer, instance, port)  # replication and the instance managers
        assert allowed(policies, operator, instance, port)
        assert not allowed(policies, Pod("cnpg-system", {"app.kubernetes.io/name": "cloudnative-pg"}), instance, port)
        assert not allowed(policies, Pod("pg-operators", {"app": "other"}), instance, port)
    assert not allowed(policies, stranger(run), instance, POSTGRES)
    assert not allowed(policies, pod(run, "otel-collector"), instance, POSTGRES)


PROMETHEUS = Pod("monitoring", {"app.kubernetes.io/name": "prometheus"})
USER_WORKLOAD_PROMETHEUS = Pod("openshift-user-workload-monitoring", {"app.kubernetes.io/name": "prometheus"})


@pytest.mark.parametrize(("stack", "scraper", "other"), [("dev", PROMETHEUS, USER_WORKLOAD_PROMETHEUS),
                                                         ("openshift", USER_WORKLOAD_PROMETHEUS, PROMETHEUS)])
def test_the_platforms_prometheus_alone_reads_the_metrics_ports(stack_runs, stack, scraper, other):
    run = stack_runs[stack]
    assert reach(run, scraper, "otel-collector", COLLECTOR_METRICS)
    assert not reach(run, scraper, "otel-collector", OTLP_HTTP)
    assert not reach(run, other, "otel-collector", COLLECTOR_METRICS)
    assert not reach(run, APPS, "otel-collector", COLLECTOR_METRICS)
    # MLflow's /metrics is on its one port; with basic auth (openshift) it is not scraped
    assert reach(run, scraper, "mlflow", MLFLOW) == (stack == "dev")
    assert not reach(run, other, "mlflow", MLFLOW)
    assert not reach(run, scraper, "postgres", POSTGRES)
    # the canary reads the collector's counts as the post-deploy check does
    name, namespace_labels = stack_namespace(run)
    canary = Pod(name, labels_for("trace-canary"), namespace_labels)
    assert reach(run, canary, "otel-collector", COLLECTOR_METRICS)


def test_scraper_namespaces_replace_the_default_and_go_with_the_monitoring():
    custom = run_program("dev", monitoring={"scraperNamespaces": ["observability"]})
    assert reach(custom, Pod("observability", {"app": "prometheus"}), "otel-collector", COLLECTOR_METRICS)
    assert not reach(custom, PROMETHEUS, "otel-collector", COLLECTOR_METRICS)
    off = run_program("dev", monitoring={"enabled": False})
    assert not reach(off, PROMETHEUS, "otel-collector", COLLECTOR_METRICS)
    assert not reach(off, PROMETHEUS, "mlflow", MLFLOW)
