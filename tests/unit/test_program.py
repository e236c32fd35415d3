"""Whole-program properties, for every Pulumi.<stack>.yaml: schema-valid
manifests, Kubernetes hygiene, outputs, and no secret where it can leak."""

import json

import kubernetes_validate
import pytest

from tests.support.crds import validate_custom_resource
from tests.support.k8s import K8S_VERSION, integral
from tests.support.program import MOCK_PASSWORD, PROJECT, STACKS, VARIANTS, run_program

# CRDs: validated against their vendored schemas
CUSTOM_KINDS = {"Route", "HTTPRoute", "Cluster", "Database", "ScheduledBackup", "ServiceMonitor", "PrometheusRule"}
OUTPUTS = {"namespace", "mlflowUrl", "mlflowInternalUrl", "otlpGrpcEndpoint", "otlpHttpEndpoint", "experimentIds",
           "postgresHost", "mlflowCredentials"}


@pytest.fixture(scope="module", params=[*STACKS, *VARIANTS])
def run(request, stack_runs):
    if request.param in stack_runs:
        return stack_runs[request.param]
    return run_program("dev", **VARIANTS[request.param])


def k8s_resources(run):
    return [r for r in run.resources if r.typ.startswith("kubernetes:")]


def test_every_manifest_is_valid_against_the_kubernetes_schema(run):
    checked = 0
    for resource in k8s_resources(run):
        if resource.kind in CUSTOM_KINDS:
            validate_custom_resource(integral(resource.manifest))
        else:
            kubernetes_validate.validate(integral(resource.manifest), K8S_VERSION, strict=True)
        checked += 1
    assert checked >= 8


def test_every_container_has_requests_and_limits(run):
    containers = run.containers()
    assert len(containers) >= 3
    for resource, container in containers:
        for section in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][section]), (resource.name, container["name"])


def test_every_object_carries_the_recommended_labels(run):
    for resource in k8s_resources(run):
        labels = resource.outputs["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "mlflow-tracing", resource.name
        assert labels["app.kubernetes.io/managed-by"] == "pulumi"
        template = (resource.outputs.get("spec") or {}).get("template")
        if template:
            assert template["metadata"]["labels"]["app.kubernetes.io/name"], resource.name


def test_all_outputs_are_exported(run):
    assert set(run.outputs) == OUTPUTS
    assert run.outputs["mlflowInternalUrl"] == "http://mlflow.mlflow.svc:5000"


def test_the_generated_password_appears_in_no_command_configmap_or_plain_output(run):
    assert run.of_type("random:index/randomPassword:RandomPassword")  # there is something to leak
    for resource, container in run.containers():
        visible = container.get("command", []) + container.get("args", [])
        visible += [e["value"] for e in container.get("env", []) if "value" in e]
        assert not any(MOCK_PASSWORD in str(v) for v in visible), (resource.name, container["name"])
    for config_map in run.kinds("ConfigMap"):
        assert MOCK_PASSWORD not in json.dumps(config_map.outputs["data"])
    plain = {k: v for k, v in run.outputs.items() if k not in run.secret_outputs}
    assert MOCK_PASSWORD not in json.dumps(plain)
    for resource in k8s_resources(run):
        annotations = json.dumps((resource.outputs.get("metadata") or {}).get("annotations") or {})
        assert MOCK_PASSWORD not in annotations


def test_no_object_but_a_secret_holds_a_generated_password(run):
    """Beyond commands, env and ConfigMaps: custom resources (CloudNativePG's backups name their
    credentials' Secret), RBAC objects, claims, Job and CronJob templates (the upgrade gate's plan)."""
    holders = [r.name for r in k8s_resources(run) if r.kind != "Secret" and MOCK_PASSWORD in json.dumps(r.outputs)]
    assert holders == []


def test_the_password_is_only_in_the_credentials_secret(stack_runs):
    holders = [r.name for r in stack_runs["dev"].resources if MOCK_PASSWORD in json.dumps(r.outputs)]
    assert holders == ["postgres-password", "postgres-credentials"]


def test_every_resource_belongs_to_a_component(run):
    """`__main__.py` composes components; every resource is created inside one."""
    for resource in run.resources:
        parent_type = resource.parent.split("::")[2].split("$")[-1]
        if resource.typ.startswith(f"{PROJECT}:index:"):
            assert parent_type in ("pulumi:pulumi:Stack", *{r.typ for r in run.resources}), resource.name
        else:
            assert parent_type.startswith(f"{PROJECT}:index:"), (resource.typ, resource.name, parent_type)


def test_only_what_destroy_keeps_is_taken_over_on_the_next_up(run):
    """The namespace and the artifact claim survive `destroy` and must not fail the next
    `up` with `already exists`; every other resource keeps the default provider, whose
    refusal protects against a rename without an alias deleting what it just updated."""
    (provider,) = run.of_type("pulumi:providers:kubernetes")
    assert provider.inputs["upsertExistingObjects"] in (True, "true")
    adopted = {(r.kind, r.k8s_name) for r in run.resources if r.provider.startswith(provider.urn)}
    kept = {(r.kind, r.k8s_name) for r in run.resources if r.kind in ("Namespace", "PersistentVolumeClaim")}
    assert adopted == kept
