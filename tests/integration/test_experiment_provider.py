"""The MLflow experiment provider against a real MLflow 3.17.2 + PostgreSQL,
started from the declared spec."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest
import requests
from mlflow import MlflowClient
from pulumi.dynamic.dynamic import serialize_provider

from components import experiment_provider
from components.experiment_provider import MlflowApiError, MlflowExperimentProvider
from tests.support.otlp import one_span_request
from tests.support.processes import forward_bytes, free_port
from tests.support.program import PROJECT_DIR

API = "/api/2.0/mlflow/experiments"


@pytest.fixture
def url(mlflow_server) -> str:
    return mlflow_server.url


@pytest.fixture
def provider() -> MlflowExperimentProvider:
    return MlflowExperimentProvider()


def props(url: str, name: str | None = None, **extra) -> dict:
    return {"name": name or f"exp-{uuid.uuid4().hex[:8]}", "tracking_url": url, "tags": {"team": "obs"},
            "artifact_location": None, "credentials": None, "timeout_seconds": 30, **extra}


def rest(url: str, method: str, path: str, **kwargs) -> dict:
    response = requests.request(method, f"{url}{API}/{path}", timeout=10, **kwargs)
    response.raise_for_status()
    return response.json()


def send_trace(url: str, experiment_id: str) -> str:
    body, trace_id = one_span_request("svc", "chat")
    response = requests.post(f"{url}/v1/traces", data=body, timeout=10, headers={
        "Content-Type": "application/x-protobuf", "x-mlflow-experiment-id": experiment_id})
    assert response.status_code == 200, response.text
    return trace_id


def trace_count(url: str, experiment_id: str) -> int:
    return len(MlflowClient(tracking_uri=url).search_traces(locations=[experiment_id], include_spans=False))


def test_create_returns_the_id_and_read_returns_name_tags_and_lifecycle(url, provider):
    wanted = props(url)
    created = provider.create(wanted)
    experiment = rest(url, "GET", "get", params={"experiment_id": created.id})["experiment"]
    assert experiment["name"] == wanted["name"]
    assert {"key": "team", "value": "obs"} in experiment["tags"]
    read = provider.read(created.id, created.outs)
    assert read.id == created.id
    assert (read.outs["name"], read.outs["tags"], read.outs["lifecycle_stage"]) == (wanted["name"], {"team": "obs"},
                                                                                    "active")


def test_create_adopts_an_existing_experiment_and_applies_the_tags(url, provider):
    name = f"existing-{uuid.uuid4().hex[:8]}"
    existing = rest(url, "POST", "create", json={"name": name})["experiment_id"]
    created = provider.create(props(url, name, tags={"team": "obs", "kind": "genai"}))
    assert created.id == existing
    read = provider.read(existing, created.outs)
    assert read.outs["tags"] == {"team": "obs", "kind": "genai"}


def test_a_soft_deleted_holder_is_restored_with_its_traces(url, provider):
    name = f"deleted-{uuid.uuid4().hex[:8]}"
    existing = rest(url, "POST", "create", json={"name": name})["experiment_id"]
    send_trace(url, existing)
    rest(url, "POST", "delete", json={"experiment_id": existing})
    created = provider.create(props(url, name))
    assert created.id == existing and created.outs["lifecycle_stage"] == "active"
    assert trace_count(url, existing) == 1


def test_delete_is_soft_and_a_later_create_restores_the_same_id(url, provider):
    wanted = props(url)
    created = provider.create(wanted)
    trace = send_trace(url, created.id)
    provider.delete(created.id, created.outs)
    state = rest(url, "GET", "get", params={"experiment_id": created.id})["experiment"]
    assert state["lifecycle_stage"] == "deleted"
    provider.delete(created.id, created.outs)  # deleting again is a no-op, not an error
    again = provider.create(wanted)
    assert again.id == created.id
    traces = MlflowClient(tracking_uri=url).search_traces(locations=[created.id], include_spans=False)
    assert len(traces) == 1 and trace in traces[0].info.trace_id


def test_drift_deleted_or_renamed_outside_pulumi_is_read_and_repaired(url, provider):
    wanted = props(url)
    created = provider.create(wanted)
    rest(url, "POST", "delete", json={"experiment_id": created.id})
    drifted = provider.read(created.id, created.outs).outs
    assert drifted["lifecycle_stage"] == "deleted"
    assert provider.diff(created.id, drifted, wanted).changes
    repaired = provider.update(created.id, drifted, wanted).outs
    assert repaired["lifecycle_stage"] == "active"

    rest(url, "POST", "update", json={"experiment_id": created.id, "new_name": wanted["name"] + "-renamed"})
    drifted = provider.read(created.id, repaired).outs
    assert drifted["name"] == wanted["name"] + "-renamed"
    assert provider.diff(created.id, drifted, wanted).changes
    provider.update(created.id, drifted, wanted)
    assert rest(url, "GET", "get", params={"experiment_id": created.id})["experiment"]["name"] == wanted["name"]


def test_rename_and_tag_changes_keep_the_id_and_drop_removed_tags(url, provider):
    wanted = props(url, tags={"team": "obs", "old": "x"})
    created = provider.create(wanted)
    renamed = {**wanted, "name": wanted["name"] + "-v2", "tags": {"team": "platform"}}
    diff = provider.diff(created.id, created.outs, renamed)
    assert diff.changes and not diff.replaces
    outs = provider.update(created.id, created.outs, renamed).outs
    assert outs["experiment_id"] == created.id and outs["name"] == renamed["name"]
    live = rest(url, "GET", "get", params={"experiment_id": created.id})["experiment"]
    live_tags = {t["key"]: t["value"] for t in live.get("tags", [])}
    assert live_tags.get("team") == "platform" and "old" not in live_tags


def test_a_rename_onto_a_taken_name_names_the_holder(url, provider):
    taken = provider.create(props(url))
    mine = provider.create(props(url))
    with pytest.raises(MlflowApiError, match=rf"experiment {taken.id} already holds the name") as caught:
        provider.update(mine.id, mine.outs, {**mine.outs, "name": taken.outs["name"]})
    assert caught.value.error_code == "RESOURCE_ALREADY_EXISTS"
    assert rest(url, "GET", "get", params={"experiment_id": mine.id})["experiment"]["name"] == mine.outs["name"]


def test_a_4xx_from_mlflow_is_not_retried_and_names_the_experiment_and_the_code(url, provider):
    started = time.monotonic()
    with pytest.raises(MlflowApiError) as caught:
        provider.read("not-a-number", props(url, "some-experiment", timeout_seconds=60))
    assert time.monotonic() - started < 5
    assert caught.value.status == 400 and caught.value.error_code in str(caught.value)
    assert "'some-experiment'" in str(caught.value)


def forward_later(target_port: int, delay: float) -> tuple[int, threading.Event]:
    """A loopback port that refuses connections for `delay` seconds, then
    forwards to `target_port`: a server that comes up after the call began."""
    port, stop = free_port(), threading.Event()

    def serve() -> None:
        time.sleep(delay)
        with socket.create_server(("127.0.0.1", port)) as server:
            server.settimeout(0.5)
            while not stop.is_set():
                try:
                    client, _ = server.accept()
                except TimeoutError:
                    continue
                upstream = socket.create_connection(("127.0.0.1", target_port))
                threading.Thread(target=forward_bytes, args=(client, upstream), daemon=True).start()
                threading.Thread(target=forward_bytes, args=(upstream, client), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return port, stop


def test_create_retries_until_the_server_comes_up(mlflow_server, provider):
    port, stop = forward_later(mlflow_server.port, delay=4)
    try:
        started = time.monotonic()
        created = provider.create(props(f"http://127.0.0.1:{port}", timeout_seconds=60))
        assert time.monotonic() - started >= 3
        assert rest(mlflow_server.url, "GET", "get", params={"experiment_id": created.id})
    finally:
        stop.set()


def test_a_server_that_never_comes_up_fails_within_the_timeout_naming_the_url(provider):
    dead = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=rf"MLflow at {dead} did not answer within 3s"):
        provider.create(props(dead, timeout_seconds=3))
    assert time.monotonic() - started < 15


def test_a_refresh_while_mlflow_is_stopped_keeps_the_state_and_a_create_still_fails(provider, url, monkeypatch):
    """Every `up` refreshes first; the `up` that restarts a stopped MLflow (a failed migration, a
    restore) must get past it."""
    created = provider.create(props(url))
    stopped = {**created.outs, "tracking_url": f"http://127.0.0.1:{free_port()}"}
    monkeypatch.setattr(experiment_provider, "READ_TIMEOUT_SECONDS", 2)
    started = time.monotonic()
    kept = provider.read(created.id, stopped)
    assert (kept.id, kept.outs) == (created.id, stopped) and time.monotonic() - started < 10
    with pytest.raises(TimeoutError, match="did not answer within 2s"):
        provider.create({**props(stopped["tracking_url"]), "timeout_seconds": 2})


def test_the_unpickled_provider_performs_a_real_create(url):
    serialized = serialize_provider(MlflowExperimentProvider())
    name = f"pickled-{uuid.uuid4().hex[:8]}"
    script = (
        "import base64, dill, sys; "
        "p = dill.loads(base64.b64decode(sys.stdin.read())); "
        f"print(p.create({{'name': {name!r}, 'tracking_url': {url!r}, 'tags': {{}}, 'timeout_seconds': 30}}).id)"
    )
    done = subprocess.run([sys.executable, "-c", script], input=serialized, capture_output=True, text=True,
                          cwd=PROJECT_DIR, timeout=120)
    assert done.returncode == 0, done.stderr
    assert rest(url, "GET", "get-by-name", params={"experiment_name": name})["experiment"]["experiment_id"] == \
        done.stdout.strip()
