"""The declared PostgreSQL init, migration and MLflow containers, run as a
kubelet would against real PostgreSQL and MLflow (issue: prove the specs)."""

from importlib.metadata import version

import requests

from components.config import version_from_image


def test_mlflow_under_test_is_the_version_of_the_deployed_image(declared):
    deployment = declared.get("Deployment", "mlflow")
    image = deployment.outputs["spec"]["template"]["spec"]["containers"][0]["image"]
    assert version("mlflow") == version_from_image(image)


def test_database_init_creates_the_databases_and_is_idempotent(declared, kubelet, postgres, databases_created):
    oids = "SELECT datname || '=' || oid FROM pg_database WHERE datname = 'mlflow'"
    before = postgres.psql(oids)
    assert before.startswith("mlflow=")
    (job,) = [j for j in declared.kinds("Job") if j.name == "postgres-init"]
    again = kubelet.run_to_completion(job, "create-databases", timeout=120)
    assert again.returncode == 0, again.stderr
    assert postgres.psql(oids) == before  # the same database, not a new one


def test_server_answers_health_from_the_declared_spec(mlflow_server):
    assert requests.get(f"{mlflow_server.url}/health", timeout=10).status_code == 200
