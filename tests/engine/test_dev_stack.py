"""The dev stack, deployed by the real engine as a user runs it, on a control
plane whose pods really run: preview, up, traces, a no-op up, experiments added,
renamed and removed, Jobs replaced, destroy, and last a post-deploy check that fails.

The tests follow one stack through its life, in file order; each one starts
from the state the previous one left.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time

import pytest
import requests
import yaml

from components import collector as collector_component
from components import mlflow as mlflow_component
from components.config import project_defaults
from components.kube import CHECKSUM_ANNOTATION
from tests.support.collector import SETTLE_SECONDS, stored_spans
from tests.support.images import postgres_bin_dir
from tests.support.otlp import chat_trace, export_request, post_http, probe_trace
from tests.support.processes import free_port, stop, wait_until
from tests.support.program import run_program, stack_values
from tests.support.readme import table_keys

NAMESPACE = "mlflow"  # the dev stack's (Pulumi.yaml's default)
ARRIVAL_TIMEOUT = 90
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # how the engine's JSON spells a value known only after apply
API = "/api/2.0/mlflow/experiments"


@pytest.fixture(scope="module")
def stack(project, mlflow_url):
    """Pulumi.dev.yaml as shipped, plus the `mlflow.apiUrl` a laptop without DNS for
    *.localtest.me would set (a port-forward)."""
    config = stack_values("dev")
    config["mlflow"] = {**config["mlflow"], "apiUrl": mlflow_url}
    return project.stack("dev", config)


def experiment(mlflow_url: str, experiment_id: str) -> dict:
    response = requests.get(f"{mlflow_url}{API}/get", params={"experiment_id": experiment_id}, timeout=10)
    response.raise_for_status()
    return response.json()["experiment"]


def collector_config(cluster) -> dict:
    (config_map,) = [c for c in cluster.get(f"/api/v1/namespaces/{NAMESPACE}/configmaps")["items"]
                     if collector_component.CONFIG_FILE in (c.get("data") or {})]
    return yaml.safe_load(config_map["data"][collector_component.CONFIG_FILE])


def exported_ids(config: dict) -> set[str]:
    return {e["headers"][collector_component.EXPERIMENT_HEADER] for e in config["exporters"].values()}


def collector_template(cluster) -> dict:
    deployment = cluster.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{collector_component.SERVICE_NAME}")
    return deployment["spec"]["template"]


def jobs(cluster) -> dict[str, dict]:
    """Job name -> Job, by the component label."""
    found = cluster.get(f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs")["items"]
    return {j["metadata"]["name"]: j for j in found}


def job_of(cluster, component: str) -> dict:
    (job,) = [j for j in jobs(cluster).values() if j["metadata"]["labels"]["app.kubernetes.io/name"] == component]
    return job


def send_and_wait(otlp_url: str, mlflow_url: str, service: str, experiment_id: str) -> None:
    """A chat trace from `service` and a probe trace, through the collector's Service:
    the chat trace arrives in `experiment_id`, the probe's spans nowhere."""
    chat, probe = chat_trace("gpt-4o-mini", 12, 34), probe_trace("/v1/health", "new", "kube-probe/1.32")
    post_http(otlp_url, export_request({service: chat + probe}))
    trace_id = chat[0].trace_id.hex()
    wait_until(lambda: any(s.trace_id == trace_id for s in stored_spans(mlflow_url, experiment_id)),
               ARRIVAL_TIMEOUT, f"a trace of {service} in experiment {experiment_id}")
    probe_trace_id = probe[0].trace_id.hex()
    time.sleep(SETTLE_SECONDS)  # the probe went in the same request: give it time
    stored = {s.trace_id for s in stored_spans(mlflow_url, experiment_id)}
    assert probe_trace_id not in stored


def test_preview_of_an_empty_stack_plans_what_the_program_declares(stack, cluster):
    """No pod runs yet and the experiment IDs are unknown: preview neither calls MLflow nor fails,
    and it plans exactly the resources the program registers under mocks."""
    result = stack.preview().check("preview")
    plan = json.loads(result.stdout)
    steps = [step for step in plan["steps"]
             if not step["urn"].split("::")[2].startswith(("pulumi:providers:", "pulumi:pulumi:Stack"))]
    assert {step["op"] for step in steps} == {"create"}
    planned = {(step["newState"]["type"], step["urn"].rsplit("::", 1)[1]) for step in steps}
    assert planned == {(r.typ, r.name) for r in run_program("dev").resources}
    (config_map,) = [s["newState"] for s in steps if s["urn"].endswith("::collector-config")]
    assert UNKNOWN in json.dumps(config_map["inputs"]["data"])  # the experiment IDs are not known yet
    assert cluster.get(f"/api/v1/namespaces/{NAMESPACE}") is None  # preview changed nothing


def test_up_deploys_the_stack_with_running_pods(stack, cluster, mlflow_url):
    stack.up().check("up")
    outputs = stack.outputs()
    assert set(outputs) == table_keys("Outputs") - {"mlflowCredentials"}  # the engine drops a null output
    assert outputs["namespace"] == NAMESPACE
    assert outputs["mlflowUrl"] == "http://mlflow.localtest.me"
    ids = outputs["experimentIds"]
    assert set(ids) == {"llamastack-traces"}
    assert experiment(mlflow_url, ids["llamastack-traces"])["name"] == "llamastack-traces"
    assert exported_ids(collector_config(cluster)) == set(ids.values())
    for component in ("postgres-init", "mlflow-migrate", "trace-check"):
        assert job_of(cluster, component)["status"].get("succeeded") == 1


def test_a_span_lands_in_its_experiment_and_a_probe_span_nowhere(stack, otlp_url, mlflow_url):
    ids = stack.outputs()["experimentIds"]
    send_and_wait(otlp_url, mlflow_url, "llama-stack", ids["llamastack-traces"])


def test_a_second_up_changes_nothing(stack):
    stack.up("--expect-no-changes").check("up with no changes expected (after refresh)")


def test_adding_an_experiment_creates_it_and_rolls_the_collector(stack, cluster, mlflow_url, otlp_url):
    before = collector_template(cluster)["metadata"]["annotations"][CHECKSUM_ANNOTATION]
    first_check = job_of(cluster, "trace-check")["metadata"]["name"]
    config = stack.config()
    config["experiments"] = [*_default_experiments(), {"name": "chat", "services": ["chat-api"]}]
    stack.configure(config)
    stack.up().check("up with a new experiment")
    ids = stack.outputs()["experimentIds"]
    assert set(ids) == {"llamastack-traces", "chat"}
    assert experiment(mlflow_url, ids["chat"])["lifecycle_stage"] == "active"
    assert exported_ids(collector_config(cluster)) == set(ids.values())
    assert collector_template(cluster)["metadata"]["annotations"][CHECKSUM_ANNOTATION] != before
    # The post-deploy check ran again, after the collector rolled, and proved the new route.
    check = job_of(cluster, "trace-check")
    assert check["metadata"]["name"] != first_check and check["status"].get("succeeded") == 1
    plan = json.loads(next(e["value"] for e in check["spec"]["template"]["spec"]["containers"][0]["env"]
                           if e["name"] == "TRACE_JOB_PLAN"))
    assert {(e["name"], e["id"]) for e in plan["experiments"]} == set(ids.items())
    send_and_wait(otlp_url, mlflow_url, "chat-api", ids["chat"])


def test_a_rename_with_renamed_from_keeps_the_id(stack, mlflow_url):
    old = stack.outputs()["experimentIds"]["chat"]
    config = stack.config()
    config["experiments"] = [*_default_experiments(),
                             {"name": "chat-v2", "services": ["chat-api"], "renamedFrom": ["chat"]}]
    stack.configure(config)
    stack.up().check("up with a renamed experiment")
    ids = stack.outputs()["experimentIds"]
    assert ids["chat-v2"] == old
    assert experiment(mlflow_url, old)["name"] == "chat-v2"


def test_removing_an_experiment_soft_deletes_it(stack, cluster, mlflow_url):
    removed = stack.outputs()["experimentIds"]["chat-v2"]
    config = stack.config()
    config["experiments"] = _default_experiments()
    stack.configure(config)
    stack.up().check("up without the experiment")
    assert experiment(mlflow_url, removed)["lifecycle_stage"] == "deleted"  # restorable, traces kept
    assert removed not in exported_ids(collector_config(cluster))


def test_a_new_mlflow_image_replaces_the_migration_job(stack, cluster, mlflow_url):
    """Jobs are immutable: pulumi-kubernetes must replace the migration Job, and the server follows it."""
    old_job = job_of(cluster, mlflow_component.MIGRATION_COMPONENT)["metadata"]["name"]
    config = stack.config()
    config["mlflow"] = {**config["mlflow"], "image": f"{_default_mlflow_image()}@sha256:{'0' * 64}"}
    stack.configure(config)
    stack.up().check("up with a new MLflow image")
    new_job = job_of(cluster, mlflow_component.MIGRATION_COMPONENT)
    assert new_job["metadata"]["name"] != old_job and new_job["status"].get("succeeded") == 1
    deployment = cluster.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{mlflow_component.SERVICE_NAME}")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations[mlflow_component.MIGRATION_ANNOTATION] == new_job["metadata"]["name"]
    assert requests.get(f"{mlflow_url}/health", timeout=10).ok


def test_an_extra_database_replaces_the_init_job_and_exists(stack, cluster, node):
    old_job = job_of(cluster, "postgres-init")["metadata"]["name"]
    config = stack.config()
    config["postgres"] = {**config["postgres"], "databases": ["evals"]}
    stack.configure(config)
    stack.up().check("up with an extra database")
    new_job = job_of(cluster, "postgres-init")
    assert new_job["metadata"]["name"] != old_job and new_job["status"].get("succeeded") == 1
    assert "evals" in _databases(cluster, node)


@pytest.fixture(scope="module")
def before_destroy() -> dict:
    """What the destroy test saw, for the up that follows it."""
    return {}


def test_destroy_keeps_the_namespace_the_volumes_and_restorable_experiments(stack, cluster, node, before_destroy):
    ids = stack.outputs()["experimentIds"]
    before_destroy.update(ids)
    password = _postgres_password(cluster)
    stack.destroy().check("destroy")
    assert cluster.get(f"/api/v1/namespaces/{NAMESPACE}") is not None
    claims = {c["metadata"]["name"] for c in
              cluster.get(f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims")["items"]}
    assert {"mlflow-artifacts", "data-postgres-0"} <= claims
    wait_until(lambda: not cluster.get(f"/api/v1/namespaces/{NAMESPACE}/pods")["items"], 120, "pods gone")
    node.wait_stopped(NAMESPACE, 60)
    # The database is still on its volume, and every experiment in it, soft-deleted: restorable.
    rows = _query_retained_database(node, password, "SELECT experiment_id, lifecycle_stage FROM experiments")
    stages = dict(line.split("|") for line in rows.splitlines())
    for experiment_id in ids.values():
        assert stages[experiment_id] == "deleted"


def test_up_after_destroy_restores_the_experiments_with_their_ids(stack, mlflow_url, before_destroy):
    """The kept namespace and artifact claim are taken over; a new generated database password
    over the old data volume, and MLflow still signs in; the experiment provider adopts and
    restores each soft-deleted experiment."""
    assert before_destroy, "runs after the destroy test"
    stack.up().check("up after destroy")
    assert stack.outputs()["experimentIds"] == before_destroy
    for experiment_id in before_destroy.values():
        assert experiment(mlflow_url, experiment_id)["lifecycle_stage"] == "active"


# ----------------------------------------------------------------------------- helpers


def test_a_failed_post_deploy_check_fails_up_with_the_broken_hop(stack, cluster):
    """Last, as it leaves the stack broken: the collector's Service deleted behind the stack's
    back while the check re-runs (its timeout changed, no refresh): `up` fails with the check's
    line, as DNS has no such name. (A refresh would re-create the Service, but without a kubelet
    its endpoints cannot be written for pods that have no node, so pulumi-kubernetes would wait
    for them: the repair is not tested here.)"""
    config = stack.config()
    stack.configure({**config, "verify": {"timeoutSeconds": 30}})
    service = f"{cluster.url}/api/v1/namespaces/{NAMESPACE}/services/{collector_component.SERVICE_NAME}"
    cluster.session().delete(service, timeout=10).raise_for_status()
    result = stack.up("--refresh=false")
    assert result.returncode != 0
    assert "verify failed: collector unreachable: POST http://otel-collector.mlflow.svc:4318/v1/traces" \
        in result.output, result.output[-4000:]
    assert f"kubectl -n {NAMESPACE} get pods -l app.kubernetes.io/name=otel-collector" in result.output


def _default_experiments() -> list[dict]:
    return project_defaults()["experiments"]


def _default_mlflow_image() -> str:
    return project_defaults()["mlflow"]["image"]


def _postgres_password(cluster) -> str:
    (secret,) = [s for s in cluster.get(f"/api/v1/namespaces/{NAMESPACE}/secrets")["items"]
                 if s["metadata"].get("labels", {}).get("app.kubernetes.io/name") == "postgres"]
    return base64.b64decode(secret["data"]["password"]).decode()


def _databases(cluster, node) -> set[str]:
    host, port = node.service_url(NAMESPACE, "postgres", 5432).removeprefix("http://").split(":")
    done = subprocess.run(
        [str(postgres_bin_dir() / "psql"), "-h", host, "-p", port, "-U", "mlflow", "-d", "postgres", "-Atc",
         "SELECT datname FROM pg_database"],
        env={"PGPASSWORD": _postgres_password(cluster), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=30, check=True)
    return set(done.stdout.split())


def _query_retained_database(node, password: str, sql: str) -> str:
    """Start PostgreSQL on the retained volume's data directory (as its owner, the pod's user) and query it."""
    data = node.workdir / "volumes" / f"{NAMESPACE}-data-postgres-0" / "pgdata"
    owner = data.stat()
    sockets = node.workdir / "retained-sockets"
    sockets.mkdir(exist_ok=True)
    os.chown(sockets, owner.st_uid, owner.st_gid)
    port, log = free_port(), node.workdir / "retained-postgres.log"
    server = subprocess.Popen(
        ["setpriv", f"--reuid={owner.st_uid}", f"--regid={owner.st_gid}", "--clear-groups", "--",
         str(postgres_bin_dir() / "postgres"), "-D", str(data), "-p", str(port),
         "-c", "listen_addresses=127.0.0.1", "-k", str(sockets)],
        stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        query = [str(postgres_bin_dir() / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow", "-d", "mlflow",
                 "-Atc", sql]
        env = {"PGPASSWORD": password, "PATH": "/usr/bin:/bin"}
        wait_until(lambda: subprocess.run(query, env=env, capture_output=True).returncode == 0, 60,
                   "PostgreSQL on the retained volume", server, log)
        return subprocess.run(query, env=env, capture_output=True, text=True, check=True, timeout=30).stdout
    finally:
        stop(server)
