"""The kubelet emulation itself, on real processes: every real-process proof of this
project stands on it, so each rule it claims to enforce is shown here to hold, and to
bite. A pod runs a small program in the MLflow image's stand-in (or PostgreSQL's) that
reports who it is and what it may do."""

from __future__ import annotations

import json
import os
import socket
import stat
from types import SimpleNamespace

import pytest

from components.config import project_defaults
from components.mlflow import MLFLOW_UID
from components.postgres import POSTGRES_UID
from tests.support.images import deployed_mlflow_image
from tests.support.kubelet import (
    ContainerRefused,
    Identity,
    Kubelet,
    RestrictedV2,
    container_argv,
    new_filesystem,
    set_volume_ownership,
)
from tests.support.processes import ephemeral_port_range, free_port

# What the process reports: its ids, capabilities, no_new_privs, its passwd entry, HOME, and
# whether it may write to and read the given paths.
REPORT = r"""
import json, os, pwd, sys
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
def may(action, path):
    try:
        if action == "write":
            open(os.path.join(path, "probe"), "w").close()
        else:
            open(path).read()
        return True
    except OSError:
        return False
try:
    entry = pwd.getpwuid(os.getuid())[:]
except KeyError:
    entry = None
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
    "cap_bounding": int(status["CapBnd"], 16), "cap_effective": int(status["CapEff"], 16),
    "no_new_privs": int(status["NoNewPrivs"]), "passwd": entry, "home": os.environ.get("HOME"),
    "write": {p: may("write", p) for p in sys.argv[1].split(",") if p},
    "read": {p: may("read", p) for p in sys.argv[2].split(",") if p},
}))
"""
RESTRICTED = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True}
CAP_CHOWN = 1 << 0


def pod_owner(name: str, pod_context: dict, container_context: dict, image: str | None = None,
              volumes: list[dict] = (), mounts: list[dict] = (), writes: str = "", reads: str = "") -> SimpleNamespace:
    container = {"name": "report", "image": image or deployed_mlflow_image(),
                 "command": ["python3", "-c", REPORT, writes, reads], "securityContext": container_context,
                 "volumeMounts": list(mounts)}
    return SimpleNamespace(name=name, outputs={"spec": {"template": {"spec": {
        "securityContext": pod_context, "containers": [container], "volumes": list(volumes)}}}})


def report(kubelet: Kubelet, owner: SimpleNamespace) -> dict:
    done = kubelet.run_pod_to_completion(owner, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def kubelet(workdir, request) -> Kubelet:
    return Kubelet(SimpleNamespace(), workdir / f"emulation-{request.node.name}", rewrites={}, ports={})


def test_a_container_runs_as_its_declared_user_and_groups_with_no_capability(kubelet):
    owner = pod_owner("declared", {"runAsUser": MLFLOW_UID, "runAsGroup": MLFLOW_UID, "fsGroup": 2000,
                                   "supplementalGroups": [4242]}, RESTRICTED)
    seen = report(kubelet, owner)
    assert (seen["uid"], seen["gid"]) == (MLFLOW_UID, MLFLOW_UID)
    assert seen["groups"] == sorted({MLFLOW_UID, 2000, 4242})
    assert seen["cap_bounding"] == seen["cap_effective"] == 0 and seen["no_new_privs"] == 1
    # The MLflow image has no USER and no passwd entry for 1000: HOME falls back to /.
    assert seen["passwd"] is None and seen["home"] == "/"


def test_a_uid_the_image_knows_gets_its_passwd_entry_and_primary_group(kubelet):
    owner = pod_owner("postgres-user", {"runAsUser": POSTGRES_UID}, RESTRICTED,
                      image=project_defaults()["postgres"]["image"])
    owner.outputs["spec"]["template"]["spec"]["containers"][0]["command"] = ["sh", "-c", "id -u; id -g; echo $HOME"]
    done = kubelet.run_pod_to_completion(owner, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(POSTGRES_UID), str(POSTGRES_UID), "/var/lib/postgresql"]


def test_run_as_non_root_refuses_a_container_that_would_run_as_root(kubelet):
    owner = pod_owner("root-by-image", {}, RESTRICTED)  # the MLflow image has no USER: root
    with pytest.raises(ContainerRefused, match="runAsNonRoot and image will run as root"):
        kubelet.run_pod_to_completion(owner, timeout=60)
    explicit = pod_owner("root-by-spec", {"runAsUser": 0}, RESTRICTED)
    with pytest.raises(ContainerRefused):
        kubelet.run_pod_to_completion(explicit, timeout=60)


def test_a_root_container_keeps_only_the_capabilities_it_is_given(kubelet, workdir):
    secret = workdir / "emulation-not-yours"
    secret.write_text("x")
    os.chown(secret, 4242, 4242)
    secret.chmod(0o600)
    owner = pod_owner("root-chown-only", {"runAsUser": 0},
                      {"capabilities": {"drop": ["ALL"], "add": ["CHOWN"]}}, reads=str(secret))
    seen = report(kubelet, owner)
    assert seen["uid"] == 0 and seen["cap_bounding"] == seen["cap_effective"] == CAP_CHOWN
    assert seen["read"] == {str(secret): False}  # no DAC_OVERRIDE: root, and still refused
    everything = report(kubelet, pod_owner("root-runtime-default", {"runAsUser": 0}, {}, reads=str(secret)))
    assert everything["read"] == {str(secret): True} and everything["no_new_privs"] == 0


def test_a_read_only_root_leaves_only_the_writable_volumes(kubelet):
    owner = pod_owner("read-only", {"runAsUser": MLFLOW_UID, "fsGroup": MLFLOW_UID},
                      {**RESTRICTED, "readOnlyRootFilesystem": True},
                      volumes=[{"name": "scratch", "emptyDir": {}}],
                      mounts=[{"name": "scratch", "mountPath": "/scratch"}], writes="/scratch,/var/tmp,/dev/shm")
    seen = report(kubelet, owner)
    local = str(kubelet.mounts(owner, owner.outputs["spec"]["template"]["spec"]["containers"][0])["/scratch"])
    assert seen["write"] == {local: True, "/var/tmp": False, "/dev/shm": True}


def test_volumes_are_prepared_and_walked_with_the_fs_group(kubelet, workdir):
    config_map = SimpleNamespace(get=lambda kind, name: SimpleNamespace(outputs={"data": {"app.yaml": "a: 1\n"}}))
    kubelet.run = config_map
    volumes = [{"name": "scratch", "emptyDir": {}}, {"name": "conf", "configMap": {"name": "c"}},
               {"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]
    mounts = [{"name": "scratch", "mountPath": "/scratch"}, {"name": "conf", "mountPath": "/conf", "readOnly": True},
              {"name": "data", "mountPath": "/data"}]
    owner = pod_owner("volumes", {"runAsUser": MLFLOW_UID, "fsGroup": 3000}, RESTRICTED, volumes=volumes,
                      mounts=mounts)
    container = owner.outputs["spec"]["template"]["spec"]["containers"][0]
    local = kubelet.mounts(owner, container)
    kubelet.setup_volumes(owner)
    scratch, conf, data = (local[p].stat() for p in ("/scratch", "/conf", "/data"))
    assert (stat.S_IMODE(scratch.st_mode), scratch.st_gid) == (0o2777, 3000)
    config_file = (local["/conf"] / "app.yaml").stat()
    assert (stat.S_IMODE(config_file.st_mode), config_file.st_uid, config_file.st_gid) == (0o644, 0, 3000)
    # A new file system's root, owned by root, made group-writable for the pod's fsGroup.
    assert (stat.S_IMODE(data.st_mode), data.st_uid, data.st_gid) == (0o2775, 0, 3000)
    assert stat.S_IMODE((local["/data"] / "lost+found").stat().st_mode) == 0o2770
    # What the process wrote 0700 is group-writable with setgid after the next mount's walk...
    private = local["/data"] / "private"
    private.mkdir(mode=0o700)
    os.chown(private, MLFLOW_UID, 3000)
    kubelet.setup_volumes(owner)
    assert stat.S_IMODE(private.stat().st_mode) == 0o2770
    # ...unless the pod asks for OnRootMismatch and the root still matches.
    private.chmod(0o700)
    owner.outputs["spec"]["template"]["spec"]["securityContext"]["fsGroupChangePolicy"] = "OnRootMismatch"
    kubelet.setup_volumes(owner)
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    os.chown(local["/data"], 0, 0)  # a root whose group no longer matches: walked again
    kubelet.setup_volumes(owner)
    assert stat.S_IMODE(private.stat().st_mode) == 0o2770 and local["/data"].stat().st_gid == 3000


def test_set_volume_ownership_leaves_symlinks_modes_alone(workdir):
    root = workdir / "emulation-symlinks"
    new_filesystem(root)
    target = root / "file"
    target.write_text("x")
    target.chmod(0o600)
    (root / "link").symlink_to(target)
    set_volume_ownership(root, 5000, None)
    assert stat.S_IMODE(target.stat().st_mode) == 0o660 and (root / "link").lstat().st_gid == 5000


def test_openshift_assigns_an_arbitrary_uid_group_0_and_the_projects_fs_group(workdir):
    scc = RestrictedV2(uid_start=1000700000, uid_size=10000)
    kubelet = Kubelet(SimpleNamespace(), workdir / "emulation-openshift", rewrites={}, ports={}, admission=scc)
    owner = pod_owner("openshift", {"runAsNonRoot": True}, {"runAsNonRoot": True})
    seen = report(kubelet, owner)
    assert (seen["uid"], seen["gid"]) == (scc.uid_start, 0)
    assert seen["groups"] == [0, scc.fs_group]
    assert seen["cap_bounding"] == 0 and seen["no_new_privs"] == 1  # restricted-v2 drops ALL, no escalation
    # CRI-O writes a passwd entry for a UID the image lacks.
    assert seen["passwd"][2] == scc.uid_start and seen["passwd"][5] == "/"
    fixed = pod_owner("openshift-fixed", {"runAsUser": MLFLOW_UID}, RESTRICTED)
    with pytest.raises(ContainerRefused, match="not in the namespace's range"):
        kubelet.run_pod_to_completion(fixed, timeout=60)



def test_a_port_handed_to_a_pod_is_never_the_local_end_of_an_outgoing_connection():
    """A pod's ports are chosen before its containers bind them (seconds later for a pod with init
    containers). A port the kernel could also give an outgoing connection meanwhile made a restarted
    collector fail 'address already in use' on every restart, as no cluster does."""
    handed_out = [free_port() for _ in range(40)]
    assert len(set(handed_out)) == len(handed_out), "a port was handed out twice"
    assert not [port for port in handed_out if port in ephemeral_port_range()], \
        f"ports in the kernel's ephemeral range {ephemeral_port_range()}: the kernel may give them away"
    for port in handed_out:  # each still free for the pod that gets it
        socket.create_server(("127.0.0.1", port)).close()


def test_the_users_files_a_running_container_sees_are_never_rewritten_under_it(workdir):
    """Each exec (a probe) sets up its container's /etc/passwd again. Rewritten in place, the file a
    running container sees through its bind mount was empty for a moment, and PostgreSQL's initdb
    failed 'could not look up effective user ID' on OpenShift's arbitrary UID (a CI run met it)."""
    identity = Identity(uid=1000710000, gid=0, groups=(0,), capabilities=(), no_new_privs=True,
                        passwd=("root:x:0:0:root:/root:/bin/bash", "1000710000:x:1000710000:0::/:/bin/sh"),
                        group=("root:x:0:",), home="/")
    directory = workdir / "users-files"
    first = container_argv(["true"], identity, directory, None)
    (passwd,) = directory.glob("users-*/passwd")
    before = passwd.stat()
    for _ in range(3):  # the probes' execs
        assert container_argv(["true"], identity, directory, None) == first
    after = passwd.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)
    assert passwd.read_text().splitlines() == list(identity.passwd)
