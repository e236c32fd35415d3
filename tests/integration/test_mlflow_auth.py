"""Basic auth with real processes: the MLflow container of an `auth.kind: basic`
stack, its auth database created and migrated by the declared steps, and the
experiment provider signing in with the generated credentials."""

from __future__ import annotations

import copy
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
import requests
from mlflow import MlflowClient
from werkzeug.security import generate_password_hash

from components.experiment_provider import MlflowApiError, MlflowExperimentProvider
from components.mlflow import METRICS_DIR
from tests.support.access import apply_declared_access
from tests.support.collector import CollectorProcess, RealIdMocks
from tests.support.k8s import auth_config
from tests.support.kubelet import POD_HOST
from tests.support.otlp import one_span_request
from tests.support.processes import free_port, kubelet_for, stop, wait_until
from tests.support.program import BASIC_AUTH_MLFLOW, run_program

SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"

def provider_props(server, credentials) -> dict:
    return {"name": f"auth-{uuid.uuid4().hex[:8]}", "tracking_url": server.url, "tags": {}, "artifact_location": None,
            "credentials": credentials, "timeout_seconds": 20}


def test_the_declared_steps_create_and_migrate_the_auth_database(auth_server, postgres):
    assert postgres.psql("SELECT count(*) FROM pg_database WHERE datname = 'mlflow_auth'") == "1"
    assert postgres.psql("SELECT count(*) FROM alembic_version_auth", database="mlflow_auth") == "1"
    # The bootstrap step made the one admin (other modules of the session add users of their own).
    assert postgres.psql("SELECT username FROM users WHERE is_admin", database="mlflow_auth") == "admin"


def test_anonymous_clients_get_401_on_the_rest_api_and_on_otlp(auth_server):
    assert requests.get(f"{auth_server.url}{SEARCH}", timeout=10).status_code == 401
    body, _ = one_span_request("svc", "chat")
    response = requests.post(f"{auth_server.url}/v1/traces", data=body, timeout=10, headers={
        "Content-Type": "application/x-protobuf", "x-mlflow-experiment-id": "0"})
    assert response.status_code == 401


def test_probes_still_pass_without_credentials(auth_server, auth_run):
    container = auth_run.get("Deployment", "mlflow").outputs["spec"]["template"]["spec"]["containers"][0]
    for name in ("readinessProbe", "livenessProbe"):
        probe = container[name]
        response = requests.get(f"{auth_server.url}{probe['httpGet']['path']}", headers={"Host": POD_HOST},
                                timeout=probe["timeoutSeconds"])
        assert response.status_code == 200, name


def test_with_basic_auth_only_an_admin_may_read_mlflows_metrics_so_the_stack_does_not_expose_them(
        auth_server, auth_run, admin, postgres, workdir):
    """Why a basic-auth stack leaves MLflow unscraped (docs/operations.md, Monitoring, Limits): the declared
    server with `--expose-prometheus` added answers /metrics 401 to anyone anonymous and 403 to a
    user without admin rights (no validator for the route, and MLflow fails closed), so a scraper
    would need the admin's password. When a release opens it, this fails and the limit can go.
    `auth_server`: the databases created and migrated by the declared steps."""
    deployment = copy.deepcopy(auth_run.get("Deployment", "mlflow").outputs)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "--expose-prometheus" not in container["command"]
    container["command"] += ["--expose-prometheus", METRICS_DIR]
    pod["volumes"].append({"name": "metrics", "emptyDir": {}})
    container["volumeMounts"].append({"name": "metrics", "mountPath": METRICS_DIR})
    port = free_port()
    kubelet = kubelet_for(auth_run, workdir / "auth-metrics", postgres, port)
    log = workdir / "mlflow-auth-metrics.log"
    server = kubelet.start(SimpleNamespace(name="mlflow-auth-metrics", outputs=deployment), log)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: requests.get(f"{url}/health", timeout=5).status_code == 200, 180, "MLflow", server, log)
        scraper = (f"scraper-{uuid.uuid4().hex[:6]}", "scraper-password-123")
        requests.post(f"{url}/api/2.0/mlflow/users/create", auth=admin, timeout=10, json={
            "username": scraper[0], "password": scraper[1]}).raise_for_status()
        measured = {who: requests.get(f"{url}/metrics", auth=auth, timeout=10).status_code
                    for who, auth in (("anonymous", None), ("user", scraper), ("admin", admin))}
        assert measured == {"anonymous": 401, "user": 403, "admin": 200}
    finally:
        stop(server)


def test_the_generated_admin_signs_in_and_a_wrong_password_does_not(auth_server, admin):
    assert requests.get(f"{auth_server.url}{SEARCH}", auth=admin, timeout=10).status_code == 200
    assert requests.get(f"{auth_server.url}{SEARCH}", auth=(admin[0], "wrong-password-123"),
                        timeout=10).status_code == 401


def test_a_password_changed_behind_mlflow_is_refused_once_the_stacks_credential_cache_expires(
        auth_server, auth_run, admin, postgres):
    """The stack's `credentialCacheSeconds` is in effect: a worker keeps accepting a password it
    verified after the user store changed out of band, and refuses it once the cache expires."""
    ttl = auth_config(auth_run).getint("auth_cache_ttl_seconds")
    assert ttl > 0
    user, password = f"cache-{uuid.uuid4().hex[:8]}", "first-password-1234"
    changed_hash = generate_password_hash("second-password-1234")  # scrypt: before the clock starts
    requests.post(f"{auth_server.url}/api/2.0/mlflow/users/create", auth=admin, timeout=10,
                  json={"username": user, "password": password}).raise_for_status()
    session = requests.Session()  # one kept-alive connection: one worker, the one that verified it
    session.trust_env = False
    assert session.get(f"{auth_server.url}{SEARCH}", auth=(user, password), timeout=10).status_code == 200
    postgres.psql(f"UPDATE users SET password_hash = '{changed_hash}' "
                  f"WHERE username = '{user}'", database="mlflow_auth")
    assert session.get(f"{auth_server.url}{SEARCH}", auth=(user, password), timeout=10).status_code == 200
    wait_until(lambda: session.get(f"{auth_server.url}{SEARCH}", auth=(user, password), timeout=10).status_code == 401,
               ttl + 10, f"the old password refused within the {ttl}-s cache")
    assert session.get(f"{auth_server.url}{SEARCH}", auth=(user, "second-password-1234"), timeout=10).status_code == 200


def test_the_provider_signs_in_with_the_generated_credentials_on_every_call(auth_server, admin):
    provider = MlflowExperimentProvider()
    credentials = {"username": admin[0], "password": admin[1]}
    wanted = provider_props(auth_server, credentials)
    created = provider.create(wanted)
    read = provider.read(created.id, created.outs)
    assert read.outs["name"] == wanted["name"] and read.outs["lifecycle_stage"] == "active"
    renamed = {**wanted, "name": wanted["name"] + "-renamed", "tags": {"team": "obs"}}
    updated = provider.update(created.id, read.outs, renamed)
    assert updated.outs["name"] == renamed["name"]
    provider.delete(created.id, updated.outs)
    state = requests.get(f"{auth_server.url}/api/2.0/mlflow/experiments/get", params={"experiment_id": created.id},
                         auth=admin, timeout=10).json()["experiment"]
    assert state["lifecycle_stage"] == "deleted"


def test_the_provider_without_credentials_fails_fast_with_the_code(auth_server):
    with pytest.raises(MlflowApiError) as error:
        MlflowExperimentProvider().create(provider_props(auth_server, None))
    assert "401" in str(error.value)


def test_the_collector_exports_as_its_own_user_with_the_credentials_its_pod_declares(
        auth_server, admin, collector_binary, postgres, workdir, monkeypatch):
    session = requests.Session()
    session.auth = admin
    name = f"collector-auth-{uuid.uuid4().hex[:8]}"
    created = session.post(f"{auth_server.url}/api/2.0/mlflow/experiments/create", json={"name": name}, timeout=10)
    experiment_id = created.json()["experiment_id"]
    run = run_program("dev", mocks=RealIdMocks({name: experiment_id}), mlflow=BASIC_AUTH_MLFLOW,
                      experiments=[{"name": name, "default": True}])
    container = run.get("Deployment", "otel-collector").outputs["spec"]["template"]["spec"]["containers"][0]
    # The env a kubelet gives the pod: its own MLflow user's, never the admin's.
    users = apply_declared_access(run, auth_server.url, admin)
    env = kubelet_for(run, workdir, postgres, auth_server.port).env(container, {})
    assert env["MLFLOW_TRACKING_USERNAME"].startswith("otel-collector-")
    assert users[env["MLFLOW_TRACKING_USERNAME"]] == env["MLFLOW_TRACKING_PASSWORD"] != admin[1]
    collector = CollectorProcess(collector_binary, run, auth_server.url, workdir / "auth-collector",
                                 env=env).start()
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", admin[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin[1])
    client = MlflowClient(tracking_uri=auth_server.url)
    try:
        body, trace_id = one_span_request("chat-api", "chat.completions")
        requests.post(f"{collector.http_url}/v1/traces", data=body, timeout=10,
                      headers={"Content-Type": "application/x-protobuf"}).raise_for_status()
        wait_until(lambda: any(trace_id in t.info.trace_id for t in client.search_traces(locations=[experiment_id])),
                   60, "the span exported through the signed-in collector", collector.process, collector.log)
    finally:
        collector.stop()
    assert "401" not in collector.log_text()


class BearerGateway(ThreadingHTTPServer):
    """A loopback gateway in front of MLflow, like an OAuth proxy: it answers 401
    unless a request carries `Authorization: Bearer <token>`, and records each one."""

    def __init__(self, upstream: str, token: str):
        self.upstream, self.token, self.seen = upstream, token, []
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _forward(self) -> None:
                authorization = self.headers.get("Authorization", "")
                gateway.seen.append((self.command, self.path, authorization))
                if authorization != f"Bearer {gateway.token}":
                    self.send_response(401)
                    self.end_headers()
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                answer = requests.request(self.command, gateway.upstream + self.path, data=body, timeout=30,
                                          headers={"Content-Type": self.headers.get("Content-Type", "")})
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PATCH = do_DELETE = _forward

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def test_a_bearer_token_is_sent_on_every_request_of_the_life_cycle(mlflow_server):
    token = uuid.uuid4().hex
    gateway = BearerGateway(mlflow_server.url, token)
    try:
        provider = MlflowExperimentProvider()
        wanted = provider_props(gateway, {"token": token})
        created = provider.create(wanted)
        read = provider.read(created.id, created.outs)
        updated = provider.update(created.id, read.outs, {**wanted, "tags": {"team": "obs"}})
        provider.delete(created.id, updated.outs)
        assert len(gateway.seen) >= 4
        assert {authorization for _, _, authorization in gateway.seen} == {f"Bearer {token}"}
        with pytest.raises(MlflowApiError) as error:
            MlflowExperimentProvider().create(provider_props(gateway, None))
        assert "401" in str(error.value)
    finally:
        gateway.shutdown()
        gateway.server_close()
