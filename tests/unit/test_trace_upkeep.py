"""The post-deploy check and the retention CronJob: their plans (pure functions) and
their place in the resource graph. What the script does is proven against the real
collector and MLflow in tests/integration/test_trace_jobs.py."""

from __future__ import annotations

import json

import pytest

from components.collector import RoutedExperiment, collector_config
from components.config import NoiseRule, TraceDestination, parse_stack_config
from components.trace_upkeep import UNROUTED_SERVICE, check_plan, probe_request, retention_plan
from tests.support.k8s import container, env_of
from tests.support.program import run_program, stack_values

NOISE = (NoiseRule("GET", "/v1/models"), NoiseRule("GET", "/health"))
EXPERIMENTS = [
    RoutedExperiment("chat", "11", ("chat-api", "chat-worker"), False),
    RoutedExperiment("unrouted", "13", (), False),
    RoutedExperiment("llamastack-traces", "10", (), True),
]


def plan_for(experiments=EXPERIMENTS, noise=NOISE) -> dict:
    return check_plan(experiments=experiments, noise=noise, namespace="obs", timeout_seconds=90,
                      credentials_secret="admin-x1", destinations=(), collector_version="0.152.0",
                      collector_metrics_url="http://otel-collector.obs.svc:8888/metrics")


def test_the_check_sends_one_trace_per_routed_experiment_with_a_service_that_reaches_it():
    plan = plan_for()
    assert plan["experiments"] == [
        {"name": "chat", "id": "11", "service": "chat-api"},
        # The default experiment receives every service no experiment lists.
        {"name": "llamastack-traces", "id": "10", "service": UNROUTED_SERVICE},
    ]  # "unrouted" has no services and is not the default: no traffic can reach it
    assert plan["namespace"] == "obs" and plan["timeoutSeconds"] == 90 and plan["credentialsSecret"] == "admin-x1"


def test_the_default_experiments_service_is_one_no_experiment_lists():
    taken = [RoutedExperiment("odd", "5", (UNROUTED_SERVICE, f"{UNROUTED_SERVICE}-1"), False),
             RoutedExperiment("main", "6", (), True)]
    plan = plan_for(taken)
    assert plan["experiments"][1] == {"name": "main", "id": "6", "service": f"{UNROUTED_SERVICE}-2"}
    assert plan["noise"]["service"] == f"{UNROUTED_SERVICE}-2"


def test_a_default_experiment_with_services_is_reached_through_its_first_service():
    plan = plan_for([RoutedExperiment("main", "6", ("llama-stack", "rag"), True)])
    assert plan["experiments"] == [{"name": "main", "id": "6", "service": "llama-stack"}]


def test_the_probe_request_is_the_first_noise_rule_or_else_a_kubelet_probe():
    assert probe_request(NOISE) == {"name": "GET /v1/models",
                                    "attributes": {"http.method": "GET", "http.target": "/v1/models"}}
    assert probe_request(()) == {"name": "GET /healthz", "attributes": {"user_agent.original": "kube-probe/1.32"}}
    # Both are what the generated filter drops (proven on the real collector in the integration suite).
    conditions = collector_config(experiments=EXPERIMENTS, noise=(), version="0.152.0", mlflow_endpoint="http://m",
                                  persistent_queue=False)["processors"]["filter/noise"]["trace_conditions"]
    assert any("kube-probe/" in condition for condition in conditions)


def test_retention_covers_only_the_experiments_with_a_limit():
    plan = retention_plan(EXPERIMENTS, {"chat": 7, "unrouted": None, "llamastack-traces": 30}, 250)
    assert plan == {"batchSize": 250, "experiments": [{"name": "chat", "id": "11", "days": 7},
                                                      {"name": "llamastack-traces", "id": "10", "days": 30}]}


def test_an_experiments_own_limit_overrides_the_default_and_none_keeps_everything():
    base = {"domain": "example.com", "mlflow": {"auth": {"kind": "none"}}}
    experiments = [{"name": "a", "default": True}, {"name": "b", "services": ["x"], "retentionDays": 7}]
    keep = parse_stack_config({**base, "experiments": experiments})
    assert [e.retention_days for e in keep.experiments] == [None, 7]
    limited = parse_stack_config({**base, "experiments": experiments, "retention": {"days": 30}})
    assert [e.retention_days for e in limited.experiments] == [30, 7]


# --- the resource graph ---------------------------------------------------------------------------


def check_job(run):
    (job,) = [j for j in run.kinds("Job") if j.name == "trace-check"]
    return job


def test_the_check_runs_after_the_collector_and_mlflow_rolled_out(dev):
    job = check_job(dev)
    for name in ("mlflow", "otel-collector"):
        assert dev.get("Deployment", name).urn in job.dependencies
    queued = run_program("dev", collector={"persistentQueue": True})  # the collector is a StatefulSet then
    assert queued.get("StatefulSet", "otel-collector").urn in check_job(queued).dependencies
    spec = job.outputs["spec"]
    assert spec["backoffLimit"] == 0  # one verdict, not retries of it
    no_auth = {"domain": "d.example", "mlflow": {"auth": {"kind": "none"}}}
    assert spec["activeDeadlineSeconds"] > parse_stack_config(no_auth).verify.timeout_seconds
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (verify,) = pod["containers"]
    assert verify["terminationMessagePolicy"] == "FallbackToLogsOnError"  # the failure line reaches `pulumi up`
    assert verify["image"] == dev.get("Deployment", "mlflow").outputs["spec"]["template"]["spec"]["containers"][0][
        "image"]


def test_the_checks_plan_carries_the_ids_the_collector_exports_to(dev):
    env = env_of(check_job(dev).outputs["spec"]["template"]["spec"]["containers"][0])
    plan = json.loads(env["TRACE_JOB_PLAN"]["value"])
    (config_map,) = [c for c in dev.kinds("ConfigMap") if "collector.yaml" in c.outputs.get("data", {})]
    exported = config_map.outputs["data"]["collector.yaml"]
    for experiment in plan["experiments"]:
        assert f"x-mlflow-experiment-id: '{experiment['id']}'" in exported
    assert env["COLLECTOR_URL"]["value"] == dev.outputs["otlpHttpEndpoint"]
    assert env["MLFLOW_URL"]["value"] == dev.outputs["mlflowInternalUrl"]


def revision(run) -> str:
    return check_job(run).outputs["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


def test_the_check_reruns_when_the_collector_or_mlflow_pods_change_and_only_then(dev):
    assert revision(run_program("dev")) == revision(dev)
    more = run_program("dev", experiments=[{"name": "llamastack-traces", "default": True},
                                           {"name": "chat", "services": ["chat-api"]}])
    mlflow = stack_values("dev")["mlflow"]
    image = run_program("dev", mlflow={**mlflow, "image": "ghcr.io/mlflow/mlflow:v3.17.1-full"})
    workers = run_program("dev", mlflow={**mlflow, "workers": 3})
    collector = run_program("dev", collector={"image": "otel/opentelemetry-collector-contrib:0.152.1"})
    revisions = [revision(run) for run in (dev, more, image, workers, collector)]
    assert len(set(revisions)) == len(revisions)
    # What the pods do not see leaves the check alone.
    assert revision(run_program("dev", retention={"days": 30})) == revision(dev)


def test_the_check_and_retention_sign_in_as_their_own_users_and_no_secret_is_in_their_commands():
    run = run_program("dev", mlflow={"auth": {"kind": "basic"}, "apiUrl": "http://localhost:5000"},
                      retention={"days": 7})
    verify = check_job(run).outputs["spec"]["template"]["spec"]["containers"][0]
    cronjob = run.get("CronJob", "trace-retention")
    retention = cronjob.outputs["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    collector = container(run.get("Deployment", "otel-collector"), "otel-collector")
    secrets = {s.k8s_name: s.outputs["stringData"] for s in run.kinds("Secret")}
    users = {}
    for who, pod in (("trace-check", verify), ("trace-retention", retention), ("otel-collector", collector)):
        refs = {env_of(pod)[name]["valueFrom"]["secretKeyRef"]["name"]
                for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
        (secret_name,) = refs
        users[who] = secrets[secret_name]["username"]
        assert users[who].startswith(f"{who}-")
        assert secrets[secret_name]["password"] not in json.dumps(pod)
    assert len(set(users.values())) == 3


def test_verify_disabled_and_no_retention_create_neither_job_nor_script(dev):
    off = run_program("dev", verify={"enabled": False}, monitoring={"canary": {"enabled": False}})
    assert [j.name for j in off.kinds("Job")] == [j.name for j in dev.kinds("Job") if j.name != "trace-check"]
    assert not [c for c in off.kinds("CronJob") if c.k8s_name in ("trace-retention", "trace-canary")]
    assert not [c for c in off.kinds("ConfigMap") if "trace_jobs.py" in c.outputs.get("data", {})]
    # No retention by default: nothing is deleted unless asked.
    assert sorted(c.k8s_name for c in dev.kinds("CronJob")) == ["postgres-backup", "trace-canary"]


def test_retention_is_a_cronjob_that_never_overlaps_itself():
    run = run_program("dev", retention={"days": 14, "schedule": "5 1 * * *", "batchSize": 200},
                      experiments=[{"name": "llamastack-traces", "default": True},
                                   {"name": "chat", "services": ["chat-api"], "retentionDays": 3}])
    spec = run.get("CronJob", "trace-retention").outputs["spec"]
    assert spec["schedule"] == "5 1 * * *" and spec["concurrencyPolicy"] == "Forbid"
    (retention,) = spec["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert retention["command"][-1] == "retention"
    plan = json.loads(env_of(retention)["TRACE_JOB_PLAN"]["value"])
    assert plan["batchSize"] == 200
    assert {e["name"]: e["days"] for e in plan["experiments"]} == {"llamastack-traces": 14, "chat": 3}


@pytest.mark.parametrize(("values", "problem"), [
    ({"verify": {"timeoutSeconds": 5}}, "verify.timeoutSeconds: must be a whole number >= 30"),
    ({"verify": {"enable": True}}, "verify.enable"),
    ({"retention": {"days": 0}}, "retention.days: must be a whole number >= 1"),
    ({"retention": {"schedule": "daily"}}, "retention.schedule: 'daily' is not a cron schedule"),
    ({"retention": {"schedule": ""}}, "retention.schedule: '' is not a cron schedule"),
    ({"retention": {"batchSize": 100000}}, "retention.batchSize: must be at most 5000"),
    ({"experiments": [{"name": "a", "default": True, "retentionDays": -1}]},
     "experiments[0].retentionDays: must be a whole number >= 1"),
])
def test_bad_upkeep_settings_name_the_key(values, problem):
    with pytest.raises(ValueError) as caught:
        parse_stack_config({"domain": "example.com", **values})
    assert any(line.startswith(problem) for line in caught.value.problems), caught.value.problems


def test_the_check_sends_each_destination_a_trace_its_selection_takes_and_knows_where_mlflow_stores_it():
    every = TraceDestination(name="archive", endpoint="https://archive.example", protocol="grpc", headers={},
                             ca=None, auth=None, auth_secret=None, services=(), scopes=(), queue_size="16Mi",
                             read_back="none")
    phoenix = TraceDestination(name="phoenix", endpoint="http://phoenix.px.svc:6006", protocol="http",
                               headers={"X-Project-Name": "agents"}, ca=None, auth="bearer",
                               auth_secret="phoenix-key", services=(), scopes=("openinference.*",),
                               queue_size="16Mi", read_back="phoenix")
    by_service = TraceDestination(name="chat-only", endpoint="https://c.example", protocol="http", headers={},
                                  ca=None, auth=None, auth_secret=None, services=("chat-worker",), scopes=(),
                                  queue_size="16Mi", read_back="none")
    plan = check_plan(experiments=EXPERIMENTS, noise=NOISE, namespace="obs", timeout_seconds=90,
                      credentials_secret=None, destinations=(every, phoenix, by_service),
                      collector_version="0.152.0", collector_metrics_url="http://otel-collector.obs.svc:8888/metrics")
    archive, read_back, chat_only = plan["destinations"]
    assert archive == {"name": "archive", "exporter": "otlp_grpc/to_archive", "service": UNROUTED_SERVICE,
                       "scope": "mlflow-tracing", "experimentId": "10", "readBack": "none",
                       "url": "https://archive.example", "project": "default", "selectsAll": True,
                       "tokenEnv": None}
    assert (read_back["scope"], read_back["project"], read_back["tokenEnv"], read_back["exporter"]) == \
        ("openinference.mlflow-tracing-check", "agents", "DESTINATION_PHOENIX_TOKEN", "otlp_http/to_phoenix")
    assert (chat_only["service"], chat_only["experimentId"]) == ("chat-worker", "11")  # routed to chat
    assert plan["collectorMetricsUrl"] == "http://otel-collector.obs.svc:8888/metrics"


def test_the_check_job_holds_the_token_of_a_destination_it_reads_back_and_no_other():
    run = run_program("dev", collector={"destinations": [
        {"name": "phoenix", "endpoint": "http://phoenix.px.svc:6006", "readBack": "phoenix",
         "auth": {"type": "bearer", "secret": "phoenix-key"}},
        {"name": "vendor", "endpoint": "https://otlp.vendor.example", "auth": {"type": "bearer", "secret": "v"},
         "queueSize": "8Mi"}]})
    (job,) = [j for j in run.kinds("Job") if j.name == "trace-check"]
    env = env_of(container(job, "verify"))
    assert env["DESTINATION_PHOENIX_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "phoenix-key", "key": "token"}}
    assert "DESTINATION_VENDOR_TOKEN" not in env
    plan = json.loads(env["TRACE_JOB_PLAN"]["value"])
    assert [d["name"] for d in plan["destinations"]] == ["phoenix", "vendor"]
