"""MLflow basic auth under mocks: generated credentials (the admin's only as a hash in a
Secret), wired into the server, the migration step, the auth database and the
experiment provider."""

import configparser
import json

import pytest
import yaml
from werkzeug.security import check_password_hash

from components.auth import auth_config_ini, password_hash
from components.config import ConfigError, parse_stack_config
from components.postgres import database_init_sql
from tests.support.k8s import auth_config, container, env_of
from tests.support.program import MOCK_PASSWORD, TLS_INGRESS, RecordingMocks, run_program

AUTH = {"auth": {"kind": "basic"}}


@pytest.fixture(scope="module")
def run():
    return run_program("dev", mlflow=AUTH, exposure=TLS_INGRESS)


def server_container(run) -> dict:
    return container(run.get("Deployment", "mlflow"), "mlflow")


def auth_secret(run):
    (secret,) = [s for s in run.kinds("Secret") if "flask-secret-key" in s.outputs["stringData"]]
    return secret


def test_the_auth_config_holds_the_database_and_admin_but_no_secret():
    ini = configparser.ConfigParser()
    ini.read_string(auth_config_ini(database_uri="postgresql+psycopg2://db:5432/mlflow_auth", admin_username="root",
                                    credential_cache_seconds=45))
    assert dict(ini["mlflow"]) == {
        "default_permission": "NO_PERMISSIONS",
        "database_uri": "postgresql+psycopg2://db:5432/mlflow_auth",
        "admin_username": "root",
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
        "auth_cache_ttl_seconds": "45",
    }


@pytest.mark.parametrize("settings, seconds", [({}, 60), ({"credentialCacheSeconds": 0}, 0)])
def test_the_stacks_credential_cache_is_in_the_auth_config_map(settings, seconds):
    run = run_program("dev", mlflow={"auth": {"kind": "basic", **settings}}, exposure=TLS_INGRESS)
    assert auth_config(run).getint("auth_cache_ttl_seconds") == seconds


def test_the_server_runs_the_basic_auth_app_with_generated_secrets_from_the_secret(run):
    server = server_container(run)
    assert server["command"][:4] == ["mlflow", "server", "--app-name", "basic-auth"]
    env, secret = env_of(server), auth_secret(run)
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {"name": secret.k8s_name,
                                                                                  "key": "flask-secret-key"}
    assert secret.outputs["stringData"]["flask-secret-key"].startswith(MOCK_PASSWORD)


def test_the_auth_secret_holds_a_hash_mlflow_accepts_for_the_admin_password_and_never_the_password(run):
    stored = auth_secret(run).outputs["stringData"]
    password = run.outputs["mlflowCredentials"]["password"]
    assert set(stored) == {"username", "admin-password-hash", "flask-secret-key"}
    assert password not in json.dumps(stored)
    assert check_password_hash(stored["admin-password-hash"], password)  # as MLflow's user store checks it
    assert not check_password_hash(stored["admin-password-hash"], password + "x")
    assert password_hash(password, "salt") != password_hash(password, "other-salt")


def test_only_the_migration_jobs_bootstrap_step_gets_the_admin_password_hash_and_no_pod_the_password(run):
    """The server creates no admin: the Job's step does, from the hash in the Secret; no pod
    gets the admin's password in any form it could sign in with."""
    secret = auth_secret(run)
    holders = [(resource.name, c["name"]) for resource, c in run.containers()
               if any(((e.get("valueFrom") or {}).get("secretKeyRef") or {}) == {"name": secret.k8s_name,
                                                                                 "key": "admin-password-hash"}
                      for e in c.get("env", []))]
    assert holders == [("mlflow-migrate", "bootstrap-admin")]
    password = run.outputs["mlflowCredentials"]["password"]
    assert not [c["name"] for _, c in run.containers() if password in json.dumps(c)]


def test_the_auth_config_file_is_mounted_where_mlflow_reads_it(run):
    ini = auth_config(run)  # found through the server's env and volume mount, or the test fails
    assert ini["database_uri"] == "postgresql+psycopg2://postgres.mlflow.svc:5432/mlflow_auth"
    assert ini["admin_username"] == auth_secret(run).outputs["stringData"]["username"] == "admin"


def test_the_auth_database_is_created_and_migrated_before_the_server(run):
    (sql,) = [c.outputs["data"] for c in run.kinds("ConfigMap") if any(k.endswith(".sql") for k in c.outputs["data"])]
    assert list(sql.values()) == [database_init_sql(("mlflow", "mlflow_auth"))]
    (job,) = [j for j in run.kinds("Job") if j.name == "mlflow-migrate"]
    deployment = run.get("Deployment", "mlflow")
    assert job.urn in deployment.dependencies
    pod = job.outputs["spec"]["template"]["spec"]
    step, bootstrap = pod["initContainers"]
    assert step["command"] == ["python", "-m", "mlflow.server.auth", "db", "upgrade", "--url",
                               "postgresql+psycopg2://postgres.mlflow.svc:5432/mlflow_auth"]
    assert bootstrap["command"][:2] == ["python", "-c"]
    assert env_of(bootstrap)["MLFLOW_AUTH_DATABASE_URI"]["value"] == step["command"][-1]
    for container_ in (step, bootstrap):
        assert {"PGUSER", "PGPASSWORD"} <= set(env_of(container_))
    assert [c["name"] for c in pod["containers"]] == ["migrate"]


def test_the_experiment_provider_gets_the_admin_credentials_as_a_secret(run):
    (password,) = [r.outputs["result"] for r in run.of_type("random:index/randomPassword:RandomPassword")
                   if r.name == "mlflow-auth-admin-password"]
    (experiment,) = run.dynamic("experiment")
    assert experiment.inputs["credentials"] == {"username": "admin", "password": password}
    assert "mlflowCredentials" in run.secret_outputs
    assert run.outputs["mlflowCredentials"] == {"username": "admin", "password": password}


def test_the_admin_password_is_only_in_its_generator_and_the_providers_secret_inputs(run):
    password = run.outputs["mlflowCredentials"]["password"]
    holders = {r.typ.rsplit(":", 1)[-1] for r in run.resources if password in json.dumps(r.outputs)}
    assert holders == {"RandomPassword", "Resource"}  # Resource: the dynamic providers' secret input


def test_without_auth_nothing_of_it_is_declared(dev):
    assert "--app-name" not in server_container(dev)["command"]
    assert not any("flask-secret-key" in (s.outputs.get("stringData") or {}) for s in dev.kinds("Secret"))
    assert dev.outputs["mlflowCredentials"] is None
    collector = container(dev.get("Deployment", "otel-collector"), "otel-collector")
    assert "MLFLOW_TRACKING_PASSWORD" not in env_of(collector)


@pytest.mark.parametrize("auth, key", [
    ({"kind": "ldap"}, "mlflow.auth.kind"),
    ({"database": "mlflow"}, "mlflow.auth.database"),
    ({"database": "Auth-DB"}, "mlflow.auth.database"),
    ({"adminUsername": "a b"}, "mlflow.auth.adminUsername"),
    ({"credentialCacheSeconds": 301}, "mlflow.auth.credentialCacheSeconds"),
    ({"credentialCacheSeconds": -1}, "mlflow.auth.credentialCacheSeconds"),
    ({"credentialCacheSeconds": "60s"}, "mlflow.auth.credentialCacheSeconds"),
])
def test_bad_auth_settings_name_the_key(auth, key):
    with pytest.raises(ConfigError) as error:
        run_program("dev", mlflow={"auth": auth})
    assert any(line.startswith(f"{key}:") for line in error.value.problems), error.value.problems


def test_every_collector_exporter_signs_in_with_the_credentials_from_the_secret(run):
    env = env_of(container(run.get("Deployment", "otel-collector"), "otel-collector"))
    (secret,) = [s for s in run.kinds("Secret") if s.outputs["stringData"].get("username", "").startswith(
        "otel-collector-")]
    assert env["MLFLOW_TRACKING_USERNAME"]["valueFrom"]["secretKeyRef"] == {"name": secret.k8s_name, "key": "username"}
    assert env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": secret.k8s_name, "key": "password"}
    (config_map,) = [c for c in run.kinds("ConfigMap") if "collector.yaml" in c.outputs["data"]]
    config = yaml.safe_load(config_map.outputs["data"]["collector.yaml"])
    (extension,) = [name for name in config["extensions"] if name.startswith("basicauth")]
    assert config["extensions"][extension]["client_auth"] == {
        "username": "${env:MLFLOW_TRACKING_USERNAME}", "password": "${env:MLFLOW_TRACKING_PASSWORD}"}
    assert extension in config["service"]["extensions"]
    assert config["exporters"]
    for exporter in config["exporters"].values():
        assert exporter["auth"] == {"authenticator": extension}


WAYS_OUT = ("exposure.tls.enabled true", "http://localhost:5000", "mlflow.auth.kind none",
            "mlflow.auth.allowPlainHttp true")


def plain_http_problems(values: dict) -> list[str]:
    with pytest.raises(ConfigError) as error:
        parse_stack_config({"domain": "example.com", **values})
    return [p for p in error.value.problems if "clear text" in p]


def test_basic_auth_over_the_default_plain_http_exposure_is_an_error_naming_every_way_out():
    (problem,) = plain_http_problems({})
    assert problem.startswith("exposure.tls.enabled:") and "http://mlflow.example.com" in problem
    assert all(way in problem for way in WAYS_OUT), problem
    (problem,) = plain_http_problems({"exposure": {"kind": "httproute", "gateway": {"name": "gw"}}})
    assert problem.startswith("exposure.tls.enabled:")


def test_a_plain_http_api_url_is_refused_with_the_same_ways_out():
    (problem,) = plain_http_problems({"exposure": {"tls": {"enabled": True}},
                                      "mlflow": {"apiUrl": "http://mlflow.example.com"}})
    assert problem.startswith("mlflow.apiUrl:") and "https://" in problem
    assert all(way in problem for way in WAYS_OUT[1:]), problem


def test_a_bad_config_with_plain_http_passwords_registers_no_resource():
    mocks = RecordingMocks()
    with pytest.raises(Exception, match=r"exposure\.tls\.enabled: .*mlflow\.auth\.allowPlainHttp true"):
        run_program("dev", mocks=mocks, mlflow=AUTH)
    assert mocks.registered == []


@pytest.mark.parametrize("values", [
    {"exposure": {"tls": {"enabled": True}}},
    {"mlflow": {"apiUrl": "http://localhost:5000"}},
    {"mlflow": {"apiUrl": "http://127.0.0.1:5000"}},
    {"mlflow": {"apiUrl": "https://mlflow.example.com"}},
    {"mlflow": {"auth": {"kind": "none"}}},
    {"mlflow": {"auth": {"allowPlainHttp": True}}},
    {"mlflow": {"apiUrl": "http://mlflow.example.com", "auth": {"allowPlainHttp": True}}},
    {"platform": "openshift", "exposure": {"kind": "route"}},
])
def test_each_way_out_is_accepted(values):
    assert parse_stack_config({"domain": "example.com", **values})


def test_plain_http_that_the_stack_allows_or_leaves_to_browsers_is_still_warned_about():
    (warning,) = parse_stack_config({"domain": "example.com", "mlflow": {"auth": {"allowPlainHttp": True}}}).warnings
    assert warning.startswith("exposure.tls.enabled:") and "http://mlflow.example.com" in warning
    (warning,) = parse_stack_config({"domain": "example.com", "mlflow": {"apiUrl": "http://localhost:5000"}}).warnings
    assert warning.startswith("exposure.tls.enabled:") and "sign" in warning
    assert parse_stack_config({"domain": "example.com", "exposure": {"tls": {"enabled": True}}}).warnings == ()
    assert parse_stack_config({"domain": "example.com", "mlflow": {"auth": {"kind": "none"}}}).warnings == ()
    assert parse_stack_config({"platform": "openshift", "domain": "apps.example.com",
                               "exposure": {"kind": "route"}}).warnings == ()


def test_a_stack_that_allows_plain_http_explicitly_deploys():
    run = run_program("dev", mlflow={"auth": {"kind": "basic", "allowPlainHttp": True}})
    (experiment,) = run.dynamic("experiment")
    assert experiment.inputs["tracking_url"] == "http://mlflow.localtest.me"
    assert experiment.inputs["credentials"]["password"].startswith(MOCK_PASSWORD)
