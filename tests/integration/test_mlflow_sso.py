"""Single sign-on with the real pieces: a real Keycloak (Maven Central) as the organisation's OIDC
provider, oauth2-proxy built from its Go module at the version of the image the stack deploys,
the deployed MLflow with the basic-auth app and the stack's authorization function
(components/sso.py), and a real headless Chromium signing people in. Screenshots of each step are
kept under .artifacts/sso (MLFLOW_TRACING_ARTIFACTS).

What it proves (docs: the single sign-on section): opening MLflow leads to the provider's login;
an allowed user lands on the MLflow UI as a user of their own, and sees an experiment once an
admin grants it; a user outside the allowed group is refused; anonymous API calls get 401 (the
UI a redirect); a user's access token from the provider works for API clients; signing out ends
the provider's session too; the machine users' basic auth keeps working on MLflow's own port
and is refused by the proxy."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
from pathlib import Path

import pytest
import requests

from components.auth import auth_config_ini
from components.config import Oidc
from components.sso import (
    AUTH_FUNCTION,
    AUTH_MODULE,
    AUTH_MODULE_NAME,
    CLIENT_SECRET_ENV,
    COOKIE_SECRET_ENV,
    OAUTH2_PROXY_IMAGE,
    PROXY_PASSWORD_ENV,
    PROXY_PASSWORD_PROXY_ENV,
    oauth2_proxy_args,
)
from tests.support.browser import artifacts_dir, chromium
from tests.support.images import deployed_mlflow_image, mlflow_venv, oauth2_proxy_binary
from tests.support.keycloak import KeycloakProcess
from tests.support.processes import free_port, stop, wait_until

REALM = "corp"
ALLOWED_GROUP = "mlflow-users"
ALICE, BOB = ("alice", "alice-Password-1"), ("bob", "bob-Password-1")  # bob is in another group
ADMIN = ("admin", "admin-Password-sso1")
SEARCH = "/api/2.0/mlflow/experiments/search?max_results=10"
START_TIMEOUT = 180


class SsoStack:
    """Keycloak with the realm set up, MLflow behind oauth2-proxy, on loopback."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.keycloak = KeycloakProcess(directory / "keycloak")
        self.mlflow_port, self.proxy_port = free_port(), free_port()
        self.processes: list[subprocess.Popen] = []

    @property
    def url(self) -> str:  # what people open: the proxy
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def mlflow_url(self) -> str:  # MLflow's own port, which only in-namespace clients reach
        return f"http://127.0.0.1:{self.mlflow_port}"

    def _run(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = self.directory / f"{name}.log"
        process = subprocess.Popen(argv, env=env, cwd=self.directory, stdout=log.open("ab"),
                                   stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        return process

    def start(self) -> SsoStack:
        self.directory.joinpath("keycloak").mkdir(parents=True)
        self.keycloak.start()
        self.keycloak.create_realm(REALM, [ALLOWED_GROUP, "others"])
        self.client = self.keycloak.create_client(REALM, "mlflow", [f"{self.url}/oauth2/callback"], [f"{self.url}/*"])
        self.cli_client = self.keycloak.create_client(REALM, "mlflow-cli", [], [], audience="mlflow",
                                                      password_grant=True)
        self.keycloak.create_user(REALM, ALICE[0], ALICE[1], [ALLOWED_GROUP])
        self.keycloak.create_user(REALM, BOB[0], BOB[1], ["others"])
        self.oidc = Oidc(issuer_url=self.keycloak.issuer(REALM), client_id="mlflow", client_secret_name="unused",
                         scopes=("openid", "email", "profile"), groups_claim="groups",
                         allowed_groups=(ALLOWED_GROUP,), email_domains=("*",),
                         end_session_url=self.keycloak.end_session_url(REALM))

        self.proxy_password = proxy_password = secrets.token_urlsafe(24)
        modules = self.directory / "python"
        modules.mkdir()
        (modules / f"{AUTH_MODULE_NAME}.py").write_text(AUTH_MODULE)
        config = self.directory / "basic_auth.ini"
        config.write_text(auth_config_ini(database_uri=f"sqlite:///{self.directory}/auth.db",
                                          admin_username=ADMIN[0], credential_cache_seconds=0,
                                          authorization_function=AUTH_FUNCTION))
        venv = mlflow_venv(deployed_mlflow_image())
        mlflow = self._run("mlflow", [
            str(venv / "bin" / "mlflow"), "server", "--app-name", "basic-auth", "--host", "127.0.0.1",
            "--port", str(self.mlflow_port), "--workers", "2", "--backend-store-uri",
            f"sqlite:///{self.directory}/mlflow.db", "--allowed-hosts",
            f"127.0.0.1:{self.mlflow_port},127.0.0.1:{self.proxy_port}"], {
            "PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(self.directory), "LANG": "C.UTF-8",
            "PYTHONPATH": str(modules), "MLFLOW_AUTH_CONFIG_PATH": str(config),
            "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1], "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32),
            PROXY_PASSWORD_ENV: proxy_password})
        proxy = self._run("oauth2-proxy", [str(oauth2_proxy_binary(OAUTH2_PROXY_IMAGE)),
                                           *oauth2_proxy_args(self.oidc, public_url=self.url,
                                                              upstream_port=self.mlflow_port),
                                           f"--http-address=127.0.0.1:{self.proxy_port}"], {
            CLIENT_SECRET_ENV: self.client.secret, PROXY_PASSWORD_PROXY_ENV: proxy_password,
            COOKIE_SECRET_ENV: base64.urlsafe_b64encode(os.urandom(32)).decode()})
        wait_until(lambda: requests.get(f"{self.mlflow_url}/health", timeout=3).ok, START_TIMEOUT, "MLflow", mlflow,
                   self.directory / "mlflow.log")
        wait_until(lambda: requests.get(f"{self.url}/ping", timeout=3).ok, START_TIMEOUT, "oauth2-proxy", proxy,
                   self.directory / "oauth2-proxy.log")
        return self

    def stop(self) -> None:
        for process in reversed(self.processes):
            stop(process)
        self.keycloak.stop()


@pytest.fixture(scope="module")
def sso(workdir):
    stack = SsoStack(workdir / "sso")
    try:
        yield stack.start()
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def shots() -> Path:
    return artifacts_dir("sso")


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


def sign_in(page, sso: SsoStack, user: tuple[str, str], shots: Path, step: str) -> None:
    """Open MLflow: the provider's login page must come; sign in there."""
    page.goto(sso.url)
    assert page.url.startswith(sso.keycloak.issuer(REALM)), page.url  # the provider's login, not MLflow
    page.screenshot(path=shots / f"{step}-1-login-page.png")
    page.fill("#username", user[0])
    page.fill("#password", user[1])
    page.click("#kc-login")


def test_anonymous_api_calls_get_401_and_the_ui_redirects_to_the_provider(sso):
    assert requests.get(f"{sso.url}{SEARCH}", timeout=10).status_code == 401
    assert requests.post(f"{sso.url}/v1/traces", data=b"", timeout=10,
                         headers={"Content-Type": "application/x-protobuf"}).status_code == 401
    opened = requests.get(sso.url, allow_redirects=False, timeout=10)
    assert opened.status_code == 302 and opened.headers["Location"].startswith(sso.keycloak.issuer(REALM))


def test_the_allowed_user_lands_on_mlflow_as_a_user_of_their_own_and_sees_what_an_admin_grants(
        sso, browser, shots):
    experiment = requests.post(f"{sso.mlflow_url}/api/2.0/mlflow/experiments/create", auth=ADMIN, timeout=10,
                               json={"name": "chat-traces"})
    assert experiment.ok, experiment.text
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, sso, ALICE, shots, "alice")
    page.wait_for_url(f"{sso.url}/**", timeout=30_000)
    page.get_by_text("Experiments").first.wait_for(timeout=30_000)
    page.screenshot(path=shots / "alice-2-mlflow-home.png")
    me = page.request.get(f"{sso.url}/ajax-api/2.0/mlflow/users/current").json()["user"]
    assert (me["username"], me["is_admin"]) == (f"{ALICE[0]}@example.com", False)
    # A new user holds no rights (the stack's default); an admin grants them as to any MLflow user.
    assert page.request.get(f"{sso.url}{SEARCH}").json().get("experiments", []) == []
    granted = requests.post(f"{sso.mlflow_url}/api/3.0/mlflow/users/permissions/grant", auth=ADMIN, timeout=10,
                            json={"username": me["username"], "resource_type": "experiment",
                                  "resource_id": experiment.json()["experiment_id"], "permission": "READ"})
    assert granted.ok, granted.text
    page.goto(f"{sso.url}/#/experiments")
    page.get_by_text("chat-traces").first.wait_for(timeout=30_000)
    page.screenshot(path=shots / "alice-3-experiments-listed.png")
    context.close()


def test_a_user_outside_the_allowed_groups_is_refused(sso, browser, shots):
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, sso, BOB, shots, "bob")
    page.wait_for_load_state()
    page.screenshot(path=shots / "bob-2-refused.png")
    assert "403" in page.title()
    assert page.request.get(f"{sso.url}{SEARCH}").status == 401  # no session was kept
    context.close()


def test_a_users_access_token_works_for_api_clients_within_the_allowed_groups(sso):
    token = sso.keycloak.password_token(REALM, sso.cli_client, *ALICE)
    me = requests.get(f"{sso.url}/api/2.0/mlflow/users/current", headers={"Authorization": f"Bearer {token}"},
                      timeout=10)
    assert me.status_code == 200 and me.json()["user"]["username"] == f"{ALICE[0]}@example.com"
    other = sso.keycloak.password_token(REALM, sso.cli_client, *BOB)
    assert requests.get(f"{sso.url}{SEARCH}", headers={"Authorization": f"Bearer {other}"},
                        timeout=10).status_code == 403
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert requests.get(f"{sso.url}{SEARCH}", headers={"Authorization": f"Bearer {forged}"},
                        timeout=10).status_code in (401, 403)


def test_signing_out_ends_the_providers_session_too(sso, browser, shots):
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, sso, ALICE, shots, "logout")
    page.get_by_text("Experiments").first.wait_for(timeout=30_000)
    page.goto(f"{sso.url}/oauth2/sign_out")
    page.goto(sso.url)
    page.wait_for_load_state()
    page.screenshot(path=shots / "logout-2-after-sign-out.png")
    assert page.url.startswith(sso.keycloak.issuer(REALM)) and page.locator("#kc-login").count() == 1
    context.close()


def test_the_proxys_password_vouches_only_for_an_e_mail_address(sso):
    """A token without an e-mail reaches MLflow under its subject: a name without @ is refused, so no
    token can make someone the admin or a machine user."""
    me = f"{sso.mlflow_url}/api/2.0/mlflow/users/current"
    for name in (ADMIN[0], "otel-collector-1", "6c1f0b7e-subject"):
        assert requests.get(me, auth=(name, sso.proxy_password), timeout=10).status_code == 401, name
    carol = requests.get(me, auth=("carol@example.com", sso.proxy_password), timeout=10)
    assert carol.status_code == 200 and carol.json()["user"]["username"] == "carol@example.com"


def test_machine_users_keep_basic_auth_on_mlflows_own_port_and_the_proxy_refuses_it(sso):
    assert requests.get(f"{sso.mlflow_url}{SEARCH}", auth=ADMIN, timeout=10).status_code == 200
    assert requests.get(f"{sso.url}{SEARCH}", auth=ADMIN, timeout=10).status_code == 401
    # The proxy's identity is trusted only with the proxy's password: a made-up one is MLflow's basic auth.
    assert requests.get(f"{sso.mlflow_url}{SEARCH}", auth=(f"{ALICE[0]}@example.com", "guessed"),
                        timeout=10).status_code == 401
