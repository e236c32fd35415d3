"""The upgrade gate: what makes a schema-changing MLflow upgrade, and a restore, run the way
MLflow requires within one `pulumi up`:

    stop Job:   stop-writers (Deployment to 0, retention CronJob suspended, their pods gone)
                -> backup (pg_dump of every database) -> restore (when one is pending)
    migration Job (components/mlflow.py), then the Deployment with the new image
    resume Job: the retention CronJob (and an autoscaled Deployment's replicas) back

The engine orders them (`depends_on`). `components/upgrade_gate.py` decides at run time, from
what the live Deployment says it runs, whether this change must stop the writers; a change
within the schema line leaves them running and the Deployment rolls a new pod in before it
stops an old one.

Both Jobs carry the plan (the image, its schema line, the backup to restore) in their pod
template, so every change of them replaces (re-runs) both, and nothing else does. The gate's
ServiceAccount may get and patch exactly the MLflow Deployment and the retention CronJob, and
list pods (to wait for them to be gone); nothing more.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s

from components import backup, upgrade_gate
from components.backup import BackupTarget
from components.kube import (
    LONG_JOB_TIMEOUTS,
    RERUN_IF_FAILED,
    NamespaceRef,
    container_security_context,
    labels_for,
    pod_security_context,
)
from components.postgres import POSTGRES_UID

COMPONENT = "mlflow-upgrade"  # the gate's Jobs, ServiceAccount and Role
SERVICE_ACCOUNT = COMPONENT
SCRIPTS_DIR = "/opt/mlflow-tracing"
SCRIPT_FILE = "upgrade_gate.py"
SCRIPT = Path(upgrade_gate.__file__).read_text()
STOP_TIMEOUT_SECONDS = 600  # MLflow's and a retention run's pods must be gone within this
JOB_RESOURCES = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}}
# The backup container takes its series from the stop step; without one there is nothing to back up.
GATED_BACKUP = f'[ -s {upgrade_gate.GATE_DIR}/backup ] || exit 0\nset -- "$(cat {upgrade_gate.GATE_DIR}/backup)"\n' \
    + f'BACKUP_PROTECTED=$(cat {upgrade_gate.GATE_DIR}/restore 2>/dev/null || true)\n' \
    + backup.BACKUP_SCRIPT
# Each database of the backup, replaced by its dump in one transaction (the gate took a backup of it
# first): the schema emptied, so no table of a newer MLflow stays beside the restored ones (which
# `pg_restore --clean` would leave), then the dump. One that a lost volume no longer has is created first.
RESTORE_SCRIPT = f"""set -eu
{backup.DATABASE_EXISTS}[ -s {upgrade_gate.GATE_DIR}/restore ] || exit 0
name=$(cat {upgrade_gate.GATE_DIR}/restore)
[ -d "{backup.BACKUP_DIR}/$name" ] || {{ echo "restore: postgres.backup.restoreFrom names $name, which the backup \
volume does not hold; it holds:" $(ls {backup.BACKUP_DIR}) >&2; exit 1; }}
for dump in "{backup.BACKUP_DIR}/$name"/*.dump; do
  database=$(basename "$dump" .dump)
  if ! exists "$database"; then
    psql --dbname="${{BACKUP_DATABASES%% *}}" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE \\"$database\\""
  fi
  started=$(date +%s)
  {{ echo 'DROP SCHEMA public CASCADE; CREATE SCHEMA public;'; pg_restore --no-owner --exit-on-error -f - "$dump"; }} \
    | psql --dbname="$database" -v ON_ERROR_STOP=1 --single-transaction -q -o /dev/null
  echo "restore: $database from $name in $(($(date +%s) - started)) s"
done
"""


@dataclass(frozen=True)
class Writers:
    """What writes to MLflow's database besides the migration, and what the gate may touch."""

    deployment: str
    components: tuple[str, ...]  # the labels of the pods that must be gone
    cronjobs: tuple[str, ...]


def upgrade_plan(*, image: str, schema: str, restore_from: str | None, writers: Writers) -> dict:
    return {
        "image": image,
        "schema": schema,
        "restoreFrom": restore_from,
        "deployment": writers.deployment,
        "writerPods": list(writers.components),
        "cronJobs": list(writers.cronjobs),
        "timeoutSeconds": STOP_TIMEOUT_SECONDS,
    }


def deployment_annotations(schema: str, restore_from: str | None) -> dict[str, str]:
    """The MLflow Deployment's record of its schema line and of the backup restored under it. And
    `pulumi.com/patchForce`: the stop step sets `replicas` to 0 as another field manager, and the
    Deployment's next apply must take the field back rather than fail on the conflict."""
    annotations = {upgrade_gate.SCHEMA_ANNOTATION: schema, "pulumi.com/patchForce": "true"}
    if restore_from:
        annotations[upgrade_gate.RESTORED_ANNOTATION] = restore_from
    return annotations


def role_rules(writers: Writers) -> list[dict]:
    return [
        {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": [writers.deployment],
         "verbs": ["get", "patch"]},
        {"apiGroups": ["batch"], "resources": ["cronjobs"], "resourceNames": list(writers.cronjobs),
         "verbs": ["get", "patch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    ]


def gate_container(image: str, command: str, plan: str) -> dict:
    """`upgrade_gate.py <command>` in MLflow's image (its Python; the script needs nothing else)."""
    return {
        "name": command,
        "image": image,
        "command": ["python", f"{SCRIPTS_DIR}/{SCRIPT_FILE}", command],
        "env": [{"name": "UPGRADE_PLAN", "value": plan}, {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}],
        "resources": JOB_RESOURCES,
        "securityContext": container_security_context(read_only_root=True),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "scripts", "mountPath": SCRIPTS_DIR, "readOnly": True},
                         {"name": "gate", "mountPath": str(upgrade_gate.GATE_DIR)}],
    }


def _job_spec(pod: dict) -> dict:
    """One attempt: a failure fails `pulumi up`, and the next `up` replaces the Job and runs it again."""
    return {"backoffLimit": 0, "template": {"metadata": {"labels": labels_for(COMPONENT)},
                                            "spec": {"restartPolicy": "Never",
                                                     "serviceAccountName": SERVICE_ACCOUNT, **pod}}}


def _scripts_volumes(config_map: pulumi.Input[str]) -> list[dict]:
    return [{"name": "scripts", "configMap": {"name": config_map}}, {"name": "gate", "emptyDir": {}}]


def stop_job_spec(*, image: str, plan: str, config_map: pulumi.Input[str], target: BackupTarget) -> dict:
    """stop-writers, then the backup it asks for, then the restore it asks for."""
    return _job_spec({
        "securityContext": pod_security_context(target.platform, POSTGRES_UID, data_volume=True),
        "initContainers": [gate_container(image, "stop-writers", plan),
                           {**backup.backup_container(target, "backup", GATED_BACKUP),
                            "volumeMounts": [*backup.backup_container(target, "backup", "")["volumeMounts"],
                                             {"name": "gate", "mountPath": str(upgrade_gate.GATE_DIR)}]}],
        "containers": [{**backup.backup_container(target, "restore", RESTORE_SCRIPT),
                        "volumeMounts": [{"name": "backups", "mountPath": backup.BACKUP_DIR},
                                         {"name": "gate", "mountPath": str(upgrade_gate.GATE_DIR)}]}],
        "volumes": [*_scripts_volumes(config_map), *backup.backup_volumes(target)],
    })


def resume_job_spec(*, image: str, plan: str, config_map: pulumi.Input[str], platform: str, uid: int,
                    pod_revision: pulumi.Input[str]) -> dict:
    """resume-writers, which also waits for the Deployment's rollout; `pod_revision` (of MLflow's pod
    template) in its env replaces the Job, so it runs again whenever MLflow's pods change."""
    container = gate_container(image, "resume-writers", plan)
    container["env"] = [*container["env"], {"name": "MLFLOW_POD_REVISION", "value": pod_revision}]
    return _job_spec({
        "securityContext": pod_security_context(platform, uid),
        "containers": [container],
        "volumes": _scripts_volumes(config_map),
    })


class UpgradeGate(pulumi.ComponentResource):
    """The gate's ServiceAccount, Role, RoleBinding and script, and its stop Job (`stopped`, which
    the migration waits for). The server runs the resume Job after its Deployment, with `plan`
    and the script in `scripts`."""

    stopped: k8s.batch.v1.Job
    plan: str
    restore_from: str | None  # the backup this `up` restores, if any
    scripts: pulumi.Output[str]  # the script's ConfigMap
    deployment_annotations: dict[str, str]  # what the Deployment says it runs, read by the next gate

    def __init__(self, name: str, *, image: str, schema: str, restore_from: str | None, writers: Writers,
                 target: BackupTarget, namespace: NamespaceRef, after: list[pulumi.Resource],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-tracing:index:UpgradeGate", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        meta = {"namespace": namespace.ref, "labels": labels_for(COMPONENT)}
        account = k8s.core.v1.ServiceAccount(f"{name}-account", metadata={**meta, "name": SERVICE_ACCOUNT},
                                             opts=child)
        role = k8s.rbac.v1.Role(f"{name}-role", metadata={**meta, "name": COMPONENT}, rules=role_rules(writers),
                                opts=child)
        binding = k8s.rbac.v1.RoleBinding(
            f"{name}-role-binding", metadata={**meta, "name": COMPONENT},
            role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role.metadata.name},
            subjects=[{"kind": "ServiceAccount", "name": account.metadata.name, "namespace": namespace.name}],
            opts=child,
        )
        scripts = k8s.core.v1.ConfigMap(f"{name}-scripts", metadata=meta, data={SCRIPT_FILE: SCRIPT}, opts=child)
        self.restore_from = restore_from
        self.plan = json.dumps(upgrade_plan(image=image, schema=schema, restore_from=restore_from, writers=writers))
        self.scripts = scripts.metadata.name
        self.deployment_annotations = deployment_annotations(schema, restore_from)
        self.stopped = k8s.batch.v1.Job(
            f"{name}-stop-writers", metadata={**meta, "annotations": RERUN_IF_FAILED},
            spec=stop_job_spec(image=image, plan=self.plan, config_map=self.scripts, target=target),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[account, role, binding, *after],
                                        custom_timeouts=LONG_JOB_TIMEOUTS),
        )
        self.register_outputs({})
