"""Single sign-on in the resource graph (auth.kind oidc): oauth2-proxy beside MLflow, its secrets by
env only, MLflow's authorization function in the auth config, the exposure on the proxy's port,
and MLflow's own port kept inside the namespace."""

import pytest

from components import mlflow as mlflow_component
from components import sso
from components.auth import CONFIG_FILE
from components.config import merge_over, parse_stack_config
from tests.support.k8s import env_of
from tests.support.program import run_program

OIDC = {"issuerUrl": "https://keycloak.example.com/realms/corp", "clientId": "mlflow", "clientSecret": "mlflow-oidc",
        "allowedGroups": ["mlflow-users"], "logoutUrl": "https://keycloak.example.com/realms/corp/protocol/"
                                                        "openid-connect/logout"}


@pytest.fixture(scope="module")
def signed_in():
    return run_program("dev", exposure={"kind": "ingress", "className": "nginx", "tls": {"enabled": True}},
                       mlflow={"apiUrl": "http://localhost:5000", "artifacts": {"size": "5Gi"},
                               "auth": {"kind": "oidc", "oidc": OIDC}})


def containers(run) -> dict[str, dict]:
    spec = run.get("Deployment", "mlflow").outputs["spec"]["template"]["spec"]
    return {c["name"]: c for c in spec["containers"]}


def test_the_proxy_runs_beside_mlflow_for_the_exposures_https_url(signed_in):
    proxy = containers(signed_in)["sso"]
    assert proxy["image"] == sso.OAUTH2_PROXY_IMAGE
    args = proxy["args"]
    assert "--redirect-url=https://mlflow.localtest.me/oauth2/callback" in args
    assert f"--upstream=http://127.0.0.1:{mlflow_component.PORT}" in args
    assert "--allowed-group=mlflow-users" in args and "--cookie-secure=true" in args
    assert f"--backend-logout-url={OIDC['logoutUrl']}?id_token_hint={{id_token}}" in args
    assert "--upstream-timeout=600s" in args  # as long as the exposure waits, not the proxy's 30 s
    assert proxy["securityContext"]["readOnlyRootFilesystem"] is True


def test_secrets_reach_the_proxy_and_mlflow_by_env_from_secrets_only(signed_in):
    proxy, server = containers(signed_in)["sso"], containers(signed_in)[mlflow_component.COMPONENT]
    assert not [a for a in proxy["args"] if "secret" in a.split("=")[0] or "password" in a.split("=")[0]]
    env = env_of(proxy)
    assert env[sso.CLIENT_SECRET_ENV]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-oidc",
                                                                       "key": sso.CLIENT_SECRET_KEY}
    auth_secret = env[sso.COOKIE_SECRET_ENV]["valueFrom"]["secretKeyRef"]["name"]
    assert env[sso.PROXY_PASSWORD_PROXY_ENV]["valueFrom"]["secretKeyRef"] == {"name": auth_secret,
                                                                              "key": sso.PROXY_PASSWORD_KEY}
    # MLflow holds the same password (to know the proxy), not the client's or the cookie's secret
    server_env = env_of(server)
    assert server_env[sso.PROXY_PASSWORD_ENV]["valueFrom"]["secretKeyRef"] == {"name": auth_secret,
                                                                               "key": sso.PROXY_PASSWORD_KEY}
    assert sso.CLIENT_SECRET_ENV not in server_env and sso.COOKIE_SECRET_ENV not in server_env
    (secret,) = [s for s in signed_in.kinds("Secret") if s.outputs["metadata"]["name"] == auth_secret]
    assert {sso.COOKIE_SECRET_KEY, sso.PROXY_PASSWORD_KEY} <= set(secret.outputs["stringData"])
    (cookie,) = [r for r in signed_in.of_type("random:index/randomPassword:RandomPassword")
                 if r.name.endswith(sso.COOKIE_SECRET_KEY)]
    assert cookie.inputs["length"] == sso.COOKIE_SECRET_LENGTH  # a size oauth2-proxy accepts (16, 24, 32)


def test_mlflows_auth_config_names_the_authorization_function_it_ships(signed_in):
    (config_map,) = [c for c in signed_in.kinds("ConfigMap") if CONFIG_FILE in c.outputs.get("data", {})]
    data = config_map.outputs["data"]
    assert f"authorization_function = {sso.AUTH_FUNCTION}" in data[CONFIG_FILE].splitlines()
    assert data[f"{sso.AUTH_MODULE_NAME}.py"] == sso.AUTH_MODULE
    compile(sso.AUTH_MODULE, "mlflow_tracing_oidc.py", "exec")  # it is Python


def test_people_come_in_through_the_proxy_and_mlflows_own_port_stays_in_the_namespace(signed_in):
    ports = {p["name"]: p["port"] for p in signed_in.get("Service", "mlflow").outputs["spec"]["ports"]}
    assert ports == {"http": mlflow_component.PORT, sso.PROXY_PORT_NAME: sso.PROXY_PORT}
    (ingress,) = signed_in.kinds("Ingress")
    (path,) = ingress.outputs["spec"]["rules"][0]["http"]["paths"]
    assert path["backend"]["service"]["port"]["number"] == sso.PROXY_PORT
    (policy,) = [p for p in signed_in.kinds("NetworkPolicy") if p.outputs["metadata"]["name"] == "mlflow"]
    rules = {tuple(port["port"] for port in rule["ports"]): rule["from"] for rule in policy.outputs["spec"]["ingress"]}
    assert set(rules) == {(mlflow_component.PORT,), (sso.PROXY_PORT,)}
    assert {"podSelector": {}} in rules[(mlflow_component.PORT,)]  # the namespace's own clients
    assert {"podSelector": {}} not in rules[(sso.PROXY_PORT,)] and rules[(sso.PROXY_PORT,)]


def test_without_sign_in_there_is_no_proxy():
    run = run_program("dev")
    assert list(containers(run)) == [mlflow_component.COMPONENT]
    assert [p["port"] for p in run.get("Service", "mlflow").outputs["spec"]["ports"]] == [mlflow_component.PORT]


def test_a_private_providers_ca_is_mounted_from_the_users_secret_and_named_to_the_proxy(signed_in):
    run = run_program("dev", exposure={"kind": "ingress", "className": "nginx", "tls": {"enabled": True}},
                      mlflow={"apiUrl": "http://localhost:5000", "artifacts": {"size": "5Gi"},
                              "auth": {"kind": "oidc", "oidc": {**OIDC, "caSecret": "corp-ca"}}})
    proxy = containers(run)["sso"]
    (mount,) = proxy["volumeMounts"]
    volumes = {v["name"]: v for v in run.get("Deployment", "mlflow").outputs["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mount["name"]]["secret"]["secretName"] == "corp-ca" and mount["readOnly"] is True
    (ca_file,) = [a.split("=", 1)[1] for a in proxy["args"] if a.startswith("--provider-ca-file=")]
    assert ca_file == f"{mount['mountPath']}/ca.crt"  # the key docs/configuration.md names
    # without caSecret: the image's trust store, nothing mounted
    default = containers(signed_in)["sso"]
    assert "volumeMounts" not in default and not [a for a in default["args"] if a.startswith("--provider-ca-file")]


def test_a_logout_url_with_a_query_gets_the_token_hint_as_one_more_parameter():
    oidc = parse_stack_config(merge_over(
        {"domain": "example.com"}, {"exposure": {"tls": {"enabled": True}}, "mlflow": {
            "apiUrl": "http://localhost:5000", "auth": {"kind": "oidc", "oidc": {
                **OIDC, "logoutUrl": "https://login.example.com/logout?client_id=mlflow"}}}})).mlflow.auth.oidc
    assert oidc is not None
    (logout,) = [a for a in sso.oauth2_proxy_args(oidc, public_url="https://m.example.com", upstream_port=5000)
                 if a.startswith("--backend-logout-url=")]
    assert logout == "--backend-logout-url=https://login.example.com/logout?client_id=mlflow&id_token_hint={id_token}"


@pytest.mark.parametrize(("stack", "exposure"), [
    ("openshift", None),
    ("dev", {"kind": "httproute", "tls": {"enabled": True}, "gateway": {"name": "public", "sectionName": "https"}}),
])
def test_every_exposure_kind_sends_people_to_the_proxy_not_to_mlflows_own_port(stack, exposure):
    run = run_program(stack, **({"exposure": exposure} if exposure else {}),
                      mlflow={"apiUrl": "http://localhost:5000", "auth": {"kind": "oidc", "oidc": OIDC}})
    service_ports = {p["name"]: p["port"] for p in run.get("Service", "mlflow").outputs["spec"]["ports"]}
    (route,) = [*run.kinds("Route"), *run.kinds("HTTPRoute")]
    spec = route.outputs["spec"]
    if "to" in spec:  # an OpenShift Route names a port of the Service and of its pods
        assert spec["port"]["targetPort"] == sso.PROXY_PORT_NAME and sso.PROXY_PORT_NAME in service_ports
        assert containers(run)["sso"]["ports"][0]["name"] == sso.PROXY_PORT_NAME
    else:
        assert spec["rules"][0]["backendRefs"][0]["port"] == service_ports[sso.PROXY_PORT_NAME]
