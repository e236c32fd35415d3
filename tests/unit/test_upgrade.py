"""The upgrade gate: which image changes stop MLflow, the order the engine runs the steps in,
and a ServiceAccount that can touch nothing but the writers."""

import json

import pytest

from components import upgrade_gate
from components.config import schema_line
from components.upgrade_gate import (
    RESTORED_ANNOTATION,
    SCHEMA_ANNOTATION,
    STOPPED_ANNOTATION,
    reasons_to_stop,
    rolled_out,
)
from tests.support.k8s import env_of
from tests.support.program import run_program

IMAGE = "ghcr.io/mlflow/mlflow:v3.17.2-full"


@pytest.mark.parametrize(("image", "line"), [
    (IMAGE, "3.17"),
    ("ghcr.io/mlflow/mlflow:v3.17.0-full", "3.17"),
    (f"{IMAGE}@sha256:{'0' * 64}", "3.17"),
    ("registry.corp/mlflow:3.16.1", "3.16"),
    ("registry.corp/mlflow:latest", "registry.corp/mlflow:latest"),
    (f"registry.corp/mlflow@sha256:{'1' * 64}", f"registry.corp/mlflow@sha256:{'1' * 64}"),
])
def test_the_schema_line_is_the_minor_version_or_the_whole_image(image, line):
    assert schema_line(image) == line


def live_deployment(annotations: dict | None = None, image: str = IMAGE) -> dict:
    return {"metadata": {"annotations": annotations or {}},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{"image": image}]}}}}


def plan(schema: str = "3.17", image: str = IMAGE, restore: str | None = None) -> dict:
    return {"schema": schema, "image": image, "restoreFrom": restore}


@pytest.mark.parametrize(("deployment", "wanted", "stops"), [
    (live_deployment({SCHEMA_ANNOTATION: "3.17"}), plan(), False),  # a patch or digest change: roll
    (live_deployment({SCHEMA_ANNOTATION: "3.16"}), plan(), True),  # another minor
    (live_deployment({SCHEMA_ANNOTATION: "3.17"}), plan(schema="corp/mlflow:dev"), True),  # an unknown version
    (live_deployment(image=IMAGE), plan(), False),  # an earlier program's Deployment, the same image
    (live_deployment(image="ghcr.io/mlflow/mlflow:v3.17.1-full"), plan(), True),  # ... another image
    (live_deployment({SCHEMA_ANNOTATION: "3.17"}), plan(restore="scheduled-20261203T024300Z"), True),
    (live_deployment({SCHEMA_ANNOTATION: "3.17", RESTORED_ANNOTATION: "scheduled-20261203T024300Z"}),
     plan(restore="scheduled-20261203T024300Z"), False),  # restored already: never twice
    (live_deployment({SCHEMA_ANNOTATION: "3.17", STOPPED_ANNOTATION: "1"}), plan(), True),  # a failed upgrade's
    (None, plan(), False),  # nothing runs yet
    (None, plan(restore="scheduled-20261203T024300Z"), True),
])
def test_the_writers_stop_only_when_the_schema_may_change_or_a_restore_is_pending(deployment, wanted, stops):
    assert bool(reasons_to_stop(deployment, wanted)) is stops


@pytest.fixture(scope="module")
def gated():
    return run_program("dev", retention={"days": 30})


def job(run, name: str):
    (found,) = [j for j in run.kinds("Job") if j.name == name]
    return found


def test_the_engine_runs_stop_migrate_roll_resume_then_the_check_in_that_order(gated):
    stop, migrate = job(gated, "upgrade-stop-writers"), job(gated, "mlflow-migrate")
    deployment, resume = gated.get("Deployment", "mlflow"), job(gated, "mlflow-resume-writers")
    check = job(gated, "trace-check")
    assert job(gated, "postgres-init").urn in stop.dependencies
    assert stop.urn in migrate.dependencies and migrate.urn in deployment.dependencies
    assert deployment.urn in resume.dependencies and resume.urn in check.dependencies


def test_the_gate_may_touch_only_the_writers(gated):
    (role,) = gated.kinds("Role")
    assert role.outputs["rules"] == [
        {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["mlflow"], "verbs": ["get", "patch"]},
        {"apiGroups": ["batch"], "resources": ["cronjobs"], "resourceNames": ["trace-retention", "trace-canary"],
         "verbs": ["get", "patch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    ]
    gated.get("CronJob", "trace-retention")  # the name the Role gives
    (binding,) = gated.kinds("RoleBinding")
    assert binding.outputs["roleRef"]["name"] == role.k8s_name
    assert binding.outputs["subjects"] == [{"kind": "ServiceAccount", "name": "mlflow-upgrade", "namespace": "mlflow"}]
    # Only the gate's two Jobs run as its ServiceAccount.
    accounts = {r.name: pod.get("serviceAccountName") for r, pod in gated.pods()}
    assert {name for name, account in accounts.items() if account} == {"upgrade-stop-writers",
                                                                       "mlflow-resume-writers"}
    assert set(accounts.values()) == {None, "mlflow-upgrade"}


def test_the_deployment_records_its_schema_line_and_lets_the_next_apply_take_replicas_back(dev):
    annotations = dev.get("Deployment", "mlflow").outputs["metadata"]["annotations"]
    assert annotations == {SCHEMA_ANNOTATION: "3.17", "pulumi.com/patchForce": "true"}
    restored = run_program("dev", postgres={"backup": {"restoreFrom": "scheduled-20261203T024300Z"}})
    assert restored.get("Deployment", "mlflow").outputs["metadata"]["annotations"][RESTORED_ANNOTATION] \
        == "scheduled-20261203T024300Z"


def gate_plan(run) -> dict:
    pod = job(run, "upgrade-stop-writers").outputs["spec"]["template"]["spec"]
    (stop, _) = pod["initContainers"]
    return json.loads(env_of(stop)["UPGRADE_PLAN"]["value"])


def test_every_image_change_reruns_the_gate_which_decides_from_the_live_deployment(dev):
    """Both gate Jobs carry the plan, so a new image replaces (re-runs) them; their spec is the same
    otherwise, so an `up` that changes nothing else leaves them alone."""
    assert gate_plan(dev) == {
        "image": IMAGE, "schema": "3.17", "restoreFrom": None, "deployment": "mlflow",
        "writerPods": ["mlflow", "trace-retention"], "cronJobs": ["trace-retention", "trace-canary"],
        "timeoutSeconds": 600,
    }
    patched = run_program("dev", mlflow={"image": "ghcr.io/mlflow/mlflow:v3.17.1-full", "auth": {"kind": "none"}})
    assert gate_plan(patched)["schema"] == "3.17" and gate_plan(patched)["image"].endswith("v3.17.1-full")
    for name in ("upgrade-stop-writers", "mlflow-resume-writers"):
        assert job(patched, name).outputs["spec"] != job(dev, name).outputs["spec"]
    assert job(run_program("dev"), "upgrade-stop-writers").outputs["spec"] == \
        job(dev, "upgrade-stop-writers").outputs["spec"]


def test_any_change_of_mlflows_pods_reruns_the_resume_job_which_waits_for_their_rollout(dev):
    """The collector's roll and the check wait for the resume Job, so it must run after every MLflow
    roll, not only after an image change: a changed pod template (here, one more allowed host)
    replaces it, and an `up` that changes nothing leaves it alone."""
    rehosted = run_program("dev", mlflow={"extraAllowedHosts": ["mlflow.corp.example"], "auth": {"kind": "none"}})
    assert rehosted.get("Deployment", "mlflow").outputs["spec"]["template"] != \
        dev.get("Deployment", "mlflow").outputs["spec"]["template"]
    assert job(rehosted, "mlflow-resume-writers").outputs["spec"] != job(dev, "mlflow-resume-writers").outputs["spec"]
    assert job(rehosted, "upgrade-stop-writers").outputs["spec"] == job(dev, "upgrade-stop-writers").outputs["spec"]
    assert job(run_program("dev"), "mlflow-resume-writers").outputs["spec"] == \
        job(dev, "mlflow-resume-writers").outputs["spec"]


def deployment_status(generation: int, observed: int, replicas: int, updated: int, available: int) -> dict:
    return {"metadata": {"generation": generation}, "spec": {"replicas": 1},
            "status": {"observedGeneration": observed, "replicas": replicas, "updatedReplicas": updated,
                       "availableReplicas": available}}


@pytest.mark.parametrize(("deployment", "done"), [
    # the status of the previous rollout, before the controller has seen the new template
    (deployment_status(generation=3, observed=2, replicas=1, updated=1, available=1), False),
    # Recreate's first status for the new template: the old ReplicaSet scaled down, its pod still
    # counted available, no new ReplicaSet yet (what pulumi-kubernetes' await took as done)
    (deployment_status(generation=3, observed=3, replicas=1, updated=0, available=1), False),
    (deployment_status(generation=3, observed=3, replicas=1, updated=1, available=0), False),  # not Ready yet
    (deployment_status(generation=3, observed=3, replicas=2, updated=1, available=2), False),  # an old pod left
    (deployment_status(generation=3, observed=3, replicas=1, updated=1, available=1), True),
    (None, True),  # no Deployment: nothing to wait for
])
def test_the_resume_job_waits_until_the_new_template_runs_available_and_alone(deployment, done):
    assert rolled_out(deployment) is done


def test_the_gate_backs_up_and_restores_every_database_the_stack_owns():
    run = run_program("dev", mlflow={"auth": {"kind": "basic"}}, postgres={"databases": ["evals"]},
                      exposure={"tls": {"enabled": True}})
    pod = job(run, "upgrade-stop-writers").outputs["spec"]["template"]["spec"]
    (_, backup), (restore,) = pod["initContainers"], pod["containers"]
    assert env_of(backup)["BACKUP_DATABASES"]["value"] == "mlflow evals mlflow_auth"
    for container in (backup, restore):
        assert env_of(container)["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "password"
        assert {m["name"] for m in container["volumeMounts"]} == {"backups", "gate"}
    assert str(upgrade_gate.GATE_DIR) in backup["command"][2]


def test_a_restore_reruns_the_migration_after_it_and_only_a_restore_does(dev):
    """The restored schema may be older than the image, and the restored auth store may hold an older
    admin: the migration Job's pod changes (so the Job is replaced and runs again) with the restore."""
    restoring = run_program("dev", postgres={"backup": {"restoreFrom": "scheduled-20261203T024300Z"}})
    migration = job(restoring, "mlflow-migrate").outputs["spec"]
    assert migration != job(dev, "mlflow-migrate").outputs["spec"]
    assert migration["template"]["metadata"]["annotations"] == {
        upgrade_gate.RESTORED_ANNOTATION: "scheduled-20261203T024300Z"}
    assert job(run_program("dev"), "mlflow-migrate").outputs["spec"] == job(dev, "mlflow-migrate").outputs["spec"]
