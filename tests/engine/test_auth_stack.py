"""A basic-auth stack in a namespace of its own, deployed by the real engine
beside the dev stack: the generated admin credentials sign in the providers and
appear nowhere in plain text; the collector signs in as its own user; the team
section's grants are in MLflow, one removed from the config is revoked, and grants
changed in MLflow are put back by the next `up`; rotating the machine passwords under
steady traffic rolls the pods onto new users and loses no span."""

from __future__ import annotations

import base64
import json
import os
import time

import pytest
import requests

from components import collector as collector_component
from components import mlflow as mlflow_component
from components import trace_upkeep
from components.config import MACHINE_USERS
from components.kube import service_host
from tests.support.collector import stored_spans
from tests.support.disruption import pods, under_traffic
from tests.support.otlp import chat_trace, export_request, post_http
from tests.support.processes import wait_until
from tests.support.readme import table_keys

NAMESPACE = "traces"
EXPERIMENT = "agent-traces"
ARRIVAL_TIMEOUT = 90
# Short, so that the test sees a rotated-out credential refused by every worker soon after the `up`.
CREDENTIAL_CACHE_SECONDS = 10
TEAM = {"roles": [{"name": "readers", "grants": [{"experiments": [EXPERIMENT], "permission": "READ"}]}],
        "users": [{"name": "alice", "roles": ["readers"]},
                  {"name": "bob", "grants": [{"experiments": [EXPERIMENT], "permission": "EDIT"}]}]}


@pytest.fixture(scope="module")
def deployed(project, mlflow_url):
    """Up once for the module, destroyed at its end."""
    stack = project.stack("auth", {
        "namespace": NAMESPACE,
        "exposure": {"kind": "none"},  # reached through a port-forward: the password never leaves loopback
        "postgres": {"storageSize": "1Gi"},
        "mlflow": {"apiUrl": mlflow_url, "artifacts": {"size": "1Gi"},
                   "auth": {"kind": "basic", "credentialCacheSeconds": CREDENTIAL_CACHE_SECONDS}},
        "experiments": [{"name": EXPERIMENT, "default": True}],
        "retention": {"days": 30},  # so that the retention CronJob and its user exist
        "access": TEAM,
    })
    stack.up().check("up of the basic-auth stack")
    yield stack
    stack.destroy().check("destroy of the basic-auth stack")


def admin_of(deployed) -> tuple[str, str]:
    credentials = deployed.outputs()["mlflowCredentials"]
    return credentials["username"], credentials["password"]


def test_outputs_and_the_credentials_only_as_a_secret(deployed):
    outputs = deployed.outputs()
    assert set(outputs) == table_keys("Outputs")
    internal = f"http://{service_host(mlflow_component.SERVICE_NAME, NAMESPACE)}:{mlflow_component.PORT}"
    assert outputs["mlflowUrl"] == outputs["mlflowInternalUrl"] == internal
    password = outputs["mlflowCredentials"]["password"]
    assert len(password) >= 12
    assert deployed.plain_outputs()["mlflowCredentials"] == "[secret]"
    assert password not in json.dumps(deployed.resources())  # the state holds it encrypted only


def test_anonymous_clients_are_refused_and_the_admin_signs_in(deployed, mlflow_url):
    outputs = deployed.outputs()
    experiment_id = outputs["experimentIds"][EXPERIMENT]
    get = f"{mlflow_url}/api/2.0/mlflow/experiments/get"
    assert requests.get(get, params={"experiment_id": experiment_id}, timeout=10).status_code == 401
    credentials = outputs["mlflowCredentials"]
    signed_in = requests.get(get, params={"experiment_id": experiment_id}, timeout=10,
                             auth=(credentials["username"], credentials["password"]))
    assert signed_in.json()["experiment"]["name"] == EXPERIMENT


def test_a_span_through_the_collector_lands_signed_in(deployed, node, mlflow_url, monkeypatch):
    outputs = deployed.outputs()
    experiment_id = outputs["experimentIds"][EXPERIMENT]
    otlp_url = node.service_url(NAMESPACE, collector_component.SERVICE_NAME, collector_component.HTTP_PORT)
    chat = chat_trace("gpt-4o-mini", 5, 7)
    post_http(otlp_url, export_request({"agent": chat}))
    monkeypatch.setitem(os.environ, "MLFLOW_TRACKING_USERNAME", outputs["mlflowCredentials"]["username"])
    monkeypatch.setitem(os.environ, "MLFLOW_TRACKING_PASSWORD", outputs["mlflowCredentials"]["password"])
    trace_id = chat[0].trace_id.hex()
    wait_until(lambda: any(s.trace_id == trace_id for s in stored_spans(mlflow_url, experiment_id)),
               ARRIVAL_TIMEOUT, "the agent's trace in its experiment")


def grants_of(mlflow_url: str, admin: tuple[str, str], username: str) -> dict[str, list]:
    """Role name -> [(resource type, pattern, permission)] of a user, as MLflow holds them; its
    direct grants under "direct" (absent when it has none)."""
    roles = requests.get(f"{mlflow_url}/api/3.0/mlflow/users/roles/list", params={"username": username}, auth=admin,
                         timeout=10).json()["roles"]
    return {("direct" if role["name"].startswith("__user_") else role["name"]):
            sorted((p["resource_type"], p["resource_pattern"], p["permission"]) for p in role["permissions"])
            for role in roles if role["permissions"] or not role["name"].startswith("__user_")}


def test_the_team_sections_grants_are_in_mlflow_and_a_removed_one_is_revoked(deployed, mlflow_url):
    outputs = deployed.outputs()
    admin = admin_of(deployed)
    experiment_id = outputs["experimentIds"][EXPERIMENT]
    assert grants_of(mlflow_url, admin, "alice") == {"readers": [("experiment", experiment_id, "READ")]}
    assert grants_of(mlflow_url, admin, "bob") == {"direct": [("experiment", experiment_id, "EDIT")]}
    deployed.configure({**deployed.config(), "access": {**TEAM, "users": [TEAM["users"][0], {"name": "bob"}]}})
    deployed.up().check("up without bob's grant")
    assert grants_of(mlflow_url, admin, "bob") == {}
    assert grants_of(mlflow_url, admin, "alice") == {"readers": [("experiment", experiment_id, "READ")]}


def test_the_collector_signs_in_as_its_own_user_with_edit_on_its_experiment(deployed, mlflow_url):
    outputs = deployed.outputs()
    admin = admin_of(deployed)
    users = requests.get(f"{mlflow_url}/api/2.0/mlflow/users/list", auth=admin, timeout=10).json()["users"]
    names = {u["username"]: u["is_admin"] for u in users}
    collectors = [name for name in names if name.startswith("otel-collector-")]
    assert len(collectors) == 1 and not names[collectors[0]]
    experiment_id = outputs["experimentIds"][EXPERIMENT]
    assert grants_of(mlflow_url, admin, collectors[0]) == {"direct": [("experiment", experiment_id, "EDIT")]}


def machine_users(mlflow_url: str, admin: tuple[str, str]) -> dict[str, str]:
    """Machine user kind -> the one MLflow user of that kind."""
    users = [u["username"] for u in requests.get(f"{mlflow_url}/api/2.0/mlflow/users/list", auth=admin,
                                                 timeout=10).json()["users"]]
    found = {}
    for machine in MACHINE_USERS:
        (found[machine],) = [u for u in users if u.startswith(f"{machine}-")]
    return found


def test_grants_changed_in_mlflow_are_put_back_by_the_next_up(deployed, mlflow_url):
    """What someone changes in the UI (as the admin): a person's extra grant, a role's level, a
    machine user's grant revoked. The refresh before `up` sees each, and `up` puts it back."""
    admin = admin_of(deployed)
    experiment_id = deployed.outputs()["experimentIds"][EXPERIMENT]
    api = requests.Session()
    api.auth = admin
    collector = machine_users(mlflow_url, admin)["otel-collector"]
    expected = {user: grants_of(mlflow_url, admin, user) for user in ("alice", collector)}
    api.post(f"{mlflow_url}/api/3.0/mlflow/users/permissions/grant", timeout=10, json={
        "username": "alice", "resource_type": "experiment", "resource_id": experiment_id,
        "permission": "MANAGE"}).raise_for_status()
    (readers,) = [r for r in api.get(f"{mlflow_url}/api/3.0/mlflow/roles/list", params={"workspace": "default"},
                                     timeout=10).json()["roles"] if r["name"] == "readers"]
    (read,) = readers["permissions"]
    api.patch(f"{mlflow_url}/api/3.0/mlflow/roles/permissions/update", timeout=10, json={
        "role_permission_id": read["id"], "permission": "EDIT"}).raise_for_status()
    api.post(f"{mlflow_url}/api/3.0/mlflow/users/permissions/revoke", timeout=10, json={
        "username": collector, "resource_type": "experiment", "resource_id": experiment_id}).raise_for_status()
    assert {user: grants_of(mlflow_url, admin, user) for user in expected} != expected
    deployed.up().check("up after grants were changed in MLflow")
    assert {user: grants_of(mlflow_url, admin, user) for user in expected} == expected
    assert deployed.up("--expect-no-changes").returncode == 0


def machine_secrets(cluster) -> dict[str, tuple[str, str, str]]:
    """Machine user kind -> (Secret name, username, password) of the Secret its pods sign in with."""
    found = {}
    for machine in MACHINE_USERS:
        secrets = cluster.get(f"/api/v1/namespaces/{NAMESPACE}/secrets"
                              f"?labelSelector=app.kubernetes.io/name%3D{machine}")["items"]
        (secret,) = [s for s in secrets if "password" in (s.get("data") or {})]
        data = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
        found[machine] = (secret["metadata"]["name"], data["username"], data["password"])
    return found


def collector_pods(cluster) -> set[str]:
    return {p["metadata"]["uid"] for p in pods(cluster, NAMESPACE, collector_component.COMPONENT)}


def run_retention_now(cluster) -> dict:
    """`kubectl create job --from=cronjob/...`: one run of the retention CronJob; its final status."""
    cronjob = cluster.get(f"/apis/batch/v1/namespaces/{NAMESPACE}/cronjobs/{trace_upkeep.RETENTION_CRONJOB_NAME}")
    name = f"retention-now-{int(time.time())}"
    cluster.session().post(f"{cluster.url}/apis/batch/v1/namespaces/{NAMESPACE}/jobs", timeout=10, json={
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": cronjob["spec"]["jobTemplate"]["spec"]}).raise_for_status()

    def status() -> dict:
        return cluster.get(f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{name}")["status"]

    wait_until(lambda: status().get("succeeded") or status().get("failed"), 180, f"the Job {name} finished")
    return status()


def rotate_under_traffic(deployed, cluster, node, mlflow_url, monkeypatch, revision: int) -> None:
    """`mlflow.auth.machinePasswordRevision` set to `revision` while an application sends
    steadily: each machine user is replaced by a new one with the same grants and a new Secret,
    the collector rolls onto it, the check passes under its new user (or the `up` fails), a
    retention run passes under its new user, the old users are deleted at the end of the `up` and
    their credentials refused once the credential cache lets them go, and every span the
    collector accepted is in MLflow once."""
    admin = admin_of(deployed)
    experiment_id = deployed.outputs()["experimentIds"][EXPERIMENT]
    monkeypatch.setitem(os.environ, "MLFLOW_TRACKING_USERNAME", admin[0])
    monkeypatch.setitem(os.environ, "MLFLOW_TRACKING_PASSWORD", admin[1])
    before, secrets_before = machine_users(mlflow_url, admin), machine_secrets(cluster)
    grants_before = {machine: grants_of(mlflow_url, admin, user) for machine, user in before.items()}
    config = deployed.config()
    deployed.configure({**config, "mlflow": {**config["mlflow"], "auth": {**config["mlflow"]["auth"],
                                                                          "machinePasswordRevision": revision}}})
    timing: dict[str, float] = {}

    def rotate() -> set[str]:
        """The `up`; the collector pods it replaces."""
        replaced = collector_pods(cluster)
        started = time.monotonic()
        deployed.up().check(f"up rotating the machine passwords (revision {revision})")
        timing["up_seconds"], timing["done"] = time.monotonic() - started, time.monotonic()
        return replaced

    otlp_url = node.service_url(NAMESPACE, collector_component.SERVICE_NAME, collector_component.HTTP_PORT)
    sent = under_traffic(rotate, cluster=cluster, namespace=NAMESPACE, otlp_url=otlp_url, mlflow_url=mlflow_url,
                         experiment_id=experiment_id, service=f"rotation-{revision}")
    print(f"rotation to revision {revision}: {sent} spans sent and stored once, `up` took "
          f"{timing['up_seconds']:.0f} s")

    after, secrets_after = machine_users(mlflow_url, admin), machine_secrets(cluster)
    assert set(after.values()).isdisjoint(before.values())  # new users; the old ones are deleted
    assert {machine: grants_of(mlflow_url, admin, user) for machine, user in after.items()} == grants_before
    for machine, (secret, username, _) in secrets_after.items():
        assert username == after[machine] and secret != secrets_before[machine][0]
    assert run_retention_now(cluster).get("succeeded") == 1  # retention runs under its new user
    state = json.dumps(deployed.resources())
    assert not [m for m, (_, _, password) in secrets_after.items() if password in state]  # encrypted only
    # Workers that verified an old credential may accept it until their cache entry expires; then none does
    # (several requests each, so that every worker answers some).
    time.sleep(max(0.0, timing["done"] + CREDENTIAL_CACHE_SECONDS + 2 - time.monotonic()))
    answers = {machine: {requests.get(f"{mlflow_url}/api/2.0/mlflow/users/current", auth=(username, password),
                                      timeout=10).status_code for _ in range(8)}
               for machine, (_, username, password) in secrets_before.items()}
    assert answers == {machine: {401} for machine in MACHINE_USERS}


def test_rotating_the_machine_passwords_under_traffic_loses_no_span(deployed, cluster, node, mlflow_url, monkeypatch):
    """The collector a Deployment: a new pod is Ready before the old one stops."""
    rotate_under_traffic(deployed, cluster, node, mlflow_url, monkeypatch, revision=2)


def test_rotating_with_the_persistent_queue_loses_no_span(deployed, cluster, node, mlflow_url, monkeypatch):
    """The collector a StatefulSet (`persistentQueue`): its pod stops before its successor starts
    on the same claim, which sends what it found queued under the new user."""
    config = deployed.config()
    deployed.configure({**config, "collector": {"persistentQueue": True, "queueVolume": {"size": "100Mi"}}})
    deployed.up().check("up switching the collector to the persistent queue")
    assert cluster.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/statefulsets/{collector_component.SERVICE_NAME}")
    rotate_under_traffic(deployed, cluster, node, mlflow_url, monkeypatch, revision=3)
