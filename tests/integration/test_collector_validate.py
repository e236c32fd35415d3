"""`otelcol validate` (every component's own validation, OTTL parsing included)
on the configs the program generates, run by the real collector at the
deployed version."""

import subprocess

import pytest
import yaml

from components.collector import BASIC_AUTH_EXTENSION, RoutedExperiment, collector_config, noise_filter
from components.config import NoiseRule, parse_stack_config
from tests.support.collector import TEST_CREDENTIALS, CollectorProcess, configmap_config, validate
from tests.support.program import BASIC_AUTH_MLFLOW, STACKS, run_program

# The declared defaults, valid without sign-in (only the collector section is read).
DEFAULTS = {"domain": "x.io", "mlflow": {"auth": {"kind": "none"}}}
CUSTOM_NOISE = [{"method": "GET", "route": "/v1/health"}, {"method": "HEAD", "route": "/"},
                {"method": "GET", "route": "/api/v1.0/status"}, {"method": "POST", "route": "/v1/probe"}]
# Further destinations of every kind: selected by scope and by service, gRPC with a CA and a token,
# basic auth with a header holding a `$`, a vendor's key header.
DESTINATIONS = [
    {"name": "phoenix", "endpoint": "http://phoenix.phoenix.svc.cluster.local:6006",
     "headers": {"x-project-name": "agents"}, "select": {"scopes": ["openinference.instrumentation.*"]},
     "readBack": "phoenix", "queueSize": "8Mi"},
    {"name": "vendor", "endpoint": "https://otlp.vendor.example:4317", "protocol": "grpc",
     "tls": {"caSecret": "vendor-ca"}, "auth": {"type": "bearer", "secret": "vendor-token"},
     "select": {"services": ["chat-api"], "scopes": ["my.tracer"]}, "queueSize": "4Mi"},
    {"name": "archive", "endpoint": "https://archive.example", "auth": {"type": "basic", "secret": "archive"},
     "headers": {"x-tenant": "price-$5"}, "queueSize": "4Mi"},
    {"name": "keyed", "endpoint": "https://otlp.keyed.example", "queueSize": "4Mi",
     "auth": {"type": "header", "header": "x-api-key", "secret": "keyed"}},
]


def experiments(count: int) -> list[dict]:
    """`count` experiments: the default, then one per pair of services."""
    return [{"name": "default-traces", "default": True}] + [
        {"name": f"team {i}", "services": [f"svc-{i}-api", f"svc-{i}-worker"]} for i in range(1, count)
    ]


def assert_valid(binary, config, tmp_path):
    done = validate(binary, config, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("stack", STACKS)
def test_the_config_of_every_stack_is_valid(collector_binary, tmp_path, stack):
    assert_valid(collector_binary, configmap_config(run_program(stack)), tmp_path)


@pytest.mark.parametrize("count", [1, 3, 20])
@pytest.mark.parametrize("persistent_queue", [False, True])
def test_configs_with_many_experiments_custom_noise_and_queues_are_valid(collector_binary, tmp_path, count,
                                                                        persistent_queue):
    run = run_program("dev", experiments=experiments(count),
                      collector={"noise": CUSTOM_NOISE, "persistentQueue": persistent_queue})
    config = configmap_config(run)
    assert len(config["exporters"]) == count
    assert ("file_storage" in config["extensions"]) is persistent_queue
    assert_valid(collector_binary, config, tmp_path)


@pytest.mark.parametrize("persistent_queue", [False, True])
def test_configs_with_basic_auth_are_valid(collector_binary, tmp_path, persistent_queue):
    routed = [RoutedExperiment("default-traces", "1", (), True)] + [
        RoutedExperiment(f"team {i}", str(i + 1), (f"svc-{i}",), False) for i in range(1, 3)]
    config = collector_config(experiments=routed, noise=tuple(NoiseRule(**r) for r in CUSTOM_NOISE),
                              version=parse_stack_config(DEFAULTS).collector.version,
                              mlflow_endpoint="http://mlflow.mlflow.svc:5000",
                              persistent_queue=persistent_queue, basic_auth=True)
    assert_valid(collector_binary, config, tmp_path)


def test_the_filter_form_of_older_collectors_is_valid_too(collector_binary, tmp_path):
    """`traces.span` (before 0.146) is still read by the deployed version: both forms parse."""
    config = configmap_config(run_program("dev"))
    config["processors"]["filter/noise"] = noise_filter((NoiseRule("GET", "/v1/models"),), "0.145.0")
    assert "traces" in config["processors"]["filter/noise"]
    assert_valid(collector_binary, config, tmp_path)


def test_the_collector_starts_on_the_generated_config_without_a_warning(collector_binary, tmp_path):
    """No deprecated key or alias (such as `otlphttp` from 0.144 on, or the v0.2.0 telemetry
    format), nothing the deployed version warns about at start-up, with every optional part on."""
    startable = [d for d in DESTINATIONS if "tls" not in d]  # no CA bundle mounted here
    startable.append({"name": "relay", "endpoint": "http://relay.other.svc:4317", "protocol": "grpc",
                      "queueSize": "4Mi"})
    run = run_program("dev", collector={"persistentQueue": True, "destinations": startable},
                      mlflow=BASIC_AUTH_MLFLOW, experiments=[{"name": "default-traces", "default": True},
                                                             {"name": "chat", "services": ["chat-api"]}])
    config = configmap_config(run)
    assert "file_storage" in config["extensions"] and BASIC_AUTH_EXTENSION in config["extensions"]
    assert "tail_sampling/to_phoenix" in config["processors"] and "otlp_grpc/to_relay" in config["exporters"]
    # each destination's credentials, as the kubelet resolves them from their Secrets
    credentials = {name: "throwaway" for name in destination_credentials_env_names(run)}
    collector = CollectorProcess(collector_binary, run, "http://127.0.0.1:9", tmp_path,
                                 env={**TEST_CREDENTIALS, **credentials})
    try:
        collector.start()
    finally:
        collector.stop()
    log = collector.log_text()
    assert "Everything is ready" in log and "Shutdown complete" in log, log
    levels = {line.split("\t")[1] for line in log.splitlines() if line.count("\t") >= 2}
    assert levels == {"info"}, log


def destination_credentials_env_names(run) -> list[str]:
    (workload,) = [r for r in run.kinds("StatefulSet") + run.kinds("Deployment") if r.k8s_name == "otel-collector"]
    (container,) = workload.outputs["spec"]["template"]["spec"]["containers"]
    return [e["name"] for e in container["env"] if e["name"].startswith("DESTINATION_")]


def test_the_build_holds_exactly_the_components_the_generated_config_uses(collector_binary):
    listed = subprocess.run([str(collector_binary), "components"], capture_output=True, text=True, timeout=30,
                            check=True)
    built = yaml.safe_load(listed.stdout)
    stack = parse_stack_config({**DEFAULTS, "collector": {"destinations": DESTINATIONS}})
    config = collector_config(experiments=[RoutedExperiment("only", "1", (), True)], noise=(),
                              version=stack.collector.version, mlflow_endpoint="http://mlflow:5000",
                              persistent_queue=True, basic_auth=True, destinations=stack.collector.destinations)
    for kind in ("receivers", "processors", "exporters", "connectors", "extensions"):
        used = {name.split("/")[0] for name in config[kind]}
        assert {c["name"] for c in built[kind]} == used, kind
    assert built["buildinfo"]["version"] == parse_stack_config(DEFAULTS).collector.version


@pytest.mark.parametrize("breakage, error", [
    ("bad filter condition", "processors::filter/noise: condition has invalid syntax"),
    ("bad routing condition", "statement has invalid syntax"),
    ("unknown pipeline", 'missing consumer: "traces/nowhere"'),
])
def test_a_broken_config_fails_validation(collector_binary, tmp_path, breakage, error):
    config = configmap_config(run_program("dev", experiments=experiments(3)))
    if breakage == "bad filter condition":
        config["processors"]["filter/noise"]["trace_conditions"].append('span.name == "unterminated')
    elif breakage == "bad routing condition":
        config["connectors"]["routing"]["table"][0]["condition"] = 'attributes["service.name"] = "x"'
    else:
        config["connectors"]["routing"]["default_pipelines"] = ["traces/nowhere"]
    done = validate(collector_binary, config, tmp_path)
    assert done.returncode != 0, f"{breakage}: validate passed"
    assert error in done.stdout + done.stderr


@pytest.mark.parametrize("persistent_queue", [False, True])
def test_configs_with_further_destinations_are_valid(collector_binary, tmp_path, persistent_queue):
    run = run_program("dev", experiments=experiments(3),
                      collector={"persistentQueue": persistent_queue, "destinations": DESTINATIONS})
    config = configmap_config(run)
    assert {"otlp_http/to_phoenix", "otlp_grpc/to_vendor", "otlp_http/to_archive"} <= set(config["exporters"])
    assert_valid(collector_binary, config, tmp_path)
