"""An OpenShift-platform stack on the real engine: the project exists (created here with
the annotations OpenShift gives a new project), the program sets no UID, GID or fsGroup,
and the node admits each pod as restricted-v2 does (the project's first UID, GID 0, its
fsGroup) and runs it by CRI-O's rules (a passwd entry written for that UID). The stack
comes up signed in with basic auth, every container runs as the assigned UID, and after a
drain deletes every pod it recovers by itself with every accepted span stored once."""

from __future__ import annotations

import pytest

from components import postgres as postgres_component
from tests.support.crds import custom_resource_definition
from tests.support.disruption import delete_pods, pods, process_identities, under_traffic
from tests.support.kubelet import RestrictedV2
from tests.support.processes import wait_until

NAMESPACE = "analytics-project"
EXPERIMENT = "openshift-traces"
SCC = RestrictedV2(uid_start=1000720000, uid_size=10000, group_start=1000720000)


@pytest.fixture(scope="module")
def project_namespace(cluster):
    """What `oc new-project` makes: a namespace with its UID and group ranges."""
    ranges = f"{SCC.uid_start}/{SCC.uid_size}"
    cluster.session().post(f"{cluster.url}/api/v1/namespaces", timeout=10, json={
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": NAMESPACE, "annotations": {
            "openshift.io/sa.scc.uid-range": ranges, "openshift.io/sa.scc.supplemental-groups": ranges,
            "openshift.io/sa.scc.mcs": "s0:c27,c4"}},
    }).raise_for_status()
    return NAMESPACE


@pytest.fixture(scope="module")
def monitoring_crds(cluster):
    """The Prometheus Operator's ServiceMonitor and PrometheusRule, which every OpenShift cluster
    serves (its monitoring stack): the stack's monitoring uses them there by default."""
    session = cluster.session()
    for kind, plural in (("ServiceMonitor", "servicemonitors"), ("PrometheusRule", "prometheusrules")):
        crd = custom_resource_definition("monitoring.coreos.com", "v1", kind, plural)
        created = session.post(f"{cluster.url}/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                               json=crd, timeout=30)
        if created.status_code != 409:  # another module's stack may have installed it already
            created.raise_for_status()
        path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}"
        wait_until(lambda path=path: any(c["type"] == "Established" and c["status"] == "True"
                                         for c in (cluster.get(path).get("status") or {}).get("conditions") or []),
                   60, f"the {kind} CRD established")


@pytest.fixture(scope="module")
def stack(project, project_namespace, monitoring_crds, mlflow_url):
    stack = project.stack("openshift-engine", {
        "platform": "openshift",
        "createNamespace": False,
        "namespace": project_namespace,
        "exposure": {"kind": "none"},  # the Route needs OpenShift's router; reached through a port-forward
        "postgres": {"storageSize": "1Gi"},
        "mlflow": {"apiUrl": mlflow_url, "auth": {"kind": "basic"}, "artifacts": {"size": "1Gi"}},
        "collector": {"persistentQueue": True, "queueVolume": {"size": "100Mi"}},
        "experiments": [{"name": EXPERIMENT, "default": True}],
    })
    stack.up().check("up of the OpenShift stack")
    credentials = stack.outputs()["mlflowCredentials"]
    with pytest.MonkeyPatch.context() as env:  # MLflow's client signs in with these (span counts)
        env.setenv("MLFLOW_TRACKING_USERNAME", credentials["username"])
        env.setenv("MLFLOW_TRACKING_PASSWORD", credentials["password"])
        yield stack
    stack.destroy().check("destroy of the OpenShift stack")


def test_every_container_runs_as_the_projects_assigned_uid(stack, cluster, node):
    identities = process_identities(node, NAMESPACE)
    assert {pod for pod, _ in identities} == {p["metadata"]["name"] for p in pods(cluster, NAMESPACE)}
    for where, (uid, gid, groups) in identities.items():
        assert (uid, gid) == (SCC.uid_start, 0) and SCC.fs_group in groups, where
    pgdata = node.workdir / "volumes" / f"{NAMESPACE}-data-{postgres_component.SERVICE_NAME}-0" / "pgdata"
    assert pgdata.stat().st_uid == SCC.uid_start


def test_a_deleted_postgres_pod_comes_back_on_its_walked_volume(stack, cluster, otlp_url, mlflow_url):
    under_traffic(lambda: delete_pods(cluster, NAMESPACE, postgres_component.COMPONENT), cluster=cluster,
                  namespace=NAMESPACE, otlp_url=otlp_url, mlflow_url=mlflow_url,
                  experiment_id=stack.outputs()["experimentIds"][EXPERIMENT], service="openshift-after-postgres")


def test_a_drain_deletes_every_pod_and_the_stack_recovers_by_itself(stack, cluster, otlp_url, mlflow_url):
    under_traffic(lambda: delete_pods(cluster, NAMESPACE), cluster=cluster, namespace=NAMESPACE,
                  otlp_url=otlp_url, mlflow_url=mlflow_url, experiment_id=stack.outputs()["experimentIds"][EXPERIMENT],
                  service="openshift-after-drain")


def test_the_monitoring_is_in_the_operators_objects_openshifts_monitoring_reads(stack, cluster):
    rules = cluster.get(f"/apis/monitoring.coreos.com/v1/namespaces/{NAMESPACE}/prometheusrules")["items"]
    monitors = cluster.get(f"/apis/monitoring.coreos.com/v1/namespaces/{NAMESPACE}/servicemonitors")["items"]
    assert len(rules) == 1 and rules[0]["spec"]["groups"][0]["name"] == f"mlflow-tracing-{NAMESPACE}"
    # with basic auth MLflow's /metrics is not scraped: the collector's alone
    assert [m["spec"]["selector"]["matchLabels"] for m in monitors] == [{"app.kubernetes.io/name": "otel-collector"}]
