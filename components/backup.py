"""Backups of every database the stack owns (MLflow's, the auth store's, the extra ones):
`pg_dump` in custom format onto a volume of their own, on a schedule (a CronJob) and
before each change that stops MLflow (the upgrade gate, components/upgrade.py, runs the
same script). A backup is a directory `<series>-<UTC time>` on that volume with one
`<database>.dump` each, complete once renamed from `.partial`; the newest `keep` of each
series stay.

`pg_dump` reads one snapshot per database, so a backup taken under ingest load restores
consistently, each database as it was when its dump began.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.config import Backup
from components.kube import (
    NamespaceRef,
    claim_spec,
    container_security_context,
    labels_for,
    pod_security_context,
)
from components.postgres import POSTGRES_UID, PostgresConnection, libpq_env

COMPONENT = "postgres-backup"  # the scheduled backups' CronJob and its pods
CRONJOB_NAME = COMPONENT
CLAIM_NAME = "postgres-backups"
BACKUP_DIR = "/backups"
JOB_DEADLINE_SECONDS = 3600
BACKUP_RESOURCES = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}}
# Shell: whether the database $1 exists, asked in MLflow's own database (the first listed; an external
# server need not let the stack's user into `postgres`). libpq's env names the server and the user.
DATABASE_EXISTS = """exists() {
  [ -n "$(psql --dbname="${BACKUP_DATABASES%% *}" -tAc "SELECT 1 FROM pg_database WHERE datname = '$1'")" ]
}
"""
# `$1` is the series. A failed run leaves only its own .partial directory, which the next run of the
# series removes; the series' newest BACKUP_KEEP complete backups stay, and always the one a pending restore
# names (BACKUP_PROTECTED, set by the upgrade gate). A database the stack owns that
# does not exist fails the backup, except right before a restore, which backs up whatever is there
# (a lost volume holds nothing of it).
BACKUP_SCRIPT = f"""set -eu
{DATABASE_EXISTS}series=$1
name="$series-$(date -u +%Y%m%dT%H%M%SZ)"
rm -rf "{BACKUP_DIR}/$series"-*.partial
mkdir "{BACKUP_DIR}/$name.partial"
for database in $BACKUP_DATABASES; do
  if ! exists "$database"; then
    echo "backup $name: database $database does not exist" >&2
    [ "$series" = before-restore ] && continue
    exit 1
  fi
  pg_dump --format=custom --dbname="$database" --file="{BACKUP_DIR}/$name.partial/$database.dump"
done
mv "{BACKUP_DIR}/$name.partial" "{BACKUP_DIR}/$name"
echo "backup $name:" $(ls "{BACKUP_DIR}/$name") "$(du -sk "{BACKUP_DIR}/$name" | cut -f1) KiB"
ls -1d "{BACKUP_DIR}/$series"-* | grep -v '[.]partial$' | grep -vxF "{BACKUP_DIR}/${{BACKUP_PROTECTED:-}}" | sort \
  | head -n -"$BACKUP_KEEP" | xargs -r rm -rf
"""


@dataclass(frozen=True)
class BackupTarget:
    """What a backup or a restore runs with: the databases, the server, the volume."""

    image: str  # PostgreSQL's: pg_dump and pg_restore of its major version, which read older servers too
    connection: PostgresConnection
    databases: tuple[str, ...]
    keep: int
    claim_name: pulumi.Input[str]
    platform: str


def postgres_client_env(target: BackupTarget) -> list[dict]:
    """libpq's host, port and credentials for pg_dump and pg_restore."""
    connection = target.connection
    return [{"name": "PGHOST", "value": connection.host}, {"name": "PGPORT", "value": str(connection.port)},
            *libpq_env(connection)]


def backup_container(target: BackupTarget, name: str, script: str) -> dict:
    """A container of the PostgreSQL image that runs `script` (BACKUP_SCRIPT, or a wrapper giving it
    the series) against the backup volume."""
    return {
        "name": name,
        "image": target.image,
        "command": ["sh", "-c", script, "sh"],
        "env": [
            *postgres_client_env(target),
            {"name": "BACKUP_DATABASES", "value": " ".join(target.databases)},
            {"name": "BACKUP_KEEP", "value": str(target.keep)},
        ],
        "resources": BACKUP_RESOURCES,
        "securityContext": container_security_context(read_only_root=True),
        "volumeMounts": [{"name": "backups", "mountPath": BACKUP_DIR}],
    }



def backup_volumes(target: BackupTarget) -> list[dict]:
    return [{"name": "backups", "persistentVolumeClaim": {"claimName": target.claim_name}}]


def backup_cronjob_spec(target: BackupTarget, schedule: str) -> dict:
    """Never two runs at once; a missed run is made up within the hour, then waits for the next."""
    return {
        "schedule": schedule,
        "concurrencyPolicy": "Forbid",
        "startingDeadlineSeconds": JOB_DEADLINE_SECONDS,
        "successfulJobsHistoryLimit": 1,
        "failedJobsHistoryLimit": 3,
        "jobTemplate": {
            "metadata": {"labels": labels_for(COMPONENT)},
            "spec": {
                "backoffLimit": 2,
                "activeDeadlineSeconds": JOB_DEADLINE_SECONDS,
                "template": {
                    "metadata": {"labels": labels_for(COMPONENT)},
                    "spec": {
                        "restartPolicy": "Never",
                        "securityContext": pod_security_context(target.platform, POSTGRES_UID, data_volume=True),
                        "containers": [{**backup_container(target, "backup", BACKUP_SCRIPT),
                                        "args": ["scheduled"]}],
                        "volumes": backup_volumes(target),
                    },
                },
            },
        },
    }


class DatabaseBackups(pulumi.ComponentResource):
    """The backup volume (kept on `destroy`, like every volume of user data) and, with a schedule,
    the CronJob that fills it. `target` is what the upgrade gate backs up and restores with."""

    target: BackupTarget

    def __init__(self, name: str, *, config: Backup, image: str, connection: PostgresConnection,
                 databases: tuple[str, ...], namespace: NamespaceRef, platform: str, kept_provider: k8s.Provider,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-tracing:index:DatabaseBackups", name, None, opts)
        meta = {"namespace": namespace.ref, "labels": labels_for(COMPONENT)}
        claim = k8s.core.v1.PersistentVolumeClaim(
            f"{name}-volume",
            metadata={**meta, "name": CLAIM_NAME},
            spec=claim_spec(config.size, "ReadWriteOnce", config.storage_class),
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True, provider=kept_provider),
        )
        self.target = BackupTarget(image=image, connection=connection, databases=databases, keep=config.keep,
                                   claim_name=claim.metadata.name, platform=platform)
        if config.schedule is not None:
            k8s.batch.v1.CronJob(
                f"{name}-schedule",
                metadata={**meta, "name": CRONJOB_NAME},
                spec=backup_cronjob_spec(self.target, config.schedule),
                opts=pulumi.ResourceOptions(parent=self),
            )
        self.register_outputs({"claimName": claim.metadata.name})
