"""The whole stack's configuration: every section read in order (later ones
check against earlier ones), then all problems raised at once."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from components.config.access import _access
from components.config.collector import _collector
from components.config.experiments import _experiments
from components.config.exposure import _exposure
from components.config.fields import _dns_label, _dns_name
from components.config.mlflow import _mlflow
from components.config.monitoring import _monitoring
from components.config.network import _network_policies
from components.config.postgres import _postgres
from components.config.reader import (
    PROJECT,
    ConfigError,
    _Problems,
    _Reader,
    _unknown_keys,
    merge_over,
    project_defaults,
)
from components.config.types import PLATFORMS, ClusterTarget, StackConfig
from components.config.upkeep import _retention, _verify


def parse_stack_config(values: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> StackConfig:
    """Typed, validated stack config from a stack's raw values (keys without the project prefix)."""
    defaults = project_defaults() if defaults is None else defaults
    problems = _Problems()
    for key in values:
        if key not in defaults:
            problems.unknown(key, list(defaults))
    merged = {key: merge_over(default, values.get(key, default)) for key, default in defaults.items()}
    for key, default in defaults.items():
        if isinstance(default, dict) and isinstance(values.get(key), dict):
            _unknown_keys(values[key], default, key, problems)

    root = _Reader(merged, "", problems)
    namespace = _dns_label(root, "namespace")
    platform = root.choice("platform", PLATFORMS)
    domain = root.text("domain", optional=True) or ""
    _dns_name(problems, "domain", domain or None)
    exposure = _exposure(_Reader(merged["exposure"], "exposure", problems), domain, platform)
    postgres = _postgres(_Reader(merged["postgres"], "postgres", problems))
    mlflow = _mlflow(_Reader(merged["mlflow"], "mlflow", problems), exposure, postgres.mlflow_database)
    retention, default_retention_days = _retention(_Reader(merged["retention"], "retention", problems))
    experiments = _experiments(root.objects("experiments"), "experiments", problems, default_retention_days)
    config = StackConfig(
        namespace=namespace,
        create_namespace=root.flag("createNamespace"),
        platform=platform,
        domain=domain,
        exposure=exposure,
        postgres=postgres,
        mlflow=mlflow,
        collector=_collector(_Reader(merged["collector"], "collector", problems)),
        network_policies=_network_policies(
            _Reader(merged["networkPolicies"], "networkPolicies", problems), platform, exposure
        ),
        experiments=experiments,
        verify=_verify(_Reader(merged["verify"], "verify", problems)),
        retention=retention,
        access=_access(_Reader(merged["access"], "access", problems), mlflow.auth, experiments),
        monitoring=_monitoring(_Reader(merged["monitoring"], "monitoring", problems), platform),
        warnings=tuple(problems.warnings),  # evaluated last: every section has been read
    )
    if problems.items:
        raise ConfigError(problems.items)
    return config


def load_stack_config() -> StackConfig:
    """Read this stack's `mlflow-tracing:*` config from the Pulumi runtime and parse it."""
    import pulumi
    from pulumi.runtime import config as runtime_config

    config = pulumi.Config(PROJECT)
    prefix = f"{PROJECT}:"
    keys = {
        key[len(prefix):]
        for key in {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
        if key.startswith(prefix)
    }
    defaults = project_defaults()
    values: dict[str, Any] = {}
    for key in keys:
        raw = config.get(key)
        # Strings arrive as they are; objects, lists and booleans as JSON text.
        if isinstance(defaults.get(key), str):
            values[key] = raw
        else:
            try:
                values[key] = json.loads(raw) if raw is not None else None
            except json.JSONDecodeError:
                values[key] = raw  # reported as the wrong type by the parser
    stack = parse_stack_config(values, defaults)
    for warning in stack.warnings:
        pulumi.log.warn(warning)
    kubernetes = pulumi.Config("kubernetes")
    cluster = ClusterTarget(context=kubernetes.get("context"), kubeconfig=kubernetes.get_secret("kubeconfig"))
    return dataclasses.replace(stack, cluster=cluster)
