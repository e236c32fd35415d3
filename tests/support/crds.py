"""Custom resources (OpenShift Route, Gateway API HTTPRoute, CloudNativePG Cluster
and Database) validated against their CRDs' published schemas
(tests/support/schemas), as strictly as kubernetes-validate checks built-in
kinds: an unknown field is an error.
The API server would also run the CRDs' CEL rules (`x-kubernetes-validations`);
these are not evaluated here."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

SCHEMAS = Path(__file__).resolve().parent / "schemas"


def _strict(schema):
    """The schema with unknown fields refused wherever it lists the known ones."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    # A null keyword (the Route CRD has `anyOf: null`) means absent to the API server.
    strict = {key: _strict(value) for key, value in schema.items() if value is not None}
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        strict["additionalProperties"] = False
    return strict


def validate_custom_resource(manifest: dict) -> None:
    """Raise jsonschema.ValidationError unless the manifest fits its CRD's schema."""
    group_version, kind = manifest["apiVersion"], manifest["kind"]
    schema = json.loads((SCHEMAS / f"{group_version.replace('/', '-')}-{kind}.json").read_text())
    strict = _strict(schema)
    # Not jsonschema.validate: it first checks the schema's patterns as ECMA regexes, and the CRDs'
    # are Go's (the PrometheusRule's `^(?i)(abort|warn)?$`), which Python's `re` applies as written.
    jsonschema.validators.validator_for(strict)(strict).validate(manifest)


def custom_resource_definition(group: str, version: str, kind: str, plural: str) -> dict:
    """A namespaced CRD serving `kind` with its published schema (tests/support/schemas), as a
    cluster that has the CRD installed serves it (OpenShift ships the Prometheus Operator's)."""
    schema = json.loads((SCHEMAS / f"{group}-{version}-{kind}.json").read_text())
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
                 "versions": [{"name": version, "served": True, "storage": True,
                               "schema": {"openAPIV3Schema": schema}}]},
    }
