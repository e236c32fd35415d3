"""The declared PostgreSQL init, migration and MLflow containers, run as a
kubelet would against real PostgreSQL and MLflow (issue: prove the specs)."""

import socket
from importlib.metadata import version

import pytest
import requests
from mlflow import MlflowClient

from components.config import version_from_image
from tests.support.kubelet import KERNEL_MOUNTS, POD_HOST
from tests.support.otlp import chat_trace, export_request, one_span_request
from tests.support.processes import run_job


def test_mlflow_under_test_is_the_version_of_the_deployed_image(declared, mlflow_server):
    """The server runs from the image's stand-in (its own install), the tests' client from this venv: both
    are the image's version."""
    deployment = declared.get("Deployment", "mlflow")
    image = deployment.outputs["spec"]["template"]["spec"]["containers"][0]["image"]
    assert version("mlflow") == version_from_image(image)
    assert requests.get(f"{mlflow_server.url}/version", timeout=10).text == version_from_image(image)


def test_database_init_creates_the_databases_and_is_idempotent(declared, kubelet, postgres, databases_created):
    oids = "SELECT datname || '=' || oid FROM pg_database WHERE datname = 'mlflow'"
    before = postgres.psql(oids)
    assert before.startswith("mlflow=")
    run_job(kubelet, "postgres-init")  # raises unless it succeeds again
    assert postgres.psql(oids) == before  # the same database, not a new one


def test_server_answers_health_from_the_declared_spec(mlflow_server):
    assert requests.get(f"{mlflow_server.url}/health", timeout=10).status_code == 200

@pytest.fixture(scope="module")
def server_container(declared):
    return declared.get("Deployment", "mlflow").outputs["spec"]["template"]["spec"]["containers"][0]


def test_each_declared_probe_passes_with_the_kubelets_host_header(mlflow_server, server_container):
    ports = {p["name"]: p["containerPort"] for p in server_container["ports"]}
    assert ports == {"http": 5000}  # every probe targets this named port, mapped to the test port
    startup = server_container["startupProbe"]
    assert startup["tcpSocket"]["port"] == "http"
    with socket.create_connection(("127.0.0.1", mlflow_server.port), timeout=startup.get("timeoutSeconds", 1)):
        pass
    for name in ("readinessProbe", "livenessProbe"):
        probe = server_container[name]
        response = requests.get(f"{mlflow_server.url}{probe['httpGet']['path']}", headers={"Host": POD_HOST},
                                timeout=probe["timeoutSeconds"])
        assert response.status_code == 200, (name, response.status_code)


def test_every_host_form_clients_use_is_accepted_and_a_foreign_one_refused(mlflow_server):
    hosts = ["mlflow.localtest.me", "mlflow.localtest.me:443", "mlflow.localtest.me:80", "localhost",
             "localhost:5000", "localhost:8080", "127.0.0.1:5000"]
    for name in ("mlflow", "mlflow.mlflow", "mlflow.mlflow.svc", "mlflow.mlflow.svc.cluster.local"):
        hosts += [name, f"{name}:5000"]
    search = f"{mlflow_server.url}/api/2.0/mlflow/experiments/search?max_results=1"
    for host in hosts:
        assert requests.get(search, headers={"Host": host}, timeout=10).status_code == 200, host
    refused = requests.get(search, headers={"Host": "evil.example.com"}, timeout=10)
    assert refused.status_code == 403 and "Invalid Host header" in refused.text


def test_tracking_uri_is_the_backend_uri_and_the_fastapi_app_answers(mlflow_server, server_container):
    env = {e["name"]: e.get("value") for e in server_container["env"]}
    assert env["MLFLOW_TRACKING_URI"] == env["MLFLOW_BACKEND_STORE_URI"]
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")
    # /v1/traces exists only in the uvicorn/FastAPI app: a missing header is its validation error.
    body, _ = one_span_request("svc", "chat")
    response = requests.post(f"{mlflow_server.url}/v1/traces", data=body, timeout=10,
                             headers={"Content-Type": "application/x-protobuf"})
    assert response.status_code == 422


def test_a_span_posted_with_an_experiment_header_is_stored_there(mlflow_server):
    client = MlflowClient(tracking_uri=mlflow_server.url)
    experiment_id = client.create_experiment(f"otlp-{id(client)}")
    body, trace_id = one_span_request("chat-api", "chat.completions", {"gen_ai.usage.input_tokens": 12})
    response = requests.post(f"{mlflow_server.url}/v1/traces", data=body, timeout=10, headers={
        "Content-Type": "application/x-protobuf", "x-mlflow-experiment-id": experiment_id})
    assert response.status_code == 200, response.text
    (trace,) = client.search_traces(locations=[experiment_id])
    assert trace_id in trace.info.trace_id
    other, _ = one_span_request("chat-api", "chat.completions")
    unknown = requests.post(f"{mlflow_server.url}/v1/traces", data=other, timeout=10, headers={
        "Content-Type": "application/x-protobuf", "x-mlflow-experiment-id": "987654"})
    assert unknown.status_code == 404


def test_a_request_that_holds_a_span_twice_is_refused_whole(mlflow_server):
    """MLflow 3.17's ingest upserts a request's spans in one statement, which PostgreSQL refuses when a
    span is in it twice: the whole request gets 400, which the collector takes as permanent and drops,
    so every other span in that batch is lost too (docs/operations.md, Troubleshooting). The same spans sent again in
    a request of their own are stored (a retry is harmless)."""
    client = MlflowClient(tracking_uri=mlflow_server.url)
    experiment_id = client.create_experiment(f"duplicates-{id(client)}")
    repeated, other = chat_trace("llama-3.1-8b", 3, 4), chat_trace("llama-3.1-8b", 5, 6)

    def post(spans) -> requests.Response:
        return requests.post(f"{mlflow_server.url}/v1/traces", timeout=30,
                             data=export_request({"chat-api": spans}).SerializeToString(),
                             headers={"Content-Type": "application/x-protobuf",
                                      "x-mlflow-experiment-id": experiment_id})

    refused = post(repeated + repeated + other)
    assert refused.status_code == 400 and "cannot affect row a second time" in refused.text
    assert client.search_traces(locations=[experiment_id]) == []  # nothing of the request was stored
    assert post(other).status_code == post(repeated).status_code == post(repeated).status_code == 200
    assert len(client.search_traces(locations=[experiment_id])) == 2


def test_an_artifact_logged_through_the_server_lands_on_the_declared_volume(mlflow_server, kubelet, declared):
    client = MlflowClient(tracking_uri=mlflow_server.url)
    experiment_id = client.create_experiment(f"artifacts-{id(client)}")
    run = client.create_run(experiment_id)
    source = kubelet.workdir / "note.txt"
    source.write_text("kept on the PVC")
    client.log_artifact(run.info.run_id, str(source))
    deployment = declared.get("Deployment", "mlflow")
    container = deployment.outputs["spec"]["template"]["spec"]["containers"][0]
    volume_dir = kubelet.mounts(deployment, container)["/mlflow/artifacts"]
    stored = list(volume_dir.rglob("note.txt"))
    assert len(stored) == 1 and stored[0].read_text() == "kept on the PVC"
    downloaded = client.download_artifacts(run.info.run_id, "note.txt", str(kubelet.workdir))
    assert open(downloaded).read() == "kept on the PVC"


def test_restarting_the_migration_and_the_server_changes_nothing(mlflow_server, postgres):
    client = MlflowClient(tracking_uri=mlflow_server.url)
    kept = client.create_experiment(f"kept-across-restart-{id(client)}")
    state = ("SELECT (SELECT version_num FROM alembic_version) || ' ' || "
             "(SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public') || ' ' || "
             "(SELECT count(*) FROM experiments)")
    before = postgres.psql(state, database="mlflow")

    mlflow_server.migrate()  # the Job run again, as a new `pulumi up` would; raises unless it succeeds
    assert postgres.psql(state, database="mlflow") == before

    mlflow_server.stop()  # the pod restarted: same spec, same database
    mlflow_server.start()  # fails unless healthy within the declared startup probe budget
    assert postgres.psql(state, database="mlflow") == before
    assert client.get_experiment(kept).lifecycle_stage == "active"


def test_the_server_runs_with_a_read_only_root_and_writes_only_to_its_volumes(mlflow_server, server_container):
    """The kubelet emulation enforces readOnlyRootFilesystem: every other test here
    runs against a server whose only writable paths are its declared volumes."""
    assert server_container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {}
    for line in open(f"/proc/{mlflow_server.process.pid}/mountinfo"):
        fields = line.split()
        mounts[fields[4]] = fields[5].split(",")[0]
    assert mounts["/"] == "ro"
    writable = {path for path, mode in mounts.items() if mode == "rw"
                and not any(path == k or path.startswith(k + "/") for k in KERNEL_MOUNTS)}
    local = mlflow_server.kubelet.mounts(mlflow_server.run.get("Deployment", "mlflow"), server_container)
    assert writable == {str(local[m["mountPath"]]) for m in server_container["volumeMounts"] if not m.get("readOnly")}
