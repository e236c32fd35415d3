"""PostgreSQL: bundled StatefulSet with idempotent database creation, a
CloudNativePG Cluster, or an external server reached through the user's Secret."""

import json

import pytest

from components.postgres import database_init_sql
from tests.support.crds import validate_custom_resource
from tests.support.k8s import container, env_of, integral, pod_spec
from tests.support.program import MOCK_PASSWORD, run_program

EXTERNAL = {
    "mode": "external",
    "external": {"host": "db.internal", "port": 6432, "database": "tracking", "secretName": "pg-creds",
                 "usernameKey": "user", "passwordKey": "pass"},
}


def test_init_sql_creates_each_database_only_when_missing():
    sql = database_init_sql(["mlflow", "langfuse"])
    for name in ("mlflow", "langfuse"):
        assert (f"SELECT 'CREATE DATABASE \"{name}\"' WHERE NOT EXISTS "
                f"(SELECT FROM pg_database WHERE datname = '{name}')\\gexec") in sql
    assert sql.startswith("\\set ON_ERROR_STOP on")


def test_statefulset_keeps_its_volume_and_probes_with_pg_isready(dev):
    statefulset = dev.get("StatefulSet", "postgres")
    spec = statefulset.outputs["spec"]
    assert spec["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"  # Pulumi.dev.yaml
    postgres = container(statefulset, "postgres")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert "pg_isready" in " ".join(postgres[probe]["exec"]["command"])
    assert {m["mountPath"] for m in postgres["volumeMounts"]} >= {"/var/lib/postgresql/data"}
    assert env_of(postgres)["PGDATA"]["value"].startswith("/var/lib/postgresql/data/")
    assert dev.get("Service", "postgres").outputs["spec"]["ports"][0]["port"] == 5432


def test_the_secret_password_is_set_on_a_kept_volume_before_the_server_starts(dev):
    """destroy keeps the data volume; the next up generates a new password, which the
    image's entrypoint would ignore on a non-empty volume."""
    statefulset = dev.get("StatefulSet", "postgres")
    (sync,) = pod_spec(statefulset)["initContainers"]
    server = container(statefulset, "postgres")
    assert sync["image"] == server["image"]
    assert sync["volumeMounts"] == server["volumeMounts"]
    password = env_of(sync)["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert password == env_of(server)["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert MOCK_PASSWORD not in json.dumps(sync["command"])  # read from the env at run time, never an argument
    # That a kept volume then accepts the new password, also after the kubelet's fsGroup walk made its
    # data directory group-writable, is proven on real processes: tests/integration/test_postgres_pod.py
    # and tests/engine/test_dev_stack.py::test_up_after_destroy_restores_the_experiments_with_their_ids.


def test_storage_class_is_passed_when_set():
    run = run_program("dev", postgres={"storageClass": "fast"})
    (claim,) = run.get("StatefulSet", "postgres").outputs["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == "fast"


def test_password_is_generated_url_safe_and_only_referenced(dev):
    (password,) = dev.of_type("random:index/randomPassword:RandomPassword")
    assert password.inputs["overrideSpecial"] == "-_.~" and password.inputs["length"] >= 32
    (secret,) = dev.kinds("Secret")
    postgres = container(dev.get("StatefulSet", "postgres"), "postgres")
    ref = env_of(postgres)["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret.k8s_name and ref["key"] in secret.outputs["stringData"]


def test_init_job_runs_the_sql_after_the_server_and_reruns_when_databases_change(dev):
    (job,) = [j for j in dev.kinds("Job") if j.name == "postgres-init"]
    (config_map,) = [c for c in dev.kinds("ConfigMap") if c.name == "postgres-init"]
    statefulset = dev.get("StatefulSet", "postgres")
    assert statefulset.urn in job.dependencies
    init = container(job, "create-databases")
    assert pod_spec(job)["volumes"][0]["configMap"]["name"] == config_map.k8s_name
    assert init["command"][-1].endswith("psql -v ON_ERROR_STOP=1 -d postgres -f /init/create-databases.sql")
    assert config_map.outputs["data"]["create-databases.sql"] == database_init_sql(["mlflow"])

    changed = run_program("dev", postgres={"databases": ["langfuse"]})
    (changed_job,) = [j for j in changed.kinds("Job") if j.name == "postgres-init"]
    annotation = "checksum/config"
    assert (changed_job.outputs["spec"]["template"]["metadata"]["annotations"][annotation]
            != job.outputs["spec"]["template"]["metadata"]["annotations"][annotation])


def test_migration_waits_for_the_databases_through_the_upgrade_gate(dev):
    (init_job,) = [j for j in dev.kinds("Job") if j.name == "postgres-init"]
    (gate,) = [j for j in dev.kinds("Job") if j.name == "upgrade-stop-writers"]
    (migrate,) = [j for j in dev.kinds("Job") if j.name == "mlflow-migrate"]
    assert init_job.urn in gate.dependencies and gate.urn in migrate.dependencies


@pytest.fixture(scope="module")
def external():
    return run_program("dev", postgres=EXTERNAL)


def test_external_mode_creates_no_postgres_and_uses_the_given_secret(external):
    assert not external.kinds("StatefulSet") and not external.kinds("Secret")
    assert not external.of_type("random:index/randomPassword:RandomPassword")
    jobs = [j.name for j in external.kinds("Job")]
    assert "mlflow-migrate" in jobs and "postgres-init" not in jobs
    mlflow = container(external.get("Deployment", "mlflow"), "mlflow")
    env = env_of(mlflow)
    assert env["PGUSER"]["valueFrom"]["secretKeyRef"] == {"name": "pg-creds", "key": "user"}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "pg-creds", "key": "pass"}
    assert env["MLFLOW_BACKEND_STORE_URI"]["value"] == "postgresql+psycopg2://db.internal:6432/tracking"
    assert external.outputs["postgresHost"] == "db.internal"


CNPG = {"mode": "cnpg", "storageSize": "8Gi", "storageClass": "ssd", "databases": ["langfuse"],
        "cnpg": {"instances": 3}}


@pytest.fixture(scope="module")
def cnpg():
    # With basic auth, so that the auth database is one of the declared databases too.
    return run_program("dev", postgres=CNPG, mlflow={"auth": {"kind": "basic"}, "apiUrl": "http://localhost:5000"})


def test_cnpg_declares_a_cluster_with_mlflows_database_and_owner(cnpg):
    (cluster,) = [r for r in cnpg.resources if r.kind == "Cluster"]
    manifest = cluster.manifest
    validate_custom_resource(integral(manifest))
    spec = manifest["spec"]
    assert spec["instances"] == 3
    assert spec["storage"] == {"size": "8Gi", "storageClass": "ssd"}
    assert spec["bootstrap"]["initdb"] == {"database": "mlflow", "owner": "mlflow"}
    # pulumi-kubernetes knows no readiness of a custom resource: it waits for the operator's condition.
    assert manifest["metadata"]["annotations"]["pulumi.com/waitFor"] == "condition=Ready"
    assert not cnpg.kinds("StatefulSet") and not [j for j in cnpg.kinds("Job") if j.name == "postgres-init"]
    assert not [s for s in cnpg.kinds("Secret") if s.name == "postgres-credentials"]


def test_cnpg_creates_each_further_database_owned_by_mlflows_user(cnpg):
    (cluster,) = [r for r in cnpg.resources if r.kind == "Cluster"]
    databases = [r for r in cnpg.resources if r.kind == "Database"]
    for database in databases:
        validate_custom_resource(integral(database.manifest))
        assert database.outputs["spec"]["cluster"] == {"name": cluster.k8s_name}
        assert database.outputs["spec"]["owner"] == cluster.outputs["spec"]["bootstrap"]["initdb"]["owner"]
        assert database.outputs["metadata"]["annotations"]["pulumi.com/waitFor"] == "jsonpath={.status.applied}=true"
        assert cluster.urn in database.dependencies
    assert sorted(d.outputs["spec"]["name"] for d in databases) == ["langfuse", "mlflow_auth"]


def test_mlflow_uses_the_cnpg_primary_and_the_operators_credentials(cnpg):
    (cluster,) = [r for r in cnpg.resources if r.kind == "Cluster"]
    name = cluster.k8s_name
    server = container(cnpg.get("Deployment", "mlflow"), "mlflow")
    env = env_of(server)
    # The operator's Service for the primary, and the Secret it generates for the database owner.
    assert env["MLFLOW_BACKEND_STORE_URI"]["value"] == f"postgresql+psycopg2://{name}-rw.mlflow.svc:5432/mlflow"
    assert env["PGUSER"]["valueFrom"]["secretKeyRef"] == {"name": f"{name}-app", "key": "username"}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": f"{name}-app", "key": "password"}
    assert cnpg.outputs["postgresHost"] == f"{name}-rw.mlflow.svc"
    (gate,) = [j for j in cnpg.kinds("Job") if j.name == "upgrade-stop-writers"]  # the migration waits for it
    waited = {r.urn for r in cnpg.resources if r.kind in ("Cluster", "Database")}
    assert len(waited) == 3 and waited <= set(gate.dependencies)
