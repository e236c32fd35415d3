"""The MLflow server: its artifact store, basic auth (never a password over
plain HTTP unless the stack accepts it), and the memory its workers need."""

from __future__ import annotations

import re
import urllib.parse

from components.config.fields import (
    _DATABASE_NAME,
    _autoscaling,
    _image,
    _resources,
    _storage_size,
    has_trace_permissions,
    schema_line,
)
from components.config.reader import _Reader
from components.config.types import ARTIFACT_KINDS, AUTH_KINDS, Artifacts, Auth, Exposure, Mlflow, Oidc

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
ACCESS_MODES = ("ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod")
# A cached password check outlives a password change or a user's deletion on the other workers and
# replicas by up to this long, so the cache stays short.
MAX_CREDENTIAL_CACHE_SECONDS = 300

# Footprint of `mlflow server` (process-tree PSS with a PostgreSQL backend, as
# benchmarks/mlflow_memory.py measures it; an upper bound, see docs/operations.md, Sizing):
# the CLI, one uvicorn process per worker, and the job runner with its huey
# consumers when job execution is on.
MLFLOW_CLI_MIB = 250
MLFLOW_WORKER_MIB = 250
MLFLOW_JOB_RUNNER_MIB = 8 * 240
MEMORY_HEADROOM = 0.25


def mlflow_footprint_mib(workers: int, job_execution: bool) -> int:
    """Expected resident memory of `mlflow server` with these settings (an upper bound)."""
    return MLFLOW_CLI_MIB + workers * MLFLOW_WORKER_MIB + (MLFLOW_JOB_RUNNER_MIB if job_execution else 0)


def _artifacts(reader: _Reader) -> Artifacts:
    kind = reader.choice("kind", ARTIFACT_KINDS)
    artifacts = Artifacts(
        kind=kind,
        size=_storage_size(reader, "size"),
        storage_class=reader.text("storageClass", optional=True),
        access_mode=reader.choice("accessMode", ACCESS_MODES),
        uri=reader.text("uri", optional=True),
        endpoint_url=reader.text("endpointUrl", optional=True),
        secret_name=reader.text("secretName", optional=True),
    )
    if kind == "s3":
        if not artifacts.uri or not re.match(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$", artifacts.uri):
            reader.problems.add(reader.at("uri"), "artifacts kind s3 needs uri: s3://<bucket>[/prefix]")
        if not artifacts.secret_name:
            reader.problems.add(
                reader.at("secretName"),
                "artifacts kind s3 needs a Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; name it here",
            )
        if artifacts.endpoint_url and not re.match(r"^https?://", artifacts.endpoint_url):
            reader.problems.add(reader.at("endpointUrl"), "must be an http(s) URL")
    return artifacts


def _https_url(reader: _Reader, name: str, example: str, optional: bool = False) -> str | None:
    url = reader.text(name, optional=True)
    if url is None:
        if not optional:
            reader.problems.add(reader.at(name), f"auth kind oidc needs the provider's {name}, such as {example}")
    elif not re.match(r"^https://[^/\s]+", url):
        reader.problems.add(reader.at(name), f"{url!r} must be an https:// URL (tokens and the client secret cross "
                                             f"it), such as {example}")
    return url.rstrip("/") if url else None


def _oidc(reader: _Reader) -> Oidc:
    reader.only("issuerUrl", "clientId", "clientSecret", "scopes", "groupsClaim", "allowedGroups", "emailDomains",
                "logoutUrl", "caSecret")
    issuer = _https_url(reader, "issuerUrl", "https://keycloak.example.com/realms/corp")
    client_id, secret = reader.text("clientId", optional=True), reader.text("clientSecret", optional=True)
    if client_id is None:
        reader.problems.add(reader.at("clientId"), "auth kind oidc needs the client ID registered at the provider")
    if secret is None:
        reader.problems.add(reader.at("clientSecret"), "auth kind oidc needs the name of a Secret in the namespace "
                                                       "holding the client's secret under the key client-secret")
    scopes = reader.strings("scopes")
    if scopes and "openid" not in scopes:
        reader.problems.add(reader.at("scopes"), f"{list(scopes)} lacks openid, without which there is no ID token")
    domains = reader.strings("emailDomains")
    if not domains:
        reader.problems.add(reader.at("emailDomains"), "list the e-mail domains that may sign in, or [\"*\"] for any")
    groups_claim = (reader.text("groupsClaim", optional=True) or "").strip()
    allowed_groups = reader.strings("allowedGroups")
    if not groups_claim:
        reader.problems.add(reader.at("groupsClaim"), "name the ID token's claim that lists the user's groups, "
                                                      "such as groups (the default)")
    if not allowed_groups and "*" in domains:
        reader.problems.warn(reader.at("allowedGroups"), "anyone the provider signs in, from any e-mail domain, "
                             "becomes an MLflow user (seeing nothing until an admin grants it); list the groups "
                             "that may enter, or the e-mail domains in emailDomains")
    return Oidc(
        issuer_url=issuer or "", client_id=client_id or "", client_secret_name=secret or "", scopes=scopes,
        groups_claim=groups_claim, allowed_groups=allowed_groups, email_domains=domains,
        end_session_url=_https_url(reader, "logoutUrl", "https://keycloak.example.com/realms/corp/protocol/"
                                                        "openid-connect/logout", optional=True),
        ca_secret_name=reader.text("caSecret", optional=True),
    )


def _auth(reader: _Reader, postgres_database: str | None) -> Auth:
    admin_username, database = reader.text("adminUsername"), reader.text("database")
    kind = reader.choice("kind", AUTH_KINDS)
    auth = Auth(
        kind=kind,
        oidc=_oidc(reader.child("oidc")) if kind == "oidc" else None,
        admin_username=admin_username or "",
        database=database or "",
        allow_plain_http=reader.flag("allowPlainHttp"),
        credential_cache_seconds=reader.integer("credentialCacheSeconds", 0),
        machine_password_revision=reader.integer("machinePasswordRevision", 1),
    )
    if auth.credential_cache_seconds > MAX_CREDENTIAL_CACHE_SECONDS:
        reader.problems.add(
            reader.at("credentialCacheSeconds"),
            f"must be at most {MAX_CREDENTIAL_CACHE_SECONDS} (0 turns the cache off), got "
            f"{auth.credential_cache_seconds}: the other workers keep accepting a deleted user or an old "
            f"password this long",
        )
    if admin_username is not None and not re.match(r"^[A-Za-z0-9._@-]+$", admin_username):
        reader.problems.add(reader.at("adminUsername"), "use letters, digits and . _ @ - only")
    if database is not None:
        if not _DATABASE_NAME.match(database):
            reader.problems.add(
                reader.at("database"), f"{database!r} must be a lower-case identifier such as mlflow_auth"
            )
        elif database == postgres_database:
            reader.problems.add(
                reader.at("database"),
                "must differ from MLflow's own database (its tables would clash); keep the default mlflow_auth",
            )
    return auth


def _refuse_plain_http_passwords(reader: _Reader, exposure: Exposure, api_url: str | None, auth: Auth) -> None:
    """With basic auth every request carries a password. The URL `pulumi up`
    signs in at (mlflow.apiUrl, else the exposure's) must be HTTPS or loopback
    (a port-forward) unless the stack sets auth.allowPlainHttp; a plain-HTTP
    exposure that only people sign in at is warned about."""
    url = api_url or exposure.url
    parts = urllib.parse.urlsplit(url) if url else None
    allow, kind = reader.at("auth.allowPlainHttp"), reader.at("auth.kind")
    if parts and parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        port_forward = "a port-forward such as http://localhost:5000"
        if api_url:
            key, ways = reader.at("apiUrl"), ["use https://", f"use {port_forward}"]
        else:
            key = "exposure.tls.enabled"
            ways = ["set exposure.tls.enabled true (with tls.secretName or tls.clusterIssuer)",
                    f"point {reader.at('apiUrl')} at {port_forward}"]
        ways.append(f"set {kind} none")
        message = f"with {kind} basic, `pulumi up` sends the admin password in clear text to {url}"
        if auth.allow_plain_http:
            reader.problems.warn(key, f"{message} ({allow} is true); to stop it, {_either(ways)}")
        else:
            reader.problems.add(key, f"{message}; {_either([*ways, f'set {allow} true to accept it'])}")
    elif exposure.url and exposure.scheme == "http":
        reader.problems.warn(
            "exposure.tls.enabled",
            f"with {kind} basic, whoever signs in at {exposure.url} sends a password in clear text; set it true "
            f"(with tls.secretName or tls.clusterIssuer), or set {kind} none",
        )


def _refuse_what_sign_in_needs(reader: _Reader, exposure: Exposure, api_url: str | None, auth: Auth) -> None:
    """People sign in through the exposure: the provider sends them back to an https URL and the session
    cookie is Secure. `pulumi up` signs in as the admin on MLflow's own port, which the proxy does not
    pass (it admits only its sessions and the provider's tokens). People are their e-mail address
    inside MLflow, so the admin's name has none (sso.AUTH_MODULE refuses such names through the proxy)."""
    kind = reader.at("auth.kind")
    if exposure.kind == "none":
        reader.problems.add("exposure.kind", f"with {kind} oidc people sign in through the exposure, and there is "
                                             "none: set ingress, route or httproute, with TLS")
    elif exposure.scheme != "https":
        reader.problems.add("exposure.tls.enabled", f"with {kind} oidc people sign in through the exposure, which "
                                                    "must be https: set it true (with tls.secretName or "
                                                    "tls.clusterIssuer)")
    port_forward = "point it at a port-forward such as http://localhost:5000 (kubectl port-forward svc/mlflow 5000)"
    if api_url is None:
        reader.problems.add(reader.at("apiUrl"), f"with {kind} oidc, `pulumi up` signs in as the admin on MLflow's "
                                                 f"own port, which the sign-in proxy does not pass; {port_forward}")
    elif exposure.host and (urllib.parse.urlsplit(api_url).hostname or "") == exposure.host.lower():
        reader.problems.add(reader.at("apiUrl"), f"{api_url} is the exposure's host, where with {kind} oidc the "
                                                 f"sign-in proxy refuses the admin's password; {port_forward}")
    if "@" in auth.admin_username:
        reader.problems.add(reader.at("auth.adminUsername"), f"with {kind} oidc people are their e-mail address "
                                                             "inside MLflow, so the admin's name must not be one; "
                                                             "choose a name without @, such as admin")


def _either(ways: list[str]) -> str:
    return ", ".join(ways[:-1]) + f", or {ways[-1]}" if len(ways) > 1 else ways[0]


def _mlflow(reader: _Reader, exposure: Exposure, postgres_database: str | None) -> Mlflow:
    image = _image(reader)
    replicas = reader.integer("replicas", 1)
    autoscaling = _autoscaling(reader.child("autoscaling"))
    workers = reader.integer("workers", 1)
    job_execution = reader.flag("jobExecution")
    resources = _resources(reader.child("resources"))
    artifacts = _artifacts(reader.child("artifacts"))
    extra_hosts = reader.strings("extraAllowedHosts")
    api_url = reader.text("apiUrl", optional=True)
    for host in extra_hosts:
        if host.strip() in ("*", "all") or "," in host:
            reader.problems.add(
                reader.at("extraAllowedHosts"),
                f"{host!r} would disable or break the Host check; list host names (wildcards such as "
                "*.example.com are fine)",
            )
    needed_mib = mlflow_footprint_mib(workers, job_execution)
    limit_mib = resources.memory_limit_bytes / 2**20 if "memory" in resources.limits else 0
    if limit_mib and limit_mib * (1 - MEMORY_HEADROOM) < needed_mib:
        minimum = int(needed_mib / (1 - MEMORY_HEADROOM)) + 1
        reader.problems.add(
            reader.at("resources.limits.memory"),
            f"{resources.limits['memory']} is too small for {workers} workers"
            f"{' with job execution' if job_execution else ''} (~{needed_mib}Mi resident, OOM-killed without "
            f"25% headroom); raise it to at least {minimum}Mi, or lower workers / turn jobExecution off",
        )
    if api_url is not None and not re.match(r"^https?://[^/\s]+", api_url):
        reader.problems.add(reader.at("apiUrl"), f"{api_url!r} must be an http(s) URL such as http://localhost:5000")
    auth = _auth(reader.child("auth"), postgres_database)
    if auth.kind == "oidc":
        _refuse_what_sign_in_needs(reader, exposure, api_url, auth)
    if auth.enabled:
        _refuse_plain_http_passwords(reader, exposure, api_url, auth)
    if api_url is None and exposure.kind == "none":
        reader.problems.add(
            reader.at("apiUrl"),
            "with exposure.kind none, `pulumi up` cannot reach MLflow to create experiments; set apiUrl "
            "(e.g. http://localhost:5000 with `kubectl port-forward svc/mlflow 5000`)",
        )
    for name in extra_hosts:
        if "://" in name or "/" in name:
            reader.problems.add(
                reader.at("extraAllowedHosts"),
                f"{name!r}: list Host header values (a name, with an optional :port), not URLs",
            )
    mlflow = Mlflow(
        image=image,
        schema=schema_line(image),
        trace_permissions=has_trace_permissions(image),
        replicas=replicas,
        workers=workers,
        job_execution=job_execution,
        resources=resources,
        artifacts=artifacts,
        extra_allowed_hosts=extra_hosts,
        api_url=api_url.rstrip("/") if api_url else None,
        auth=auth,
        autoscaling=autoscaling,
    )
    if mlflow.scales_out:
        _refuse_what_one_replica_needs(reader, mlflow)
    return mlflow


def _refuse_what_one_replica_needs(reader: _Reader, mlflow: Mlflow) -> None:
    """Several servers at once share the artifact volume, and would each run the periodic jobs."""
    autoscaling, artifacts = mlflow.autoscaling.enabled, mlflow.artifacts
    key = reader.at("autoscaling.enabled" if autoscaling else "replicas")
    scaling = "autoscaling" if autoscaling else f"{mlflow.replicas} replicas"
    if artifacts.single_writer:
        reader.problems.add(
            key,
            f"{scaling} cannot share a {artifacts.access_mode} artifact volume; use replicas 1 without "
            "autoscaling, artifacts.accessMode ReadWriteMany, or artifacts.kind s3",
        )
    if mlflow.job_execution:
        reader.problems.add(
            reader.at("jobExecution"),
            f"MLflow's periodic jobs must run on one replica only, not with {scaling}; use replicas 1 without "
            "autoscaling, or jobExecution false",
        )
