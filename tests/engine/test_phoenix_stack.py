"""A stack with a real Arize Phoenix as a second destination, deployed by the real engine:
the post-deploy check Job reads its trace back from Phoenix during `pulumi up`, and an
application's traces reach both backends, Phoenix taking the whole traces its scope
selection names and MLflow all of them, routed as before."""

from __future__ import annotations

import pytest

from tests.support.collector import stored_spans
from tests.support.otlp import genai_trace, openinference_trace, post_http, scoped_request
from tests.support.processes import wait_until

NAMESPACE = "two-backends"
EXPERIMENT = "agents"
PROJECT = "agents-engine"
ARRIVAL_TIMEOUT = 90


@pytest.fixture(scope="module")
def stack(project, mlflow_url, phoenix):
    """Up once for the module (the check Job reads Phoenix back inside it), destroyed at its end."""
    stack = project.stack("two-backends", {
        "namespace": NAMESPACE,
        "exposure": {"kind": "none"},
        "mlflow": {"apiUrl": mlflow_url, "auth": {"kind": "none"}},
        "collector": {"destinations": [{
            "name": "phoenix", "endpoint": phoenix.url, "headers": {"x-project-name": PROJECT},
            "select": {"scopes": ["openinference.*"]}, "readBack": "phoenix",
        }]},
        "experiments": [{"name": EXPERIMENT, "default": True}],
    })
    stack.up().check("up of the two-backend stack")
    yield stack
    stack.destroy().check("destroy of the two-backend stack")


def test_the_post_deploy_check_read_its_trace_back_from_phoenix_and_left_nothing_there(stack, node, phoenix):
    (log,) = node.logs.glob(f"{NAMESPACE}-trace-check-*-verify.log")
    assert "; phoenix: read back from Phoenix;" in log.read_text()
    assert phoenix.spans(PROJECT) == []


def test_a_trace_reaches_both_backends_whole_and_an_unselected_one_only_mlflow(stack, phoenix, otlp_url,
                                                                               mlflow_url):
    experiment_id = stack.outputs()["experimentIds"][EXPERIMENT]
    agent, chat = openinference_trace("gpt-4o", 21, 8), genai_trace("llama-3.1-8b", 30, 6)
    post_http(otlp_url, scoped_request({"agent": agent, "chat-api": chat}))
    agent_trace, chat_trace = agent[0].span.trace_id.hex(), chat[0].span.trace_id.hex()

    def in_mlflow(trace_id: str) -> int:
        return sum(s.trace_id == trace_id for s in stored_spans(mlflow_url, experiment_id))

    wait_until(lambda: in_mlflow(agent_trace) == 3 and in_mlflow(chat_trace) == 4, ARRIVAL_TIMEOUT,
               "both traces in MLflow")
    wait_until(lambda: len(phoenix.spans(PROJECT)) >= 3, ARRIVAL_TIMEOUT, "the OpenInference trace in Phoenix")
    in_phoenix = phoenix.spans(PROJECT)
    assert sorted((s.span_id, s.parent_id) for s in in_phoenix) == sorted(
        (s.span.span_id.hex(), s.span.parent_span_id.hex()) for s in agent)
    assert not [s for s in in_phoenix if s.trace_id == chat_trace]
