"""Runs the Pulumi program under mocks and records what it registers.

The Pulumi CLI applies the defaults declared in Pulumi.yaml to the keys a
stack file does not set, then hands every value to the program as a string
(objects and lists as JSON). Mocks do neither, so `run_program` does both,
exactly that way, before running `__main__.py`.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import pulumi
import yaml
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.sync_await import _sync_await

from components.config import PROJECT, project_defaults

PROJECT_DIR = Path(__file__).resolve().parents[2]
STACKS = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in PROJECT_DIR.glob("Pulumi.*.yaml"))
MOCK_PASSWORD = "mock-generated-Password-4f1c2e"
DYNAMIC_TYPE = "pulumi-python:dynamic:Resource"
DYNAMIC_KINDS = {"experiment": "tags", "user": "username", "role": "grants"}  # a key only each has
# What a stack with basic auth needs so that `pulumi up` never sends the admin
# password in clear text (mlflow.auth.allowPlainHttp false): the dev stack's
# Ingress with TLS on, or `pulumi up` through `kubectl port-forward svc/mlflow 5000`.
TLS_INGRESS = {"kind": "ingress", "className": "nginx", "tls": {"enabled": True}}
PORT_FORWARD = "http://localhost:5000"
# The mlflow section of a basic-auth stack whose `pulumi up` reaches MLflow through a
# port-forward (loopback), as the integration suite does.
# A short credential cache, so that a test can see it expire.
BASIC_AUTH_MLFLOW = {"auth": {"kind": "basic", "credentialCacheSeconds": 10}, "apiUrl": PORT_FORWARD}
# Settings over the dev stack that each change the resource graph in a way no stack file does.
# A variant's top-level key replaces the stack's whole object (merged over the declared defaults).
VARIANTS = {
    "s3": {"mlflow": {"artifacts": {"kind": "s3", "uri": "s3://traces/p", "secretName": "s3"},
                      "auth": {"kind": "none"}}},  # no sign-in, as dev
    # With basic auth, so that it has a generated secret for the leak scan to look for.
    "external-postgres": {"postgres": {"mode": "external", "external": {"host": "db", "secretName": "pg"}},
                          "mlflow": BASIC_AUTH_MLFLOW},
    "basic-auth": {"mlflow": {"auth": {"kind": "basic"}}, "exposure": TLS_INGRESS},
    "httproute-tls": {"exposure": {"kind": "httproute", "tls": {"enabled": True},
                                   "gateway": {"name": "gw", "sectionName": "https"}}},
    "ingress-tls": {"exposure": {"kind": "ingress", "tls": {"enabled": True, "clusterIssuer": "le"}}},
    "persistent-queue": {"collector": {"persistentQueue": True}},
    "retention": {"retention": {"days": 30}},
    # Every machine user and both kinds of person (a generated password, one brought in a Secret).
    "team-access": {"mlflow": BASIC_AUTH_MLFLOW, "retention": {"days": 30}, "access": {
        "roles": [{"name": "readers", "grants": [{"experiments": ["*"], "permission": "READ"}]}],
        "users": [{"name": "alice@example.com", "roles": ["readers"]},
                  {"name": "bob", "passwordSecret": "bob-mlflow",
                   "grants": [{"experiments": ["llamastack-traces"], "permission": "EDIT"}]}]}},
    # A CloudNativePG Cluster with a further database (the auth store's), its own backups to an
    # object store, and no bundled server.
    "cnpg": {"postgres": {"mode": "cnpg", "backup": {"objectStore": {
                 "destinationPath": "s3://backups/mlflow", "endpointURL": "http://minio.minio:9000",
                 "secretName": "s3"}}},
             "mlflow": {"auth": {"kind": "basic"}}, "exposure": TLS_INGRESS},
    # Every scaling object: MLflow and the collector (a StatefulSet) each with an autoscaler and a budget.
    "scaled-out": {"mlflow": {"artifacts": {"kind": "s3", "uri": "s3://traces/p", "secretName": "s3"},
                              "auth": {"kind": "none"}, "autoscaling": {"enabled": True}},
                   "collector": {"persistentQueue": True, "autoscaling": {"enabled": True}}},
}


@dataclass
class Registered:
    typ: str
    name: str
    inputs: dict
    outputs: dict
    urn: str = ""
    parent: str = ""
    dependencies: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    provider: str = ""  # "<provider urn>::<id>" when an explicit provider is set

    @property
    def kind(self) -> str:
        return self.outputs.get("kind", "")

    @property
    def k8s_name(self) -> str:
        return (self.outputs.get("metadata") or {}).get("name", "")

    @property
    def manifest(self) -> dict:
        """The object as the Kubernetes API would receive it."""
        return {k: v for k, v in self.outputs.items() if k in ("apiVersion", "kind", "metadata", "spec", "data",
                                                                 "stringData", "type", "rules", "roleRef",
                                                                 "subjects")}


@dataclass
class ProgramRun:
    resources: list[Registered]
    outputs: dict[str, Any]
    secret_outputs: set[str]

    def kinds(self, kind: str) -> list[Registered]:
        return [r for r in self.resources if r.kind == kind]

    def get(self, kind: str, name: str) -> Registered:
        matches = [r for r in self.kinds(kind) if r.k8s_name == name]
        assert len(matches) == 1, f"expected one {kind} {name!r}, found {[r.k8s_name for r in self.kinds(kind)]}"
        return matches[0]

    def of_type(self, typ: str) -> list[Registered]:
        return [r for r in self.resources if r.typ == typ]

    def dynamic(self, kind: str) -> list[Registered]:
        """The dynamic resources of one provider: `experiment`, `user` or `role`."""
        return [r for r in self.of_type(DYNAMIC_TYPE) if DYNAMIC_KINDS[kind] in r.inputs
                and (kind != "role" or "username" not in r.inputs)]

    def pods(self) -> list[tuple[Registered, dict]]:
        """(workload, pod spec) of every workload, CronJobs included."""
        found = []
        for resource in self.resources:
            spec = resource.outputs.get("spec") or {}
            template = spec.get("template") or ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template")
            if template:
                found.append((resource, template["spec"]))
        return found

    def containers(self) -> list[tuple[Registered, dict]]:
        """Every container and init container of every workload."""
        return [(resource, container) for resource, pod in self.pods()
                for container in pod.get("initContainers", []) + pod.get("containers", [])]


def unwrap_secrets(value: Any) -> Any:
    """The plain value inside Pulumi's wire form of secrets."""
    if isinstance(value, dict):
        if value.get(rpc._special_sig_key) == rpc._special_secret_sig:
            return unwrap_secrets(value["value"])
        return {k: unwrap_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap_secrets(v) for v in value]
    return value


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.registered: list[Registered] = []
        self.ids = itertools.count(1)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        outputs = copy.deepcopy(args.inputs)
        if args.resource_id:
            # An object the stack reads and does not declare: a Secret of the operator's (a person's password).
            name = args.resource_id.split("/")[-1]
            return args.resource_id, {"metadata": {"name": name}, "data": {
                "password": base64.b64encode(f"{MOCK_PASSWORD}-brought-{name}".encode()).decode()}}
        if args.typ.startswith("kubernetes:"):
            metadata = outputs.setdefault("metadata", {})
            # The engine auto-names resources; mocks must do it themselves.
            metadata.setdefault("name", f"{args.name}-mock")
        elif args.typ == "random:index/randomPassword:RandomPassword":
            # One value per generated secret, all carrying MOCK_PASSWORD for leak scans.
            outputs["result"] = f"{MOCK_PASSWORD}-{args.name}"
        elif args.typ == "random:index/randomId:RandomId":
            outputs["hex"] = f"{next(self.ids):06x}"
        elif args.typ == DYNAMIC_TYPE and DYNAMIC_KINDS["experiment"] in args.inputs:
            outputs.update(experiment_id=str(100 + next(self.ids)), lifecycle_stage="active")
        self.registered.append(Registered(args.typ, args.name, unwrap_secrets(args.inputs), unwrap_secrets(outputs)))
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


class RecordingMonitor(MockMonitor):
    """The mock monitor, also noting each resource's URN, parent and dependencies."""

    def __init__(self, mocks: RecordingMocks):
        super().__init__(mocks)
        self.links: dict[tuple[str, str], tuple[str, str, list[str], list[str], str]] = {}

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        aliases = [alias.spec.name for alias in request.aliases if alias.spec.name]
        self.links[(request.type, request.name)] = (response.urn, request.parent, list(request.dependencies), aliases,
                                                    request.provider)
        return response


def stack_values(stack: str) -> dict[str, Any]:
    """A stack file's values, keyed without the project prefix."""
    document = yaml.safe_load((PROJECT_DIR / f"Pulumi.{stack}.yaml").read_text()) or {}
    prefix = f"{PROJECT}:"
    return {key[len(prefix):]: value for key, value in (document.get("config") or {}).items()}


def cli_config(values: dict[str, Any]) -> dict[str, str]:
    """What the CLI passes: declared defaults for unset keys, every value as a string."""
    merged = {key: default for key, default in project_defaults().items() if default is not None}
    merged.update(values)
    return {
        f"{PROJECT}:{key}": value if isinstance(value, str) else json.dumps(value)
        for key, value in merged.items()
    }


def run_program(stack: str = "dev", mocks: RecordingMocks | None = None, **overrides: Any) -> ProgramRun:
    """Run `__main__.py` for a stack, with top-level keys replaced by `overrides`.

    Pass `mocks` to inspect what was registered when the program fails."""
    mocks = mocks or RecordingMocks()
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor)
    pulumi.runtime.set_all_config(cli_config({**stack_values(stack), **overrides}), [])
    exports: dict[str, Any] = {}

    @pulumi.runtime.test
    def program():
        with mock.patch.object(pulumi, "export", side_effect=exports.__setitem__):
            runpy.run_path(str(PROJECT_DIR / "__main__.py"), run_name="__main__")
        return pulumi.Output.all(**{k: pulumi.Output.from_input(v) for k, v in exports.items()})

    program()
    values = {k: _sync_await(pulumi.Output.from_input(v).future()) for k, v in exports.items()}
    secrets = {k for k, v in exports.items() if _sync_await(pulumi.Output.from_input(v).is_secret())}
    for resource in mocks.registered:
        resource.urn, resource.parent, resource.dependencies, resource.aliases, resource.provider = monitor.links.get(
            (resource.typ, resource.name), ("", "", [], [], "")
        )
    return ProgramRun(mocks.registered, values, secrets)
