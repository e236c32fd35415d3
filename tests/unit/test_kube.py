"""Shared builders: in-cluster names that resolve whatever the cluster domain."""

from components.kube import claim_spec, secret_env, service_host
from tests.support.program import run_program


def test_service_host_does_not_assume_the_cluster_domain():
    # `<svc>.<ns>.svc` resolves through every pod's DNS search path; `cluster.local` is only the default domain.
    assert service_host("mlflow", "obs") == "mlflow.obs.svc"


def test_no_in_cluster_address_the_program_declares_spells_the_cluster_domain():
    run = run_program("dev", mlflow={"auth": {"kind": "basic"}, "apiUrl": "http://localhost:5000"})
    assert run.outputs["mlflowInternalUrl"] == "http://mlflow.mlflow.svc:5000"
    assert run.outputs["otlpGrpcEndpoint"] == "http://otel-collector.mlflow.svc:4317"
    assert run.outputs["postgresHost"] == "postgres.mlflow.svc"
    # Only MLflow's Host check still accepts the long form, which some clients send.
    server = next(c for r, c in run.containers() if c["name"] == "mlflow")
    allowed = server["command"][server["command"].index("--allowed-hosts") + 1]
    assert "mlflow.mlflow.svc.cluster.local:5000" in allowed.split(",")
    declared = repr([r.outputs for r in run.resources if r.typ.startswith("kubernetes:")]).replace(allowed, "")
    assert "cluster.local" not in declared


def test_secret_env_reads_each_variable_from_its_key_in_one_secret_in_order():
    assert secret_env("creds", {"PGUSER": "username", "PGPASSWORD": "password"}) == [
        {"name": "PGUSER", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "username"}}},
        {"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
    ]


def test_claim_spec_names_a_storage_class_only_when_one_is_set():
    assert claim_spec("5Gi", "ReadWriteOnce", None) == {
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}},
    }
    assert claim_spec("5Gi", "ReadWriteMany", "nfs")["storageClassName"] == "nfs"
