"""A single sign-on stack (`auth.kind: oidc`) deployed by the real engine: a real Keycloak serves
https on a certificate of a private CA, which the operator hands to the stack as `caSecret`, with
the client's secret, in a namespace they made. MLflow's pod runs the sign-in proxy (the stand-in
of the oauth2-proxy image) beside MLflow; `pulumi up` and its post-deploy check pass, people are
sent to the provider, anonymous API calls get 401, a user's token from the provider reaches
MLflow as a user of their own, and a user outside the allowed group is refused. The browser flow
itself is tests/integration/test_mlflow_sso.py's."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from components import mlflow as mlflow_component
from components import sso
from tests.support.cluster import server_certificate
from tests.support.keycloak import KeycloakProcess, OidcClient

NAMESPACE = "sso"
EXPERIMENT = "agent-traces"
HOST = "mlflow.sso.test"  # the exposure's host: people come in at https://HOST
REALM, ALLOWED_GROUP = "corp", "mlflow-users"
ALICE, BOB = ("alice", "alice-Password-1"), ("bob", "bob-Password-1")  # bob is in another group
CLIENT_SECRET_NAME, CA_SECRET_NAME = "mlflow-oidc", "corp-ca"
SEARCH = "/api/2.0/mlflow/experiments/search?max_results=10"


@dataclass(frozen=True)
class Provider:
    keycloak: KeycloakProcess
    client: OidcClient  # MLflow's, for the authorization-code flow
    cli_client: OidcClient  # a command-line client's, whose tokens name MLflow's client as audience


@pytest.fixture(scope="module")
def provider(cluster, workdir):
    """The organisation's provider, on a certificate of the cluster's CA (a private CA to the proxy)."""
    directory = workdir / "keycloak-sso"
    directory.mkdir()
    keycloak = KeycloakProcess(directory, tls=server_certificate(cluster.ca.parent, "keycloak"), ca=cluster.ca)
    keycloak.start()
    try:
        keycloak.create_realm(REALM, [ALLOWED_GROUP, "others"])
        client = keycloak.create_client(REALM, "mlflow", [f"https://{HOST}/oauth2/callback"], [f"https://{HOST}/*"])
        cli_client = keycloak.create_client(REALM, "mlflow-cli", [], [], audience="mlflow", password_grant=True)
        keycloak.create_user(REALM, ALICE[0], ALICE[1], [ALLOWED_GROUP])
        keycloak.create_user(REALM, BOB[0], BOB[1], ["others"])
        yield Provider(keycloak, client, cli_client)
    finally:
        keycloak.stop()


def create(cluster, path: str, body: dict) -> None:
    response = cluster.session().post(f"{cluster.url}{path}", json=body, timeout=10)
    assert response.status_code == 201, response.text


@pytest.fixture(scope="module")
def stack(project, cluster, node, provider, mlflow_url):
    """What the operator prepares (the namespace, the client's Secret, the CA's Secret), then one up."""
    create(cluster, "/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
    for name, data in ((CLIENT_SECRET_NAME, {sso.CLIENT_SECRET_KEY: provider.client.secret}),
                       (CA_SECRET_NAME, {sso.PROVIDER_CA_KEY: cluster.ca.read_text()})):
        create(cluster, f"/api/v1/namespaces/{NAMESPACE}/secrets", {
            "metadata": {"name": name}, "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})
    stack = project.stack("sso", {
        "namespace": NAMESPACE,
        "createNamespace": False,
        "exposure": {"kind": "ingress", "host": HOST, "tls": {"enabled": True}},
        "postgres": {"storageSize": "1Gi"},
        "mlflow": {"apiUrl": mlflow_url, "artifacts": {"size": "1Gi"}, "auth": {"kind": "oidc", "oidc": {
            "issuerUrl": provider.keycloak.issuer(REALM), "clientId": provider.client.client_id,
            "clientSecret": CLIENT_SECRET_NAME, "caSecret": CA_SECRET_NAME, "allowedGroups": [ALLOWED_GROUP],
            "logoutUrl": provider.keycloak.end_session_url(REALM)}}},
        "experiments": [{"name": EXPERIMENT, "default": True}],
    })
    stack.up().check("up of the single sign-on stack")
    yield stack
    stack.destroy().check("destroy of the single sign-on stack")


@pytest.fixture(scope="module")
def people_url(node, stack) -> str:
    """The Service's sign-in port, which the Ingress routes to."""
    return node.service_url(NAMESPACE, mlflow_component.SERVICE_NAME, sso.PROXY_PORT)


def through_ingress(url: str, token: str | None = None, **kwargs) -> requests.Response:
    headers = {"Host": HOST, "X-Forwarded-Proto": "https",
               **({"Authorization": f"Bearer {token}"} if token else {})}
    return requests.get(url, headers=headers, timeout=10, **kwargs)


def test_up_and_its_post_deploy_check_pass_with_the_proxy_running_beside_mlflow(stack, cluster):
    jobs = cluster.get(f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs")["items"]
    (check,) = [j for j in jobs if j["metadata"]["labels"]["app.kubernetes.io/name"] == "trace-check"]
    assert check["status"].get("succeeded") == 1
    (pod,) = [p for p in cluster.get(f"/api/v1/namespaces/{NAMESPACE}/pods")["items"]
              if p["metadata"]["labels"]["app.kubernetes.io/name"] == mlflow_component.COMPONENT]
    assert {c["name"]: c["ready"] for c in pod["status"]["containerStatuses"]} == {
        mlflow_component.COMPONENT: True, "sso": True}


def test_people_are_sent_to_the_provider_and_anonymous_api_calls_get_401(stack, provider, people_url):
    opened = through_ingress(people_url, allow_redirects=False)
    assert opened.status_code == 302, opened.text
    login = urlsplit(opened.headers["Location"])
    assert f"{login.scheme}://{login.netloc}{login.path}" == \
        f"{provider.keycloak.issuer(REALM)}/protocol/openid-connect/auth"
    assert parse_qs(login.query)["redirect_uri"] == [f"https://{HOST}/oauth2/callback"]
    assert through_ingress(f"{people_url}{SEARCH}").status_code == 401


def test_a_users_token_reaches_mlflow_as_their_own_user_and_another_group_is_refused(stack, provider, people_url,
                                                                                    mlflow_url):
    token = provider.keycloak.password_token(REALM, provider.cli_client, *ALICE)
    me = through_ingress(f"{people_url}/api/2.0/mlflow/users/current", token)
    assert me.status_code == 200, me.text
    assert (me.json()["user"]["username"], me.json()["user"]["is_admin"]) == (f"{ALICE[0]}@example.com", False)
    # the user the proxy's sign-in created is MLflow's: the admin sees it on MLflow's own port
    admin = stack.outputs()["mlflowCredentials"]
    found = requests.get(f"{mlflow_url}/api/2.0/mlflow/users/get", params={"username": f"{ALICE[0]}@example.com"},
                         auth=(admin["username"], admin["password"]), timeout=10)
    assert found.status_code == 200, found.text
    other = provider.keycloak.password_token(REALM, provider.cli_client, *BOB)
    assert through_ingress(f"{people_url}{SEARCH}", other).status_code == 403
