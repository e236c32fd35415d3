"""S3 artifacts: the MLflow container of an `artifacts.kind: s3` stack, run as a
kubelet would against real PostgreSQL and moto in server mode as the S3 endpoint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from mlflow import MlflowClient

from components import backup
from components.config import merge_over
from components.mlflow import ARTIFACTS_DIR
from tests.support.processes import MlflowProcess, free_port, kubelet_for, stop, wait_until
from tests.support.program import run_program, stack_values

BUCKET, PREFIX = "mlflow-artifacts", "runs"
# The operator's object store and credentials Secret, as a stack names them.
STORE_URL = "http://minio.storage.svc.cluster.local:9000"
CREDENTIALS_SECRET = "mlflow-s3"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "it-access-key", "AWS_SECRET_ACCESS_KEY": "it-secret-key"}


@pytest.fixture(scope="module")
def s3_endpoint(workdir):
    """moto in server mode with the bucket the operator created."""
    port = free_port()
    log = workdir / "moto.log"
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                      aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])

    def created() -> bool:
        try:
            s3.create_bucket(Bucket=BUCKET)
            return True
        except Exception:  # not listening yet
            return False

    wait_until(created, 30, "moto S3 server", process, log)
    yield s3, port
    stop(process)


@pytest.fixture(scope="module")
def s3_server(s3_endpoint, postgres, databases_created, workdir):
    _, store_port = s3_endpoint
    declared = run_program("dev", mlflow=merge_over(stack_values("dev")["mlflow"], {"artifacts": {
        "kind": "s3", "uri": f"s3://{BUCKET}/{PREFIX}", "endpointUrl": STORE_URL, "secretName": CREDENTIALS_SECRET,
    }}))
    port = free_port()
    kubelet = kubelet_for(declared, workdir / "s3", postgres, port,
                          rewrites={"minio.storage.svc.cluster.local:9000": f"127.0.0.1:{store_port}"},
                          user_secrets={CREDENTIALS_SECRET: CREDENTIALS})
    server = MlflowProcess(kubelet, declared, port, workdir / "mlflow-s3.log")
    server.migrate()
    yield server.start()
    server.stop()


def test_s3_mode_declares_no_artifact_volume(s3_server):
    container = s3_server.run.get("Deployment", "mlflow").outputs["spec"]["template"]["spec"]["containers"][0]
    assert ARTIFACTS_DIR not in [m["mountPath"] for m in container["volumeMounts"]]
    # The only claim is the database backups' (components/backup.py), none for artifacts.
    assert [c.k8s_name for c in s3_server.run.kinds("PersistentVolumeClaim")] == [backup.CLAIM_NAME]


def test_an_artifact_logged_through_the_server_lands_in_the_bucket_and_reads_back(s3_server, s3_endpoint,
                                                                                     tmp_path: Path):
    s3, _ = s3_endpoint
    client = MlflowClient(tracking_uri=s3_server.url)
    run = client.create_run(client.create_experiment(f"s3-artifacts-{id(client)}"))
    source = tmp_path / "note.txt"
    source.write_text("kept in the bucket")
    client.log_artifact(run.info.run_id, str(source))

    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/").get("Contents", [])]
    (key,) = [k for k in keys if k.endswith(f"{run.info.run_id}/artifacts/note.txt")]
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"kept in the bucket"
    (tmp_path / "back").mkdir()
    downloaded = client.download_artifacts(run.info.run_id, "note.txt", str(tmp_path / "back"))
    assert Path(downloaded).read_text() == "kept in the bucket"
