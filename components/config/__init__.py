"""The typed stack configuration: the only package that reads `pulumi.Config`.

`Pulumi.yaml` declares every key with its default; `parse_stack_config` merges a
stack's values over those defaults (objects key by key, lists whole), rejects
unknown keys, validates everything and returns frozen dataclasses. Every error
names the key and the fix, and all errors are reported together before any
resource is registered.

A newcomer reads `types` (what a config is), `reader` (how raw values are
read), then `stack` and the one module per section it calls.
"""

from components.config.access import ALL_EXPERIMENTS
from components.config.collector import HTTP_METHODS
from components.config.fields import has_trace_permissions, schema_line, version_from_image
from components.config.mlflow import (
    ACCESS_MODES,
    LOOPBACK_HOSTS,
    MEMORY_HEADROOM,
    MLFLOW_CLI_MIB,
    MLFLOW_JOB_RUNNER_MIB,
    MLFLOW_WORKER_MIB,
    mlflow_footprint_mib,
)
from components.config.network import (
    ANY_NAMESPACE,
    INGRESS_NGINX_NAMESPACE,
    NAMESPACE_NAME_LABEL,
    OPENSHIFT_ROUTER_SELECTOR,
    namespace_selector,
)
from components.config.postgres import BACKUP_NAME, BACKUP_SERIES
from components.config.reader import PROJECT, PROJECT_FILE, ConfigError, merge_over, project_defaults
from components.config.stack import load_stack_config, parse_stack_config
from components.config.types import (
    ARTIFACT_KINDS,
    AUTH_KINDS,
    EXPOSURE_KINDS,
    MACHINE_USERS,
    MLFLOW_DATABASE,
    PLATFORMS,
    POSTGRES_MODES,
    TEAM_PERMISSIONS,
    Access,
    AccessGrant,
    Artifacts,
    ArtifactsKind,
    Auth,
    AuthKind,
    Autoscaling,
    Backup,
    ClusterTarget,
    Collector,
    Experiment,
    Exposure,
    ExposureKind,
    ExternalPostgres,
    GatewayRef,
    Mlflow,
    NetworkPolicies,
    NoiseRule,
    ObjectKey,
    ObjectStore,
    Platform,
    Postgres,
    PostgresMode,
    Resources,
    Retention,
    StackConfig,
    TeamRole,
    TeamUser,
    Tls,
    TraceDestination,
    Verify,
)
from components.names import experiment_name_problem, experiment_slug
from components.quantities import quantity_bytes

__all__ = [
    "ACCESS_MODES",
    "ALL_EXPERIMENTS",
    "MACHINE_USERS",
    "TEAM_PERMISSIONS",
    "Access",
    "AccessGrant",
    "TeamRole",
    "TeamUser",
    "ANY_NAMESPACE",
    "ARTIFACT_KINDS",
    "AUTH_KINDS",
    "BACKUP_NAME",
    "BACKUP_SERIES",
    "EXPOSURE_KINDS",
    "HTTP_METHODS",
    "INGRESS_NGINX_NAMESPACE",
    "LOOPBACK_HOSTS",
    "MEMORY_HEADROOM",
    "MLFLOW_CLI_MIB",
    "MLFLOW_DATABASE",
    "MLFLOW_JOB_RUNNER_MIB",
    "MLFLOW_WORKER_MIB",
    "NAMESPACE_NAME_LABEL",
    "OPENSHIFT_ROUTER_SELECTOR",
    "PLATFORMS",
    "POSTGRES_MODES",
    "PROJECT",
    "PROJECT_FILE",
    "Artifacts",
    "ArtifactsKind",
    "Auth",
    "AuthKind",
    "Autoscaling",
    "Backup",
    "Collector",
    "ConfigError",
    "Experiment",
    "Exposure",
    "ExposureKind",
    "ExternalPostgres",
    "GatewayRef",
    "Mlflow",
    "ClusterTarget",
    "NetworkPolicies",
    "NoiseRule",
    "ObjectKey",
    "ObjectStore",
    "Platform",
    "Postgres",
    "PostgresMode",
    "Resources",
    "Retention",
    "StackConfig",
    "Tls",
    "TraceDestination",
    "Verify",
    "experiment_name_problem",
    "experiment_slug",
    "has_trace_permissions",
    "load_stack_config",
    "merge_over",
    "mlflow_footprint_mib",
    "namespace_selector",
    "parse_stack_config",
    "project_defaults",
    "quantity_bytes",
    "schema_line",
    "version_from_image",
]
