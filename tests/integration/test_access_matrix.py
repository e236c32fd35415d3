"""Least privilege, measured: the users a basic-auth stack declares (the collector, the
post-deploy check, retention, and a person with READ from `access`) are created in the
real MLflow 3.17.2 by the providers, with exactly their declared grants, and each action
each of them might attempt gets the status the table in docs/security.md says."""

from __future__ import annotations

import uuid

import pytest
import requests

from tests.support.access import apply_declared_access
from tests.support.collector import RealIdMocks
from tests.support.otlp import one_span_request
from tests.support.program import BASIC_AUTH_MLFLOW, run_program
from tests.support.readme import table_rows

WHO = ("collector", "check", "retention", "reader")
# action -> expected status per identity, in WHO's order: the table in docs/security.md, cell for cell
MATRIX = {
    "ingest (OTLP) into its experiment": (200, 403, 403, 403),
    "ingest into another experiment": (403, 403, 403, 403),
    "read a trace": (200, 200, 200, 200),
    "read a trace in another experiment": (403, 403, 403, 403),
    "delete traces": (403, 200, 200, 403),
    "delete traces in another experiment": (403, 403, 403, 403),
    "delete the experiment": (403, 403, 403, 403),
    "create a user": (403, 403, 403, 403),
    "change a permission": (403, 403, 403, 403),
    "grant another user MANAGE on every trace": (403, 403, 403, 403),
    "list user names": (200, 200, 200, 200),  # MLflow 3.17 without workspaces: every user sees the roster
}
MATRIX_TABLE = "| action | collector | check | retention | reader |"


@pytest.fixture(scope="module")
def stack(auth_server, admin):
    """The targets: the stack's experiment (routed, with a retention limit), one outside it and a
    user outside the stack with no rights (a bystander); and every declared user's (username,
    password) as the pods and the person would sign in."""
    suffix = uuid.uuid4().hex[:6]
    api = requests.Session()
    api.auth = admin
    targets = {"bystander": f"bystander-{suffix}"}
    api.post(f"{auth_server.url}/api/2.0/mlflow/users/create", timeout=10, json={
        "username": targets["bystander"], "password": "bystander-password-123"}).raise_for_status()
    for name in (f"own-{suffix}", f"other-{suffix}"):
        created = api.post(f"{auth_server.url}/api/2.0/mlflow/experiments/create", json={"name": name}, timeout=10)
        targets[name.split("-")[0]] = created.json()["experiment_id"]
    reader = f"reader-{suffix}"
    run = run_program("dev", mocks=RealIdMocks({f"own-{suffix}": targets["own"]}), mlflow=BASIC_AUTH_MLFLOW,
                      experiments=[{"name": f"own-{suffix}", "default": True, "retentionDays": 7}],
                      access={"users": [{"name": reader, "grants": [{"experiments": [f"own-{suffix}"],
                                                                     "permission": "READ"}]}]})
    passwords = apply_declared_access(run, auth_server.url, admin)
    users = {}
    for who, prefix in (("collector", "otel-collector-"), ("check", "trace-check-"), ("retention", "trace-retention-"),
                        ("reader", reader)):
        (username,) = [u for u in passwords if u.startswith(prefix)]
        users[who] = (username, passwords[username])
    return api, targets, users


def ingest(url: str, auth, experiment_id: str) -> tuple[int, str]:
    body, trace_id = one_span_request("matrix", "chat")
    response = requests.post(f"{url}/v1/traces", data=body, auth=auth, timeout=20, headers={
        "Content-Type": "application/x-protobuf", "x-mlflow-experiment-id": experiment_id})
    return response.status_code, f"tr-{trace_id}"


def stored_trace(api, url: str, admin, experiment_id: str) -> str:
    code, trace_id = ingest(url, admin, experiment_id)
    assert code == 200
    return trace_id


def attempt(action: str, url: str, auth, api, admin, targets: dict[str, str]) -> int:
    own, other = targets["own"], targets["other"]
    session = requests.Session()
    session.auth = auth
    if action == "ingest (OTLP) into its experiment":
        return ingest(url, auth, own)[0]
    if action == "ingest into another experiment":
        return ingest(url, auth, other)[0]
    if action in ("read a trace", "read a trace in another experiment"):
        target = own if action == "read a trace" else other
        return session.get(f"{url}/api/3.0/mlflow/traces/{stored_trace(api, url, admin, target)}",
                           timeout=20).status_code
    if action in ("delete traces", "delete traces in another experiment"):
        target = own if action == "delete traces" else other
        return session.post(f"{url}/api/2.0/mlflow/traces/delete-traces", timeout=20, json={
            "experiment_id": target, "request_ids": [stored_trace(api, url, admin, target)]}).status_code
    if action == "delete the experiment":
        status = session.post(f"{url}/api/2.0/mlflow/experiments/delete", json={"experiment_id": own},
                              timeout=20).status_code
        if status == 200:  # put back, so the other cells still measure
            api.post(f"{url}/api/2.0/mlflow/experiments/restore", json={"experiment_id": own}, timeout=20)
        return status
    if action == "create a user":
        return session.post(f"{url}/api/2.0/mlflow/users/create", timeout=20, json={
            "username": f"intruder-{uuid.uuid4().hex[:6]}", "password": "intruder-password-123"}).status_code
    if action == "change a permission":
        return session.post(f"{url}/api/3.0/mlflow/users/permissions/grant", timeout=20, json={
            "username": auth[0], "resource_type": "experiment", "resource_id": own, "permission": "MANAGE"}).status_code
    if action == "grant another user MANAGE on every trace":  # the tier grant the check and retention hold
        return session.post(f"{url}/api/3.0/mlflow/users/permissions/grant", timeout=20, json={
            "username": targets["bystander"], "resource_type": "trace", "resource_id": "*",
            "permission": "MANAGE"}).status_code
    if action == "list user names":
        return session.get(f"{url}/api/2.0/mlflow/users/list", timeout=20).status_code
    raise ValueError(action)


@pytest.mark.parametrize("action", list(MATRIX))
def test_each_identity_gets_exactly_the_status_of_the_matrix(action, stack, auth_server, admin):
    api, targets, users = stack
    measured = tuple(attempt(action, auth_server.url, users[who], api, admin, targets) for who in WHO)
    assert measured == MATRIX[action], dict(zip(WHO, measured, strict=True))


def test_the_readme_table_is_this_matrix():
    assert {action: tuple(int(cell) for cell in cells) for action, cells in table_rows(MATRIX_TABLE).items()} == MATRIX
