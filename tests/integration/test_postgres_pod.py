"""The bundled PostgreSQL's pod as a kubelet runs it: the password-sync init container,
then the server through the image's entrypoint, as the declared user with the declared
fsGroup, on a claim that the kubelet walks at every mount the way it walks a CSI block
volume. Each pod is started, given data, stopped and started again on the same volume,
as a node drain, an upgrade roll or a `destroy` then `up` would: it must come back with
its data and the Secret's password, on Kubernetes (uid 999) and on OpenShift (an
arbitrary UID, GID 0, the project's fsGroup)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.images import postgres_bin_dir
from tests.support.kubelet import Kubelet, RestrictedV2
from tests.support.processes import free_port, stop, wait_until
from tests.support.program import ProgramRun, run_program

STATEFULSET = "postgres"
OPENSHIFT = RestrictedV2(uid_start=1000710000, uid_size=10000)


def declared(platform: str, walk_every_mount: bool) -> ProgramRun:
    """The stack's PostgreSQL; with `walk_every_mount`, the pod without its fsGroupChangePolicy
    (the default, Always): every mount re-walks the volume, as a root whose group or mode no
    longer matches (a restored or moved volume, another project's range) makes it do anyway."""
    run = run_program("openshift" if platform == "openshift" else "dev")
    if walk_every_mount:
        pod = run.get("StatefulSet", STATEFULSET).outputs["spec"]["template"]["spec"]
        pod["securityContext"].pop("fsGroupChangePolicy", None)
    return run


class PostgresPod:
    """The StatefulSet's pod; a new instance of it on each `start`, on the same claim."""

    def __init__(self, run: ProgramRun, workdir: Path, admission: RestrictedV2 | None):
        self.run, self.port, self.log = run, free_port(), workdir / "postgres.log"
        self.owner = run.get("StatefulSet", STATEFULSET)
        self.kubelet = Kubelet(run, workdir, rewrites={}, ports={5432: self.port}, admission=admission)
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """A new pod; Ready once its startup probe passes, within the probe's budget."""
        probe = self.kubelet.pod_spec(self.owner)["containers"][0]["startupProbe"]
        self.process = self.kubelet.start(self.owner, self.log)
        wait_until(lambda: self.kubelet.probe(self.owner, "postgres", "startupProbe"),
                   probe["periodSeconds"] * probe["failureThreshold"], "PostgreSQL's startup probe", self.process,
                   self.log)

    def stop(self) -> None:
        if self.process:
            stop(self.process, stop_signal=self.kubelet.stop_signal(self.owner, "postgres"))

    def psql(self, sql: str, password: str) -> str:
        """As MLflow signs in: over TCP, with the Secret's user and password."""
        done = subprocess.run([str(postgres_bin_dir() / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U",
                               "mlflow", "-d", "mlflow", "-Atc", sql], env={**os.environ, "PGPASSWORD": password},
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def data_dir(self) -> Path:
        """PGDATA on this machine: the claim's directory and the env's sub-path."""
        (container,) = self.kubelet.pod_spec(self.owner)["containers"]
        pgdata = next(e["value"] for e in container["env"] if e["name"] == "PGDATA")
        (mount,) = [m for m in container["volumeMounts"] if pgdata.startswith(m["mountPath"] + "/")]
        return self.kubelet.mounts(self.owner, container)[mount["mountPath"]] / pgdata[len(mount["mountPath"]) + 1:]


def secret_password(run: ProgramRun) -> str:
    (secret,) = [s for s in run.kinds("Secret") if s.outputs["stringData"].get("username") == "mlflow"]
    return secret.outputs["stringData"]["password"]


@pytest.mark.parametrize("platform", ["kubernetes", "openshift"])
@pytest.mark.parametrize("walk_every_mount", [False, True], ids=["as-declared", "walked-at-every-mount"])
def test_postgres_comes_back_after_a_restart_on_its_kept_volume(platform, walk_every_mount, workdir):
    run = declared(platform, walk_every_mount)
    pod = PostgresPod(run, workdir / f"pg-pod-{platform}-{walk_every_mount}",
                      OPENSHIFT if platform == "openshift" else None)
    password = secret_password(run)
    try:
        pod.start()
        pod.psql("CREATE TABLE kept (note text); INSERT INTO kept VALUES ('before the restart')", password)
        pod.stop()
        data = pod.data_dir()
        expected_uid = OPENSHIFT.uid_start if platform == "openshift" else 999
        assert data.stat().st_uid == expected_uid  # written by the declared (or assigned) user, not root

        pod.start()  # fails (the init container exits 1) if PGDATA is left group-writable by the walk
        assert pod.psql("SELECT note FROM kept", password) == "before the restart"
    finally:
        pod.stop()


def test_a_new_secret_password_is_set_on_the_kept_volume(workdir):
    """`destroy` then `up` generates a new password; the init container sets it on the kept data
    directory before the server starts, so MLflow signs in with the Secret's."""
    run = declared("kubernetes", walk_every_mount=True)
    pod = PostgresPod(run, workdir / "pg-pod-new-password", None)
    try:
        pod.start()
        pod.stop()
        (secret,) = [s for s in run.kinds("Secret") if s.outputs["stringData"].get("username") == "mlflow"]
        new_password = "a-new-generated-Password-0123"
        pod.kubelet.user_secrets[secret.k8s_name] = {**secret.outputs["stringData"], "password": new_password}
        pod.start()
        assert pod.psql("SELECT current_user", new_password) == "mlflow"
    finally:
        pod.stop()
