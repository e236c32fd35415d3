"""A basic-auth stack in a namespace of its own, deployed by the real engine
beside the dev stack: the generated admin credentials sign in the providers and
appear nowhere in plain text; the collector signs in as its own user; the team
section's grants are in MLflow, and one removed from the config is revoked."""

from __future__ import annotations

import json
import os

import pytest
import requests

from components import collector as collector_component
from components import mlflow as mlflow_component
from components.kube import service_host
from tests.support.collector import stored_spans
from tests.support.otlp import chat_trace, export_request, post_http
from tests.support.processes import wait_until
from tests.support.readme import table_keys

NAMESPACE = "traces"
EXPERIMENT = "agent-traces"
ARRIVAL_TIMEOUT = 90
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
        "mlflow": {"apiUrl": mlflow_url, "auth": {"kind": "basic"}, "artifacts": {"size": "1Gi"}},
        "experiments": [{"name": EXPERIMENT, "default": True}],
        "access": TEAM,
    })
    stack.up().check("up of the basic-auth stack")
    yield stack
    stack.destroy().check("destroy of the basic-auth stack")


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
    """Role name -> [(resource type, pattern, permission)] of a user, as MLflow holds them."""
    roles = requests.get(f"{mlflow_url}/api/3.0/mlflow/users/roles/list", params={"username": username}, auth=admin,
                         timeout=10).json()["roles"]
    return {("direct" if role["name"].startswith("__user_") else role["name"]):
            [(p["resource_type"], p["resource_pattern"], p["permission"]) for p in role["permissions"]]
            for role in roles}


def test_the_team_sections_grants_are_in_mlflow_and_a_removed_one_is_revoked(deployed, mlflow_url):
    outputs = deployed.outputs()
    admin = (outputs["mlflowCredentials"]["username"], outputs["mlflowCredentials"]["password"])
    experiment_id = outputs["experimentIds"][EXPERIMENT]
    assert grants_of(mlflow_url, admin, "alice") == {"readers": [("experiment", experiment_id, "READ")]}
    assert grants_of(mlflow_url, admin, "bob") == {"direct": [("experiment", experiment_id, "EDIT")]}
    deployed.configure({**deployed.config(), "access": {**TEAM, "users": [TEAM["users"][0], {"name": "bob"}]}})
    deployed.up().check("up without bob's grant")
    assert grants_of(mlflow_url, admin, "bob") in ({}, {"direct": []})
    assert grants_of(mlflow_url, admin, "alice") == {"readers": [("experiment", experiment_id, "READ")]}


def test_the_collector_signs_in_as_its_own_user_with_edit_on_its_experiment(deployed, mlflow_url):
    outputs = deployed.outputs()
    admin = (outputs["mlflowCredentials"]["username"], outputs["mlflowCredentials"]["password"])
    users = requests.get(f"{mlflow_url}/api/2.0/mlflow/users/list", auth=admin, timeout=10).json()["users"]
    names = {u["username"]: u["is_admin"] for u in users}
    collectors = [name for name in names if name.startswith("otel-collector-")]
    assert len(collectors) == 1 and not names[collectors[0]]
    experiment_id = outputs["experimentIds"][EXPERIMENT]
    assert grants_of(mlflow_url, admin, collectors[0]) == {"direct": [("experiment", experiment_id, "EDIT")]}
