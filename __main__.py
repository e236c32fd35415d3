"""MLflow trace collection on Kubernetes.

    OTLP clients -> Collector (filter noise, route by service.name)
                 -> MLflow /v1/traces (one experiment per route) -> PostgreSQL
    pulumi up    -> MLflow REST (experiments) -> IDs -> Collector config
                 -> MLflow REST (users, roles, grants): each in-cluster client signs in as its own user
    PostgreSQL   -> pg_dump -> backup volume (scheduled, and before each upgrade or restore)
    MLflow image of a new schema line: writers stopped, backup, migration, new version, writers resumed
    NetworkPolicies: each server accepts only the clients on these arrows
    Prometheus   -> collector and MLflow metrics; alert rules per hop; a canary CronJob runs the check
"""

import pulumi

from components import mlflow, trace_upkeep
from components.access import CHECK, COLLECTOR, RETENTION, AdminApi, MachineUsers, TeamAccess
from components.backup import DatabaseBackups
from components.collector import TraceCollector
from components.config import load_stack_config
from components.experiments import MlflowExperiments
from components.exposure import MlflowExposure
from components.kept import KeptObjects
from components.kube import Scraping
from components.mlflow import MlflowServer
from components.monitoring import StackMonitoring, watched_by
from components.namespace import StackNamespace
from components.network import Scrapers, StackNetworkPolicies
from components.postgres import PostgresDatabase
from components.trace_upkeep import CheckedCollector, JobCredentials, JobTarget, TraceUpkeep
from components.upgrade import UpgradeGate, Writers

config = load_stack_config()
monitoring = config.monitoring

# What `destroy` keeps (namespace, artifact volume) is taken over by the next `up`.
kept = KeptObjects("kept-objects", cluster=config.cluster).provider

namespace = StackNamespace(
    "namespace", namespace=config.namespace, create=config.create_namespace, platform=config.platform,
    kept_provider=kept,
).ref

if config.network_policies.enabled:
    StackNetworkPolicies(
        "network-policies",
        config=config.network_policies,
        namespace=namespace,
        postgres_config=config.postgres,
        scrapers=Scrapers(namespaces=monitoring.scraper_namespaces if monitoring.enabled else (),
                          mlflow=config.mlflow_scraped),
        sign_in=config.mlflow.auth.oidc is not None,
    )

database = PostgresDatabase(
    "postgres", config=config.postgres, databases=config.databases_to_create, namespace=namespace,
    platform=config.platform,
)

backups = DatabaseBackups(
    "backups", config=config.postgres.backup, image=config.postgres.image, connection=database.connection,
    databases=config.databases_to_back_up, namespace=namespace, platform=config.platform, kept_provider=kept,
)

# Before the migration: the writers stopped and a backup taken when the schema may change, or a restore.
gate = UpgradeGate(
    "upgrade",
    image=config.mlflow.image,
    schema=config.mlflow.schema,
    restore_from=config.postgres.backup.restore_from,
    writers=Writers(deployment=mlflow.SERVICE_NAME,
                    components=(mlflow.COMPONENT, trace_upkeep.RETENTION_COMPONENT),
                    cronjobs=(trace_upkeep.RETENTION_CRONJOB_NAME, trace_upkeep.CANARY_CRONJOB_NAME)),
    target=backups.target,
    namespace=namespace,
    after=database.ready,
)

server = MlflowServer(
    "mlflow",
    config=config.mlflow,
    connection=database.connection,
    namespace=namespace,
    platform=config.platform,
    external_host=config.exposure.host,
    public_url=config.exposure.url,
    kept_provider=kept,
    gate=gate,
    scraping=Scraping(exposed=config.mlflow_scraped, annotated=not monitoring.prometheus_operator),
)

exposure = MlflowExposure("exposure", config=config.exposure, namespace=namespace, server=server)

experiments = MlflowExperiments(
    "experiments",
    experiments=config.experiments,
    tracking_url=config.mlflow_api_url,
    credentials=server.credentials,
    server_ready=[server, exposure],
)

# Only `pulumi up` signs in as the admin: the collector and the jobs as machine users with the
# least rights their job needs, people as the users and roles of `access`.
machine_secrets: dict = {}
if server.credentials is not None:
    admin = AdminApi(tracking_url=config.mlflow_api_url, credentials=server.credentials,
                     server_ready=[server, exposure])
    machine_secrets = MachineUsers(
        "machine-users", machines=config.machine_users, revision=config.mlflow.auth.machine_password_revision,
        experiments=config.experiments, experiment_ids=experiments.ids, retention_days=config.retention_limits,
        trace_permissions=config.mlflow.trace_permissions, admin=admin, namespace=namespace,
    ).secrets
    TeamAccess("team-access", access=config.access, experiment_ids=experiments.ids, admin=admin, namespace=namespace)

traces = TraceCollector(
    "collector",
    config=config.collector,
    experiments=config.experiments,
    experiment_ids=experiments.ids,
    mlflow_endpoint=server.internal_url,
    credentials_secret=machine_secrets.get(COLLECTOR),
    namespace=namespace,
    platform=config.platform,
    mlflow_rolled_out=server.rolled_out,
    scraping=Scraping(exposed=monitoring.enabled, annotated=not monitoring.prometheus_operator),
)

# After every change, a Job proves traces flow; a CronJob keeps the trace store bounded.
TraceUpkeep(
    "trace-upkeep",
    verify=config.verify,
    canary=monitoring.canary,
    retention=config.retention,
    experiments=traces.experiments,
    retention_days=config.retention_limits,
    collector=CheckedCollector(config=config.collector, http_url=traces.http_endpoint, metrics_url=traces.metrics_url),
    target=JobTarget(image=config.mlflow.image, platform=config.platform, mlflow_url=server.internal_url),
    credentials=JobCredentials(check=machine_secrets.get(CHECK),
                               retention=machine_secrets.get(RETENTION)),
    namespace=namespace,
    revisions=[traces.pod_revision, server.pod_revision],
    after=[traces.workload, *server.rolled_out],
)

if monitoring.enabled:
    StackMonitoring(
        "monitoring",
        config=monitoring,
        watched=watched_by(config),
        namespace=namespace,
    )

pulumi.export("namespace", config.namespace)
pulumi.export("mlflowUrl", exposure.url or server.internal_url)
pulumi.export("mlflowInternalUrl", server.internal_url)
pulumi.export("otlpGrpcEndpoint", traces.grpc_endpoint)
pulumi.export("otlpHttpEndpoint", traces.http_endpoint)
pulumi.export("experimentIds", experiments.ids)
pulumi.export("postgresHost", database.connection.host)
pulumi.export("mlflowCredentials", server.credentials)
