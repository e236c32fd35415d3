"""The MLflow experiment provider's offline behaviour: check and diff (which
preview runs with unknown values, so they must not touch the network), and
pickling exactly as Pulumi does it. Its REST behaviour is proven against a
real MLflow server in tests/integration."""

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest import mock

import pytest
from pulumi.dynamic.dynamic import serialize_provider
from pulumi.runtime.rpc import UNKNOWN

from components.experiment_provider import MlflowExperimentProvider
from tests.support.program import DYNAMIC_TYPE, PROJECT_DIR, run_program

NEWS = {"name": "chat", "tracking_url": "http://mlflow.example.com", "tags": {"team": "a"},
        "artifact_location": None, "credentials": None, "timeout_seconds": 300}
STATE = {**NEWS, "experiment_id": "7", "lifecycle_stage": "active"}


@pytest.fixture
def offline():
    with mock.patch("requests.Session.request", side_effect=AssertionError("network call")) as request:
        yield request


@pytest.mark.parametrize("name", ["", "   ", " padded", "bad\nname", "x" * 256, None])
def test_check_refuses_a_bad_name_with_a_clear_failure(offline, name):
    result = MlflowExperimentProvider().check({}, {**NEWS, "name": name})
    (failure,) = result.failures
    assert failure.property == "name" and "experiment name" in failure.reason


def test_check_refuses_a_tracking_url_that_is_not_http(offline):
    (failure,) = MlflowExperimentProvider().check({}, {**NEWS, "tracking_url": "mlflow:5000"}).failures
    assert failure.property == "tracking_url"


def test_check_accepts_unknown_values_during_preview(offline):
    result = MlflowExperimentProvider().check({}, {**NEWS, "name": UNKNOWN, "tracking_url": UNKNOWN, "tags": UNKNOWN})
    assert result.failures == [] and result.inputs["name"] == UNKNOWN


@pytest.mark.parametrize(
    "change, replaces",
    [({"name": "chat-v2"}, []), ({"tags": {"team": "b"}}, []), ({"tracking_url": "http://localhost:5000"}, []),
     ({"artifact_location": "s3://other/place"}, ["artifact_location"])],
)
def test_diff_renames_and_retags_in_place_and_replaces_on_a_new_artifact_location(offline, change, replaces):
    result = MlflowExperimentProvider().diff("7", STATE, {**NEWS, **change})
    assert result.changes and result.replaces == replaces


def test_diff_sees_no_change_when_nothing_changed(offline):
    assert not MlflowExperimentProvider().diff("7", STATE, NEWS).changes


def test_diff_repairs_an_experiment_deleted_outside_pulumi(offline):
    result = MlflowExperimentProvider().diff("7", {**STATE, "lifecycle_stage": "deleted"}, NEWS)
    assert result.changes and result.replaces == []


def test_provider_pickles_as_pulumi_pickles_it_and_loads_in_a_fresh_process():
    serialized = serialize_provider(MlflowExperimentProvider())
    script = (
        "import base64, dill, sys; "
        "p = dill.loads(base64.b64decode(sys.stdin.read())); "
        "r = p.check({}, {'name': '', 'tracking_url': 'http://x'}); "
        "print(type(p).__name__, [f.property for f in r.failures])"
    )
    done = subprocess.run([sys.executable, "-c", script], input=serialized, capture_output=True, text=True,
                          cwd=PROJECT_DIR, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "MlflowExperimentProvider ['name']"


def test_each_configured_experiment_is_a_resource_with_its_tags_and_the_api_url():
    run = run_program("dev", experiments=[
        {"name": "llamastack-traces", "default": True, "tags": {"mlflow.experimentKind": "genai_development"}},
        {"name": "Chat Prod", "services": ["chat"]},
    ])
    experiments = {r.inputs["name"]: r for r in run.of_type(DYNAMIC_TYPE)}
    assert set(experiments) == {"llamastack-traces", "Chat Prod"}
    assert experiments["llamastack-traces"].inputs["tags"] == {"mlflow.experimentKind": "genai_development"}
    assert all(r.inputs["tracking_url"] == "http://mlflow.localtest.me" for r in experiments.values())
    assert run.outputs["experimentIds"] == {n: r.outputs["experiment_id"] for n, r in experiments.items()}


def test_experiments_wait_for_the_server_and_its_exposure(dev):
    (experiment,) = dev.of_type(DYNAMIC_TYPE)
    deployment = dev.get("Deployment", "mlflow")
    ingress = dev.get("Ingress", "mlflow")
    assert deployment.urn in experiment.dependencies and ingress.urn in experiment.dependencies


def test_a_renamed_experiment_keeps_its_resource_through_an_alias():
    run = run_program("dev", experiments=[{"name": "traces", "default": True, "renamedFrom": ["llamastack-traces"]}])
    (experiment,) = run.of_type(DYNAMIC_TYPE)
    assert experiment.name == "experiments-traces" and experiment.inputs["name"] == "traces"
    assert experiment.aliases == ["experiments-llamastack-traces"]


class _Answer404(BaseHTTPRequestHandler):
    """Answers every request 404 with the server's `body` (bytes) and `content_type`."""

    def _answer(self):
        self.server.requests.append(self.path)
        self.send_response(404)
        self.send_header("Content-Type", self.server.content_type)
        self.send_header("Content-Length", str(len(self.server.body)))
        self.end_headers()
        self.wfile.write(self.server.body)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def answering_404():
    """A local HTTP server whose every answer is a 404 with a body the test sets."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer404)
    server.requests, server.body, server.content_type = [], b"", "text/plain"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(10)


def props_for(server) -> dict:
    return {**STATE, "tracking_url": f"http://127.0.0.1:{server.server_address[1]}", "timeout_seconds": 5}


def mlflow_absent(server):
    server.content_type = "application/json"
    server.body = json.dumps({"error_code": "RESOURCE_DOES_NOT_EXIST",
                              "message": "No Experiment with id=7 exists"}).encode()


def plain_404(server):
    server.content_type = "text/html"
    server.body = b"<html><body><h1>404 Not Found</h1>default backend - 404</body></html>"


def test_read_drops_an_experiment_only_when_mlflow_says_it_does_not_exist(answering_404):
    mlflow_absent(answering_404)
    result = MlflowExperimentProvider().read("7", props_for(answering_404))
    assert result.id is None
    assert answering_404.requests == ["/api/2.0/mlflow/experiments/get?experiment_id=7"]


@pytest.mark.parametrize("body", [plain_404, lambda s: setattr(s, "body", b"")])
def test_read_refuses_a_404_that_is_not_from_mlflow(answering_404, body):
    body(answering_404)
    props = props_for(answering_404)
    with pytest.raises(Exception) as caught:
        MlflowExperimentProvider().read("7", props)
    message = str(caught.value)
    assert props["tracking_url"] in message and "404" in message
    assert "without MLflow's error code" in message and "mlflow.apiUrl" in message


def test_create_does_not_create_when_the_name_lookup_answers_a_plain_404(answering_404):
    plain_404(answering_404)
    with pytest.raises(Exception, match="without MLflow's error code"):
        MlflowExperimentProvider().create(props_for(answering_404))
    assert all("/create" not in path for path in answering_404.requests), answering_404.requests


def test_delete_refuses_a_plain_404_and_accepts_an_experiment_already_gone(answering_404):
    plain_404(answering_404)
    with pytest.raises(Exception, match="without MLflow's error code"):
        MlflowExperimentProvider().delete("7", props_for(answering_404))
    mlflow_absent(answering_404)
    MlflowExperimentProvider().delete("7", props_for(answering_404))
