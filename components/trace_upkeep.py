"""The stack's upkeep of its traces: a post-deploy check that proves traces flow,
and a retention CronJob that keeps the trace store bounded.

Both run `components/trace_jobs.py` (shipped in a ConfigMap) in the MLflow image,
inside the namespace, so they cross the same Services, DNS, NetworkPolicies and
authentication as real clients. The check is a Job whose pod template carries
the revisions of the collector's config and of MLflow's pods: when either
changes, the Job is replaced and runs again, after the collector has rolled,
and a failure fails `pulumi up` with the line the script printed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s

from components import auth, collector, trace_jobs
from components.collector import (
    RoutedExperiment,
    destination_credentials_env,
    destination_env,
    destination_exporter_id,
)
from components.config import Canary, Collector, NoiseRule, Retention, TraceDestination, Verify
from components.kube import (
    CHECKSUM_ANNOTATION,
    NamespaceRef,
    container_security_context,
    content_checksum,
    labels_for,
    pod_security_context,
)
from components.mlflow import MLFLOW_UID

COMPONENT = "trace-check"  # the post-deploy check's Job
# Pulumi names the Job after its resource, plus a random suffix: the monitoring's rule matches the prefix.
CHECK_JOB_PREFIX = f"{COMPONENT}-"
CANARY_COMPONENT = "trace-canary"  # the check's code on a schedule
CANARY_CRONJOB_NAME = CANARY_COMPONENT  # named: the canary's alert reads the CronJob's status by name
RETENTION_COMPONENT = "trace-retention"  # the retention CronJob
# Named, not generated: the upgrade gate's Role names the CronJobs it may suspend.
RETENTION_CRONJOB_NAME = RETENTION_COMPONENT
SCRIPTS_COMPONENT = "trace-jobs"  # the ConfigMap with the script both run
SCRIPTS_DIR = "/opt/mlflow-tracing"
SCRIPT_FILE = "trace_jobs.py"
SCRIPT = Path(trace_jobs.__file__).read_text()
# What the check's synthetic trace carries when it must reach the default experiment,
# which receives every service no experiment lists.
UNROUTED_SERVICE = "mlflow-tracing-check"
# The kubelet's probes, for the probe request when no noise rule is configured.
KUBE_PROBE_AGENT = "kube-probe/1.32"
JOB_RESOURCES = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}}
DEADLINE_MARGIN_SECONDS = 60  # pod start and clean-up on top of the check's own timeout
RETENTION_DEADLINE_SECONDS = 3600


def check_service(experiment: RoutedExperiment, experiments: list[RoutedExperiment]) -> str | None:
    """The service.name that routes a trace to `experiment`: its first service; for the default
    experiment without services, one no experiment lists; None when nothing is routed to it."""
    if experiment.services:
        return experiment.services[0]
    if experiment.default:
        listed = {service for e in experiments for service in e.services}
        candidates = (UNROUTED_SERVICE, *(f"{UNROUTED_SERVICE}-{n}" for n in range(1, len(listed) + 1)))
        return next(c for c in candidates if c not in listed)
    return None


def probe_request(rules: tuple[NoiseRule, ...]) -> dict:
    """The probe-noise span the check sends: the first noise rule's request, else a kubelet probe."""
    if rules:
        rule = rules[0]
        return {"name": f"{rule.method} {rule.route}",
                "attributes": {"http.method": rule.method, "http.target": rule.route}}
    return {"name": "GET /healthz", "attributes": {"user_agent.original": KUBE_PROBE_AGENT}}


def experiment_of(service: str, experiments: list[RoutedExperiment]) -> RoutedExperiment:
    """Where the collector's routing table sends a service's traces."""
    return next((e for e in experiments if service in e.services), next(e for e in experiments if e.default))


def check_scope(destination: TraceDestination) -> str:
    """The instrumentation scope of the check's trace for a destination: one its selection takes."""
    if not destination.scopes:
        return "mlflow-tracing"
    first = destination.scopes[0]
    return f"{first[:-1]}mlflow-tracing-check" if first.endswith("*") else first


def destination_check(destination: TraceDestination, experiments: list[RoutedExperiment], version: str) -> dict:
    """How the check proves a further destination: a trace its selection takes (also stored in MLflow,
    in the experiment its service routes to), read back from Phoenix or counted as sent by its
    exporter."""
    default = next(e for e in experiments if e.default)
    service = destination.services[0] if destination.services else check_service(default, experiments)
    assert service is not None  # the default experiment always has one
    return {
        "name": destination.name,
        "exporter": destination_exporter_id(destination, version),
        "service": service,
        "scope": check_scope(destination),
        "experimentId": experiment_of(service, experiments).experiment_id,
        "readBack": destination.read_back,
        "url": destination.endpoint,
        "project": destination.header("x-project-name") or "default",
        "selectsAll": destination.selects_all,
        "tokenEnv": destination_env(destination, "TOKEN") if destination.auth == "bearer" else None,
    }


def check_plan(*, experiments: list[RoutedExperiment], noise: tuple[NoiseRule, ...], namespace: str,
               timeout_seconds: int, credentials_secret: str | None,
               destinations: tuple[TraceDestination, ...], collector_version: str,
               collector_metrics_url: str) -> dict:
    """What `trace_jobs.py verify` checks: each routed experiment with the service that reaches
    it, one trace per further destination, and one probe request sent as the default experiment's
    traffic."""
    routed = [{"name": e.name, "id": e.experiment_id, "service": service}
              for e in experiments if (service := check_service(e, experiments)) is not None]
    default = next(e for e in experiments if e.default)
    return {
        "namespace": namespace,
        "timeoutSeconds": timeout_seconds,
        # The noise travels in the same request as the traces; once they are stored, a
        # noise span that was let through has left its batch too.
        "noiseGraceSeconds": collector.BATCH_TIMEOUT_SECONDS + 1,
        "credentialsSecret": credentials_secret,
        "experiments": routed,
        "noise": {**probe_request(noise), "service": check_service(default, experiments)},
        "destinations": [destination_check(d, experiments, collector_version) for d in destinations],
        "collectorMetricsUrl": collector_metrics_url,
    }


def retention_plan(experiments: list[RoutedExperiment], limits: dict[str, int | None], batch_size: int) -> dict:
    """What `trace_jobs.py retention` deletes: the experiments with a limit, in days."""
    return {
        "batchSize": batch_size,
        "experiments": [{"name": e.name, "id": e.experiment_id, "days": limits[e.name]}
                        for e in experiments if limits.get(e.name) is not None],
    }


@dataclass(frozen=True)
class JobTarget:
    """Where the jobs run and whom they talk to."""

    image: str  # MLflow's: its Python runs the script
    platform: str
    mlflow_url: str


@dataclass(frozen=True)
class CheckedCollector:
    """The collector the check sends through: its config (noise rules, further destinations) and
    its Service's addresses."""

    config: Collector
    http_url: str
    metrics_url: str


@dataclass(frozen=True)
class JobCredentials:
    """The Secret of each job's own MLflow user (None without auth): the check and retention
    each hold only the rights their job needs."""

    check: pulumi.Input[str] | None = None
    retention: pulumi.Input[str] | None = None


def job_pod_spec(target: JobTarget, *, command: str, env: list[dict], config_map: pulumi.Input[str],
                 credentials_secret: pulumi.Input[str] | None) -> dict:
    """One run of `trace_jobs.py <command>`, signed in as its own MLflow user; on failure its
    last line becomes the termination message."""
    return {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,  # they talk to MLflow and the collector, never to the API
        "securityContext": pod_security_context(target.platform, MLFLOW_UID),
        "containers": [{
            "name": command,
            "image": target.image,
            "command": ["python", f"{SCRIPTS_DIR}/{SCRIPT_FILE}", command],
            "env": [
                {"name": "MLFLOW_URL", "value": target.mlflow_url},
                *env,
                {"name": "HOME", "value": "/tmp"},
                {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
                *auth.client_env(credentials_secret),
            ],
            "resources": JOB_RESOURCES,
            "securityContext": container_security_context(read_only_root=True),
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "volumeMounts": [{"name": "scripts", "mountPath": SCRIPTS_DIR, "readOnly": True},
                             {"name": "tmp", "mountPath": "/tmp"}],
        }],
        "volumes": [{"name": "scripts", "configMap": {"name": config_map}}, {"name": "tmp", "emptyDir": {}}],
    }


def read_back_env(destinations: tuple[TraceDestination, ...]) -> tuple[dict, ...]:
    """The token of each destination the check reads back with one (Phoenix with auth), from its Secret."""
    return tuple(destination_credentials_env(tuple(d for d in destinations
                                                   if d.read_back != "none" and d.auth == "bearer")))


def check_job_spec(target: JobTarget, *, plan: pulumi.Input[str], collector_url: str, config_map: pulumi.Input[str],
                   revision: pulumi.Input[str] | None, timeout_seconds: int,
                   credentials_secret: pulumi.Input[str] | None, extra_env: tuple[dict, ...] = (),
                   component: str = COMPONENT) -> dict:
    """One attempt: the check waits for every hop itself, so a retry would only repeat its verdict.
    The post-deploy Job carries the `revision` it checks; the canary's runs carry none."""
    annotations = {"annotations": {CHECKSUM_ANNOTATION: revision}} if revision is not None else {}
    return {
        "backoffLimit": 0,
        "activeDeadlineSeconds": timeout_seconds + DEADLINE_MARGIN_SECONDS,
        "template": {
            "metadata": {"labels": labels_for(component), **annotations},
            "spec": job_pod_spec(target, command="verify", config_map=config_map,
                                 credentials_secret=credentials_secret, env=[
                {"name": "COLLECTOR_URL", "value": collector_url},
                {"name": "TRACE_JOB_PLAN", "value": plan},
                *extra_env,
            ]),
        },
    }


def retention_cronjob_spec(target: JobTarget, *, plan: pulumi.Input[str], schedule: str,
                           config_map: pulumi.Input[str], credentials_secret: pulumi.Input[str] | None) -> dict:
    """Never two runs at once; a missed run is made up within the hour, then waits for the next."""
    return {
        "schedule": schedule,
        "concurrencyPolicy": "Forbid",
        "startingDeadlineSeconds": RETENTION_DEADLINE_SECONDS,
        "successfulJobsHistoryLimit": 1,
        "failedJobsHistoryLimit": 3,
        "jobTemplate": {
            "metadata": {"labels": labels_for(RETENTION_COMPONENT)},
            "spec": {
                "backoffLimit": 2,
                "activeDeadlineSeconds": RETENTION_DEADLINE_SECONDS,
                "template": {
                    "metadata": {"labels": labels_for(RETENTION_COMPONENT)},
                    "spec": job_pod_spec(target, command="retention", config_map=config_map,
                                         credentials_secret=credentials_secret,
                                         env=[{"name": "TRACE_JOB_PLAN", "value": plan}]),
                },
            },
        },
    }


def canary_cronjob_spec(job: dict, schedule: str) -> dict:
    """The check's Job on a schedule: never two runs at once, a missed run skipped (the next comes
    soon), the last failed runs kept for their logs."""
    return {
        "schedule": schedule,
        "concurrencyPolicy": "Forbid",
        "startingDeadlineSeconds": 300,
        "successfulJobsHistoryLimit": 1,
        "failedJobsHistoryLimit": 3,
        "jobTemplate": {"metadata": {"labels": labels_for(CANARY_COMPONENT)}, "spec": job},
    }


class TraceUpkeep(pulumi.ComponentResource):
    """The post-deploy check (a Job, when `verify.enabled`), the canary (the check on a schedule,
    when `canary.enabled`) and the retention CronJob (when an experiment has a limit), with the
    script they run in a ConfigMap."""

    def __init__(self, name: str, *, verify: Verify, canary: Canary, retention: Retention,
                 experiments: pulumi.Output[list[RoutedExperiment]], retention_days: dict[str, int | None],
                 collector: CheckedCollector, target: JobTarget, credentials: JobCredentials,
                 namespace: NamespaceRef,
                 revisions: list[pulumi.Output[str]], after: list[pulumi.Resource],
                 opts: pulumi.ResourceOptions | None = None):
        """`revisions`: what the check re-runs on (the collector's and MLflow's pods, the former
        carrying its config's checksum);
        `after`: what must be rolled out before it runs."""
        super().__init__("mlflow-tracing:index:TraceUpkeep", name, None, opts)
        has_retention = any(days is not None for days in retention_days.values())
        if not verify.enabled and not canary.enabled and not has_retention:
            self.register_outputs({})
            return
        child = pulumi.ResourceOptions(parent=self)
        scripts = k8s.core.v1.ConfigMap(
            f"{name}-scripts",
            metadata={"namespace": namespace.ref, "labels": labels_for(SCRIPTS_COMPONENT)},
            data={SCRIPT_FILE: SCRIPT},
            opts=child,
        )
        plan = pulumi.Output.all(experiments, credentials.check).apply(lambda args: json.dumps(check_plan(
            experiments=args[0], noise=collector.config.noise, namespace=namespace.name,
            timeout_seconds=verify.timeout_seconds, credentials_secret=args[1],
            destinations=collector.config.destinations, collector_version=collector.config.version,
            collector_metrics_url=collector.metrics_url,
        )))

        def check_job(revision: pulumi.Input[str] | None, component: str) -> dict:
            return check_job_spec(target, plan=plan, collector_url=collector.http_url,
                                  config_map=scripts.metadata.name, revision=revision,
                                  timeout_seconds=verify.timeout_seconds, credentials_secret=credentials.check,
                                  extra_env=read_back_env(collector.config.destinations), component=component)

        if verify.enabled:
            revision = pulumi.Output.all(*revisions, SCRIPT).apply(lambda parts: content_checksum(*parts))
            k8s.batch.v1.Job(
                COMPONENT,
                metadata={"namespace": namespace.ref, "labels": labels_for(COMPONENT)},
                spec=check_job(revision, COMPONENT),
                # named after its component, which the monitoring's rule matches; before, after its parent
                opts=pulumi.ResourceOptions(parent=self, depends_on=after,
                                            aliases=[pulumi.Alias(name=f"{name}-check")]),
            )
        if canary.enabled:
            k8s.batch.v1.CronJob(
                f"{name}-canary",
                metadata={"namespace": namespace.ref, "name": CANARY_CRONJOB_NAME,
                          "labels": labels_for(CANARY_COMPONENT)},
                spec=canary_cronjob_spec(check_job(None, CANARY_COMPONENT), canary.schedule),
                opts=pulumi.ResourceOptions(parent=self, depends_on=after),
            )
        if has_retention:
            plan = experiments.apply(lambda routed: json.dumps(retention_plan(routed, retention_days,
                                                                              retention.batch_size)))
            k8s.batch.v1.CronJob(
                f"{name}-retention",
                metadata={"namespace": namespace.ref, "name": RETENTION_CRONJOB_NAME,
                          "labels": labels_for(RETENTION_COMPONENT)},
                spec=retention_cronjob_spec(target, plan=plan, schedule=retention.schedule,
                                            config_map=scripts.metadata.name,
                                            credentials_secret=credentials.retention),
                opts=child,
            )
        self.register_outputs({})
