"""Single sign-on for MLflow (`auth.kind: oidc`): oauth2-proxy, in MLflow's pod, signs people in at
the organisation's OIDC provider and admits only the allowed groups and e-mail domains; MLflow's
basic-auth app stays behind it with its user store, so each person is a user of their own
inside MLflow (who created what, per-user permissions), and the machine clients keep their users.

How the identity crosses: oauth2-proxy sends each request it admits to MLflow over the pod's
loopback with `Authorization: Basic <e-mail>:<proxy password>`, a password generated for the stack
that only the MLflow pod holds. MLflow's authorization function (AUTH_MODULE below, named in
its auth config) accepts that password as proof the proxy admitted the user, creates the user
on first sign-in (without rights: an admin grants them, as for any MLflow user), and hands every
other request to MLflow's own basic auth (the admin, the machine users).

Why not the `mlflow-oidc-auth` plugin: it is not in MLflow's images, so it needs an image of our own
or a `pip install` at every container start, and it reaches into MLflow's internals (11 major
versions to date). The proxy and the authorization function are both documented extension
points of unchanged upstream images.
"""

from __future__ import annotations

import pulumi

from components.config import Oidc
from components.kube import container_security_context, secret_env

OAUTH2_PROXY_IMAGE = "quay.io/oauth2-proxy/oauth2-proxy:v7.15.6"
PROXY_PORT = 4180
PROXY_PORT_NAME = "sso"
# oauth2-proxy reads each flag from OAUTH2_PROXY_<FLAG> too: the secrets reach it only that way, never in args.
CLIENT_SECRET_ENV = "OAUTH2_PROXY_CLIENT_SECRET"
COOKIE_SECRET_ENV = "OAUTH2_PROXY_COOKIE_SECRET"
PROXY_PASSWORD_PROXY_ENV = "OAUTH2_PROXY_BASIC_AUTH_PASSWORD"
PROXY_PASSWORD_ENV = "MLFLOW_OIDC_PROXY_PASSWORD"  # the same password, in MLflow's container
# Keys of the stack's generated auth Secret (components/auth.py), and of the user's client Secret.
COOKIE_SECRET_KEY, PROXY_PASSWORD_KEY, CLIENT_SECRET_KEY = "oidc-cookie-secret", "oidc-proxy-password", "client-secret"
# oauth2-proxy takes a 16, 24 or 32-byte cookie secret (AES); these 32 URL-safe characters decode
# as base64 to 24 bytes (AES-192), which it prefers to the raw string.
COOKIE_SECRET_LENGTH = 32
# A provider whose certificate a private CA signed: that CA, from the user's Secret (key ca.crt).
PROVIDER_CA_VOLUME, PROVIDER_CA_DIR, PROVIDER_CA_KEY = "provider-ca", "/etc/oauth2-proxy/provider-ca", "ca.crt"
PROXY_RESOURCES = {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}}
AUTH_MODULE_NAME = "mlflow_tracing_oidc"
AUTH_FUNCTION = f"{AUTH_MODULE_NAME}:authenticate"
# Routes that answer 401 to a client without a session or token instead of redirecting it to the
# provider's login page: MLflow's REST APIs (as its UI calls them too) and OTLP.
API_ROUTES = ("^/api/", "^/ajax-api/", "^/v1/", "^/graphql")

AUTH_MODULE = '''\
"""MLflow's authorization function behind oauth2-proxy (components/sso.py): a request that carries
the proxy's password is the user the proxy signed in; any other is MLflow's basic auth."""
import hmac
import os
import secrets

from flask import request
from mlflow.exceptions import MlflowException
from mlflow.server.auth import authenticate_request_basic_auth, make_basic_auth_response, store
from werkzeug.datastructures import Authorization

_PROXY_PASSWORD = os.environ["MLFLOW_OIDC_PROXY_PASSWORD"].encode()


def authenticate():
    given = request.authorization
    if given is not None and given.type == "basic" and given.username \\
            and hmac.compare_digest((given.password or "").encode(), _PROXY_PASSWORD):
        # People are their e-mail address. A name without "@" comes from a token without an e-mail
        # (the proxy passes its subject instead) and could be the admin's or a machine user's: refused.
        if "@" not in given.username:
            return make_basic_auth_response()
        if not store.has_user(given.username):
            try:  # a password nobody knows: this user signs in only through the proxy
                store.create_user(given.username, secrets.token_urlsafe(32))
            except MlflowException:  # another worker created it meanwhile, or the name is refused
                if not store.has_user(given.username, use_primary=True):
                    return make_basic_auth_response()
        return Authorization("basic", {"username": given.username})
    return authenticate_request_basic_auth()
'''


def _with_query(url: str, parameter: str) -> str:
    separator = "" if url.endswith(("?", "&")) else "&" if "?" in url else "?"
    return f"{url}{separator}{parameter}"


def oauth2_proxy_args(oidc: Oidc, *, public_url: str, upstream_port: int) -> list[str]:
    """oauth2-proxy's flags (no secret among them) for MLflow at `public_url` on the pod's loopback."""
    public_url = public_url.rstrip("/")
    return [
        "--provider=oidc",
        f"--oidc-issuer-url={oidc.issuer_url}",
        f"--client-id={oidc.client_id}",
        f"--scope={' '.join(oidc.scopes)}",
        f"--oidc-groups-claim={oidc.groups_claim}",
        f"--redirect-url={public_url}/oauth2/callback",
        "--code-challenge-method=S256",
        f"--http-address=0.0.0.0:{PROXY_PORT}",
        f"--upstream=http://127.0.0.1:{upstream_port}",
        *(f"--email-domain={domain}" for domain in oidc.email_domains),
        *(f"--allowed-group={group}" for group in oidc.allowed_groups),
        # MLflow's user is the e-mail address, passed as Basic auth with the proxy's password (the last
        # two flags are the defaults, stated because MLflow's identity depends on them)
        "--prefer-email-to-user",
        "--pass-basic-auth",
        "--pass-user-headers",
        "--upstream-timeout=600s",  # slow trace searches and large uploads, as the exposure allows (default 30 s)
        # API clients may send the provider's access token instead of a session cookie
        "--skip-jwt-bearer-tokens",
        *(f"--api-route={route}" for route in API_ROUTES),
        "--skip-provider-button",
        "--silence-ping-logging",  # the kubelet's probes, every 10 s
        "--reverse-proxy",
        f"--cookie-secure={'true' if public_url.startswith('https://') else 'false'}",
        "--cookie-samesite=lax",
        *([f"--provider-ca-file={PROVIDER_CA_DIR}/{PROVIDER_CA_KEY}"] if oidc.ca_secret_name else []),
        # sign-out ends the provider's session too, else the next visit signs straight back in
        *([f"--backend-logout-url={_with_query(oidc.end_session_url, 'id_token_hint={id_token}')}"]
          if oidc.end_session_url else []),
    ]


def proxy_container(oidc: Oidc, *, public_url: str, upstream_port: int, auth_secret: pulumi.Input[str]) -> dict:
    """oauth2-proxy beside MLflow in its pod: the exposure's port. Its secrets come from the user's
    client Secret and the stack's auth Secret, by env only."""
    return {
        "name": "sso",
        "image": OAUTH2_PROXY_IMAGE,
        "args": oauth2_proxy_args(oidc, public_url=public_url, upstream_port=upstream_port),
        "env": [*secret_env(oidc.client_secret_name, {CLIENT_SECRET_ENV: CLIENT_SECRET_KEY}),
                *secret_env(auth_secret, {COOKIE_SECRET_ENV: COOKIE_SECRET_KEY,
                                          PROXY_PASSWORD_PROXY_ENV: PROXY_PASSWORD_KEY})],
        "ports": [{"name": PROXY_PORT_NAME, "containerPort": PROXY_PORT}],
        "resources": PROXY_RESOURCES,
        "securityContext": container_security_context(read_only_root=True),
        **({"volumeMounts": [{"name": PROVIDER_CA_VOLUME, "mountPath": PROVIDER_CA_DIR, "readOnly": True}]}
           if oidc.ca_secret_name else {}),
        "readinessProbe": {"httpGet": {"path": "/ping", "port": PROXY_PORT_NAME}, "periodSeconds": 10},
        "livenessProbe": {"httpGet": {"path": "/ping", "port": PROXY_PORT_NAME}, "periodSeconds": 20},
    }


def proxy_volumes(oidc: Oidc) -> list[dict]:
    """The pod volumes the proxy mounts: the provider's CA, when the user names one."""
    if not oidc.ca_secret_name:
        return []
    return [{"name": PROVIDER_CA_VOLUME, "secret": {"secretName": oidc.ca_secret_name}}]


def server_env(auth_secret: pulumi.Input[str], module_dir: str) -> list[dict]:
    """What MLflow's container adds: the proxy's password, and the authorization function on its path."""
    return [*secret_env(auth_secret, {PROXY_PASSWORD_ENV: PROXY_PASSWORD_KEY}),
            {"name": "PYTHONPATH", "value": module_dir}]
