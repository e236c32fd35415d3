"""MLflow's basic-auth app: a generated admin password and Flask secret key, the
auth config file (no secrets in it) in a ConfigMap.

Only `pulumi up` signs in as the admin (the dynamic providers) and only `pulumi up`
holds its password (in the state, encrypted): the auth Secret carries a salted scrypt
hash of it, which the migration Job's bootstrap step writes into the user store, so no
pod ever receives the password. In-cluster clients sign in as machine users of their
own (components/access.py), and anonymous clients get 401 on the REST API and on
`/v1/traces` alike.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components import sso
from components.config import Auth
from components.kube import secret_env

CONFIG_DIR = "/etc/mlflow-auth"
CONFIG_FILE = "basic_auth.ini"
USERNAME_KEY = "username"
PASSWORD_KEY = "password"
ADMIN_HASH_KEY = "admin-password-hash"
SECRET_KEY_KEY = "flask-secret-key"
# The env vars MLflow's own client reads; in-cluster clients (the collector, the trace jobs) get them
# from their machine user's Secret.
USERNAME_ENV = "MLFLOW_TRACKING_USERNAME"
PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"
BASIC_AUTH_FUNCTION = "mlflow.server.auth:authenticate_request_basic_auth"  # MLflow's own
# Users other than the admin see nothing until an admin grants it.
DEFAULT_PERMISSION = "NO_PERMISSIONS"
# werkzeug's default scrypt parameters, which MLflow's user store hashes with and checks against.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1


@functools.lru_cache(maxsize=16)
def password_hash(password: str, salt: str) -> str:
    """The hash MLflow's user store keeps for `password` (werkzeug's `scrypt:n:r:p$salt$hex`),
    with a fixed salt, so that the same password gives the same hash at every `pulumi up`."""
    digest = hashlib.scrypt(password.encode(), salt=salt.encode(), n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            maxmem=132 * SCRYPT_N * SCRYPT_R * SCRYPT_P).hex()
    return f"scrypt:{SCRYPT_N}:{SCRYPT_R}:{SCRYPT_P}${salt}${digest}"


# Run by the migration Job after the auth store's upgrade, with the admin's password hash in its
# env: the admin exists, is an admin, and signs in with the stack's password, which no pod sees. A
# kept auth database (after `destroy`) gets the new hash instead of locking `pulumi up` out.
ADMIN_BOOTSTRAP = """\
import os
from mlflow.server.auth.db.models import SqlUser
from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore
store = SqlAlchemyStore()
store.init_db(os.environ["MLFLOW_AUTH_DATABASE_URI"])
name, password_hash = os.environ["MLFLOW_AUTH_ADMIN_USERNAME"], os.environ["MLFLOW_AUTH_ADMIN_PASSWORD_HASH"]
with store.ManagedSessionMaker(read_only=False) as session:
    admin = session.query(SqlUser).filter(SqlUser.username == name).one_or_none()
    if admin is None:
        session.add(SqlUser(username=name, password_hash=password_hash, is_admin=True))
    else:
        admin.password_hash, admin.is_admin = password_hash, True
print(f"admin {name!r} signs in with the stack's password")
"""


def admin_bootstrap_env(refs: AuthRefs, database_uri: str, admin_username: str) -> list[dict]:
    """What ADMIN_BOOTSTRAP reads: the auth store's URI (no credentials: libpq's env has them),
    the admin's name, and its password's hash from the auth Secret."""
    return [
        {"name": "MLFLOW_AUTH_DATABASE_URI", "value": database_uri},
        {"name": "MLFLOW_AUTH_ADMIN_USERNAME", "value": admin_username},
        *secret_env(refs.secret_name, {"MLFLOW_AUTH_ADMIN_PASSWORD_HASH": ADMIN_HASH_KEY}),
    ]


def auth_config_ini(*, database_uri: str, admin_username: str, credential_cache_seconds: int,
                    authorization_function: str = BASIC_AUTH_FUNCTION) -> str:
    """MLflow's auth config. The admin is created by the migration Job
    (ADMIN_BOOTSTRAP) and the database credentials come from libpq's
    environment, so this file holds nothing secret. With a credential cache each
    worker hashes a password once per `credential_cache_seconds` instead of on
    every request (a scrypt hash costs ~0.13 CPU s: docs/performance.md)."""
    return "\n".join([
        "[mlflow]",
        f"default_permission = {DEFAULT_PERMISSION}",
        f"database_uri = {database_uri}",
        f"admin_username = {admin_username}",
        f"authorization_function = {authorization_function}",
        f"auth_cache_ttl_seconds = {credential_cache_seconds}",
        "",
    ])


@dataclass(frozen=True)
class AuthRefs:
    """Where a pod finds the auth settings."""

    secret_name: pulumi.Input[str]
    config_map_name: pulumi.Input[str]


def client_env(secret_name: pulumi.Input[str] | None) -> list[dict]:
    """A machine user's credentials (its Secret) as the env of an in-cluster client of MLflow;
    none without auth."""
    if secret_name is None:
        return []
    return secret_env(secret_name, {USERNAME_ENV: USERNAME_KEY, PASSWORD_ENV: PASSWORD_KEY})


class MlflowAuth(pulumi.ComponentResource):
    """The admin credentials and auth config of MLflow's basic-auth app.

    `credentials` (a Pulumi secret) is what the dynamic providers send; the Secret holds the
    admin's name, its password's hash (for the bootstrap step) and the Flask key, never the
    password."""

    refs: AuthRefs
    credentials: pulumi.Output[dict]

    def __init__(self, name: str, *, config: Auth, database_uri: str, metadata: dict,
                 opts: pulumi.ResourceOptions | None = None):
        """`metadata`: the server's namespace and labels, which its auth objects carry too."""
        super().__init__("mlflow-tracing:index:MlflowAuth", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # MLflow wants >= 12 characters; URL- and header-safe specials only.
        password = random.RandomPassword(f"{name}-admin-password", length=32, special=True,
                                         override_special="-_.~", opts=child)
        salt = random.RandomPassword(f"{name}-admin-hash-salt", length=16, special=False, opts=child)
        secret_key = random.RandomPassword(f"{name}-flask-secret-key", length=64, special=False, opts=child)
        sign_in: dict[str, pulumi.Input[str]] = {}
        files: dict[str, str] = {}
        if config.oidc is not None:
            # the proxy's session cookie key, and the password by which MLflow knows the proxy admitted a user
            sign_in = {key: random.RandomPassword(f"{name}-{key}", length=length, special=False, opts=child).result
                       for key, length in ((sso.COOKIE_SECRET_KEY, sso.COOKIE_SECRET_LENGTH),
                                           (sso.PROXY_PASSWORD_KEY, 48))}
            files = {f"{sso.AUTH_MODULE_NAME}.py": sso.AUTH_MODULE}
        secret = k8s.core.v1.Secret(
            f"{name}-secret",
            metadata=metadata,
            string_data={USERNAME_KEY: config.admin_username,
                         ADMIN_HASH_KEY: pulumi.Output.all(password.result, salt.result).apply(
                             lambda values: password_hash(*values)),
                         SECRET_KEY_KEY: secret_key.result, **sign_in},
            opts=child,
        )
        config_map = k8s.core.v1.ConfigMap(
            f"{name}-config",
            metadata=metadata,
            data={CONFIG_FILE: auth_config_ini(
                database_uri=database_uri, admin_username=config.admin_username,
                credential_cache_seconds=config.credential_cache_seconds,
                authorization_function=sso.AUTH_FUNCTION if config.oidc else BASIC_AUTH_FUNCTION), **files},
            opts=child,
        )
        self.refs = AuthRefs(secret_name=secret.metadata.name, config_map_name=config_map.metadata.name)
        self.credentials = pulumi.Output.secret({"username": config.admin_username, "password": password.result})
        self.register_outputs({"secretName": secret.metadata.name})
