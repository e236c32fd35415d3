"""What a parsed stack configuration is: frozen dataclasses, one per section of
Pulumi.yaml, that the components read. The kinds and modes are `Literal` types,
so a typo in a component is a type error; their tuples are what the parser accepts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from components.quantities import quantity_bytes

# The stack's own clients of MLflow, in the order of StackConfig.machine_users: each signs in as
# `<name>-<suffix>`, the suffix new with every password (components/access.py).
MACHINE_USERS = ("otel-collector", "trace-check", "trace-retention")

Platform = Literal["kubernetes", "openshift"]
ExposureKind = Literal["ingress", "route", "httproute", "none"]
PostgresMode = Literal["bundled", "external", "cnpg"]
ArtifactsKind = Literal["pvc", "s3"]
AuthKind = Literal["basic", "oidc", "none"]
TeamPermission = Literal["READ", "EDIT", "MANAGE"]
OtlpProtocol = Literal["http", "grpc"]
DestinationAuthKind = Literal["bearer", "basic", "header"]
ReadBack = Literal["phoenix", "none"]

PLATFORMS: tuple[Platform, ...] = get_args(Platform)
EXPOSURE_KINDS: tuple[ExposureKind, ...] = get_args(ExposureKind)
POSTGRES_MODES: tuple[PostgresMode, ...] = get_args(PostgresMode)
ARTIFACT_KINDS: tuple[ArtifactsKind, ...] = get_args(ArtifactsKind)
AUTH_KINDS: tuple[AuthKind, ...] = get_args(AuthKind)
TEAM_PERMISSIONS: tuple[TeamPermission, ...] = get_args(TeamPermission)
OTLP_PROTOCOLS: tuple[OtlpProtocol, ...] = get_args(OtlpProtocol)
DESTINATION_AUTH_KINDS: tuple[DestinationAuthKind, ...] = get_args(DestinationAuthKind)
READ_BACKS: tuple[ReadBack, ...] = get_args(ReadBack)

MLFLOW_DATABASE = "mlflow"  # what the bundled PostgreSQL and CloudNativePG create for MLflow


@dataclass(frozen=True)
class Resources:
    """Kubernetes requests and limits; both always carry cpu and memory."""

    requests: Mapping[str, str]
    limits: Mapping[str, str]

    def as_k8s(self) -> dict[str, dict[str, str]]:
        return {"requests": dict(self.requests), "limits": dict(self.limits)}

    @property
    def memory_limit_bytes(self) -> float:
        return quantity_bytes(self.limits["memory"])


@dataclass(frozen=True)
class Tls:
    enabled: bool
    secret_name: str | None
    cluster_issuer: str | None


@dataclass(frozen=True)
class GatewayRef:
    name: str | None
    namespace: str | None
    section_name: str | None


@dataclass(frozen=True)
class Exposure:
    kind: ExposureKind
    host: str | None  # resolved: exposure.host, else mlflow.<domain>; None when kind is none
    class_name: str | None
    annotations: Mapping[str, str]
    tls: Tls
    gateway: GatewayRef

    @property
    def scheme(self) -> str:
        return "https" if self.kind == "route" or self.tls.enabled else "http"

    @property
    def url(self) -> str | None:
        return f"{self.scheme}://{self.host}" if self.host else None


@dataclass(frozen=True)
class ExternalPostgres:
    host: str
    port: int
    database: str
    secret_name: str
    username_key: str
    password_key: str


@dataclass(frozen=True)
class CnpgCluster:
    """A CloudNativePG `Cluster` the operator (installed by the cluster's admin) runs."""

    instances: int
    image_name: str | None  # None: the operator's default PostgreSQL image
    operator_namespace: str  # where the operator runs: it must reach the instances


@dataclass(frozen=True)
class ObjectStore:
    """Where a CloudNativePG cluster keeps its own backups (base backups and WAL, by Barman Cloud)."""

    destination_path: str  # s3://bucket/prefix
    endpoint_url: str | None  # a MinIO-like store; None: AWS
    secret_name: str  # AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY
    retention_policy: str  # CloudNativePG's form: 30d, 4w, 6m


@dataclass(frozen=True)
class Backup:
    """`pg_dump` backups of every database the stack owns, on a volume of their own: on a
    schedule, and before each change that stops MLflow (a schema upgrade, a restore)."""

    schedule: str | None  # cron of the scheduled backups; None: only those taken before a change
    keep: int  # of each series (scheduled, before-upgrade, before-restore), the newest this many
    size: str
    storage_class: str | None
    restore_from: str | None  # a backup's name, restored once with MLflow stopped
    object_store: ObjectStore | None  # cnpg mode: the cluster's own backups too


@dataclass(frozen=True)
class Postgres:
    mode: PostgresMode
    image: str
    storage_size: str
    storage_class: str | None
    databases: tuple[str, ...]
    resources: Resources
    external: ExternalPostgres | None
    cnpg: CnpgCluster | None
    backup: Backup

    @property
    def mlflow_database(self) -> str:
        return self.external.database if self.external else MLFLOW_DATABASE


@dataclass(frozen=True)
class Artifacts:
    kind: ArtifactsKind
    size: str
    storage_class: str | None
    access_mode: str
    uri: str | None
    endpoint_url: str | None
    secret_name: str | None

    @property
    def single_writer(self) -> bool:
        """A claim only one pod can mount (ReadWriteOnce, ReadWriteOncePod)."""
        return self.kind == "pvc" and self.access_mode != "ReadWriteMany"


@dataclass(frozen=True)
class Oidc:
    """The organisation's OIDC provider, for `auth.kind: oidc` (components/sso.py)."""

    issuer_url: str
    client_id: str
    client_secret_name: str  # a Secret in the namespace with the key `client-secret`
    scopes: tuple[str, ...]
    groups_claim: str
    allowed_groups: tuple[str, ...]  # empty: every user the provider signs in (within email_domains)
    email_domains: tuple[str, ...]  # ("*",): any
    end_session_url: str | None  # the provider's logout endpoint, which sign-out calls; None: sign-out ends ours only
    ca_secret_name: str | None = None  # a Secret with the key `ca.crt`, the provider's CA; None: public CAs


@dataclass(frozen=True)
class Auth:
    """MLflow's basic-auth app: an admin user whose password is generated, and
    its user store in a database of its own; with `oidc`, people sign in at the
    organisation's provider in front of it (components/sso.py)."""

    kind: AuthKind
    admin_username: str
    database: str
    allow_plain_http: bool  # the stack accepts passwords over plain HTTP (said at every `pulumi up`)
    credential_cache_seconds: int  # how long a worker trusts a password it verified; 0: hash every request
    machine_password_revision: int = 1  # a change rotates the machine users' passwords (and names)
    oidc: Oidc | None = None  # kind oidc only

    @property
    def enabled(self) -> bool:
        """MLflow's basic-auth app runs (behind the proxy with oidc: the machine users still sign in to it)."""
        return self.kind in ("basic", "oidc")


@dataclass(frozen=True)
class Autoscaling:
    """A HorizontalPodAutoscaler on CPU (of the requests); when enabled it owns the replica count."""

    enabled: bool
    min_replicas: int
    max_replicas: int
    target_cpu_percent: int


@dataclass(frozen=True)
class Mlflow:
    image: str  # any reference; its tag's version decides only how an upgrade runs (`schema`)
    schema: str  # the schema line of the image (fields.schema_line): a change stops MLflow to migrate
    trace_permissions: bool  # MLflow 3.17+: grants on the trace and assessment tiers (machine users' least rights)
    replicas: int  # without autoscaling
    workers: int
    job_execution: bool
    resources: Resources
    artifacts: Artifacts
    extra_allowed_hosts: tuple[str, ...]
    api_url: str | None
    auth: Auth
    autoscaling: Autoscaling

    @property
    def scales_out(self) -> bool:
        """Whether more than one server may run at once."""
        return self.replicas > 1 or self.autoscaling.enabled


@dataclass(frozen=True)
class NoiseRule:
    method: str
    route: str


@dataclass(frozen=True)
class ObjectKey:
    """One key of a Secret or a ConfigMap in the stack's namespace."""

    kind: Literal["Secret", "ConfigMap"]
    name: str
    key: str


@dataclass(frozen=True)
class TraceDestination:
    """A further OTLP backend beside MLflow (e.g. Arize Phoenix). It receives every trace, or with
    `services`/`scopes` the whole traces that hold a span of a listed service or instrumentation
    scope (a scope ending in `*` is a prefix)."""

    name: str
    endpoint: str  # http(s)://host:port; for `http` the exporter appends /v1/traces
    protocol: OtlpProtocol
    headers: Mapping[str, str]
    ca: ObjectKey | None  # the CA bundle of an https endpoint; None: the image's system roots
    auth: DestinationAuthKind | None
    auth_secret: str | None  # bearer: key `token`; basic: keys `username` and `password`; header: key `value`
    services: tuple[str, ...]
    scopes: tuple[str, ...]
    queue_size: str  # the bytes its export queue may hold while it is down or slow
    read_back: ReadBack  # what the post-deploy check reads the trace back from
    auth_header: str | None = None  # auth type header: the header that carries the Secret's value

    def header(self, name: str) -> str | None:
        """A plain header's value, its name compared as HTTP compares it (case-insensitively)."""
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)

    @property
    def selects_all(self) -> bool:
        return not self.services and not self.scopes

    @property
    def uses_tls(self) -> bool:
        return self.endpoint.startswith("https://")


@dataclass(frozen=True)
class Collector:
    image: str
    version: str
    replicas: int  # without autoscaling
    resources: Resources
    noise: tuple[NoiseRule, ...]
    persistent_queue: bool  # a StatefulSet: each pod keeps its queue on a volume of its own
    queue_volume_size: str
    queue_volume_storage_class: str | None
    autoscaling: Autoscaling
    destinations: tuple[TraceDestination, ...] = ()

    @property
    def scales_out(self) -> bool:
        """Whether more than one collector may run at once."""
        return self.replicas > 1 or self.autoscaling.enabled


@dataclass(frozen=True)
class NetworkPolicies:
    """Who may open connections to the stack's servers. Each entry is a
    namespace label selector; an empty one matches every namespace."""

    enabled: bool
    ingress_namespaces: tuple[Mapping[str, str], ...]  # resolved: the platform's default when unset
    otlp_namespaces: tuple[Mapping[str, str], ...]


@dataclass(frozen=True)
class Experiment:
    name: str
    services: tuple[str, ...]
    default: bool
    tags: Mapping[str, str]
    renamed_from: tuple[str, ...] = ()
    retention_days: int | None = None  # resolved: its own limit, else retention.days; None keeps everything


@dataclass(frozen=True)
class AccessGrant:
    """A permission on some of the stack's experiments, by name; "*" is every experiment,
    those created later included."""

    experiments: tuple[str, ...]
    permission: TeamPermission


@dataclass(frozen=True)
class TeamRole:
    """An MLflow role: its grants apply to every user assigned to it."""

    name: str
    grants: tuple[AccessGrant, ...]


@dataclass(frozen=True)
class TeamUser:
    """A person's MLflow user: its own grants and its roles. Its password is generated into a
    Secret, or read from `password_secret` (key `password`)."""

    name: str
    roles: tuple[str, ...]
    grants: tuple[AccessGrant, ...]
    password_secret: str | None


@dataclass(frozen=True)
class Access:
    roles: tuple[TeamRole, ...] = ()
    users: tuple[TeamUser, ...] = ()


@dataclass(frozen=True)
class Verify:
    """The post-deploy check: a Job that sends traces through the collector after every change."""

    enabled: bool
    timeout_seconds: int


@dataclass(frozen=True)
class Retention:
    """The CronJob that deletes traces past their experiment's limit."""

    schedule: str
    batch_size: int


@dataclass(frozen=True)
class Canary:
    """The post-deploy check's code on a schedule: a path that breaks between deploys fails a run."""

    enabled: bool  # resolved: off when the monitoring is
    schedule: str


@dataclass(frozen=True)
class Monitoring:
    """What the stack gives a Prometheus: metrics to scrape, alert rules, a canary, a dashboard."""

    enabled: bool
    prometheus_operator: bool  # ServiceMonitors and a PrometheusRule; else scrape annotations and a rules ConfigMap
    labels: Mapping[str, str]  # on the operator's objects, for its selectors (e.g. release: kube-prometheus-stack)
    scraper_namespaces: tuple[Mapping[str, str], ...]  # admitted to the metrics ports by the NetworkPolicies
    canary: Canary
    dashboard_labels: Mapping[str, str]  # on the dashboard's ConfigMap: what the Grafana sidecar watches for


@dataclass(frozen=True)
class ClusterTarget:
    """The cluster as the stack's `kubernetes:context` / `kubernetes:kubeconfig` name it
    (None: the ambient kubeconfig and its current context, as for the default provider)."""

    context: str | None = None
    kubeconfig: Any = None  # a Pulumi secret when set: a kubeconfig may hold credentials


@dataclass(frozen=True)
class StackConfig:
    namespace: str
    create_namespace: bool
    platform: Platform
    domain: str
    exposure: Exposure
    postgres: Postgres
    mlflow: Mlflow
    collector: Collector
    network_policies: NetworkPolicies
    experiments: tuple[Experiment, ...]
    verify: Verify
    retention: Retention
    access: Access
    monitoring: Monitoring
    warnings: tuple[str, ...]  # risky but allowed settings, said at every `pulumi up`
    cluster: ClusterTarget = ClusterTarget()

    @property
    def databases_to_back_up(self) -> tuple[str, ...]:
        """Every database the stack owns: MLflow's, the auth store's and the extra ones."""
        return (self.postgres.mlflow_database, *self.databases_to_create)

    @property
    def databases_to_create(self) -> tuple[str, ...]:
        """What the bundled PostgreSQL creates beside `mlflow`: the configured
        databases and MLflow's auth database."""
        auth = (self.mlflow.auth.database,) if self.mlflow.auth.enabled else ()
        return tuple(dict.fromkeys((*self.postgres.databases, *auth)))

    @property
    def machine_users(self) -> tuple[str, ...]:
        """The stack's clients of MLflow that sign in as their own users: the collector, the
        post-deploy check when it or the canary runs (the same code), retention when an experiment
        has a limit."""
        if not self.mlflow.auth.enabled:
            return ()
        checks = self.verify.enabled or self.monitoring.canary.enabled
        needed = (True, checks, any(e.retention_days is not None for e in self.experiments))
        return tuple(machine for machine, used in zip(MACHINE_USERS, needed, strict=True) if used)

    @property
    def mlflow_scraped(self) -> bool:
        """Whether a Prometheus reads MLflow's /metrics: behind basic auth like every route but /health,
        it is not scraped."""
        return self.monitoring.enabled and not self.mlflow.auth.enabled

    @property
    def retention_limits(self) -> dict[str, int | None]:
        """Experiment name -> days its traces are kept (None: forever)."""
        return {experiment.name: experiment.retention_days for experiment in self.experiments}

    @property
    def mlflow_api_url(self) -> str:
        """Where the machine running `pulumi up` reaches MLflow."""
        return self.mlflow.api_url or self.exposure.url or ""  # validated: one is set

