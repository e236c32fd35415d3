"""A bad stack config stops `pulumi preview` and `pulumi up` with the config
error, before anything is registered or created."""

from __future__ import annotations

NAMESPACE = "bad-config"


def test_a_bad_config_fails_preview_and_up_and_creates_nothing(project, cluster):
    stack = project.stack("bad", {
        "namespace": NAMESPACE,
        "mlflow": {"workers": 0, "resources": {"limits": {"memory": "64Mi"}}},
    })
    for result in (stack.cli("preview"), stack.up()):
        assert result.returncode != 0
        assert "invalid stack configuration" in result.output
        assert "mlflow.workers: must be a whole number >= 1, got 0" in result.output
        assert "mlflow.resources.limits.memory" in result.output
    assert [r["type"] for r in stack.resources()] in ([], ["pulumi:pulumi:Stack"])
    assert cluster.get(f"/api/v1/namespaces/{NAMESPACE}") is None
