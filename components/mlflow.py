"""The MLflow tracking server: a migration Job, then a Deployment and Service.

The known traps are handled here by construction: the Host check list
covers every name clients send, probes use paths that stay open, the backend
URI names its driver and holds no credentials, migrations run once before any
replica, and the worker count and job runner fit the memory limit (validated
in the config layer).
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components import auth, sso, upgrade, upgrade_gate
from components.auth import AuthRefs, MlflowAuth
from components.availability import keep_available
from components.config import Artifacts, Mlflow
from components.kube import (
    LONG_JOB_TIMEOUTS,
    NOT_SCRAPED,
    RERUN_IF_FAILED,
    NamespaceRef,
    Scraping,
    claim_spec,
    container_security_context,
    labels_for,
    pod_security_context,
    replica_count,
    secret_env,
    selector_for,
    service_host,
    spread_across_nodes,
    template_revision,
)
from components.postgres import PostgresConnection, libpq_env
from components.upgrade import UpgradeGate, resume_job_spec

COMPONENT = "mlflow"  # the label of the server's pods and objects
SERVICE_NAME = COMPONENT  # the Service and the Deployment are named after it
MIGRATION_COMPONENT = "mlflow-migrate"  # the migration Job
PORT = 5000
MLFLOW_UID = 1000  # the image has no USER; any non-root UID works with HOME=/tmp
ARTIFACTS_DIR = "/mlflow/artifacts"
HEALTH_PATH = "/health"  # exempt from the Host check and from basic auth
MIGRATION_ANNOTATION = "mlflow-tracing/migration-job"
# Everything a port-forward or an in-pod client sends, whatever the local port.
LOOPBACK_HOSTS = ("localhost", "localhost:*", "127.0.0.1", "127.0.0.1:*")
# prometheus_client's multiprocess files, one set per process (uvicorn's workers, the job runner):
# /metrics sums them. A restarted container continues the files, so its counters never go back.
METRICS_DIR = "/var/run/mlflow-metrics"
METRICS_VOLUME_LIMIT = "256Mi"  # sparse 1 MiB files, a dozen per start
POD_IP_ENV = "POD_IP"
# A Prometheus scrapes a pod at its IP, and /metrics is behind the Host check like every route but /health;
# an IPv6 address comes in brackets.
SCRAPE_HOSTS = (f"$({POD_IP_ENV}):{PORT}", f"[$({POD_IP_ENV})]:{PORT}")


def allowed_hosts_for(*, namespace: str, external_host: str | None, extra: tuple[str, ...] = (),
                      scraped: bool = False) -> list[str]:
    """Every Host header value clients send, for `--allowed-hosts`.

    MLflow compares the raw header, port included, and a pattern without `*`
    must match exactly, so each name is listed bare and with its port. The
    stack itself uses `<svc>.<ns>.svc`; the `.svc.cluster.local` form, which
    some clients still send, is accepted too (another cluster domain's long
    form goes in `extra`). A `scraped` server also accepts its own pod's address, which Kubernetes
    puts into the argument (`$(POD_IP)`) and which a DNS rebinding never sends."""
    short = service_host(SERVICE_NAME, namespace)
    names = [SERVICE_NAME, f"{SERVICE_NAME}.{namespace}", short, f"{short}.cluster.local"]
    hosts = [form for name in names for form in (name, f"{name}:{PORT}")]
    if external_host:
        hosts += [external_host, f"{external_host}:80", f"{external_host}:443"]
    hosts += [*LOOPBACK_HOSTS, *extra, *(SCRAPE_HOSTS if scraped else ())]
    return list(dict.fromkeys(hosts))


def backend_store_uri(connection: PostgresConnection, database: str | None = None) -> str:
    """SQLAlchemy URI with an explicit driver and no credentials (libpq env has them);
    of MLflow's own database unless another one is named."""
    return f"postgresql+psycopg2://{connection.host}:{connection.port}/{database or connection.database}"


def artifacts_destination(artifacts: Artifacts) -> str:
    if artifacts.kind == "s3":
        assert artifacts.uri, "the config layer requires artifacts.uri with kind s3"
        return artifacts.uri
    return ARTIFACTS_DIR


def server_args(cfg: Mlflow, allowed_hosts: list[str], metrics: bool = False) -> list[str]:
    """`mlflow server` arguments: uvicorn (OTLP ingest lives only there), no secrets; with `metrics`,
    /metrics on the server's port."""
    app = ["--app-name", "basic-auth"] if cfg.auth.enabled else []
    exposed = ["--expose-prometheus", METRICS_DIR] if metrics else []
    return [
        "mlflow", "server", *app,
        "--host", "0.0.0.0",
        "--port", str(PORT),
        "--workers", str(cfg.workers),
        "--backend-store-uri", "$(MLFLOW_BACKEND_STORE_URI)",
        "--artifacts-destination", artifacts_destination(cfg.artifacts),
        "--serve-artifacts",
        "--allowed-hosts", ",".join(allowed_hosts),
        *exposed,
    ]


def migration_args() -> list[str]:
    return ["mlflow", "db", "upgrade", "$(MLFLOW_BACKEND_STORE_URI)"]


def auth_migration_args(cfg: Mlflow, connection: PostgresConnection) -> list[str]:
    """The auth store's migrations, run once here rather than racing in every replica."""
    return ["python", "-m", "mlflow.server.auth", "db", "upgrade",
            "--url", backend_store_uri(connection, cfg.auth.database)]


def server_env(cfg: Mlflow, connection: PostgresConnection, auth_refs: AuthRefs | None,
               metrics: bool = False) -> list[dict]:
    uri = backend_store_uri(connection)
    pod_ip: list[dict] = ([{"name": POD_IP_ENV, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
                          if metrics else [])
    env = [
        *pod_ip,
        {"name": "MLFLOW_BACKEND_STORE_URI", "value": uri},
        # Gateway/FastAPI routes resolve the store from this variable.
        {"name": "MLFLOW_TRACKING_URI", "value": uri},
        *libpq_env(connection),
        {"name": "HOME", "value": "/tmp"},
        {"name": "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "value": str(cfg.job_execution).lower()},
    ]
    artifacts = cfg.artifacts
    if artifacts.kind == "s3":
        assert artifacts.secret_name, "the config layer requires artifacts.secretName with kind s3"
        env += secret_env(artifacts.secret_name,
                          {key: key for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")})
        if artifacts.endpoint_url:
            env += [
                {"name": "MLFLOW_S3_ENDPOINT_URL", "value": artifacts.endpoint_url},
                {"name": "MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE", "value": "path"},
            ]
    if auth_refs is not None:
        env += [
            {"name": "MLFLOW_AUTH_CONFIG_PATH", "value": f"{auth.CONFIG_DIR}/{auth.CONFIG_FILE}"},
            # Not the admin's password: the migration Job creates the admin (auth.ADMIN_BOOTSTRAP).
            *secret_env(auth_refs.secret_name, {"MLFLOW_FLASK_SERVER_SECRET_KEY": auth.SECRET_KEY_KEY}),
        ]
    return env


def server_probes() -> dict:
    """The port opens only after the DB connection and migrations (the CLI
    retries the DB for ~100 s): a TCP startup probe with a 5-minute budget,
    then `/health`, which no Host check or auth ever blocks."""
    health = {"httpGet": {"path": HEALTH_PATH, "port": "http"}, "timeoutSeconds": 5}
    return {
        "startupProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 5, "failureThreshold": 60},
        "readinessProbe": {**health, "periodSeconds": 10, "failureThreshold": 3},
        "livenessProbe": {**health, "periodSeconds": 20, "failureThreshold": 5},
    }


def _volumes(cfg: Mlflow, artifacts_claim: pulumi.Input[str] | None,
             auth_refs: AuthRefs | None, metrics: bool) -> tuple[list[dict], list[dict]]:
    volumes: list[dict] = [{"name": "tmp", "emptyDir": {}}]
    mounts: list[dict] = [{"name": "tmp", "mountPath": "/tmp"}]
    if metrics:
        volumes.append({"name": "metrics", "emptyDir": {"sizeLimit": METRICS_VOLUME_LIMIT}})
        mounts.append({"name": "metrics", "mountPath": METRICS_DIR})
    if auth_refs is not None:
        volumes.append({"name": "auth-config", "configMap": {"name": auth_refs.config_map_name}})
        mounts.append({"name": "auth-config", "mountPath": auth.CONFIG_DIR, "readOnly": True})
    if cfg.artifacts.kind == "pvc":
        volumes.append({"name": "artifacts", "persistentVolumeClaim": {"claimName": artifacts_claim}})
        mounts.append({"name": "artifacts", "mountPath": ARTIFACTS_DIR})
    return volumes, mounts


def migration_job_spec(cfg: Mlflow, connection: PostgresConnection, platform: str,
                       auth_refs: AuthRefs | None, restored_from: str | None = None) -> dict:
    """`mlflow db upgrade`, and before it, when auth is on, the auth store's upgrade and the
    admin's bootstrap: the one pod that gets the admin's password, for the time it runs. A new
    admin password (a new auth Secret) re-runs the Job, and so does a restore (`restored_from`): the
    restored schema may be older than the image, the restored auth store may hold an older admin."""
    volumes, mounts = [{"name": "tmp", "emptyDir": {}}], [{"name": "tmp", "mountPath": "/tmp"}]

    def step(name: str, command: list[str], env: list[dict] | None = None) -> dict:
        return {
            "name": name,
            "image": cfg.image,
            "command": command,
            "env": server_env(cfg, connection, auth_refs=None) + (env or []),
            "resources": cfg.resources.as_k8s(),
            "securityContext": container_security_context(read_only_root=True),
            "volumeMounts": mounts,
        }

    auth_steps = [
        step("migrate-auth", auth_migration_args(cfg, connection)),
        step("bootstrap-admin", ["python", "-c", auth.ADMIN_BOOTSTRAP], auth.admin_bootstrap_env(
            auth_refs, backend_store_uri(connection, cfg.auth.database), cfg.auth.admin_username)),
    ] if auth_refs is not None else []
    restored = {"annotations": {upgrade_gate.RESTORED_ANNOTATION: restored_from}} if restored_from else {}
    return {
        "backoffLimit": 6,
        "template": {
            "metadata": {"labels": labels_for(MIGRATION_COMPONENT), **restored},
            "spec": {
                "restartPolicy": "OnFailure",
                "securityContext": pod_security_context(platform, MLFLOW_UID),
                **({"initContainers": auth_steps} if auth_steps else {}),
                "containers": [step("migrate", migration_args())],
                "volumes": volumes,
            },
        },
    }


def deployment_spec(cfg: Mlflow, connection: PostgresConnection, allowed_hosts: list[str], platform: str,
                    migration_job: pulumi.Input[str], artifacts_claim: pulumi.Input[str] | None,
                    auth_refs: AuthRefs | None, scraping: Scraping = NOT_SCRAPED,
                    public_url: str | None = None) -> dict:
    """With `auth.kind: oidc`, oauth2-proxy runs beside MLflow (components/sso.py) for people at
    `public_url`; in-namespace clients keep MLflow's own port."""
    volumes, mounts = _volumes(cfg, artifacts_claim, auth_refs, scraping.exposed)
    env = server_env(cfg, connection, auth_refs, scraping.exposed)
    sign_in = []
    if cfg.auth.oidc is not None:
        assert auth_refs is not None and public_url, "the config layer requires https exposure with oidc"
        env += sso.server_env(auth_refs.secret_name, auth.CONFIG_DIR)
        sign_in = [sso.proxy_container(cfg.auth.oidc, public_url=public_url, upstream_port=PORT,
                                       auth_secret=auth_refs.secret_name)]
        volumes = [*volumes, *sso.proxy_volumes(cfg.auth.oidc)]
    return {
        **replica_count(cfg.replicas, cfg.autoscaling),
        "selector": {"matchLabels": selector_for(COMPONENT)},
        # A ReadWriteOnce volume cannot be mounted by the old and the new pod at once (so there
        # is one replica, validated); otherwise a new pod is Ready before an old one stops.
        "strategy": {"type": "Recreate"} if cfg.artifacts.single_writer else
        {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {
            "metadata": {
                "labels": labels_for(COMPONENT),
                # The migration Job's name changes when it is re-run: the pods follow it.
                "annotations": {MIGRATION_ANNOTATION: migration_job, **scraping.annotations(PORT)},
            },
            "spec": {
                "securityContext": pod_security_context(platform, MLFLOW_UID,
                                                        data_volume=cfg.artifacts.kind == "pvc"),
                **({"topologySpreadConstraints": spread_across_nodes(COMPONENT)} if cfg.scales_out else {}),
                "containers": [{
                    "name": COMPONENT,
                    "image": cfg.image,
                    "command": server_args(cfg, allowed_hosts, scraping.exposed),
                    "env": env,
                    "ports": [{"name": "http", "containerPort": PORT}],
                    "resources": cfg.resources.as_k8s(),
                    "securityContext": container_security_context(read_only_root=True),
                    "volumeMounts": mounts,
                    **server_probes(),
                }, *sign_in],
                "volumes": volumes,
            },
        },
    }


class MlflowServer(pulumi.ComponentResource):
    """MLflow tracking server wired to PostgreSQL, with artifacts on a PVC or S3.

    With basic auth, `auth_refs` locate the auth Secret and config of the server and the
    migration Job, and `credentials` (a Pulumi secret) holds the admin's for `pulumi up`."""

    internal_url: str
    service_name: str  # the Service an exposure routes to, on `port` (named `port_name`)
    port: int
    port_name: str
    deployment: k8s.apps.v1.Deployment
    rolled_out: list[pulumi.Resource]  # the Deployment and, after it, the writers resumed
    pod_revision: pulumi.Output[str]  # changes whenever the pods do (image, args, env, migration)
    service: k8s.core.v1.Service
    auth_refs: AuthRefs | None
    credentials: pulumi.Output[dict] | None

    def __init__(self, name: str, *, config: Mlflow, connection: PostgresConnection, namespace: NamespaceRef,
                 platform: str, external_host: str | None, gate: UpgradeGate, public_url: str | None = None,
                 kept_provider: k8s.Provider, scraping: Scraping = NOT_SCRAPED,
                 opts: pulumi.ResourceOptions | None = None):
        """`gate`: its stop Job runs before the migration (and waits for the database), its resume
        Job after the Deployment; `scraping`: whether it serves /metrics, and how a Prometheus finds it."""
        super().__init__("mlflow-tracing:index:MlflowServer", name, None, opts)
        meta = {"namespace": namespace.ref, "labels": labels_for(COMPONENT)}

        self.auth_refs, self.credentials = None, None
        if config.auth.enabled:
            mlflow_auth = MlflowAuth(
                f"{name}-auth", config=config.auth, database_uri=backend_store_uri(connection, config.auth.database),
                metadata=meta, opts=pulumi.ResourceOptions(parent=self),
            )
            self.auth_refs, self.credentials = mlflow_auth.refs, mlflow_auth.credentials

        artifacts_claim = None
        if config.artifacts.kind == "pvc":
            claim = k8s.core.v1.PersistentVolumeClaim(
                f"{name}-artifacts",
                metadata={**meta, "name": f"{SERVICE_NAME}-artifacts"},
                spec=claim_spec(config.artifacts.size, config.artifacts.access_mode, config.artifacts.storage_class),
                # Artifacts are user data: a `pulumi destroy` or a replacement keeps them,
                # and the next up takes the claim over again (components/kept.py).
                opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True, provider=kept_provider),
            )
            artifacts_claim = claim.metadata.name

        # Jobs are immutable: a change of the migration's pod (the image, the connection) replaces the
        # Job, which runs it again, after the gate; anything else leaves the completed Job as it is.
        migration = k8s.batch.v1.Job(
            f"{name}-migrate",
            metadata={**meta, "labels": labels_for(MIGRATION_COMPONENT), "annotations": RERUN_IF_FAILED},
            spec=migration_job_spec(config, connection, platform, self.auth_refs, gate.restore_from),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[gate.stopped], custom_timeouts=LONG_JOB_TIMEOUTS),
        )
        allowed_hosts = allowed_hosts_for(
            namespace=namespace.name, external_host=external_host, extra=config.extra_allowed_hosts,
            scraped=scraping.exposed,
        )
        spec = deployment_spec(config, connection, allowed_hosts, platform, migration.metadata.name,
                               artifacts_claim, self.auth_refs, scraping, public_url)
        self.deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata={**meta, "name": SERVICE_NAME, "annotations": gate.deployment_annotations},
            spec=spec,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[migration]),
        )
        self.pod_revision = template_revision(spec["template"])
        # pulumi-kubernetes can take a Recreate Deployment's update as done before the new pod exists
        # (upgrade_gate.rolled_out): this Job waits for the rollout, and what depends on it runs after.
        resumed = k8s.batch.v1.Job(
            f"{name}-resume-writers",
            metadata={**meta, "labels": labels_for(upgrade.COMPONENT), "annotations": RERUN_IF_FAILED},
            spec=resume_job_spec(image=config.image, plan=gate.plan, config_map=gate.scripts, platform=platform,
                                 uid=MLFLOW_UID, pod_revision=self.pod_revision),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.deployment], custom_timeouts=LONG_JOB_TIMEOUTS),
        )
        self.rolled_out = [self.deployment, resumed]
        keep_available(name, component=COMPONENT, scales_out=config.scales_out, autoscaling=config.autoscaling,
                       workload_kind="Deployment", workload_name=SERVICE_NAME, metadata=meta,
                       opts=pulumi.ResourceOptions(parent=self))
        self.service = k8s.core.v1.Service(
            f"{name}-service",
            metadata={**meta, "name": SERVICE_NAME},
            spec={
                "selector": selector_for(COMPONENT),
                "ports": [{"name": "http", "port": PORT, "targetPort": "http"},
                          *([{"name": sso.PROXY_PORT_NAME, "port": sso.PROXY_PORT, "targetPort": sso.PROXY_PORT_NAME}]
                            if config.auth.oidc else [])],
            },
            opts=pulumi.ResourceOptions(parent=self),
        )
        # people come in through the exposure: with oidc, to the sign-in proxy
        self.service_name = SERVICE_NAME
        self.port, self.port_name = (sso.PROXY_PORT, sso.PROXY_PORT_NAME) if config.auth.oidc else (PORT, "http")
        self.internal_url = f"http://{service_host(SERVICE_NAME, namespace.name)}:{PORT}"
        self.register_outputs({"internalUrl": self.internal_url})
