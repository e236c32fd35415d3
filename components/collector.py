"""The OpenTelemetry Collector: OTLP in, probe noise out, one MLflow experiment
per route.

`collector_config` is a pure function of the experiments (with their resolved
IDs), the noise rules and the collector version; the component only renders
it into a ConfigMap and rolls the pods (of a Deployment, or with
`persistentQueue` of a StatefulSet) through a checksum annotation whenever it
changes (e.g. a new experiment ID).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
import yaml

from components import auth
from components.auth import PASSWORD_ENV, USERNAME_ENV
from components.availability import keep_available
from components.config import Collector, Experiment, NoiseRule, TraceDestination, experiment_slug, quantity_bytes
from components.kube import (
    CHECKSUM_ANNOTATION,
    NOT_SCRAPED,
    NamespaceRef,
    Scraping,
    claim_spec,
    container_security_context,
    content_checksum,
    labels_for,
    pod_security_context,
    replica_count,
    selector_for,
    service_host,
    spread_across_nodes,
    template_revision,
)

COMPONENT = "otel-collector"  # the label of the collector's pods and objects
SERVICE_NAME = COMPONENT  # the Service and the workload (Deployment or StatefulSet) are named after it
GRPC_PORT = 4317
HTTP_PORT = 4318
HEALTH_PORT = 13133
METRICS_PORT = 8888
# A failed export is retried for 10 minutes, at most 5 s apart (7.5 s with the backoff's jitter), so a
# batch held for a destination that is back is sent within seconds, and a pod that is stopping
# (which drops what it still holds in retry backoff) has had its chance: see DRAIN_SECONDS.
RETRY = {"enabled": True, "initial_interval": "1s", "max_interval": "5s", "max_elapsed_time": "10m"}
# A stopping pod of the Deployment (a roll, a scale-in, a drain) is out of the Service at once but
# gets SIGTERM only this much later (a preStop sleep): at shutdown the collector drops what it holds
# in retry backoff, so it first has two retry intervals to send that to a destination that is back
# (MLflow's own roll, in the same `up`). A persistent queue keeps such spans on its claim instead.
DRAIN_SECONDS = 20
# SIGKILL only after the drain and the shutdown's flush of the queue (an export times out after 30 s).
STOP_GRACE_SECONDS = DRAIN_SECONDS + 40
# A stopping pod drains as its own spec says: one made by a release before the preStop hook (stop 29
# and earlier) has none, so a roll also keeps each old pod 10 s past its successor's readiness (more
# than a retry interval, MLflow having rolled out first).
ROLL_GRACE_SECONDS = 10
COLLECTOR_UID = 10001  # the user of the contrib image
CONFIG_DIR = "/conf"
CONFIG_FILE = "collector.yaml"
QUEUE_DIR = "/var/lib/otelcol/queue"
QUEUE_VOLUME = "queue"  # the claim template: pod N's claim is queue-otel-collector-N
EXPERIMENT_HEADER = "x-mlflow-experiment-id"
BASIC_AUTH_EXTENSION = "basicauth/mlflow"
DESTINATIONS_DIR = "/etc/otelcol/destinations"  # each destination's CA bundle, in a directory of its own
# Whole-trace selection (collector.destinations[].select), per destination. A trace's spans are held
# until a span matches (then all of them go, and later ones follow through the sampled cache) or until
# SELECTION_WAIT_SECONDS after its first span (then none go, and later ones are dropped through the
# not-sampled cache): a destination stores whole traces or nothing of them, never orphans.
SELECTION_WAIT_SECONDS = 30
# Traces held at once. Beyond, the oldest is discarded undecided (counted in
# otelcol_processor_tail_sampling_sampling_trace_dropped_too_early), and a later matching span of it
# goes alone: whole traces are guaranteed up to SELECTION_MAX_TRACES / SELECTION_WAIT_SECONDS new
# traces per second (~660).
SELECTION_MAX_TRACES = 20000
SELECTION_DECISION_CACHE = 100000  # trace IDs remembered per decision: five times the held ones
# Go runtime soft limit, as a share of the container limit: GC works harder
# before the kernel's OOM killer steps in.
GOMEMLIMIT_SHARE = 0.8
# The longest a span waits in the batch processor, where fewer than BATCH_SIZE spans arrive (light
# traffic, or what the noise filter leaves of a batch). docs/performance.md: 0.5 s against 2 s took
# the noise mix's p95 from 1.6 to 1.2 s with the knee unchanged (437 vs 440 spans/s); with MLflow's
# credential cache a small request no longer pays a password hash.
BATCH_TIMEOUT_SECONDS = 0.5
# Spans per export request (docs/performance.md, measured by benchmarks/ingest.py): MLflow stores a
# request in one transaction, so its spans show only once the whole request is stored, in a time
# proportional to its size. Requests of 512-1024 spans gave a p95 of 7.5-8.4 s at half the knee, of
# 256 spans 3.9-4.0 s with the knee still 1.4-1.7x one direct client; 64/128 cut the knee (326 vs 385
# spans/s with the credential cache) for no better latency.
BATCH_SIZE = 128
BATCH_MAX_SIZE = 256


@dataclass(frozen=True)
class RoutedExperiment:
    """An experiment as the collector needs it: its MLflow ID and its services."""

    name: str
    experiment_id: str
    services: tuple[str, ...]
    default: bool

    @property
    def slug(self) -> str:
        return experiment_slug(self.name)


def routed_experiments(experiments: tuple[Experiment, ...], ids: dict[str, str]) -> list[RoutedExperiment]:
    return [RoutedExperiment(e.name, str(ids[e.name]), e.services, e.default) for e in experiments]


def _parse_version(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:3])


def otlp_http_exporter_type(version: str) -> str:
    """`otlp_http` from 0.144 on (`otlphttp` is then a deprecated alias); before, only `otlphttp`."""
    return "otlp_http" if _parse_version(version) >= (0, 144) else "otlphttp"


def otlp_exporter_type(protocol: str, version: str) -> str:
    """The exporter of OTLP over `protocol`: for gRPC `otlp_grpc` in the same releases that renamed
    `otlphttp` (`otlp` is then a deprecated alias), before only `otlp`."""
    if protocol == "http":
        return otlp_http_exporter_type(version)
    return "otlp_grpc" if _parse_version(version) >= (0, 144) else "otlp"


def uses_trace_conditions(version: str) -> bool:
    """The filter processor has `trace_conditions` from 0.146 on, and there documents
    `traces.span` as deprecated (to be removed); before, only `traces.span` exists."""
    return _parse_version(version) >= (0, 146)


def ottl_string(value: str) -> str:
    """An OTTL string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def noise_conditions(rules: tuple[NoiseRule, ...], span_path: str = "") -> list[str]:
    """Span conditions that drop each noise request's spans; `span_path` is the
    prefix of span paths (`span.` in `trace_conditions`, none in `traces.span`).

    The filter judges each span alone, so the root span's ASGI children
    (`"<root> http send"` / `"http receive"`, which carry no URL attributes)
    must be matched by name too, or they are stored as orphans. Old
    (`http.target`, `http.method`) and new (`url.path`,
    `http.request.method`) HTTP conventions are both covered, and kubelet
    probes are recognised by their user agent."""
    name, attributes = f"{span_path}name", f"{span_path}attributes"
    conditions = []
    for rule in rules:
        route = rule.route.replace(".", "\\.")
        conditions += [
            f"IsMatch({name}, {ottl_string(f'^{rule.method} {route}( http (send|receive))?$')})",
            f"{attributes}[\"http.method\"] == {ottl_string(rule.method)} and "
            f"IsMatch({attributes}[\"http.target\"], {ottl_string(f'^{route}([?].*)?$')})",
            f"{attributes}[\"http.request.method\"] == {ottl_string(rule.method)} and "
            f"{attributes}[\"url.path\"] == {ottl_string(rule.route)}",
        ]
    conditions += [
        f'IsMatch({attributes}["user_agent.original"], "^kube-probe/")',
        f'IsMatch({attributes}["http.user_agent"], "^kube-probe/")',
    ]
    return conditions


def noise_filter(rules: tuple[NoiseRule, ...], version: str) -> dict:
    """The filter processor's settings, in the form the collector version reads.
    `error_mode: ignore`: a condition that fails on a span keeps the span."""
    if uses_trace_conditions(version):
        return {"error_mode": "ignore", "trace_conditions": noise_conditions(rules, span_path="span.")}
    return {"error_mode": "ignore", "traces": {"span": noise_conditions(rules)}}


def _service_condition(services: tuple[str, ...]) -> str:
    return " or ".join(f'attributes["service.name"] == {ottl_string(s)}' for s in services)


def destination_id(destination: TraceDestination) -> str:
    """The name part of a destination's components (`traces/to_phoenix`, ...): the `_` keeps it apart
    from every experiment's pipeline, whose slug has none."""
    return f"to_{destination.name}"


def destination_exporter_id(destination: TraceDestination, version: str) -> str:
    """The component ID of a destination's exporter (`otlp_http/to_phoenix`)."""
    return f"{otlp_exporter_type(destination.protocol, version)}/{destination_id(destination)}"


def destination_env(destination: TraceDestination, what: str) -> str:
    """The variable that holds one of a destination's credentials (`TOKEN`, `USERNAME`, `PASSWORD`, `VALUE`)."""
    return f"DESTINATION_{destination.name.upper().replace('-', '_')}_{what}"


def selection_conditions(destination: TraceDestination) -> list[str]:
    """Span conditions, any of which selects the span's whole trace: a listed service, or a listed
    instrumentation scope (one ending in `*` as a prefix)."""
    conditions = [f'resource.attributes["service.name"] == {ottl_string(s)}' for s in destination.services]
    for scope in destination.scopes:
        if scope.endswith("*"):
            conditions.append(f"IsMatch(instrumentation_scope.name, {ottl_string('^' + re.escape(scope[:-1]))})")
        else:
            conditions.append(f"instrumentation_scope.name == {ottl_string(scope)}")
    return conditions


def whole_trace_selection(destination: TraceDestination) -> dict:
    """The tail_sampling processor that passes the destination whole traces or nothing of them.
    `span-ingest` decides on each arriving batch, so a selected trace leaves as soon as a matching span
    arrives (with the spans held before it) instead of after the whole wait."""
    return {
        "sampling_strategy": "span-ingest",
        "decision_wait": f"{SELECTION_WAIT_SECONDS}s",
        "num_traces": SELECTION_MAX_TRACES,
        "decision_cache": {"sampled_cache_size": SELECTION_DECISION_CACHE,
                           "non_sampled_cache_size": SELECTION_DECISION_CACHE},
        "policies": [{
            "name": "selected",
            "type": "ottl_condition",
            "ottl_condition": {"error_mode": "ignore", "span": selection_conditions(destination)},
        }],
    }


def _escaped(value: str) -> str:
    """A literal value in the collector's config: `$` doubled, so a header cannot expand `${env:...}`
    (the collector's own credentials) into what it sends a destination."""
    return value.replace("$", "$$")


def destination_exporter(destination: TraceDestination) -> dict:
    """The exporter of one further destination: its own bounded queue and retries, so a destination
    that is down, slow or refusing fills and then drops from its own queue (counted in
    otelcol_exporter_enqueue_failed_spans) and never holds up another pipeline."""
    headers = {name: _escaped(value) for name, value in destination.headers.items()}
    if destination.auth == "bearer":
        headers["Authorization"] = f"Bearer ${{env:{destination_env(destination, 'TOKEN')}}}"
    elif destination.auth == "header" and destination.auth_header:
        headers[destination.auth_header] = f"${{env:{destination_env(destination, 'VALUE')}}}"
    exporter: dict = {"endpoint": destination.endpoint}
    if destination.protocol == "grpc":
        exporter["endpoint"] = destination.endpoint.split("://", 1)[1]
        exporter["tls"] = {"insecure": not destination.uses_tls}
    if destination.ca is not None:
        exporter["tls"] = {**exporter.get("tls", {}), "ca_file": f"{DESTINATIONS_DIR}/{destination.name}/ca.crt"}
    exporter.update({
        "headers": headers,
        "compression": "gzip",
        "timeout": "30s",
        "retry_on_failure": dict(RETRY),
        # Bounded in bytes of serialized spans; never block_on_overflow: a full queue of one destination
        # would then stall the shared intake, and every destination's clients with it.
        "sending_queue": {"enabled": True, "num_consumers": 2, "sizer": "bytes",
                          "queue_size": int(quantity_bytes(destination.queue_size))},
    })
    if destination.protocol == "http":
        exporter["encoding"] = "proto"  # Phoenix takes OTLP/HTTP in protobuf only (JSON gets 415)
    if destination.auth == "basic":
        exporter["auth"] = {"authenticator": f"basicauth/{destination_id(destination)}"}
    return exporter


def collector_config(*, experiments: list[RoutedExperiment], noise: tuple[NoiseRule, ...], version: str,
                     mlflow_endpoint: str, persistent_queue: bool, basic_auth: bool = False,
                     destinations: tuple[TraceDestination, ...] = ()) -> dict:
    """The collector's whole configuration.

    intake: otlp -> memory_limiter (first) -> filter/noise -> routing
    one pipeline per experiment: routing -> batch (last) -> its exporter,
    whose `x-mlflow-experiment-id` header names the experiment. Traffic of
    unlisted services goes to the default experiment. With `basic_auth`, every
    exporter signs in to MLflow with the credentials in $MLFLOW_TRACKING_USERNAME
    and $MLFLOW_TRACKING_PASSWORD (resolved by the collector at start-up).

    one pipeline per further destination: routing (a copy of everything, first row of the table)
    -> [tail_sampling: whole traces it selects] -> batch -> its exporter. The batch and tail_sampling
    processors hand data on through a channel and never return an export's error, so no destination's
    state reaches the routing connector, the intake or another destination."""
    exporter_type = otlp_http_exporter_type(version)
    queue: dict = {"enabled": True, "num_consumers": 4, "queue_size": 5000}
    if persistent_queue:
        queue["storage"] = "file_storage"

    exporters, pipelines = {}, {}
    for experiment in experiments:
        exporter = f"{exporter_type}/{experiment.slug}"
        exporters[exporter] = {
            "endpoint": mlflow_endpoint,
            "headers": {EXPERIMENT_HEADER: experiment.experiment_id},
            "compression": "gzip",
            "encoding": "proto",
            "timeout": "30s",
            "retry_on_failure": dict(RETRY),
            "sending_queue": dict(queue),  # a dict of its own: no YAML anchor shared between exporters
        }
        if basic_auth:
            exporters[exporter]["auth"] = {"authenticator": BASIC_AUTH_EXTENSION}
        pipelines[f"traces/{experiment.slug}"] = {
            "receivers": ["routing"], "processors": ["batch"], "exporters": [exporter],
        }

    copies = []
    for destination in destinations:
        pipeline = f"traces/{destination_id(destination)}"
        exporter = destination_exporter_id(destination, version)
        exporters[exporter] = destination_exporter(destination)
        selection = [] if destination.selects_all else [f"tail_sampling/{destination_id(destination)}"]
        pipelines[pipeline] = {"receivers": ["routing"], "processors": [*selection, "batch"], "exporters": [exporter]}
        copies.append(pipeline)

    default = next(e for e in experiments if e.default)
    routes = [
        {"context": "resource", "condition": _service_condition(e.services), "pipelines": [f"traces/{e.slug}"]}
        for e in experiments if e.services
    ]
    if copies:  # first, and a copy: the experiments' rows and the default still see every resource
        routes.insert(0, {"context": "resource", "condition": "true", "action": "copy", "pipelines": copies})
    connectors = {
        "routing": {
            "default_pipelines": [f"traces/{default.slug}"],
            "error_mode": "ignore",
            # The connector refuses an empty table: route the default's own services
            # (or none) explicitly, so the table always has a row.
            "table": routes or [{
                "context": "resource",
                "condition": 'attributes["service.name"] == ""',
                "pipelines": [f"traces/{default.slug}"],
            }],
        },
    }
    extensions: dict[str, dict] = {"health_check": {"endpoint": f"0.0.0.0:{HEALTH_PORT}"}}
    if persistent_queue:
        extensions["file_storage"] = {"directory": QUEUE_DIR, "create_directory": True}
    if basic_auth:
        extensions[BASIC_AUTH_EXTENSION] = {
            "client_auth": {"username": f"${{env:{USERNAME_ENV}}}", "password": f"${{env:{PASSWORD_ENV}}}"},
        }
    for destination in destinations:
        if destination.auth == "basic":
            extensions[f"basicauth/{destination_id(destination)}"] = {"client_auth": {
                "username": f"${{env:{destination_env(destination, 'USERNAME')}}}",
                "password": f"${{env:{destination_env(destination, 'PASSWORD')}}}",
            }}
    selections = {f"tail_sampling/{destination_id(d)}": whole_trace_selection(d)
                  for d in destinations if not d.selects_all}

    return {
        "receivers": {
            "otlp": {
                "protocols": {
                    # Since 0.110 the default is localhost: bind all interfaces explicitly.
                    "grpc": {"endpoint": f"0.0.0.0:{GRPC_PORT}"},
                    "http": {"endpoint": f"0.0.0.0:{HTTP_PORT}"},
                },
            },
        },
        "processors": {
            "memory_limiter": {"check_interval": "1s", "limit_percentage": 80, "spike_limit_percentage": 20},
            "filter/noise": noise_filter(noise, version),
            "batch": {"send_batch_size": BATCH_SIZE, "send_batch_max_size": BATCH_MAX_SIZE,
                      "timeout": f"{int(BATCH_TIMEOUT_SECONDS * 1000)}ms"},
            **selections,
        },
        "connectors": connectors,
        "exporters": exporters,
        "extensions": extensions,
        "service": {
            "extensions": list(extensions),
            "telemetry": {
                "metrics": {
                    # detailed: export failures carry error_type (401 Unauthenticated, 404 Unimplemented, ...)
                    # and each export's HTTP status is counted (http_client_request_duration): the alerts read them
                    "level": "detailed",
                    "readers": [{"pull": {"exporter": {"prometheus": {"host": "0.0.0.0", "port": METRICS_PORT}}}}],
                },
            },
            "pipelines": {
                "traces/intake": {
                    "receivers": ["otlp"], "processors": ["memory_limiter", "filter/noise"], "exporters": ["routing"],
                },
                **pipelines,
            },
        },
    }


class _PlainDumper(yaml.SafeDumper):
    """Writes a value shared by several keys in full each time, never as a
    `&id001` anchor and `*id001` aliases: readers of the ConfigMap (people,
    diffs, the collector's own confmap) see every exporter's settings."""

    def ignore_aliases(self, data) -> bool:
        return True


def render_config(config: dict) -> str:
    return yaml.dump(config, Dumper=_PlainDumper, sort_keys=False, width=1000)


def gomemlimit(memory_limit: str) -> str:
    return f"{int(quantity_bytes(memory_limit) * GOMEMLIMIT_SHARE / 2**20)}MiB"


def destination_credentials_env(destinations: tuple[TraceDestination, ...]) -> list[dict]:
    """Each destination's credentials, from its Secret into the variables its exporter reads: never
    in the ConfigMap or the container's args."""
    keys = {"bearer": (("TOKEN", "token"),), "basic": (("USERNAME", "username"), ("PASSWORD", "password")),
            "header": (("VALUE", "value"),)}
    return [{"name": destination_env(d, what), "valueFrom": {"secretKeyRef": {"name": d.auth_secret, "key": key}}}
            for d in destinations if d.auth for what, key in keys[d.auth]]


def destination_ca_volumes(destinations: tuple[TraceDestination, ...]) -> tuple[list[dict], list[dict]]:
    """(volumes, mounts): each destination's CA bundle at DESTINATIONS_DIR/<name>/ca.crt."""
    volumes, mounts = [], []
    for d in destinations:
        if d.ca is None:
            continue
        items = [{"key": d.ca.key, "path": "ca.crt"}]
        source = {"secret": {"secretName": d.ca.name, "items": items}} if d.ca.kind == "Secret" \
            else {"configMap": {"name": d.ca.name, "items": items}}
        volumes.append({"name": f"ca-{d.name}", **source})
        mounts.append({"name": f"ca-{d.name}", "mountPath": f"{DESTINATIONS_DIR}/{d.name}", "readOnly": True})
    return volumes, mounts


def pod_template(cfg: Collector, platform: str, config_map: pulumi.Input[str],
                 checksum: pulumi.Input[str], credentials_secret: pulumi.Input[str] | None,
                 scraping: Scraping = NOT_SCRAPED) -> dict:
    """The collector's pod; with `persistentQueue` it mounts the claim its StatefulSet gives each pod."""
    ca_volumes, ca_mounts = destination_ca_volumes(cfg.destinations)
    volumes = [{"name": "config", "configMap": {"name": config_map}}, *ca_volumes]
    mounts = [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}, *ca_mounts]
    if cfg.persistent_queue:
        mounts.append({"name": QUEUE_VOLUME, "mountPath": QUEUE_DIR})
    health = {"httpGet": {"path": "/", "port": "health"}}
    # A Deployment's pod drains before SIGTERM: see DRAIN_SECONDS (a `sleep` hook needs Kubernetes 1.30).
    drain = {} if cfg.persistent_queue else {"lifecycle": {"preStop": {"sleep": {"seconds": DRAIN_SECONDS}}}}
    grace = {} if cfg.persistent_queue else {"terminationGracePeriodSeconds": STOP_GRACE_SECONDS}
    return {
        "metadata": {
            "labels": labels_for(COMPONENT),
            "annotations": {CHECKSUM_ANNOTATION: checksum, **scraping.annotations(METRICS_PORT)},
        },
        "spec": {
            "securityContext": pod_security_context(platform, COLLECTOR_UID, data_volume=cfg.persistent_queue),
            **({"topologySpreadConstraints": spread_across_nodes(COMPONENT)} if cfg.scales_out else {}),
            **grace,
            "containers": [{
                "name": COMPONENT,
                "image": cfg.image,
                "args": [f"--config={CONFIG_DIR}/{CONFIG_FILE}"],
                "env": [
                    {"name": "GOMEMLIMIT", "value": gomemlimit(cfg.resources.limits["memory"])},
                    *auth.client_env(credentials_secret),  # what the basicauth extension signs in with
                    *destination_credentials_env(cfg.destinations),
                ],
                "ports": [
                    {"name": "otlp-grpc", "containerPort": GRPC_PORT},
                    {"name": "otlp-http", "containerPort": HTTP_PORT},
                    {"name": "health", "containerPort": HEALTH_PORT},
                    {"name": "metrics", "containerPort": METRICS_PORT},
                ],
                "resources": cfg.resources.as_k8s(),
                "securityContext": container_security_context(read_only_root=True),
                "readinessProbe": {**health, "periodSeconds": 10},
                "livenessProbe": {**health, "periodSeconds": 20, "failureThreshold": 5},
                **drain,
                "volumeMounts": mounts,
            }],
            "volumes": volumes,
        },
    }


def workload_kind(cfg: Collector) -> str:
    """A Deployment, or with `persistentQueue` a StatefulSet: a volume per pod, kept across restarts."""
    return "StatefulSet" if cfg.persistent_queue else "Deployment"


def deployment_spec(cfg: Collector, template: dict) -> dict:
    return {
        **replica_count(cfg.replicas, cfg.autoscaling),
        "minReadySeconds": ROLL_GRACE_SECONDS,
        "selector": {"matchLabels": selector_for(COMPONENT)},
        # A new pod is Ready before an old one stops: the intake keeps its capacity during a roll.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": template,
    }


def statefulset_spec(cfg: Collector, template: dict) -> dict:
    """Pod N always mounts claim queue-otel-collector-N, so a restarted or rolled pod sends what its
    predecessor queued. A StatefulSet rolls one pod at a time (stop, then start): with several
    replicas the others take the traffic meanwhile."""
    return {
        **replica_count(cfg.replicas, cfg.autoscaling),
        "serviceName": SERVICE_NAME,
        "selector": {"matchLabels": selector_for(COMPONENT)},
        # The pods share nothing: start and stop them together rather than one by one.
        "podManagementPolicy": "Parallel",
        # A scaled-in pod's claim stays, with its queue, for the day its ordinal comes back;
        # deleting the StatefulSet (persistentQueue turned off, destroy) keeps them too.
        "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
        "template": template,
        "volumeClaimTemplates": [{
            "metadata": {"name": QUEUE_VOLUME, "labels": labels_for(COMPONENT)},
            "spec": claim_spec(cfg.queue_volume_size, "ReadWriteOnce", cfg.queue_volume_storage_class),
        }],
    }


class TraceCollector(pulumi.ComponentResource):
    """Collector Deployment (StatefulSet with `persistentQueue`) + Service; its config follows
    the experiment IDs."""

    grpc_endpoint: str
    http_endpoint: str
    metrics_url: str  # the collector's own metrics, through its Service
    experiments: pulumi.Output[list[RoutedExperiment]]  # with their MLflow IDs, as the config routes them
    pod_revision: pulumi.Output[str]  # changes whenever the pods do (the config's checksum is in them)
    workload: pulumi.CustomResource  # the Deployment, or the StatefulSet of a persistent queue

    def __init__(self, name: str, *, config: Collector, experiments: tuple[Experiment, ...],
                 experiment_ids: pulumi.Output[dict[str, str]], mlflow_endpoint: str, namespace: NamespaceRef,
                 platform: str, credentials_secret: pulumi.Input[str] | None,
                 mlflow_rolled_out: list[pulumi.Resource], scraping: Scraping = NOT_SCRAPED,
                 opts: pulumi.ResourceOptions | None = None):
        """`credentials_secret`: the collector's MLflow user (None without auth); a new Secret
        (a rotated password) rolls the pods; `mlflow_rolled_out`: what the collector's pods roll
        after, so an old pod never stops, dropping what it holds, while MLflow is down (a
        `Recreate` roll in the same `up`); `scraping`: how a Prometheus finds its metrics."""
        super().__init__("mlflow-tracing:index:TraceCollector", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        labels = labels_for(COMPONENT)
        self.experiments = experiment_ids.apply(lambda ids: routed_experiments(experiments, ids))
        config_text = self.experiments.apply(lambda routed: render_config(collector_config(
            experiments=routed, noise=config.noise, version=config.version,
            mlflow_endpoint=mlflow_endpoint, persistent_queue=config.persistent_queue,
            basic_auth=credentials_secret is not None, destinations=config.destinations,
        )))
        config_map = k8s.core.v1.ConfigMap(
            f"{name}-config",
            metadata={"namespace": namespace.ref, "labels": labels},
            data={CONFIG_FILE: config_text},
            opts=child,
        )
        metadata = {"name": SERVICE_NAME, "namespace": namespace.ref, "labels": labels}
        template = pod_template(config, platform, config_map.metadata.name, config_text.apply(content_checksum),
                                credentials_secret, scraping)
        self.pod_revision = template_revision(template)
        kind = workload_kind(config)
        after_mlflow = pulumi.ResourceOptions(parent=self, depends_on=mlflow_rolled_out)
        if kind == "StatefulSet":
            self.workload: pulumi.CustomResource = k8s.apps.v1.StatefulSet(
                f"{name}-statefulset", metadata=metadata, spec=statefulset_spec(config, template), opts=after_mlflow)
        else:
            self.workload = k8s.apps.v1.Deployment(
                f"{name}-deployment", metadata=metadata, spec=deployment_spec(config, template), opts=after_mlflow)
        keep_available(name, component=COMPONENT, scales_out=config.scales_out, autoscaling=config.autoscaling,
                       workload_kind=kind, workload_name=SERVICE_NAME,
                       metadata={"namespace": namespace.ref, "labels": labels}, opts=child)
        k8s.core.v1.Service(
            f"{name}-service",
            metadata={"name": SERVICE_NAME, "namespace": namespace.ref, "labels": labels},
            spec={
                "selector": selector_for(COMPONENT),
                "ports": [
                    {"name": "otlp-grpc", "port": GRPC_PORT, "targetPort": "otlp-grpc", "appProtocol": "grpc"},
                    {"name": "otlp-http", "port": HTTP_PORT, "targetPort": "otlp-http", "appProtocol": "http"},
                    # its own counts (exported, failed, queued): the post-deploy check reads them
                    {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "appProtocol": "http"},
                ],
            },
            opts=child,
        )
        host = service_host(SERVICE_NAME, namespace.name)
        self.grpc_endpoint = f"http://{host}:{GRPC_PORT}"
        self.http_endpoint = f"http://{host}:{HTTP_PORT}"
        self.metrics_url = f"http://{host}:{METRICS_PORT}/metrics"
        self.register_outputs({"grpcEndpoint": self.grpc_endpoint, "httpEndpoint": self.http_endpoint})
