"""The generated collector config (a pure function) and its Deployment, whose
pod template rolls when the config changes."""

import hashlib
import re

import pytest
import yaml

from components.collector import (
    DESTINATIONS_DIR,
    RoutedExperiment,
    collector_config,
    destination_env,
    noise_conditions,
    otlp_http_exporter_type,
    render_config,
)
from components.config import NoiseRule, ObjectKey, TraceDestination, parse_stack_config
from tests.support.k8s import container, env_of, pod_spec
from tests.support.program import DYNAMIC_TYPE, PROJECT_DIR, run_program

ENDPOINT = "http://mlflow.obs.svc:5000"
MODELS = NoiseRule("GET", "/v1/models")


def config_for(experiments, noise=(MODELS,), version="0.152.0", persistent_queue=False, basic_auth=False,
               destinations=()):
    return collector_config(experiments=experiments, noise=noise, version=version, mlflow_endpoint=ENDPOINT,
                            persistent_queue=persistent_queue, basic_auth=basic_auth,
                            destinations=tuple(destinations))


def destination(name="phoenix", endpoint="http://phoenix.phoenix.svc:6006", protocol="http", headers=None,
                ca=None, auth=None, services=(), scopes=()):
    return TraceDestination(name=name, endpoint=endpoint, protocol=protocol, headers=headers or {}, ca=ca,
                            auth=auth, auth_secret=f"{name}-credentials" if auth else None, services=services,
                            scopes=scopes, queue_size="16Mi", read_back="none")


THREE = [
    RoutedExperiment("chat", "11", ("chat-api", "chat-worker"), False),
    RoutedExperiment("Agents Prod", "12", ("agent",), False),
    RoutedExperiment("llamastack-traces", "10", (), True),
]


def ottl_regexes(conditions: list[str], attribute: str) -> list[re.Pattern]:
    """The regex literals of `IsMatch(<attribute>, "...")` conditions, unescaped."""
    found = []
    for condition in conditions:
        match = re.match(rf'^IsMatch\({re.escape(attribute)}, "(.*)"\)$', condition)
        if match:
            found.append(re.compile(match.group(1).replace("\\\\", "\\")))
    return found


def test_noise_rules_drop_the_root_span_and_its_asgi_children_by_name():
    patterns = ottl_regexes(noise_conditions((MODELS, NoiseRule("GET", "/health"))), "name")
    dropped = ["GET /v1/models", "GET /v1/models http send", "GET /v1/models http receive", "GET /health",
               "GET /health http send"]
    kept = ["POST /v1/chat/completions", "GET /v1/models/llama", "POST /v1/models", "GET /v1/modelsX",
            "GET /healthz", "chat.completions http send"]
    for name in dropped:
        assert any(p.search(name) for p in patterns), name
    for name in kept:
        assert not any(p.search(name) for p in patterns), name


def test_noise_rules_cover_old_and_new_http_conventions_and_kube_probes():
    conditions = noise_conditions((NoiseRule("GET", "/v1.0/models"),))
    old = next(c for c in conditions if '"http.method"' in c)
    assert old.startswith('attributes["http.method"] == "GET" and IsMatch(attributes["http.target"], ')
    (target,) = ottl_regexes([old.split(" and ")[1]], 'attributes["http.target"]')
    assert target.search("/v1.0/models") and target.search("/v1.0/models?limit=1")
    assert not target.search("/v1x0/models") and not target.search("/v1.0/models/x")
    assert 'attributes["http.request.method"] == "GET" and attributes["url.path"] == "/v1.0/models"' in conditions
    (agent,) = ottl_regexes(conditions, 'attributes["user_agent.original"]')
    (legacy_agent,) = ottl_regexes(conditions, 'attributes["http.user_agent"]')
    assert agent.search("kube-probe/1.30") and legacy_agent.search("kube-probe/1.29")
    assert not agent.search("python-requests/2.32")


def test_pipeline_order_memory_limiter_first_batch_last():
    config = config_for(THREE)
    pipelines = config["service"]["pipelines"]
    intake = pipelines["traces/intake"]
    assert intake["receivers"] == ["otlp"] and intake["exporters"] == ["routing"]
    assert intake["processors"] == ["memory_limiter", "filter/noise"]
    assert config["processors"]["filter/noise"]["error_mode"] == "ignore"
    for name, pipeline in pipelines.items():
        if name != "traces/intake":
            assert pipeline["receivers"] == ["routing"] and pipeline["processors"][-1] == "batch"


def test_receivers_bind_all_interfaces_and_health_check_is_on():
    config = config_for(THREE)
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols == {"grpc": {"endpoint": "0.0.0.0:4317"}, "http": {"endpoint": "0.0.0.0:4318"}}
    assert config["extensions"]["health_check"] == {"endpoint": "0.0.0.0:13133"}
    assert "health_check" in config["service"]["extensions"]


def test_each_experiment_gets_an_exporter_with_its_id_and_services_are_routed_to_it():
    config = config_for(THREE)
    routing = config["connectors"]["routing"]
    assert routing["default_pipelines"] == ["traces/llamastack-traces"]
    table = {tuple(row["pipelines"]): row["condition"] for row in routing["table"]}
    assert table == {
        ("traces/chat",): 'attributes["service.name"] == "chat-api" or attributes["service.name"] == "chat-worker"',
        ("traces/agents-prod",): 'attributes["service.name"] == "agent"',
    }
    assert all(row["context"] == "resource" for row in routing["table"])
    pipelines = config["service"]["pipelines"]
    for experiment in THREE:
        (exporter,) = pipelines[f"traces/{experiment.slug}"]["exporters"]
        settings = config["exporters"][exporter]
        assert exporter.startswith("otlp_http/")
        assert settings["headers"] == {"x-mlflow-experiment-id": experiment.experiment_id}
        assert settings["endpoint"] == ENDPOINT
        assert settings["encoding"] == "proto" and settings["compression"] == "gzip"
        assert settings["retry_on_failure"]["enabled"] and settings["sending_queue"]["enabled"]


def test_a_single_default_experiment_still_gets_a_valid_routing_table():
    config = config_for([RoutedExperiment("only", "7", (), True)])
    routing = config["connectors"]["routing"]
    assert routing["default_pipelines"] == ["traces/only"] and len(routing["table"]) == 1


@pytest.mark.parametrize("version, expected", [("0.143.0", "otlphttp"), ("0.144.0", "otlp_http"),
                                               ("0.152.0", "otlp_http"), ("1.2.0", "otlp_http")])
def test_exporter_type_follows_the_collector_version(version, expected):
    assert otlp_http_exporter_type(version) == expected
    config = config_for(THREE, version=version)
    assert all(name.split("/")[0] == expected for name in config["exporters"])


@pytest.mark.parametrize("version", ["0.146.0", "0.152.0", "1.0.0"])
def test_filter_uses_trace_conditions_with_span_paths_from_0_146(version):
    noise = noise_conditions((MODELS,))
    settings = config_for(THREE, version=version)["processors"]["filter/noise"]
    assert set(settings) == {"error_mode", "trace_conditions"} and settings["error_mode"] == "ignore"
    # The same conditions, every span path prefixed with the `span.` context.
    assert settings["trace_conditions"] == [c.replace("IsMatch(name", "IsMatch(span.name")
                                            .replace("attributes[", "span.attributes[") for c in noise]
    assert 'IsMatch(span.name, "^GET /v1/models( http (send|receive))?$")' in settings["trace_conditions"]


def test_filter_uses_traces_span_before_0_146():
    settings = config_for(THREE, version="0.145.0")["processors"]["filter/noise"]
    assert settings == {"error_mode": "ignore", "traces": {"span": noise_conditions((MODELS,))}}


def test_basic_auth_signs_every_exporter_in_with_the_credentials_from_the_env():
    plain, signed = config_for(THREE), config_for(THREE, basic_auth=True)
    assert not any("basicauth" in name for name in plain["extensions"])
    assert all("auth" not in exporter for exporter in plain["exporters"].values())
    assert signed["extensions"]["basicauth/mlflow"] == {"client_auth": {
        "username": "${env:MLFLOW_TRACKING_USERNAME}", "password": "${env:MLFLOW_TRACKING_PASSWORD}"}}
    assert "basicauth/mlflow" in signed["service"]["extensions"]
    assert len(signed["exporters"]) == len(THREE)
    assert all(e["auth"] == {"authenticator": "basicauth/mlflow"} for e in signed["exporters"].values())


def test_persistent_queue_uses_file_storage():
    plain, persistent = config_for(THREE), config_for(THREE, persistent_queue=True)
    assert "file_storage" not in plain["extensions"]
    assert persistent["extensions"]["file_storage"]["directory"] == "/var/lib/otelcol/queue"
    assert "file_storage" in persistent["service"]["extensions"]
    assert all(e["sending_queue"]["storage"] == "file_storage" for e in persistent["exporters"].values())


@pytest.mark.parametrize("persistent_queue, basic_auth", [(False, False), (True, True)])
def test_the_rendered_config_has_no_yaml_anchors_and_parses_back_to_itself(persistent_queue, basic_auth):
    config = config_for(THREE, persistent_queue=persistent_queue, basic_auth=basic_auth)
    text = render_config(config)
    events = list(yaml.parse(text))
    assert not [e for e in events if isinstance(e, yaml.AliasEvent) or getattr(e, "anchor", None)]
    assert not re.search(r"[&*]id\d+", text)
    assert yaml.safe_load(text) == config


def deployed_config(run):
    (config_map,) = [c for c in run.kinds("ConfigMap") if c.name == "collector-config"]
    return config_map, yaml.safe_load(config_map.outputs["data"]["collector.yaml"])


def workload(run):
    """The collector's Deployment, or its StatefulSet with persistentQueue: exactly one of them."""
    (found,) = [r for r in run.kinds("Deployment") + run.kinds("StatefulSet") if r.k8s_name == "otel-collector"]
    return found


def checksum(run):
    return workload(run).outputs["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


def test_configmap_holds_exactly_the_ids_the_experiment_resources_output(dev):
    config_map, config = deployed_config(dev)
    (experiment,) = dev.of_type(DYNAMIC_TYPE)
    headers = [e["headers"]["x-mlflow-experiment-id"] for e in config["exporters"].values()]
    assert headers == [experiment.outputs["experiment_id"]] == list(dev.outputs["experimentIds"].values())
    text = config_map.outputs["data"]["collector.yaml"]
    assert checksum(dev) == hashlib.sha256(text.encode() + b"\0").hexdigest()


def test_remapping_a_service_changes_the_config_and_rolls_the_pods(dev):
    experiments = [{"name": "llamastack-traces", "default": True}, {"name": "chat", "services": ["chat-api"]}]
    remapped = run_program("dev", experiments=experiments)
    _, config = deployed_config(remapped)
    assert config["connectors"]["routing"]["table"][0]["condition"] == 'attributes["service.name"] == "chat-api"'
    assert checksum(remapped) != checksum(dev)
    moved = run_program("dev", experiments=[{"name": "llamastack-traces", "default": True, "services": ["chat-api"]},
                                            {"name": "chat"}])
    assert checksum(moved) != checksum(remapped)


def test_deployment_mounts_the_config_and_probes_the_health_check(dev):
    deployment = dev.get("Deployment", "otel-collector")
    (config_map, _) = deployed_config(dev)
    collector = container(deployment, "otel-collector")
    assert collector["args"] == ["--config=/conf/collector.yaml"]
    volume = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == "config")
    assert volume["configMap"]["name"] == config_map.k8s_name
    for probe in ("readinessProbe", "livenessProbe"):
        assert collector[probe]["httpGet"]["port"] == "health"
    assert {"name": "health", "containerPort": 13133} in collector["ports"]
    assert env_of(collector)["GOMEMLIMIT"]["value"] == "409MiB"  # 80% of 512Mi
    ports = {p["name"]: p["port"] for p in dev.get("Service", "otel-collector").outputs["spec"]["ports"]}
    assert ports == {"otlp-grpc": 4317, "otlp-http": 4318, "metrics": 8888}  # metrics: for the check (NetworkPolicy)
    assert dev.outputs["otlpGrpcEndpoint"] == "http://otel-collector.mlflow.svc:4317"
    assert dev.outputs["otlpHttpEndpoint"] == "http://otel-collector.mlflow.svc:4318"


def test_exporters_reach_mlflow_by_a_host_it_allows(dev):
    _, config = deployed_config(dev)
    server = container(dev.get("Deployment", "mlflow"), "mlflow")
    allowed = server["command"][server["command"].index("--allowed-hosts") + 1].split(",")
    for exporter in config["exporters"].values():
        host = exporter["endpoint"].split("//", 1)[1]
        assert host in allowed


def test_the_collector_build_manifest_is_the_deployed_collector_version():
    manifest = yaml.safe_load((PROJECT_DIR / "collector" / "builder-config.yaml").read_text())
    default = parse_stack_config({"domain": "x.io", "mlflow": {"auth": {"kind": "none"}}}).collector
    assert manifest["dist"]["version"] == default.version
    assert manifest["dist"]["output_path"] == f".cache/otelcol/{default.version}"
    # Every component module at the release; only the confmap providers follow the stable v1 line.
    components = [m["gomod"] for kind in ("receivers", "processors", "connectors", "exporters", "extensions")
                  for m in manifest[kind]]
    assert components and all(mod.endswith(f" v{default.version}") for mod in components), components


PERSISTENT = {"persistentQueue": True, "queueVolume": {"size": "3Gi", "storageClass": "fast"}}


@pytest.fixture(scope="module")
def persistent():
    return run_program("dev", collector=PERSISTENT)


def test_the_collector_rolls_a_new_pod_in_before_an_old_one_stops(dev):
    spec = dev.get("Deployment", "otel-collector").outputs["spec"]
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    assert spec["replicas"] == 1 and [s.k8s_name for s in dev.kinds("StatefulSet")] == ["postgres"]


def test_persistent_queue_gives_each_pod_a_claim_of_its_own_in_a_statefulset(persistent):
    assert not [d for d in persistent.kinds("Deployment") if d.k8s_name == "otel-collector"]
    statefulset = persistent.get("StatefulSet", "otel-collector")
    spec = statefulset.outputs["spec"]
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"] == {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "3Gi"}},
                             "storageClassName": "fast"}
    collector = container(statefulset, "otel-collector")
    (mount,) = [m for m in collector["volumeMounts"] if m["name"] == claim["metadata"]["name"]]
    # The claim is mounted where the config's file_storage keeps the queue; no pod volume shadows it.
    _, config = deployed_config(persistent)
    assert mount["mountPath"] == config["extensions"]["file_storage"]["directory"]
    assert claim["metadata"]["name"] not in {v["name"] for v in pod_spec(statefulset)["volumes"]}
    # A scaled-in pod's queue, and every queue when the StatefulSet goes, stay on their claims.
    assert spec["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["serviceName"] == persistent.get("Service", "otel-collector").k8s_name


def test_persistent_queue_keeps_the_config_roll(persistent):
    config_map, _ = deployed_config(persistent)
    text = config_map.outputs["data"]["collector.yaml"]
    assert checksum(persistent) == hashlib.sha256(text.encode() + b"\0").hexdigest()
    moved = run_program("dev", collector=PERSISTENT, experiments=[
        {"name": "llamastack-traces", "default": True}, {"name": "chat", "services": ["chat-api"]}])
    assert checksum(moved) != checksum(persistent)


@pytest.mark.parametrize("collector", [{}, PERSISTENT, {**PERSISTENT, "autoscaling": {"enabled": True}}])
def test_the_service_selects_the_collector_pods_of_either_kind(collector):
    run = run_program("dev", collector=collector)
    selector = run.get("Service", "otel-collector").outputs["spec"]["selector"]
    pods = workload(run).outputs["spec"]
    assert selector.items() <= pods["template"]["metadata"]["labels"].items()
    assert pods["selector"]["matchLabels"].items() <= pods["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("collector, kind", [({}, "Deployment"), (PERSISTENT, "StatefulSet")])
def test_collector_autoscaling_targets_its_workload_and_owns_the_count(collector, kind):
    autoscaling = {"enabled": True, "minReplicas": 2, "maxReplicas": 9, "targetCPUUtilizationPercentage": 65}
    run = run_program("dev", collector={**collector, "replicas": 3, "autoscaling": autoscaling})
    target = workload(run)
    assert target.kind == kind and "replicas" not in target.outputs["spec"]
    hpa = run.get("HorizontalPodAutoscaler", "otel-collector").outputs["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": kind, "name": "otel-collector"}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 9)
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 65
    budget = run.get("PodDisruptionBudget", "otel-collector").outputs["spec"]
    assert budget["maxUnavailable"] == 1
    assert budget["selector"]["matchLabels"].items() <= target.outputs["spec"]["template"]["metadata"]["labels"].items()
    (spread,) = pod_spec(target)["topologySpreadConstraints"]
    assert spread["labelSelector"] == budget["selector"]


def test_several_collectors_get_a_budget_and_one_gets_none(dev):
    assert not [b for b in dev.kinds("PodDisruptionBudget") if b.k8s_name == "otel-collector"]
    run = run_program("dev", collector={"replicas": 3})
    assert workload(run).outputs["spec"]["replicas"] == 3
    assert run.get("PodDisruptionBudget", "otel-collector").outputs["spec"]["maxUnavailable"] == 1
    assert not run.kinds("HorizontalPodAutoscaler")


def test_every_destination_gets_a_copy_of_every_resource_before_the_experiments_routes():
    config = config_for(THREE, destinations=[destination(), destination("archive", "https://archive.example")])
    first, *experiment_rows = config["connectors"]["routing"]["table"]
    assert first == {"context": "resource", "condition": "true", "action": "copy",
                     "pipelines": ["traces/to_phoenix", "traces/to_archive"]}
    assert [row["pipelines"] for row in experiment_rows] == [["traces/chat"], ["traces/agents-prod"]]
    assert all(row.get("action", "move") == "move" for row in experiment_rows)
    assert config["connectors"]["routing"]["default_pipelines"] == ["traces/llamastack-traces"]
    # noise is dropped once, at the intake, for MLflow and every destination alike
    assert config["service"]["pipelines"]["traces/intake"]["processors"] == ["memory_limiter", "filter/noise"]


def test_a_destination_without_selection_batches_and_exports_every_trace():
    config = config_for(THREE, destinations=[destination()])
    assert config["service"]["pipelines"]["traces/to_phoenix"] == {
        "receivers": ["routing"], "processors": ["batch"], "exporters": ["otlp_http/to_phoenix"]}
    assert not [name for name in config["processors"] if name.startswith("tail_sampling")]


def test_selection_holds_whole_traces_and_decides_on_any_span_of_a_listed_scope_or_service():
    selected = destination(services=("chat-api",), scopes=("openinference.instrumentation.*", "my.tracer"))
    config = config_for(THREE, destinations=[selected])
    assert config["service"]["pipelines"]["traces/to_phoenix"]["processors"] == ["tail_sampling/to_phoenix", "batch"]
    sampling = config["processors"]["tail_sampling/to_phoenix"]
    assert sampling["sampling_strategy"] == "span-ingest"
    caches = sampling["decision_cache"]  # late spans follow their trace's decision instead of arriving alone
    assert min(caches.values()) >= 5 * sampling["num_traces"]
    policy, = sampling["policies"]
    assert policy["type"] == "ottl_condition"
    assert policy["ottl_condition"]["span"] == [
        'resource.attributes["service.name"] == "chat-api"',
        r'IsMatch(instrumentation_scope.name, "^openinference\\.instrumentation\\.")',
        'instrumentation_scope.name == "my.tracer"',
    ]
    literal = re.search(r'"(.*)"', policy["ottl_condition"]["span"][1]).group(1)
    prefix = re.compile(literal.replace("\\\\", "\\"))  # the OTTL string's escapes undone
    assert prefix.match("openinference.instrumentation.langchain")
    assert not prefix.match("openinference-instrumentation") and not prefix.match("my.openinference.instrumentation.x")


def test_a_destination_exporter_has_its_own_bounded_queue_that_never_blocks():
    exporter = config_for(THREE, destinations=[destination()])["exporters"]["otlp_http/to_phoenix"]
    queue = exporter["sending_queue"]
    assert queue == {"enabled": True, "num_consumers": 2, "sizer": "bytes", "queue_size": 16 * 2**20}
    assert "block_on_overflow" not in queue and "storage" not in queue
    assert exporter["retry_on_failure"]["enabled"] and exporter["encoding"] == "proto"
    assert exporter["endpoint"] == "http://phoenix.phoenix.svc:6006"
    assert "auth" not in exporter and "x-mlflow-experiment-id" not in exporter["headers"]


def test_grpc_destinations_use_the_grpc_exporter_with_tls_per_scheme_and_the_mounted_ca():
    plain = destination("plain", "http://collector.other:4317", protocol="grpc")
    secured = destination("secured", "https://otlp.vendor.example:4317", protocol="grpc",
                          ca=ObjectKey("Secret", "vendor-ca", "bundle.pem"))
    exporters = config_for(THREE, destinations=[plain, secured])["exporters"]
    assert exporters["otlp_grpc/to_plain"]["endpoint"] == "collector.other:4317"
    assert exporters["otlp_grpc/to_plain"]["tls"] == {"insecure": True}
    assert exporters["otlp_grpc/to_secured"]["tls"] == {"insecure": False,
                                                        "ca_file": f"{DESTINATIONS_DIR}/secured/ca.crt"}
    assert "encoding" not in exporters["otlp_grpc/to_secured"]


def test_destination_credentials_come_from_the_environment_and_header_values_cannot_expand_it():
    bearer = destination("vendor", "https://otlp.vendor.example", auth="bearer",
                         headers={"x-tenant": "${env:MLFLOW_TRACKING_PASSWORD}"})
    basic = destination("archive", "https://archive.example", auth="basic")
    config = config_for(THREE, basic_auth=True, destinations=[bearer, basic])
    headers = config["exporters"]["otlp_http/to_vendor"]["headers"]
    assert headers["Authorization"] == f"Bearer ${{env:{destination_env(bearer, 'TOKEN')}}}"
    assert headers["x-tenant"] == "$${env:MLFLOW_TRACKING_PASSWORD}"  # `$$`: sent as written, never expanded
    assert config["exporters"]["otlp_http/to_archive"]["auth"] == {"authenticator": "basicauth/to_archive"}
    assert config["extensions"]["basicauth/to_archive"]["client_auth"] == {
        "username": "${env:DESTINATION_ARCHIVE_USERNAME}", "password": "${env:DESTINATION_ARCHIVE_PASSWORD}"}
    assert "basicauth/to_archive" in config["service"]["extensions"]


def test_the_pod_reads_destination_secrets_into_env_and_mounts_each_ca():
    run = run_program("dev", collector={"destinations": [
        {"name": "vendor", "endpoint": "https://otlp.vendor.example", "auth": {"type": "bearer", "secret": "tok"},
         "tls": {"caConfigMap": "vendor-ca", "key": "bundle.pem"}}]})
    spec = pod_spec(workload(run))
    collector_container = container(workload(run), "otel-collector")
    env = env_of(collector_container)
    assert env["DESTINATION_VENDOR_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "tok", "key": "token"}}
    assert {"name": "ca-vendor", "configMap": {"name": "vendor-ca", "items": [{"key": "bundle.pem",
                                                                                "path": "ca.crt"}]}} in spec["volumes"]
    assert {"name": "ca-vendor", "mountPath": f"{DESTINATIONS_DIR}/vendor", "readOnly": True} \
        in collector_container["volumeMounts"]


def test_a_credential_header_of_the_destinations_choice_comes_from_its_secret():
    run = run_program("dev", collector={"destinations": [
        {"name": "vendor", "endpoint": "https://otlp.vendor.example",
         "auth": {"type": "header", "header": "x-api-key", "secret": "vendor-key"}}]})
    env = env_of(container(workload(run), "otel-collector"))
    assert env["DESTINATION_VENDOR_VALUE"]["valueFrom"] == {"secretKeyRef": {"name": "vendor-key", "key": "value"}}
    headers = deployed_config(run)[1]["exporters"]["otlp_http/to_vendor"]["headers"]
    assert headers == {"x-api-key": "${env:DESTINATION_VENDOR_VALUE}"}


def test_the_collector_rolls_only_after_mlflow_has_rolled_out(dev):
    """An old collector pod stops when its successor is Ready; with MLflow down at that moment (a
    Recreate roll in the same `up`) it would drop the spans it holds for it."""
    workload = dev.get("Deployment", "otel-collector")
    mlflow = dev.get("Deployment", "mlflow")
    resume = next(j for j in dev.kinds("Job") if j.name == "mlflow-resume-writers")
    assert {mlflow.urn, resume.urn} <= set(workload.dependencies)


def test_a_stopping_collector_retries_what_it_holds_before_its_shutdown_drops_it(dev, persistent):
    """Out of the Service, a Deployment's pod sleeps (preStop) through more than two retry intervals
    (the backoff's jitter stretches one by half) before SIGTERM, and is killed only after a
    shutdown's flush could run its export timeout; a persistent queue keeps retried spans anyway."""
    spec = dev.get("Deployment", "otel-collector").outputs["spec"]["template"]["spec"]
    (collector,) = spec["containers"]
    drain = collector["lifecycle"]["preStop"]["sleep"]["seconds"]
    _, config = deployed_config(dev)
    for exporter in config["exporters"].values():
        interval = int(exporter["retry_on_failure"]["max_interval"].removesuffix("s"))
        assert drain > 2 * 1.5 * interval
        assert spec["terminationGracePeriodSeconds"] >= drain + int(exporter["timeout"].removesuffix("s"))
    stateful = persistent.get("StatefulSet", "otel-collector").outputs["spec"]["template"]["spec"]
    assert "lifecycle" not in stateful["containers"][0] and "terminationGracePeriodSeconds" not in stateful


def test_a_roll_keeps_an_old_collector_past_its_successors_readiness_for_more_than_a_retry_interval(dev):
    """An old pod of a release without the preStop hook stops at once when deleted: the roll
    itself gives it time to send what it held for MLflow, which rolled out first."""
    spec = dev.get("Deployment", "otel-collector").outputs["spec"]
    _, config = deployed_config(dev)
    for exporter in config["exporters"].values():
        retry = exporter["retry_on_failure"]
        assert spec["minReadySeconds"] > 1.5 * int(retry["max_interval"].removesuffix("s"))
    assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
