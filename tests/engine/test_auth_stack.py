"""A basic-auth stack in a namespace of its own, deployed by the real engine
beside the dev stack: the generated admin credentials sign in the provider and
the collector, and appear nowhere in plain text."""

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


@pytest.fixture(scope="module")
def deployed(project, mlflow_url):
    """Up once for the module, destroyed at its end."""
    stack = project.stack("auth", {
        "namespace": NAMESPACE,
        "exposure": {"kind": "none"},  # reached through a port-forward: the password never leaves loopback
        "postgres": {"storageSize": "1Gi"},
        "mlflow": {"apiUrl": mlflow_url, "auth": {"kind": "basic"}, "artifacts": {"size": "1Gi"}},
        "experiments": [{"name": EXPERIMENT, "default": True}],
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
