"""PostgreSQL, bundled in the stack, a CloudNativePG cluster, or external: the
databases the stack creates, and what an external server must be given."""

from __future__ import annotations

from components.config.fields import _DATABASE_NAME, _dns_label, _image, _resources, _storage_size
from components.config.reader import _Reader
from components.config.types import POSTGRES_MODES, CnpgCluster, ExternalPostgres, Postgres

MLFLOW_DATABASE = "mlflow"  # what the bundled PostgreSQL creates for MLflow


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
    )
