"""The MLflow experiment provider's offline behaviour: check and diff (which
preview runs with unknown values, so they must not touch the network), and
pickling exactly as Pulumi does it. Its REST behaviour is proven against a
real MLflow server in tests/integration."""

import subprocess
import sys
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
