"""The typed config layer: Pulumi.yaml as the one source of defaults, and a
clear error (key + fix) for each bad input, before any resource exists."""

import pytest
import yaml

from components.config import (
    ConfigError,
    merge_over,
    mlflow_footprint_mib,
    parse_stack_config,
    project_defaults,
    quantity_bytes,
    version_from_image,
)
from tests.support.program import PROJECT_DIR, RecordingMocks, run_program

DOMAIN = {"domain": "example.com"}
# The declared defaults plus what every stack with basic auth needs: a domain, and HTTPS for the passwords.
VALID = {**DOMAIN, "exposure": {"tls": {"enabled": True}}}


def parse(values: dict | None = None):
    """The config of VALID with `values` merged over it key by key."""
    return parse_stack_config(merge_over(VALID, values or {}))


def problems_of(values: dict) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_stack_config({**DOMAIN, **values})
    return caught.value.problems


def test_every_key_is_declared_with_type_default_and_description():
    declared = yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text())["config"]
    assert set(declared) == {
        "namespace", "createNamespace", "platform", "domain", "exposure", "postgres", "mlflow", "collector",
        "networkPolicies", "verify", "retention", "experiments", "access", "monitoring",
    }
    for key, spec in declared.items():
        assert {"type", "default", "description"} <= set(spec), key
        expected = {str: "string", bool: "boolean", dict: "object", list: "array"}[type(spec["default"])]
        assert spec["type"] == expected, key


def test_declared_defaults_give_the_documented_stack():
    config = parse()
    assert config.namespace == "mlflow" and config.create_namespace and config.platform == "kubernetes"
    assert config.exposure.host == "mlflow.example.com" and config.exposure.url == "https://mlflow.example.com"
    assert config.mlflow.auth.kind == "basic" and not config.mlflow.auth.allow_plain_http
    # The newest 17.x patch tag docker-library/postgres publishes; a superseded tag (17.6) is no longer rebuilt.
    assert config.postgres.image == "postgres:17.11"
    assert config.mlflow.image == "ghcr.io/mlflow/mlflow:v3.17.2-full"
    assert config.collector.image == "otel/opentelemetry-collector-contrib:0.152.0"
    assert config.collector.version == "0.152.0"
    assert [(e.name, e.default, dict(e.tags)) for e in config.experiments] == [
        ("llamastack-traces", True, {"mlflow.experimentKind": "genai_development"})
    ]
    assert {(r.method, r.route) for r in config.collector.noise} == {
        ("GET", "/v1/models"), ("GET", "/v1/health"), ("GET", "/health"), ("GET", "/healthz"), ("GET", "/readyz"),
        ("GET", "/livez"), ("GET", "/metrics"),
    }


def test_a_stack_object_is_merged_over_the_default_key_by_key():
    config = parse({"postgres": {"storageSize": "2Gi"}, "mlflow": {"artifacts": {"size": "1Gi"}}})
    assert config.postgres.storage_size == "2Gi"
    assert config.postgres.image == project_defaults()["postgres"]["image"]
    assert config.mlflow.artifacts.size == "1Gi" and config.mlflow.artifacts.kind == "pvc"
    assert config.mlflow.workers == 2


def test_default_mlflow_size_leaves_headroom_over_its_footprint():
    config = parse()
    footprint = mlflow_footprint_mib(config.mlflow.workers, config.mlflow.job_execution) * 2**20
    assert footprint <= 0.75 * config.mlflow.resources.memory_limit_bytes
    assert footprint <= quantity_bytes(config.mlflow.resources.requests["memory"])


@pytest.mark.parametrize(
    "values, key, fix",
    [
        ({"bogus": 1}, "bogus", "remove it"),
        ({"exposure": {"tls": {"enable": True}}}, "exposure.tls.enable", "remove it"),
        ({"platform": "eks"}, "platform", "kubernetes, openshift"),
        ({"exposure": {"kind": "loadbalancer"}}, "exposure.kind", "ingress, route, httproute, none"),
        ({"postgres": {"mode": "managed"}}, "postgres.mode", "bundled, external"),
        ({"mlflow": {"artifacts": {"kind": "gcs"}}}, "mlflow.artifacts.kind", "pvc, s3"),
        ({"namespace": "ML_flow"}, "namespace", "DNS-1123"),
        ({"domain": "Example..com"}, "domain", "DNS name"),
        ({"exposure": {"host": "-bad-.example.com"}}, "exposure.host", "DNS name"),
        ({"experiments": [{"name": "a", "default": True}, {"name": "a"}]}, "experiments", "listed twice"),
        ({"experiments": [{"name": "a"}, {"name": "b"}]}, "experiments", "exactly one experiment"),
        ({"experiments": [{"name": "a", "default": True}, {"name": "b", "default": True}]}, "experiments",
         "exactly one experiment"),
        ({"experiments": []}, "experiments", "at least one"),
        ({"experiments": [{"name": "  ", "default": True}]}, "experiments[0].name", "non-empty"),
        ({"experiments": [{"name": "a", "default": True, "services": ["s"]}, {"name": "b", "services": ["s"]}]},
         "experiments", "keep it in one"),
        ({"experiments": [{"name": "a", "default": True, "owner": "me"}]}, "experiments[0].owner", "remove it"),
        ({"mlflow": {"replicas": 2}}, "mlflow.replicas", "ReadWriteMany"),
        ({"mlflow": {"autoscaling": {"enabled": True}}}, "mlflow.autoscaling.enabled", "ReadWriteMany"),
        ({"mlflow": {"jobExecution": True, "resources": {"limits": {"memory": "8Gi"}},
                     "autoscaling": {"enabled": True},
                     "artifacts": {"kind": "s3", "uri": "s3://b", "secretName": "s"}}},
         "mlflow.jobExecution", "without autoscaling"),
        ({"mlflow": {"autoscaling": {"enabled": True, "minReplicas": 4, "maxReplicas": 3},
                     "artifacts": {"kind": "s3", "uri": "s3://b", "secretName": "s"}}},
         "mlflow.autoscaling.maxReplicas", "below minReplicas 4"),
        ({"collector": {"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 1}}},
         "collector.autoscaling.maxReplicas", "2 or more"),
        ({"collector": {"autoscaling": {"minReplicas": 0}}}, "collector.autoscaling.minReplicas", ">= 1"),
        ({"collector": {"autoscaling": {"targetCPUUtilizationPercentage": "70%"}}},
         "collector.autoscaling.targetCPUUtilizationPercentage", "whole number"),
        ({"collector": {"queueVolume": {"size": "1 GB"}}}, "collector.queueVolume.size", "quantity"),
        ({"collector": {"autoscaling": {"enabled": True, "max": 3}}}, "collector.autoscaling.max", "remove it"),
        ({"mlflow": {"jobExecution": True, "resources": {"limits": {"memory": "8Gi"}}, "replicas": 2,
                     "artifacts": {"kind": "s3", "uri": "s3://b", "secretName": "s"}}},
         "mlflow.jobExecution", "replicas 1"),
        ({"mlflow": {"workers": 6}}, "mlflow.resources.limits.memory", "at least 2334Mi"),
        ({"mlflow": {"jobExecution": True}}, "mlflow.resources.limits.memory", "raise it"),
        ({"mlflow": {"resources": {"limits": {"memory": "lots"}}}}, "mlflow.resources.limits.memory", "quantity"),
        ({"mlflow": {"resources": {"requests": {"memory": "3Gi"}}}}, "mlflow.resources.requests.memory",
         "exceed the limit"),
        ({"mlflow": {"extraAllowedHosts": ["*"]}}, "mlflow.extraAllowedHosts", "disable"),
        ({"mlflow": {"artifacts": {"kind": "s3"}}}, "mlflow.artifacts.uri", "s3://"),
        ({"mlflow": {"artifacts": {"kind": "s3", "uri": "s3://bucket"}}}, "mlflow.artifacts.secretName",
         "AWS_ACCESS_KEY_ID"),
        ({"mlflow": {"apiUrl": "mlflow:5000"}}, "mlflow.apiUrl", "http"),
        ({"exposure": {"kind": "none"}}, "mlflow.apiUrl", "port-forward"),
        ({"exposure": {"kind": "route"}}, "exposure.kind", "openshift"),
        ({"exposure": {"kind": "httproute"}}, "exposure.gateway.name", "Gateway"),
        ({"exposure": {"tls": {"clusterIssuer": "letsencrypt"}}}, "exposure.tls.enabled", "set it true"),
        ({"postgres": {"mode": "external"}}, "postgres.external.host", "required"),
        ({"postgres": {"mode": "external", "external": {"host": "db"}}}, "postgres.external.secretName", "required"),
        ({"postgres": {"databases": ["Bad-Name"]}}, "postgres.databases", "PostgreSQL name"),
        ({"collector": {"noise": [{"method": "GET", "route": "health"}]}}, "collector.noise[0].route", "'/'"),
        ({"collector": {"noise": [{"method": "FETCH", "route": "/x"}]}}, "collector.noise[0].method", "GET"),
        ({"collector": {"image": "registry.local/otelcol:latest"}}, "collector.version", "set collector.version"),
        ({"createNamespace": "yes"}, "createNamespace", "true or false"),
        ({"postgres": {"mode": "cnpg", "cnpg": {"instances": 0}}}, "postgres.cnpg.instances", ">= 1"),
        ({"postgres": {"mode": "cnpg", "cnpg": {"operatorNamespace": "CNPG_System"}}},
         "postgres.cnpg.operatorNamespace", "DNS-1123"),
        ({"postgres": {"mode": "cloudnative"}}, "postgres.mode", "cnpg"),
        ({"collector": {"destinations": [{"name": "Phoenix", "endpoint": "http://p:6006"}]}},
         "collector.destinations[0].name", "DNS label"),
        ({"collector": {"destinations": [{"name": "p", "endpoint": "phoenix:6006"}]}},
         "collector.destinations[0].endpoint", "http://host:port"),
        ({"collector": {"destinations": [{"name": "p", "endpoint": "http://p:6006", "protocol": "thrift"}]}},
         "collector.destinations[0].protocol", "http, grpc"),
        ({"collector": {"destinations": [{"name": "p", "endpoint": "http://p:6006",
                                          "headers": {"Authorization": "Bearer abc"}}]}},
         "collector.destinations[0].headers.Authorization", "auth (from a Secret)"),
        ({"collector": {"destinations": [{"name": "p", "endpoint": "http://p:6006", "tls": {"caSecret": "ca"}}]}},
         "collector.destinations[0].tls", "https://"),
        ({"collector": {"destinations": [{"name": "p", "endpoint": "https://p", "auth": {"type": "oauth"}}]}},
         "collector.destinations[0].auth.type", "bearer, basic"),
        ({"collector": {"destinations": [{"name": "p", "endpoint": "https://p", "select": {"scopes": ["a b"]}}]}},
         "collector.destinations[0].select.scopes", "prefix ending in '*'"),
        ({"collector": {"replicas": 2, "destinations": [{"name": "p", "endpoint": "https://p",
                                                         "select": {"services": ["chat"]}}]}},
         "collector.destinations[0].select", "collector.replicas to 1"),
        ({"collector": {"autoscaling": {"enabled": True}, "destinations": [
            {"name": "p", "endpoint": "https://p", "select": {"scopes": ["openinference.*"]}}]}},
         "collector.destinations[0].select", "remove select"),
        ({"collector": {"destinations": [{"name": "p", "endpoint": "https://p"},
                                         {"name": "p", "endpoint": "https://q"}]}},
         "collector.destinations", "name of its own"),
        ({"collector": {"destinations": [{"name": "p", "endpoint": "https://p", "queueSize": "100Mi"}]}},
         "collector.destinations", "Lower queueSize or raise the memory limit"),
        ({"collector": {"destinations": [{"name": "p", "endpoint": "https://p:4317", "protocol": "grpc",
                                          "readBack": "phoenix"}]}},
         "collector.destinations[0].readBack", "protocol: http"),
        ({"collector": {"destinations": [{"name": "p", "endpoint": "https://p", "project": "x"}]}},
         "collector.destinations[0].project", "remove it"),
        ({"collector": {"destinations": [{"name": "p", "endpoint": "https://otlp.example.com", "protocol": "grpc"}]}},
         "collector.destinations[0].endpoint", "with the port and no path"),
        ({"collector": {"destinations": [{"name": "p", "endpoint": "https://h:4317/v1", "protocol": "grpc"}]}},
         "collector.destinations[0].endpoint", "with the port and no path"),
        ({"collector": {"destinations": [{"name": "p", "endpoint": "https://p", "queueSize": "100m"}]}},
         "collector.destinations[0].queueSize", "at least 256Ki"),
        ({"collector": {"destinations": [{"name": "p", "endpoint": "http://p:6006", "readBack": "phoenix",
                                          "auth": {"type": "basic", "secret": "s"}}]}},
         "collector.destinations[0].readBack", "auth type bearer"),
        ({"collector": {"destinations": [{"name": "p", "endpoint": "https://p", "headers": {"x-a": "1\n2"}}]}},
         "collector.destinations[0].headers.x-a", "one line"),
        ({"collector": {"destinations": [{"name": "p", "endpoint": "https://p", "headers": {"Host": "x"}}]}},
         "collector.destinations[0].headers.Host", "host"),
        ({"collector": {"destinations": [{"name": "p", "endpoint": "https://p",
                                          "auth": {"type": "header", "header": "Content-Type", "secret": "s"}}]}},
         "collector.destinations[0].auth.header", "x-api-key"),
        ({"collector": {"destinations": [{"name": "p", "endpoint": "https://p",
                                          "auth": {"type": "bearer", "header": "x-key", "secret": "s"}}]}},
         "collector.destinations[0].auth.header", "type header only"),
    ],
)
def test_each_bad_input_names_its_key_and_the_fix(values, key, fix):
    problems = problems_of(values)
    assert any(p.startswith(f"{key}:") and fix in p for p in problems), problems


def test_exposure_needs_a_domain_or_a_host():
    with pytest.raises(ConfigError) as caught:
        parse_stack_config({})
    assert any(p.startswith("exposure.host:") and "set `domain`" in p for p in caught.value.problems)


def test_all_problems_are_reported_together():
    problems = problems_of({"platform": "x", "namespace": "X", "mlflow": {"workers": 0}})
    assert {p.split(":")[0] for p in problems} >= {"platform", "namespace", "mlflow.workers"}


def test_a_custom_collector_image_can_name_its_version():
    config = parse({"collector": {"image": "registry.local/otelcol:latest", "version": "0.150.1"}})
    assert config.collector.version == "0.150.1"


def test_bad_config_fails_the_program_before_any_resource_is_registered():
    mocks = RecordingMocks()
    with pytest.raises(Exception, match=r"experiments: exactly one experiment must have default: true"):
        run_program("dev", mocks=mocks, experiments=[{"name": "a"}])
    assert mocks.registered == []


def test_quantities_and_image_versions():
    assert quantity_bytes("512Mi") == 512 * 2**20 and quantity_bytes("2G") == 2e9 and quantity_bytes("250m") == 0.25
    with pytest.raises(ValueError):
        quantity_bytes("lots")
    assert version_from_image("ghcr.io/mlflow/mlflow:v3.17.2-full") == "3.17.2"
    assert version_from_image("otel/opentelemetry-collector-contrib:0.152.0") == "0.152.0"
    assert version_from_image("registry:5000/otelcol") is None


@pytest.mark.parametrize("image", ["registry.local/mlflow:latest", "registry.local/mlflow:prod",
                                   "registry.local/mlflow@sha256:" + "a" * 64, "registry.local:5000/team/mlflow"])
def test_a_custom_mlflow_image_needs_no_version_in_its_tag(image):
    config = parse({"mlflow": {"image": image}})
    assert config.mlflow.image == image
    assert not hasattr(config.mlflow, "version")  # no component needs MLflow's version


def test_a_collector_image_without_a_version_asks_for_the_declared_collector_version():
    (problem,) = [p for p in problems_of({"collector": {"image": "registry.local/otelcol:prod"}})
                  if p.startswith("collector.version:")]
    assert "set collector.version" in problem and "0.152.0" in problem
    assert "version" in project_defaults()["collector"]  # the key the fix names is declared


def test_extra_allowed_hosts_accept_names_that_start_with_http():
    hosts = ("httpbin.example.com", "https-gw.corp.net", "http-proxy:8080", "*.httpbin.io")
    config = parse({"mlflow": {"extraAllowedHosts": list(hosts)}})
    assert config.mlflow.extra_allowed_hosts == hosts


@pytest.mark.parametrize("url", ["http://mlflow.corp.net", "https://mlflow.corp.net:443", "mlflow.corp.net/api",
                                 "ftp://mlflow.corp.net"])
def test_extra_allowed_hosts_refuse_urls(url):
    problems = problems_of({"mlflow": {"extraAllowedHosts": [url]}})
    assert any(p.startswith("mlflow.extraAllowedHosts:") and "not URLs" in p and url in p for p in problems), problems


@pytest.mark.parametrize("version", ["abc", "0.152", "0.152.0.1", "v0.152.0", " 0.152.0", "0.152.x", "0.152.0\n"])
def test_a_bad_collector_version_is_a_config_error_naming_the_key(version):
    problems = problems_of({"collector": {"image": "registry.local/otelcol:prod", "version": version}})
    assert any(p.startswith("collector.version:") and "MAJOR.MINOR.PATCH" in p and "0.152.0" in p
               for p in problems), problems


@pytest.mark.parametrize("values, key", [
    ({"mlflow": {"resources": {"requests": {"gpu": "1"}}}}, "mlflow.resources.requests.gpu"),
    ({"collector": {"resources": {"limits": {"gpu": "1"}}}}, "collector.resources.limits.gpu"),
    ({"postgres": {"resources": {"requests": {"cpu": "1", "disk": "1Gi"}}}}, "postgres.resources.requests.disk"),
    ({"exposure": {"tls": {"enable": True}}}, "exposure.tls.enable"),
    ({"experiments": [{"name": "a", "default": True, "owner": "me"}]}, "experiments[0].owner"),
])
def test_an_unknown_nested_key_is_reported_once(values, key):
    problems = problems_of(values)
    assert [p for p in problems if p.startswith(f"{key}:")] == [
        next(p for p in problems if p.startswith(f"{key}:") and "unknown key; remove it" in p)
    ], problems


@pytest.mark.parametrize("values, key", [
    ({"postgres": {"storageSize": "lots"}}, "postgres.storageSize"),
    ({"postgres": {"storageSize": "10 Gi"}}, "postgres.storageSize"),
    ({"postgres": {"storageSize": "0"}}, "postgres.storageSize"),
    ({"postgres": {"storageSize": 10}}, "postgres.storageSize"),
    ({"mlflow": {"artifacts": {"size": "big"}}}, "mlflow.artifacts.size"),
    ({"mlflow": {"artifacts": {"size": "20GB"}}}, "mlflow.artifacts.size"),
])
def test_a_storage_size_must_be_a_kubernetes_quantity(values, key):
    problems = problems_of(values)
    assert any(p.startswith(f"{key}:") and "10Gi" in p for p in problems), problems


@pytest.mark.parametrize("size", ["10Gi", "1.5Ti", "500M", "2G", "1e9", "1Pi"])
def test_valid_storage_sizes_pass(size):
    config = parse({"postgres": {"storageSize": size}, "mlflow": {"artifacts": {"size": size}}})
    assert config.postgres.storage_size == size and config.mlflow.artifacts.size == size


@pytest.mark.parametrize("section", ["postgres", "mlflow", "collector"])
@pytest.mark.parametrize("image", ["", "   ", "otel collector:1.0", "registry.local/Team/otelcol:0.152.0",
                                   "otelcol:bad tag", "otelcol@sha256:short", "https://registry.local/otelcol"])
def test_each_image_must_be_an_image_reference(section, image):
    values = {section: {"image": image}}
    if section == "collector":
        values[section]["version"] = "0.152.0"  # so that only the image is at fault
    problems = problems_of(values)
    assert any(p.startswith(f"{section}.image:") and "image reference" in p for p in problems), problems


@pytest.mark.parametrize("image", ["postgres", "postgres:17.11", "docker.io/library/postgres:17.11-trixie",
                                   "registry.local:5000/team/postgres_db:17", "localhost/pg@sha256:" + "0" * 64,
                                   "Registry.Example.com/pg:v1.2", "[::1]:5000/pg:17"])
def test_valid_image_references_pass(image):
    assert parse({"postgres": {"image": image}}).postgres.image == image


def test_a_destination_takes_safe_defaults_and_selection_keeps_one_collector():
    phoenix = {"name": "phoenix", "endpoint": "http://phoenix.phoenix.svc:6006",
               "select": {"scopes": ["openinference.*"]}}
    destination, = parse({"collector": {"destinations": [phoenix]}}).collector.destinations
    assert (destination.protocol, destination.queue_size, destination.read_back) == ("http", "16Mi", "none")
    assert (destination.ca, destination.auth, destination.uses_tls, destination.selects_all) == \
        (None, None, False, False)
    every_trace = {"name": "all", "endpoint": "https://otlp.example"}
    scaled = parse({"collector": {"replicas": 3, "destinations": [every_trace]}}).collector
    assert scaled.destinations[0].selects_all and scaled.destinations[0].uses_tls  # no selection: any replicas


OIDC = {"issuerUrl": "https://keycloak.example.com/realms/corp", "clientId": "mlflow", "clientSecret": "mlflow-oidc",
        "allowedGroups": ["mlflow-users"]}
SIGNED_IN = {"exposure": {"tls": {"enabled": True}},
             "mlflow": {"apiUrl": "http://localhost:5000", "auth": {"kind": "oidc", "oidc": OIDC}}}


def test_single_sign_on_reads_the_provider_and_who_may_enter():
    auth = parse(SIGNED_IN).mlflow.auth
    assert auth.enabled and auth.oidc is not None
    assert (auth.oidc.issuer_url, auth.oidc.client_id, auth.oidc.client_secret_name) == (
        OIDC["issuerUrl"], "mlflow", "mlflow-oidc")
    assert (auth.oidc.scopes, auth.oidc.allowed_groups, auth.oidc.email_domains, auth.oidc.end_session_url) == (
        ("openid", "email", "profile"), ("mlflow-users",), ("*",), None)
    assert parse().mlflow.auth.oidc is None  # read only for kind oidc


@pytest.mark.parametrize(("values", "key", "fix"), [
    ({"mlflow": {"auth": {"oidc": {"issuerUrl": None}}}}, "mlflow.auth.oidc.issuerUrl", "https://keycloak"),
    ({"mlflow": {"auth": {"oidc": {"issuerUrl": "http://kc/realms/x"}}}}, "mlflow.auth.oidc.issuerUrl", "https://"),
    ({"mlflow": {"auth": {"oidc": {"clientId": None}}}}, "mlflow.auth.oidc.clientId", "client ID"),
    ({"mlflow": {"auth": {"oidc": {"clientSecret": None}}}}, "mlflow.auth.oidc.clientSecret", "client-secret"),
    ({"mlflow": {"auth": {"oidc": {"scopes": ["email"]}}}}, "mlflow.auth.oidc.scopes", "openid"),
    ({"mlflow": {"auth": {"oidc": {"emailDomains": []}}}}, "mlflow.auth.oidc.emailDomains", '["*"]'),
    ({"mlflow": {"auth": {"oidc": {"logoutUrl": "http://kc/logout"}}}}, "mlflow.auth.oidc.logoutUrl", "https://"),
    ({"exposure": {"tls": {"enabled": False}}}, "exposure.tls.enabled", "must be https"),
    ({"mlflow": {"apiUrl": None}}, "mlflow.apiUrl", "port-forward"),
    ({"mlflow": {"apiUrl": "https://mlflow.example.com/"}}, "mlflow.apiUrl", "port-forward"),
    ({"mlflow": {"apiUrl": "http://MLflow.example.com:80"}}, "mlflow.apiUrl", "exposure's host"),
    ({"exposure": {"kind": "none"}}, "exposure.kind", "ingress, route or httproute"),
    ({"mlflow": {"auth": {"oidc": {"groupsClaim": " "}}}}, "mlflow.auth.oidc.groupsClaim", "groups"),
    ({"mlflow": {"auth": {"adminUsername": "ops@example.com"}}}, "mlflow.auth.adminUsername", "without @"),
])
def test_single_sign_on_refuses_what_would_not_work_naming_the_key_and_the_fix(values, key, fix):
    problems = problems_of(merge_over(SIGNED_IN, values))
    assert any(p.startswith(f"{key}:") and fix in p for p in problems), problems


def test_single_sign_on_open_to_anyone_the_provider_signs_in_is_said_at_every_up():
    assert parse(SIGNED_IN).warnings == ()  # a group is named
    anyone = merge_over(SIGNED_IN, {"mlflow": {"auth": {"oidc": {"allowedGroups": []}}}})
    (warning,) = parse(anyone).warnings
    assert warning.startswith("mlflow.auth.oidc.allowedGroups:") and "anyone the provider signs in" in warning
    one_domain = merge_over(anyone, {"mlflow": {"auth": {"oidc": {"emailDomains": ["example.com"]}}}})
    assert parse(one_domain).warnings == ()
