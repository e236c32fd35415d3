"""PostgreSQL: a bundled StatefulSet, a CloudNativePG cluster (the operator runs
it, with failover), or the coordinates of an existing server.

Either way the result is a `PostgresConnection`: where the server is and which
Secret keys hold the user name and password (MLflow gets them as libpq env,
never inside a URI or a command line).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components.config import MLFLOW_DATABASE, ObjectStore, Postgres
from components.kube import (
    CHECKSUM_ANNOTATION,
    NamespaceRef,
    claim_spec,
    container_security_context,
    content_checksum,
    labels_for,
    pod_security_context,
    secret_env,
    selector_for,
    service_host,
)

COMPONENT = "postgres"  # the label of the server's pods and objects
SERVICE_NAME = COMPONENT  # the Service and the StatefulSet are named after it
INIT_COMPONENT = "postgres-init"  # the database-creation Job
PORT = 5432
USERNAME = "mlflow"
USERNAME_KEY = "username"
PASSWORD_KEY = "password"
POSTGRES_UID = 999  # the postgres user of the official Debian-based image
DATA_DIR = "/var/lib/postgresql/data"
INIT_DIR = "/init"
INIT_SCRIPT = "create-databases.sql"
# Bounded wait for the server inside the init Job: 60 tries, 2 s apart.
WAIT_TRIES = 60
# The image's entrypoint sets POSTGRES_PASSWORD only on an empty volume. A volume
# kept from an earlier deployment (destroy, then up) would then refuse the newly
# generated password: before the server starts, this sets the Secret's password on
# an existing data directory, in single-user mode (no network, no authentication).
# It first makes the data directory 0700 again, as the image's entrypoint does before
# every start: PostgreSQL refuses a group-writable data directory, and the kubelet's
# fsGroup walk (a new fsGroup, a moved or restored volume) leaves it 02770.
PASSWORD_SYNC_SCRIPT = (
    'if [ -s "$PGDATA/PG_VERSION" ]; then chmod 00700 "$PGDATA" && '
    'printf \'ALTER ROLE "%s" WITH PASSWORD \'"\'%s\';\\n" "$POSTGRES_USER" "$POSTGRES_PASSWORD" '
    '| postgres --single -j -D "$PGDATA" postgres >/dev/null; fi'
)


# CloudNativePG: the operator names the primary's Service <cluster>-rw and generates the
# database owner's credentials into the Secret <cluster>-app (keys username, password).
CNPG_API_VERSION = "postgresql.cnpg.io/v1"
CNPG_CLUSTER = COMPONENT
CNPG_PRIMARY_SERVICE = f"{CNPG_CLUSTER}-rw"
CNPG_APP_SECRET = f"{CNPG_CLUSTER}-app"
CNPG_CLUSTER_LABEL = "cnpg.io/cluster"  # on every instance pod of the cluster
CNPG_STATUS_PORT = 8000  # each instance's manager, which the operator polls
# pulumi-kubernetes waits for this (it knows no readiness of custom resources).
WAIT_FOR_ANNOTATION = "pulumi.com/waitFor"


@dataclass(frozen=True)
class PostgresConnection:
    host: str
    port: int
    database: str
    secret_name: pulumi.Input[str]
    username_key: str
    password_key: str


def database_init_sql(databases: list[str] | tuple[str, ...]) -> str:
    """psql script creating each database only if it is missing.

    `CREATE DATABASE` cannot run inside a DO block or a function, so psql's
    `\\gexec` runs the statement that the SELECT yields only when the
    database is absent: safe on a fresh cluster and on an existing one."""
    lines = ["\\set ON_ERROR_STOP on"]
    for name in databases:
        lines.append(
            f"SELECT 'CREATE DATABASE \"{name}\"' "
            f"WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{name}')\\gexec"
        )
    return "\n".join(lines) + "\n"


def libpq_env(connection: PostgresConnection) -> list[dict]:
    """libpq's PGUSER/PGPASSWORD from the credentials Secret."""
    return secret_env(connection.secret_name,
                      {"PGUSER": connection.username_key, "PGPASSWORD": connection.password_key})


def init_container(image: str, connection: PostgresConnection, resources: dict) -> dict:
    """A container that waits (bounded) for the server, then runs the init script."""
    script = (
        f"for i in $(seq {WAIT_TRIES}); do "
        f"pg_isready -q -h \"$PGHOST\" -p \"$PGPORT\" && break; sleep 2; done; "
        f"exec psql -v ON_ERROR_STOP=1 -d postgres -f {INIT_DIR}/{INIT_SCRIPT}"
    )
    return {
        "name": "create-databases",
        "image": image,
        "command": ["sh", "-c", script],
        "env": [
            {"name": "PGHOST", "value": connection.host},
            {"name": "PGPORT", "value": str(connection.port)},
            *libpq_env(connection),
        ],
        "volumeMounts": [{"name": "init", "mountPath": INIT_DIR, "readOnly": True}],
        "resources": resources,
        "securityContext": container_security_context(read_only_root=True),
    }


def postgres_container(cfg: Postgres) -> dict:
    ready = ["sh", "-c", f'pg_isready -q -h 127.0.0.1 -p {PORT} -U "$POSTGRES_USER" -d {MLFLOW_DATABASE}']
    return {
        "name": COMPONENT,
        "image": cfg.image,
        "ports": [{"name": "postgres", "containerPort": PORT}],
        "env": [
            {"name": "POSTGRES_USER", "value": USERNAME},
            {"name": "POSTGRES_DB", "value": MLFLOW_DATABASE},
            # A sub-directory, because a fresh volume's root may hold lost+found.
            {"name": "PGDATA", "value": f"{DATA_DIR}/pgdata"},
        ],
        "resources": cfg.resources.as_k8s(),
        "securityContext": container_security_context(),
        "startupProbe": {"exec": {"command": ready}, "periodSeconds": 5, "failureThreshold": 60},
        "readinessProbe": {"exec": {"command": ready}, "periodSeconds": 10, "failureThreshold": 3},
        "livenessProbe": {"exec": {"command": ready}, "periodSeconds": 20, "failureThreshold": 6},
        "volumeMounts": [
            {"name": "data", "mountPath": DATA_DIR},
            {"name": "run", "mountPath": "/var/run/postgresql"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }


def password_sync_container(server: dict) -> dict:
    """Runs before the server with its env and volumes: the Secret's password wins over
    the one a retained volume was initialised with (see PASSWORD_SYNC_SCRIPT)."""
    return {
        "name": "sync-password",
        "image": server["image"],
        "command": ["sh", "-c", PASSWORD_SYNC_SCRIPT],
        "env": server["env"],
        "resources": server["resources"],
        # Writes only to the data volume.
        "securityContext": container_security_context(read_only_root=True),
        "volumeMounts": server["volumeMounts"],
    }


def statefulset_spec(cfg: Postgres, platform: str, secret_name: pulumi.Input[str]) -> dict:
    container = postgres_container(cfg)
    container["env"] += secret_env(secret_name, {"POSTGRES_PASSWORD": PASSWORD_KEY})
    return {
        "serviceName": SERVICE_NAME,
        "replicas": 1,
        "selector": {"matchLabels": selector_for(COMPONENT)},
        # The data volume outlives the StatefulSet: deleting or scaling it keeps the PVC.
        "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
        "template": {
            "metadata": {"labels": labels_for(COMPONENT)},
            "spec": {
                "securityContext": pod_security_context(platform, POSTGRES_UID, data_volume=True),
                "initContainers": [password_sync_container(container)],
                "containers": [container],
                "volumes": [{"name": "run", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
            },
        },
        "volumeClaimTemplates": [{
            "metadata": {"name": "data", "labels": labels_for(COMPONENT)},
            "spec": claim_spec(cfg.storage_size, "ReadWriteOnce", cfg.storage_class),
        }],
    }


def cnpg_cluster_spec(cfg: Postgres) -> dict:
    """The Cluster: MLflow's database and its owner made at bootstrap; the operator runs
    `instances` pods (a primary and streaming replicas) with their own disruption budgets."""
    assert cfg.cnpg, "the config layer sets it in cnpg mode"
    storage = {"size": cfg.storage_size, **({"storageClass": cfg.storage_class} if cfg.storage_class else {})}
    return {
        "instances": cfg.cnpg.instances,
        **({"imageName": cfg.cnpg.image_name} if cfg.cnpg.image_name else {}),
        "storage": storage,
        "resources": cfg.resources.as_k8s(),
        "bootstrap": {"initdb": {"database": MLFLOW_DATABASE, "owner": USERNAME}},
        **({"backup": cnpg_backup_spec(cfg.backup.object_store)} if cfg.backup.object_store else {}),
    }


def cnpg_backup_spec(store: ObjectStore) -> dict:
    """The Cluster's own backups: base backups and WAL to the object store (Barman Cloud), kept
    `retentionPolicy`, the credentials read from the Secret by the operator."""
    credentials = {key: {"name": store.secret_name, "key": env}
                   for key, env in (("accessKeyId", "AWS_ACCESS_KEY_ID"), ("secretAccessKey", "AWS_SECRET_ACCESS_KEY"))}
    return {
        "retentionPolicy": store.retention_policy,
        "barmanObjectStore": {
            "destinationPath": store.destination_path,
            **({"endpointURL": store.endpoint_url} if store.endpoint_url else {}),
            "s3Credentials": credentials,
            "wal": {"compression": "gzip"},
            "data": {"compression": "gzip"},
        },
    }


def cnpg_scheduled_backup_spec(schedule: str) -> dict:
    """A base backup on the stack's backup schedule. CloudNativePG's cron has a seconds field first;
    the first backup is taken at once, so a new cluster is never without one."""
    return {
        "schedule": schedule if schedule.startswith("@") else f"0 {schedule}",
        "cluster": {"name": CNPG_CLUSTER},
        "method": "barmanObjectStore",
        "immediate": True,
        "backupOwnerReference": "self",
    }


def cnpg_database_spec(database: str) -> dict:
    """A further database of the cluster, owned by MLflow's user; removing it from the config
    keeps the database (the operator's default reclaim policy, `retain`)."""
    return {"name": database, "owner": USERNAME, "cluster": {"name": CNPG_CLUSTER}}


def init_job_spec(image: str, connection: PostgresConnection, config_map: pulumi.Input[str],
                  checksum: str, platform: str, resources: dict) -> dict:
    return {
        "backoffLimit": 6,
        "template": {
            "metadata": {"labels": labels_for(INIT_COMPONENT), "annotations": {CHECKSUM_ANNOTATION: checksum}},
            "spec": {
                "restartPolicy": "OnFailure",
                "securityContext": pod_security_context(platform, POSTGRES_UID),
                "containers": [init_container(image, connection, resources)],
                "volumes": [{"name": "init", "configMap": {"name": config_map}}],
            },
        },
    }


class PostgresDatabase(pulumi.ComponentResource):
    """Bundled PostgreSQL with the mlflow database (and extra ones) created
    idempotently; or, in external mode, only the connection to an existing one.

    `ready` lists the resources a client must wait for."""

    connection: PostgresConnection
    ready: list[pulumi.Resource]

    def __init__(self, name: str, *, config: Postgres, databases: tuple[str, ...], namespace: NamespaceRef,
                 platform: str, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-tracing:index:PostgresDatabase", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        if config.mode == "external":
            ext = config.external
            assert ext is not None  # the config layer sets it in external mode
            self.connection = PostgresConnection(
                host=ext.host, port=ext.port, database=ext.database, secret_name=ext.secret_name,
                username_key=ext.username_key, password_key=ext.password_key,
            )
            self.ready = []
            self.register_outputs({"host": ext.host})
            return

        if config.mode == "cnpg":
            self._cnpg(name, config, databases, namespace)
            return

        password = random.RandomPassword(
            f"{name}-password", length=32, special=True, override_special="-_.~", opts=child
        )
        secret = k8s.core.v1.Secret(
            f"{name}-credentials",
            metadata={"namespace": namespace.ref, "labels": labels_for(COMPONENT)},
            string_data={USERNAME_KEY: USERNAME, PASSWORD_KEY: password.result},
            opts=child,
        )
        self.connection = PostgresConnection(
            host=service_host(SERVICE_NAME, namespace.name),
            port=PORT, database=MLFLOW_DATABASE, secret_name=secret.metadata.name,
            username_key=USERNAME_KEY, password_key=PASSWORD_KEY,
        )
        statefulset = k8s.apps.v1.StatefulSet(
            f"{name}-statefulset",
            metadata={"name": SERVICE_NAME, "namespace": namespace.ref, "labels": labels_for(COMPONENT)},
            spec=statefulset_spec(config, platform, secret.metadata.name),
            opts=child,
        )
        service = k8s.core.v1.Service(
            f"{name}-service",
            metadata={"name": SERVICE_NAME, "namespace": namespace.ref, "labels": labels_for(COMPONENT)},
            spec={
                "selector": selector_for(COMPONENT),
                "ports": [{"name": "postgres", "port": PORT, "targetPort": "postgres"}],
            },
            opts=child,
        )
        init_sql = database_init_sql((MLFLOW_DATABASE, *databases))
        init_script = k8s.core.v1.ConfigMap(
            f"{name}-init",
            metadata={"namespace": namespace.ref, "labels": labels_for(INIT_COMPONENT)},
            data={INIT_SCRIPT: init_sql},
            opts=child,
        )
        init_job = k8s.batch.v1.Job(
            f"{name}-init",
            metadata={"namespace": namespace.ref, "labels": labels_for(INIT_COMPONENT)},
            spec=init_job_spec(config.image, self.connection, init_script.metadata.name,
                               content_checksum(init_sql), platform, config.resources.as_k8s()),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[statefulset, service]),
        )
        self.ready = [init_job]
        self.register_outputs({"host": self.connection.host, "secretName": secret.metadata.name})

    def _cnpg(self, name: str, config: Postgres, databases: tuple[str, ...], namespace: NamespaceRef) -> None:
        metadata = {"namespace": namespace.ref, "labels": labels_for(COMPONENT)}
        cluster = k8s.apiextensions.CustomResource(
            f"{name}-cluster", api_version=CNPG_API_VERSION, kind="Cluster",
            metadata={**metadata, "name": CNPG_CLUSTER, "annotations": {WAIT_FOR_ANNOTATION: "condition=Ready"}},
            spec=cnpg_cluster_spec(config), opts=pulumi.ResourceOptions(parent=self),
        )
        extra = [
            k8s.apiextensions.CustomResource(
                f"{name}-database-{database}", api_version=CNPG_API_VERSION, kind="Database",
                metadata={**metadata, "name": f"{CNPG_CLUSTER}-{database.replace('_', '-')}",
                          "annotations": {WAIT_FOR_ANNOTATION: "jsonpath={.status.applied}=true"}},
                spec=cnpg_database_spec(database), opts=pulumi.ResourceOptions(parent=self, depends_on=[cluster]),
            )
            for database in databases
        ]
        if config.backup.object_store and config.backup.schedule:
            k8s.apiextensions.CustomResource(
                f"{name}-scheduled-backup", api_version=CNPG_API_VERSION, kind="ScheduledBackup",
                metadata={**metadata, "name": CNPG_CLUSTER},
                spec=cnpg_scheduled_backup_spec(config.backup.schedule),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[cluster]),
            )
        self.connection = PostgresConnection(
            host=service_host(CNPG_PRIMARY_SERVICE, namespace.name), port=PORT, database=MLFLOW_DATABASE,
            secret_name=CNPG_APP_SECRET, username_key=USERNAME_KEY, password_key=PASSWORD_KEY,
        )
        self.ready = [cluster, *extra]
        self.register_outputs({"host": self.connection.host, "secretName": CNPG_APP_SECRET})
