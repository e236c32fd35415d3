"""Restarts and a node drain with real pods: a stack with every kind of kept data (the
bundled PostgreSQL's volume, MLflow's artifact claim, the collector's persistent queue)
loses a pod at a time under steady traffic, then every pod at once as a node drain
deletes them. Each time the controllers bring the pods back Ready on their kept volumes,
without `pulumi up`, and every span the collector accepted is in MLflow once.

The kubelet emulation walks each kept volume with the pod's fsGroup at every mount, as
CSI block volumes are walked: before `fsGroupChangePolicy: OnRootMismatch` and the
password-sync container's `chmod 0700`, PostgreSQL's pod never came back."""

from __future__ import annotations

import stat

import pytest

from components import collector as collector_component
from components import mlflow as mlflow_component
from components import postgres as postgres_component
from tests.support.disruption import declared_identities, delete_pods, process_identities, under_traffic

NAMESPACE = "restarts"
EXPERIMENT = "restart-traces"


@pytest.fixture(scope="module")
def stack(project, mlflow_url):
    """Up once for the module, destroyed at its end."""
    stack = project.stack("restarts", {
        "namespace": NAMESPACE,
        "exposure": {"kind": "none"},
        "postgres": {"storageSize": "1Gi"},
        "mlflow": {"apiUrl": mlflow_url, "auth": {"kind": "none"}, "artifacts": {"size": "1Gi"}},
        "collector": {"persistentQueue": True, "queueVolume": {"size": "100Mi"}},
        "experiments": [{"name": EXPERIMENT, "default": True}],
    })
    stack.up().check("up of the restarts stack")
    yield stack
    stack.destroy().check("destroy of the restarts stack")


@pytest.mark.parametrize("component", [postgres_component.COMPONENT, mlflow_component.COMPONENT,
                                       collector_component.COMPONENT])
def test_a_deleted_stateful_pod_comes_back_and_nothing_is_lost(stack, cluster, otlp_url, mlflow_url, component):
    under_traffic(lambda: delete_pods(cluster, NAMESPACE, component), cluster=cluster, namespace=NAMESPACE,
                  otlp_url=otlp_url, mlflow_url=mlflow_url, experiment_id=stack.outputs()["experimentIds"][EXPERIMENT],
                  service=f"after-{component}-restart")


def test_a_drain_deletes_every_pod_and_the_stack_recovers_by_itself(stack, cluster, node, otlp_url, mlflow_url):
    under_traffic(lambda: delete_pods(cluster, NAMESPACE), cluster=cluster, namespace=NAMESPACE,
                  otlp_url=otlp_url, mlflow_url=mlflow_url, experiment_id=stack.outputs()["experimentIds"][EXPERIMENT],
                  service="after-drain")
    # The recovered pods run as their declared users, on volumes that kept their modes. Every
    # running process is checked against its own pod, so a Job's pod caught running (the canary's,
    # on its schedule) is checked too.
    identities = process_identities(node, NAMESPACE)
    declared = declared_identities(cluster, NAMESPACE)
    for (pod, container), (uid, gid, groups) in identities.items():
        run_as_user, run_as_group, fs_group = declared[pod]
        assert (uid, gid) == (run_as_user, run_as_group) and fs_group in groups, (pod, container)
    expected = {postgres_component.COMPONENT: postgres_component.POSTGRES_UID,
                mlflow_component.COMPONENT: mlflow_component.MLFLOW_UID,
                collector_component.COMPONENT: collector_component.COLLECTOR_UID}
    running = {component for component, uid in expected.items()
               if any(pod.startswith(component) and identity[0] == uid for (pod, _), identity in identities.items())}
    assert running == set(expected)
    pgdata = node.workdir / "volumes" / f"{NAMESPACE}-data-{postgres_component.SERVICE_NAME}-0" / "pgdata"
    assert stat.S_IMODE(pgdata.stat().st_mode) == 0o700 and pgdata.stat().st_uid == postgres_component.POSTGRES_UID
    stack.up("--expect-no-changes").check("up after the drain: nothing to change")
