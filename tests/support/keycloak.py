"""A real Keycloak (org.keycloak:keycloak-quarkus-dist from Maven Central, the version below) as
the organisation's OIDC provider: started in dev mode on loopback with an in-memory database,
set up through its admin REST API as an administrator would (a realm, a confidential client
with a group-membership mapper, groups and users). With `tls` it serves https only, on a
certificate of the caller's CA (`ca`), as an organisation's provider does.

The distribution is fetched once (checked against Maven Central's SHA-1) into the image store;
each Keycloak runs from a copy of it, because dev mode rewrites the distribution's lib/ at start.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.support.images import stored_build
from tests.support.processes import free_port, stop, wait_until

KEYCLOAK_VERSION = "26.7.3"
DIST_URL = ("https://repo1.maven.org/maven2/org/keycloak/keycloak-quarkus-dist/"
            f"{KEYCLOAK_VERSION}/keycloak-quarkus-dist-{KEYCLOAK_VERSION}.tar.gz")
JAVA_NEEDED = 21  # Keycloak 26's supported JDKs are 21 and newer
JVM_ROOT = Path("/usr/lib/jvm")
START_TIMEOUT = 240  # dev mode's first start builds the server (~1 min on 2 cores); generous for a loaded CI box
ADMIN = ("admin", "admin-Password-kc1")


def keycloak_dist() -> Path:
    """The unpacked distribution, fetched on first use."""

    def fetch(directory: Path) -> None:
        archive = directory / "keycloak.tar.gz"
        with requests.get(DIST_URL, stream=True, timeout=60) as response:
            response.raise_for_status()
            digest = hashlib.sha1()
            with archive.open("wb") as out:
                for chunk in response.iter_content(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
        expected = requests.get(f"{DIST_URL}.sha1", timeout=30)
        expected.raise_for_status()
        if digest.hexdigest() != expected.text.split()[0]:
            raise RuntimeError(f"{DIST_URL}: SHA-1 {digest.hexdigest()} is not Maven Central's {expected.text}")
        with tarfile.open(archive) as tar:
            tar.extractall(directory, filter="data")
        archive.unlink()

    return stored_build(f"keycloak-{KEYCLOAK_VERSION}", DIST_URL, fetch) / f"keycloak-{KEYCLOAK_VERSION}"


def java_home() -> Path:
    """A JDK Keycloak supports: the newest under /usr/lib/jvm of at least JAVA_NEEDED."""
    found = []
    for home in JVM_ROOT.iterdir() if JVM_ROOT.is_dir() else ():
        release = home / "release"
        if (home / "bin" / "java").exists() and release.exists():
            match = re.search(r'^JAVA_VERSION="(\d+)', release.read_text(), re.MULTILINE)
            if match and int(match.group(1)) >= JAVA_NEEDED:
                found.append((int(match.group(1)), home))
    if not found:
        raise RuntimeError(f"Keycloak {KEYCLOAK_VERSION} needs a JDK {JAVA_NEEDED} or newer under {JVM_ROOT}; "
                           f"install one (Debian: openjdk-{JAVA_NEEDED}-jre-headless or newer)")
    return max(found)[1]


@dataclass(frozen=True)
class OidcClient:
    client_id: str
    secret: str


class KeycloakProcess:
    """`kc.sh start-dev` on 127.0.0.1 with the bootstrap admin ADMIN; realms set up through `admin()`."""

    def __init__(self, directory: Path, tls: tuple[Path, Path] | None = None, ca: Path | None = None):
        """`tls`: (certificate, key) to serve https on; `ca`: what signed it, which this client trusts."""
        self.directory, self.tls = directory, tls
        self.verify: str | bool = str(ca) if ca else True
        self.port, self.management_port = free_port(), free_port()
        self.log = directory / "keycloak.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def issuer(self, realm: str) -> str:
        return f"{self.url}/realms/{realm}"

    def start(self) -> KeycloakProcess:
        home = self.directory / "keycloak"
        shutil.copytree(keycloak_dist(), home, symlinks=True)
        java = java_home()
        env = {"PATH": f"{java / 'bin'}:/usr/bin:/bin", "JAVA_HOME": str(java), "HOME": str(self.directory),
               "LANG": "C.UTF-8", "KC_BOOTSTRAP_ADMIN_USERNAME": ADMIN[0], "KC_BOOTSTRAP_ADMIN_PASSWORD": ADMIN[1]}
        listen = ([f"--https-port={self.port}", f"--https-certificate-file={self.tls[0]}",
                   f"--https-certificate-key-file={self.tls[1]}", "--http-enabled=false"] if self.tls else
                  [f"--http-port={self.port}"])
        self.process = subprocess.Popen(
            [str(home / "bin" / "kc.sh"), "start-dev", "--db=dev-mem", "--http-host=127.0.0.1", *listen,
             f"--http-management-port={self.management_port}", "--hostname-strict=false"],
            env=env, cwd=home, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: requests.get(f"{self.issuer('master')}/.well-known/openid-configuration",
                                        timeout=2, verify=self.verify).status_code == 200,
                   START_TIMEOUT, "Keycloak", self.process, self.log)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process, timeout=30)

    def admin(self) -> requests.Session:
        """A session signed in to the admin REST API as the bootstrap admin."""
        token = requests.post(f"{self.issuer('master')}/protocol/openid-connect/token", timeout=10,
                              verify=self.verify, data={
            "grant_type": "password", "client_id": "admin-cli", "username": ADMIN[0], "password": ADMIN[1]})
        token.raise_for_status()
        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE would override `verify`
        session.verify = self.verify
        session.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        return session

    def _created(self, session: requests.Session, path: str, body: dict) -> str:
        """POST to the admin API; the new object's id (from its Location)."""
        response = session.post(f"{self.url}/admin/realms{path}", json=body, timeout=10)
        if response.status_code != 201:
            raise RuntimeError(f"Keycloak refused POST {path}: HTTP {response.status_code} {response.text}")
        return response.headers.get("Location", "").rsplit("/", 1)[-1]

    def create_realm(self, realm: str, groups: list[str]) -> None:
        session = self.admin()
        self._created(session, "", {"realm": realm, "enabled": True})
        for group in groups:
            self._created(session, f"/{realm}/groups", {"name": group})

    def create_client(self, realm: str, client_id: str, redirect_uris: list[str], post_logout_uris: list[str],
                      audience: str | None = None, password_grant: bool = False) -> OidcClient:
        """A confidential client for the authorization-code flow whose tokens carry `groups` and name
        `audience` (by default the client itself) as their audience, which a bearer-token check compares.
        `password_grant`: a command-line client's, that signs a user in with a password (no browser)."""
        secret = hashlib.sha256(f"{realm}/{client_id}".encode()).hexdigest()[:32]
        session = self.admin()
        self._created(session, f"/{realm}/clients", {
            "clientId": client_id, "secret": secret, "publicClient": False, "protocol": "openid-connect",
            "standardFlowEnabled": not password_grant, "directAccessGrantsEnabled": password_grant,
            "redirectUris": redirect_uris,
            "attributes": {"post.logout.redirect.uris": "##".join(post_logout_uris),
                           "pkce.code.challenge.method": "S256"},
            "protocolMappers": [
                {"name": "groups", "protocol": "openid-connect", "protocolMapper": "oidc-group-membership-mapper",
                 "config": {"claim.name": "groups", "full.path": "false", "id.token.claim": "true",
                            "access.token.claim": "true", "userinfo.token.claim": "true"}},
                {"name": "audience", "protocol": "openid-connect", "protocolMapper": "oidc-audience-mapper",
                 "config": {"included.client.audience": audience or client_id, "access.token.claim": "true",
                            "id.token.claim": "false"}},
            ]})
        return OidcClient(client_id, secret)

    def create_user(self, realm: str, username: str, password: str, groups: list[str]) -> None:
        self._created(self.admin(), f"/{realm}/users", {
            "username": username, "email": f"{username}@example.com", "emailVerified": True,
            "firstName": username.capitalize(), "lastName": "Example", "enabled": True,
            "credentials": [{"type": "password", "value": password, "temporary": False}],
            "groups": [f"/{group}" for group in groups]})

    def password_token(self, realm: str, client: OidcClient, username: str, password: str) -> str:
        """A user's access token, as a command-line client gets it (the password grant)."""
        response = requests.post(f"{self.issuer(realm)}/protocol/openid-connect/token", timeout=10,
                                 verify=self.verify, data={
            "grant_type": "password", "client_id": client.client_id, "client_secret": client.secret,
            "username": username, "password": password, "scope": "openid email profile"})
        response.raise_for_status()
        return response.json()["access_token"]

    def end_session_url(self, realm: str) -> str:
        return f"{self.issuer(realm)}/protocol/openid-connect/logout"
