"""PostgreSQL, bundled in the stack, a CloudNativePG cluster, or external: the
databases the stack creates, and what an external server must be given."""

from __future__ import annotations

import re

from components.config.fields import _DATABASE_NAME, _cron, _dns_label, _image, _resources, _storage_size
from components.config.reader import _Reader
from components.config.types import (
    MLFLOW_DATABASE,
    POSTGRES_MODES,
    Backup,
    CnpgCluster,
    ExternalPostgres,
    ObjectStore,
    Postgres,
)

# What a backup is called on its volume: its series and when it started (UTC).
BACKUP_SERIES = ("scheduled", "before-upgrade", "before-restore")
BACKUP_NAME = re.compile(rf"^({'|'.join(BACKUP_SERIES)})-[0-9]{{8}}T[0-9]{{6}}Z$")
# CloudNativePG's retentionPolicy (its CRD's pattern): days, weeks or months.
_RETENTION_POLICY = re.compile(r"^[1-9][0-9]*[dwm]$")


def _object_store(reader: _Reader, mode: str) -> ObjectStore | None:
    """The CloudNativePG cluster's own backups, when a destination is set (cnpg mode only)."""
    destination = reader.text("destinationPath", optional=True)
    endpoint, secret = reader.text("endpointURL", optional=True), reader.text("secretName", optional=True)
    policy = reader.text("retentionPolicy") or ""
    if destination is None:
        if endpoint or secret:
            reader.problems.add(reader.at("destinationPath"),
                                "required with endpointURL or secretName: the s3://bucket/prefix the cluster "
                                "backs up to")
        return None
    if mode != "cnpg":
        reader.problems.add(reader.at("destinationPath"),
                            "CloudNativePG's own backups exist only with postgres.mode cnpg; remove it")
    if not re.match(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$", destination):
        reader.problems.add(reader.at("destinationPath"), f"{destination!r} must be s3://<bucket>[/prefix]")
    if not secret:
        reader.problems.add(reader.at("secretName"),
                            "name the Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY the cluster "
                            "uploads with")
    if endpoint and not re.match(r"^https?://", endpoint):
        reader.problems.add(reader.at("endpointURL"), "must be an http(s) URL")
    if not _RETENTION_POLICY.match(policy):
        reader.problems.add(reader.at("retentionPolicy"),
                            f"{policy!r} is not a CloudNativePG retention policy; write days, weeks or months "
                            "such as 30d, 4w or 6m")
    return ObjectStore(destination_path=destination, endpoint_url=endpoint, secret_name=secret or "",
                       retention_policy=policy)


def _backup(reader: _Reader, mode: str) -> Backup:
    schedule = None if reader.value.get("schedule") is None else _cron(reader, "schedule")
    restore_from = reader.text("restoreFrom", optional=True)
    if restore_from is not None:
        if not BACKUP_NAME.match(restore_from):
            reader.problems.add(
                reader.at("restoreFrom"),
                f"{restore_from!r} is not a backup's name; give one the backup volume lists, such as "
                "scheduled-20261203T024300Z (see docs/operations.md, Backups)",
            )
        else:
            reader.problems.warn(
                reader.at("restoreFrom"),
                f"{restore_from} is restored over MLflow's databases once, with MLflow stopped, and what they held "
                "is backed up first; remove the key once MLflow serves the restored data",
            )
    return Backup(
        schedule=schedule,
        keep=reader.integer("keep", 1),
        size=_storage_size(reader, "size"),
        storage_class=reader.text("storageClass", optional=True),
        restore_from=restore_from,
        object_store=_object_store(reader.child("objectStore"), mode),
    )


def _postgres(reader: _Reader) -> Postgres:
    mode = reader.choice("mode", POSTGRES_MODES)
    databases = reader.strings("databases")
    for name in databases:
        if not _DATABASE_NAME.match(name):
            reader.problems.add(
                reader.at("databases"),
                f"{name!r} is not a plain PostgreSQL name (lower-case letters, digits, '_', not starting with a digit)",
            )
    if MLFLOW_DATABASE in databases:
        reader.problems.add(reader.at("databases"), "mlflow is always created; list only the extra databases")
    if len(set(databases)) != len(databases):
        reader.problems.add(reader.at("databases"), "lists a database twice; remove the duplicate")
    ext = reader.child("external")
    external = None
    if mode == "external":
        missing = [name for name in ("host", "secretName") if not ext.value.get(name)]
        for name in missing:
            reader.problems.add(
                ext.at(name),
                "required with postgres.mode external (the server's host name, and the Secret holding "
                "the user name and password)",
            )
        if databases:
            reader.problems.add(reader.at("databases"),
                                "extra databases are created only in bundled and cnpg mode; remove them")
        external = ExternalPostgres(
            host=ext.text("host", optional=True) or "",
            port=ext.integer("port", 1),
            database=ext.text("database") or MLFLOW_DATABASE,
            secret_name=ext.text("secretName", optional=True) or "",
            username_key=ext.text("usernameKey") or "username",
            password_key=ext.text("passwordKey") or "password",
        )
    cnpg = None
    if mode == "cnpg":
        operator = reader.child("cnpg")
        cnpg = CnpgCluster(
            instances=operator.integer("instances", 1),
            image_name=operator.text("imageName", optional=True),
            operator_namespace=_dns_label(operator, "operatorNamespace"),
        )
    return Postgres(
        mode=mode,
        image=_image(reader),
        storage_size=_storage_size(reader, "storageSize"),
        storage_class=reader.text("storageClass", optional=True),
        databases=databases,
        resources=_resources(reader.child("resources")),
        external=external,
        cnpg=cnpg,
        backup=_backup(reader.child("backup"), mode),
    )
