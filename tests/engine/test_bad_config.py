"""A bad stack config stops `pulumi preview` and `pulumi up` with the config
error, before anything is registered or created; so does a CLI older than
Pulumi.yaml's `requiredPulumiVersion`."""

from __future__ import annotations

import yaml

from tests.support.engine import PulumiProject
from tests.support.pins import engine_versions

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


def test_a_cli_older_than_required_stops_preview_and_up_and_creates_nothing(engine, workdir, cluster):
    """The built CLI is the tested release, which the real range admits (every other test here runs under
    it); a copy whose range starts after it plays an older CLI."""
    tested = engine_versions()["pulumi"]
    project = PulumiProject(engine, workdir / "old-cli", cluster.kubeconfig)
    document = yaml.safe_load((project.project / "Pulumi.yaml").read_text())
    assert document["requiredPulumiVersion"] == f">={tested}"
    document["requiredPulumiVersion"] = ">=99.0.0"
    (project.project / "Pulumi.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    stack = project.stack("old-cli", {"namespace": "old-cli"})
    for result in (stack.cli("preview"), stack.up()):
        assert result.returncode != 0
        assert f'Pulumi CLI version {tested} does not satisfy the version range ">=99.0.0"' in result.output
    assert stack.resources() == []
    assert cluster.get("/api/v1/namespaces/old-cli") is None
