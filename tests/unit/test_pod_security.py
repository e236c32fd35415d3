"""Pod security: every pod of every stack passes the Pod Security Standard
`restricted` (what the namespace label enforces on Kubernetes) and, on
OpenShift, what the `restricted-v2` SCC admits."""

from __future__ import annotations

import pytest

from tests.support.program import STACKS, VARIANTS, run_program, stack_values

# Volume types both `restricted` and `restricted-v2` admit.
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}
# restricted-v2 assigns these from the namespace's ranges and rejects any other value.
ASSIGNED_BY_OPENSHIFT = {"runAsUser", "runAsGroup", "fsGroup", "supplementalGroups", "seLinuxOptions"}
# Containers whose root file system is still writable, and why. Every other
# container must be read-only, and these must not be: the list cannot go stale.
WRITABLE_ROOT = {
    "postgres": "the official image's entrypoint (initdb, the socket in /var/run/postgresql) is not run by "
                "the integration suite, so a read-only root is unproven for it",
}
# The variants that change a pod spec.
POD_SPEC_VARIANTS = ("persistent-queue", "s3", "external-postgres", "basic-auth", "scaled-out", "cnpg", "retention")


@pytest.fixture(scope="module", params=[*STACKS, *POD_SPEC_VARIANTS])
def stack(request, stack_runs):
    """(platform, run) of a stack or of a dev variant."""
    if request.param in stack_runs:
        return stack_values(request.param).get("platform", "kubernetes"), stack_runs[request.param]
    return "kubernetes", run_program("dev", **VARIANTS[request.param])


def pods(run) -> list[tuple[str, dict]]:
    """(resource name, pod spec) of every workload."""
    found = [(resource.name, pod) for resource, pod in run.pods()]
    assert found, "no workload to check"
    return found


def containers(pod: dict) -> list[dict]:
    return pod.get("initContainers", []) + pod["containers"]


def effective(pod: dict, container: dict, setting: str):
    """A security setting as the kubelet applies it: the container's, else the pod's."""
    return container.get("securityContext", {}).get(setting, pod.get("securityContext", {}).get(setting))


def test_every_pod_passes_pod_security_restricted(stack):
    _, run = stack
    checked = 0
    for name, pod in pods(run):
        assert not any(pod.get(host) for host in ("hostNetwork", "hostPID", "hostIPC")), name
        assert not pod.get("securityContext", {}).get("sysctls"), name
        for volume in pod.get("volumes", []):
            assert set(volume) - {"name"} <= RESTRICTED_VOLUMES, (name, volume)
        for container in containers(pod):
            where = (name, container["name"])
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert not context.get("privileged"), where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            assert effective(pod, container, "runAsNonRoot") is True, where
            assert effective(pod, container, "runAsUser") != 0, where
            assert effective(pod, container, "seccompProfile") == {"type": "RuntimeDefault"}, where
            assert not any(port.get("hostPort") for port in container.get("ports", [])), where
            checked += 1
    assert checked >= 3


def test_uids_are_fixed_on_kubernetes_and_left_to_restricted_v2_on_openshift(stack):
    platform, run = stack
    for name, pod in pods(run):
        for context in (pod["securityContext"], *(c["securityContext"] for c in containers(pod))):
            if platform == "openshift":
                assert not ASSIGNED_BY_OPENSHIFT & set(context), name
        if platform == "kubernetes":
            assert pod["securityContext"]["runAsUser"] > 0 and pod["securityContext"]["fsGroup"] > 0, name


def test_pods_with_a_kept_volume_are_walked_only_when_its_root_mismatches(stack):
    """A claim outlives its pods; by default the kubelet chgrps and makes group-writable every file
    of it at every mount (PostgreSQL then refuses its data directory). Pods without one keep the default."""
    _, run = stack
    for resource, pod in run.pods():
        claims = resource.outputs["spec"].get("volumeClaimTemplates") or [
            v for v in pod.get("volumes", []) if "persistentVolumeClaim" in v]
        policy = pod["securityContext"].get("fsGroupChangePolicy")
        assert policy == ("OnRootMismatch" if claims else None), resource.name


def test_root_file_systems_are_read_only_except_the_listed_ones(stack):
    _, run = stack
    for name, pod in pods(run):
        volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
        for container in containers(pod):
            read_only = container["securityContext"]["readOnlyRootFilesystem"]
            assert read_only is (container["name"] not in WRITABLE_ROOT), (
                f"{name}/{container['name']}: make it read-only, or list it in WRITABLE_ROOT with the reason"
                if not read_only else f"{name}/{container['name']} is read-only now: remove it from WRITABLE_ROOT"
            )
            if not read_only:
                continue
            # A read-only container writes only to volumes, and its HOME is one of them.
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", []) if not m.get("readOnly")}
            for path, volume in mounts.items():
                assert volume not in volumes or {"emptyDir", "persistentVolumeClaim"} & set(volumes[volume]), path
            home = next((e["value"] for e in container.get("env", []) if e["name"] == "HOME"), None)
            assert home is None or any(home == path or home.startswith(path.rstrip("/") + "/") for path in mounts), (
                name, container["name"], home)


def test_the_namespace_enforces_pod_security_restricted_on_kubernetes(stack_runs):
    (namespace,) = stack_runs["dev"].kinds("Namespace")
    labels = namespace.outputs["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
    assert not stack_runs["openshift"].kinds("Namespace")  # createNamespace: false: the project exists


def test_every_listed_writable_root_names_a_container(stack_runs):
    names = {container["name"] for run in stack_runs.values() for _, container in run.containers()}
    assert set(WRITABLE_ROOT) <= names
