"""The typed stack configuration: the only module that reads `pulumi.Config`.

`Pulumi.yaml` declares every key with its default; `parse_stack_config` merges a
stack's values over those defaults (objects key by key, lists whole), rejects
unknown keys, validates everything and returns frozen dataclasses. Every error
names the key and the fix, and all errors are reported together before any
resource is registered.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PROJECT = "mlflow-tracing"
PROJECT_FILE = Path(__file__).resolve().parent.parent / "Pulumi.yaml"

PLATFORMS = ("kubernetes", "openshift")
EXPOSURE_KINDS = ("ingress", "route", "httproute", "none")
POSTGRES_MODES = ("bundled", "external")
ARTIFACT_KINDS = ("pvc", "s3")
AUTH_KINDS = ("basic", "none")
MLFLOW_DATABASE = "mlflow"  # what the bundled PostgreSQL creates for MLflow
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
ACCESS_MODES = ("ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod")
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# The API server sets this label on every namespace (Kubernetes 1.21+): a
# namespace name becomes a selector on it.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
# Where the pods that carry external traffic to MLflow run, when
# networkPolicies.ingressNamespaces is not set: ingress-nginx's namespace, and
# the label OpenShift's OVN-Kubernetes and SDN match for the router's traffic,
# whether the router runs on the pod or on the host network.
INGRESS_NGINX_NAMESPACE = "ingress-nginx"
OPENSHIFT_ROUTER_SELECTOR = "policy-group.network.openshift.io/ingress="
ANY_NAMESPACE = "*"

# Footprint of `mlflow server` (process-tree PSS with a PostgreSQL backend, as
# benchmarks/mlflow_memory.py measures it; an upper bound, see README Sizing):
# the CLI, one uvicorn process per worker, and the job runner with its huey
# consumers when job execution is on.
MLFLOW_CLI_MIB = 250
MLFLOW_WORKER_MIB = 250
MLFLOW_JOB_RUNNER_MIB = 8 * 240
MEMORY_HEADROOM = 0.25

_DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# A Kubernetes quantity: a number, then a binary or decimal SI suffix or a decimal exponent.
_QUANTITY = re.compile(
    r"(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"(?:(?P<unit>Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)|[eE](?P<exponent>[+-]?[0-9]+))?"
)
_BINARY_UNITS = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
                 "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
# An image reference as the container runtimes parse it (distribution/reference):
# [registry[:port]/]path[:tag][@algorithm:digest], the path in lower case.
_IMAGE_DOMAIN = (r"(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
                 r"(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?")
_IMAGE_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
_IMAGE_REFERENCE = re.compile(
    rf"(?:{_IMAGE_DOMAIN}/)?{_IMAGE_PATH}(?::[\w][\w.-]{{0,127}})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?"
)
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_VERSION = re.compile(r"\d+\.\d+\.\d+")
_VERSION_IN_TAG = re.compile(r":v?(\d+\.\d+\.\d+)(?:-[A-Za-z0-9.]+)?$")


class ConfigError(ValueError):
    """Raised with every problem of a stack's configuration, one per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(
            "invalid stack configuration:\n" + "\n".join(f"  - {p}" for p in problems)
        )


# --------------------------------------------------------------------------- types


@dataclass(frozen=True)
class Resources:
    """Kubernetes requests and limits; both always carry cpu and memory."""

    requests: Mapping[str, str]
    limits: Mapping[str, str]

    def as_k8s(self) -> dict[str, dict[str, str]]:
        return {"requests": dict(self.requests), "limits": dict(self.limits)}

    @property
    def memory_limit_bytes(self) -> float:
        return quantity_bytes(self.limits["memory"])


@dataclass(frozen=True)
class Tls:
    enabled: bool
    secret_name: str | None
    cluster_issuer: str | None


@dataclass(frozen=True)
class GatewayRef:
    name: str | None
    namespace: str | None
    section_name: str | None


@dataclass(frozen=True)
class Exposure:
    kind: str
    host: str | None  # resolved: exposure.host, else mlflow.<domain>; None when kind is none
    class_name: str | None
    annotations: Mapping[str, str]
    tls: Tls
    gateway: GatewayRef

    @property
    def scheme(self) -> str:
        return "https" if self.kind == "route" or self.tls.enabled else "http"

    @property
    def url(self) -> str | None:
        return f"{self.scheme}://{self.host}" if self.host else None


@dataclass(frozen=True)
class ExternalPostgres:
    host: str
    port: int
    database: str
    secret_name: str
    username_key: str
    password_key: str


@dataclass(frozen=True)
class Postgres:
    mode: str
    image: str
    storage_size: str
    storage_class: str | None
    databases: tuple[str, ...]
    resources: Resources
    external: ExternalPostgres | None


@dataclass(frozen=True)
class Artifacts:
    kind: str
    size: str
    storage_class: str | None
    access_mode: str
    uri: str | None
    endpoint_url: str | None
    secret_name: str | None


@dataclass(frozen=True)
class Auth:
    """MLflow's basic-auth app: an admin user whose password is generated, and
    its user store in a database of its own."""

    kind: str  # none | basic
    admin_username: str
    database: str
    allow_plain_http: bool = False  # the stack accepts passwords over plain HTTP (said at every `pulumi up`)

    @property
    def enabled(self) -> bool:
        return self.kind == "basic"


@dataclass(frozen=True)
class Mlflow:
    image: str  # any reference: no component depends on MLflow's version
    replicas: int
    workers: int
    job_execution: bool
    resources: Resources
    artifacts: Artifacts
    extra_allowed_hosts: tuple[str, ...]
    api_url: str | None
    auth: Auth


@dataclass(frozen=True)
class NoiseRule:
    method: str
    route: str


@dataclass(frozen=True)
class Collector:
    image: str
    version: str
    replicas: int
    resources: Resources
    noise: tuple[NoiseRule, ...]
    persistent_queue: bool


@dataclass(frozen=True)
class NetworkPolicies:
    """Who may open connections to the stack's servers. Each entry is a
    namespace label selector; an empty one matches every namespace."""

    enabled: bool
    ingress_namespaces: tuple[Mapping[str, str], ...]  # resolved: the platform's default when unset
    otlp_namespaces: tuple[Mapping[str, str], ...]


@dataclass(frozen=True)
class Experiment:
    name: str
    services: tuple[str, ...]
    default: bool
    tags: Mapping[str, str]
    renamed_from: tuple[str, ...] = ()


@dataclass(frozen=True)
class StackConfig:
    namespace: str
    create_namespace: bool
    platform: str
    domain: str
    exposure: Exposure
    postgres: Postgres
    mlflow: Mlflow
    collector: Collector
    network_policies: NetworkPolicies
    experiments: tuple[Experiment, ...]
    warnings: tuple[str, ...]  # risky but allowed settings, said at every `pulumi up`

    @property
    def databases_to_create(self) -> tuple[str, ...]:
        """What the bundled PostgreSQL creates beside `mlflow`: the configured
        databases and MLflow's auth database."""
        auth = (self.mlflow.auth.database,) if self.mlflow.auth.enabled else ()
        return tuple(dict.fromkeys((*self.postgres.databases, *auth)))

    @property
    def mlflow_api_url(self) -> str:
        """Where the machine running `pulumi up` reaches MLflow."""
        return self.mlflow.api_url or self.exposure.url or ""  # validated: one is set


# --------------------------------------------------------------------------- helpers


def quantity_bytes(quantity: str) -> float:
    """Value of a Kubernetes quantity such as `512Mi` or `2G` (also cpu `250m`)."""
    match = _QUANTITY.fullmatch(str(quantity))
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {quantity!r}")
    number = float(match["number"])
    if match["exponent"] is not None:
        return number * 10.0 ** int(match["exponent"])
    return number * _BINARY_UNITS[match["unit"]]


def mlflow_footprint_mib(workers: int, job_execution: bool) -> int:
    """Expected resident memory of `mlflow server` with these settings (an upper bound)."""
    return MLFLOW_CLI_MIB + workers * MLFLOW_WORKER_MIB + (MLFLOW_JOB_RUNNER_MIB if job_execution else 0)


def version_from_image(image: str) -> str | None:
    """`3.17.2` from `ghcr.io/mlflow/mlflow:v3.17.2-full`; None for a tag without one."""
    match = _VERSION_IN_TAG.search(image)
    return match.group(1) if match else None


def project_defaults(project_file: Path = PROJECT_FILE) -> dict[str, Any]:
    """The `default` of every key declared in Pulumi.yaml."""
    declared = yaml.safe_load(project_file.read_text())["config"]
    return {key: spec.get("default") for key, spec in declared.items()}


def merge_over(defaults: Any, value: Any) -> Any:
    """A stack value over its default: objects merge key by key, anything else replaces."""
    if isinstance(defaults, dict) and isinstance(value, dict):
        merged = dict(defaults)
        for key, item in value.items():
            merged[key] = merge_over(defaults.get(key), item)
        return merged
    return value


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []
        self.warnings: list[str] = []
        self._unknown: set[str] = set()

    def add(self, key: str, message: str) -> None:
        self.items.append(f"{key}: {message}")

    def unknown(self, key: str, known: list[str] | tuple[str, ...]) -> None:
        """An undeclared key, reported once however many checks see it (the
        declared defaults and the section's own reader both do)."""
        if key not in self._unknown:
            self._unknown.add(key)
            self.add(key, f"unknown key; remove it (known keys: {', '.join(sorted(known))})")

    def warn(self, key: str, message: str) -> None:
        """Allowed, but risky: said at every `pulumi up`."""
        self.warnings.append(f"{key}: {message}")


def _unknown_keys(value: Mapping[str, Any], allowed: Mapping[str, Any], key: str, problems: _Problems) -> None:
    for name in value:
        if name not in allowed:
            problems.unknown(f"{key}.{name}", list(allowed))
    for name, default in allowed.items():
        if isinstance(default, dict) and isinstance(value.get(name), dict) and default:
            _unknown_keys(value[name], default, f"{key}.{name}", problems)


class _Reader:
    """Typed access to one merged object, recording problems under its key path."""

    def __init__(self, value: Any, key: str, problems: _Problems):
        self.key = key
        self.problems = problems
        self.value = value if isinstance(value, dict) else {}
        if not isinstance(value, dict):
            problems.add(key, f"must be an object, got {json.dumps(value)}")

    def at(self, name: str) -> str:
        """The full key path of `name` inside this object."""
        return f"{self.key}.{name}" if self.key else name

    def child(self, name: str) -> _Reader:
        return _Reader(self.value.get(name), self.at(name), self.problems)

    def _typed(self, name: str, kinds: tuple[type, ...], what: str, optional: bool) -> Any:
        value = self.value.get(name)
        if value is None and optional:
            return None
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            self.problems.add(self.at(name), f"must be {what}, got {json.dumps(value)}")
            return None
        return value

    def text(self, name: str, optional: bool = False) -> str | None:
        value = self._typed(name, (str,), "a string", optional)
        return value if value else None if optional else value

    def choice(self, name: str, choices: tuple[str, ...]) -> str:
        value = self.text(name)
        if value is not None and value not in choices:
            self.problems.add(self.at(name), f"must be one of {', '.join(choices)}, got {value!r}")
        return value or ""  # "" only when a problem is recorded

    def integer(self, name: str, minimum: int) -> int:
        value = self._typed(name, (int, float), "a whole number", False)
        if value is None:
            return minimum
        if value != int(value) or value < minimum:
            self.problems.add(self.at(name), f"must be a whole number >= {minimum}, got {value}")
            return minimum
        return int(value)

    def flag(self, name: str) -> bool:
        return bool(self._typed(name, (bool,), "true or false", False))

    def strings(self, name: str) -> tuple[str, ...]:
        value = self.value.get(name)
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            self.problems.add(self.at(name), f"must be a list of non-empty strings, got {json.dumps(value)}")
            return ()
        return tuple(value)

    def string_map(self, name: str) -> dict[str, str]:
        value = self.value.get(name)
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            self.problems.add(self.at(name), f"must be a map of strings, got {json.dumps(value)}")
            return {}
        return dict(value)

    def objects(self, name: str) -> list[_Reader]:
        value = self.value.get(name)
        if not isinstance(value, list):
            self.problems.add(self.at(name), f"must be a list, got {json.dumps(value)}")
            return []
        return [_Reader(item, f"{self.at(name)}[{i}]", self.problems) for i, item in enumerate(value)]

    def only(self, *names: str) -> None:
        for name in self.value:
            if name not in names:
                self.problems.unknown(self.at(name), names)


def _dns_label(reader: _Reader, name: str) -> str:
    value = reader.text(name)
    if value is not None and (len(value) > 63 or not _DNS_LABEL.match(value)):
        reader.problems.add(
            reader.at(name),
            f"{value!r} is not a DNS-1123 label (lower-case letters, digits and '-', at most 63, "
            "starting and ending with a letter or digit)",
        )
    return value or ""  # "" only when a problem is recorded


def _dns_name(problems: _Problems, key: str, value: str | None) -> None:
    if value is not None and (len(value) > 253 or not _DNS_SUBDOMAIN.match(value)):
        problems.add(key, f"{value!r} is not a DNS name (lower-case letters, digits, '-' and '.')")


def _valid_quantity(value: Any) -> str | None:
    try:
        quantity_bytes(str(value))
    except ValueError:
        return None
    return str(value)


def _storage_size(reader: _Reader, name: str) -> str:
    """A volume size: a Kubernetes quantity above zero, written as a string."""
    value = reader.value.get(name)
    if not isinstance(value, str) or _valid_quantity(value) is None or quantity_bytes(value) <= 0:
        reader.problems.add(
            reader.at(name),
            f"must be a Kubernetes quantity such as 10Gi or 500Mi (Ki, Mi, Gi, Ti or k, M, G, T), "
            f"got {json.dumps(value)}",
        )
    return value if isinstance(value, str) else ""


def _image(reader: _Reader, name: str = "image") -> str:
    """An image reference: [registry[:port]/]path[:tag][@sha256:digest]; "" when it is not one."""
    value = reader.value.get(name)
    if not isinstance(value, str) or not _IMAGE_REFERENCE.fullmatch(value):
        reader.problems.add(
            reader.at(name),
            f"must be an image reference such as registry.example.com/team/image:1.2.3 (or "
            f"...@sha256:<digest>), got {json.dumps(value)}",
        )
        return ""
    return value


def _resources(reader: _Reader) -> Resources:
    """requests and limits, each with a valid cpu and memory (only valid ones are kept)."""
    sections: dict[str, dict[str, str]] = {}
    for section in ("requests", "limits"):
        values = reader.child(section)
        values.only("cpu", "memory")
        sections[section] = {}
        for resource in ("cpu", "memory"):
            quantity = _valid_quantity(values.value.get(resource))
            if quantity is None:
                reader.problems.add(
                    values.at(resource),
                    "must be a Kubernetes quantity such as 500m or 512Mi (every container needs requests and limits)",
                )
            else:
                sections[section][resource] = quantity
    requests, limits = sections["requests"], sections["limits"]
    for resource in set(requests) & set(limits):
        if quantity_bytes(requests[resource]) > quantity_bytes(limits[resource]):
            reader.problems.add(reader.at(f"requests.{resource}"), "must not exceed the limit")
    return Resources(requests=requests, limits=limits)


def _collector_version(reader: _Reader, image: str | None) -> str:
    """collector.version, else the version in the image tag: the config's form depends on it."""
    explicit = reader.text("version", optional=True)
    if explicit is not None and not _VERSION.fullmatch(explicit):
        reader.problems.add(
            reader.at("version"),
            f"{explicit!r} is not a collector version; write it as MAJOR.MINOR.PATCH (e.g. 0.152.0)",
        )
        return "0.0.0"
    version = explicit or (version_from_image(image) if image else None)
    if image and not version:
        reader.problems.add(
            reader.at("version"),
            f"cannot read the collector version from the image tag {image!r}; set {reader.at('version')} "
            "(e.g. 0.152.0)",
        )
    return version or "0.0.0"


# --------------------------------------------------------------------------- sections


def _exposure(reader: _Reader, domain: str, platform: str) -> Exposure:
    kind = reader.choice("kind", EXPOSURE_KINDS)
    host = reader.text("host", optional=True)
    tls_reader = reader.child("tls")
    gateway_reader = reader.child("gateway")
    tls = Tls(
        enabled=tls_reader.flag("enabled"),
        secret_name=tls_reader.text("secretName", optional=True),
        cluster_issuer=tls_reader.text("clusterIssuer", optional=True),
    )
    gateway = GatewayRef(
        name=gateway_reader.text("name", optional=True),
        namespace=gateway_reader.text("namespace", optional=True),
        section_name=gateway_reader.text("sectionName", optional=True),
    )
    if kind != "none" and not host:
        if domain:
            host = f"mlflow.{domain}"
        else:
            reader.problems.add(
                reader.at("host"),
                f"exposure kind {kind!r} needs a host name; set `domain` (MLflow is then mlflow.<domain>) "
                "or exposure.host, or set exposure.kind to none",
            )
    if kind == "none":
        host = None
    _dns_name(reader.problems, reader.at("host"), host)
    if kind == "route" and platform != "openshift":
        reader.problems.add(reader.at("kind"), "route needs platform openshift; use ingress or httproute on Kubernetes")
    if kind == "httproute" and not gateway.name:
        reader.problems.add(gateway_reader.at("name"), "httproute needs the parent Gateway's name; set it")
    if tls.cluster_issuer and kind != "ingress":
        reader.problems.add(tls_reader.at("clusterIssuer"), "cert-manager issuers apply to ingress only; remove it")
    if tls.cluster_issuer and not tls.enabled:
        reader.problems.add(tls_reader.at("enabled"), "a clusterIssuer is set but TLS is off; set it true")
    if tls.secret_name and kind == "ingress" and not tls.enabled:
        reader.problems.add(tls_reader.at("enabled"), "a secretName is set but TLS is off; set it true")
    if tls.secret_name and kind == "httproute":
        reader.problems.add(
            tls_reader.at("secretName"),
            "an HTTPRoute cannot carry a certificate: put it in the certificateRefs of the Gateway's HTTPS "
            "listener (exposure.gateway.sectionName) and remove it here",
        )
    if tls.secret_name and kind == "route":
        reader.problems.add(
            tls_reader.at("secretName"),
            "the Route is served with the router's certificate (edge TLS); remove it",
        )
    if kind == "httproute" and tls.enabled and not gateway.section_name:
        reader.problems.add(
            gateway_reader.at("sectionName"),
            "with TLS on, name the Gateway's HTTPS listener so the route attaches to it",
        )
    return Exposure(
        kind=kind,
        host=host,
        class_name=reader.text("className", optional=True),
        annotations=reader.string_map("annotations"),
        tls=tls,
        gateway=gateway,
    )


def _postgres(reader: _Reader) -> Postgres:
    mode = reader.choice("mode", POSTGRES_MODES)
    databases = reader.strings("databases")
    for name in databases:
        if not _DATABASE_NAME.match(name):
            reader.problems.add(
                reader.at("databases"),
                f"{name!r} is not a plain PostgreSQL name (lower-case letters, digits, '_', not starting with a digit)",
            )
    if MLFLOW_DATABASE in databases:
        reader.problems.add(reader.at("databases"), "mlflow is always created; list only the extra databases")
    if len(set(databases)) != len(databases):
        reader.problems.add(reader.at("databases"), "lists a database twice; remove the duplicate")
    ext = reader.child("external")
    external = None
    if mode == "external":
        missing = [name for name in ("host", "secretName") if not ext.value.get(name)]
        for name in missing:
            reader.problems.add(
                ext.at(name),
                "required with postgres.mode external (the server's host name, and the Secret holding "
                "the user name and password)",
            )
        if databases:
            reader.problems.add(reader.at("databases"), "extra databases are created only in bundled mode; remove them")
        external = ExternalPostgres(
            host=ext.text("host", optional=True) or "",
            port=ext.integer("port", 1),
            database=ext.text("database") or MLFLOW_DATABASE,
            secret_name=ext.text("secretName", optional=True) or "",
            username_key=ext.text("usernameKey") or "username",
            password_key=ext.text("passwordKey") or "password",
        )
    return Postgres(
        mode=mode,
        image=_image(reader),
        storage_size=_storage_size(reader, "storageSize"),
        storage_class=reader.text("storageClass", optional=True),
        databases=databases,
        resources=_resources(reader.child("resources")),
        external=external,
    )


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


def _auth(reader: _Reader, postgres_database: str | None) -> Auth:
    admin_username, database = reader.text("adminUsername"), reader.text("database")
    auth = Auth(
        kind=reader.choice("kind", AUTH_KINDS),
        admin_username=admin_username or "",
        database=database or "",
        allow_plain_http=reader.flag("allowPlainHttp"),
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


def _either(ways: list[str]) -> str:
    return ", ".join(ways[:-1]) + f", or {ways[-1]}" if len(ways) > 1 else ways[0]


def _mlflow(reader: _Reader, exposure: Exposure, postgres_database: str | None) -> Mlflow:
    image = _image(reader)
    replicas = reader.integer("replicas", 1)
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
    if artifacts.kind == "pvc" and artifacts.access_mode != "ReadWriteMany" and replicas > 1:
        reader.problems.add(
            reader.at("replicas"),
            f"{replicas} replicas cannot share a {artifacts.access_mode} artifact volume; use replicas 1, "
            "artifacts.accessMode ReadWriteMany, or artifacts.kind s3",
        )
    if job_execution and replicas > 1:
        reader.problems.add(
            reader.at("jobExecution"),
            "MLflow's periodic jobs must run on one replica only; use replicas 1 or jobExecution false",
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
    return Mlflow(
        image=image,
        replicas=replicas,
        workers=workers,
        job_execution=job_execution,
        resources=resources,
        artifacts=artifacts,
        extra_allowed_hosts=extra_hosts,
        api_url=api_url.rstrip("/") if api_url else None,
        auth=auth,
    )


def _collector(reader: _Reader) -> Collector:
    image = _image(reader)
    noise = []
    for rule in reader.objects("noise"):
        rule.only("method", "route")
        method = rule.choice("method", HTTP_METHODS)
        route = rule.text("route")
        if route is not None and not re.match(r"^/[A-Za-z0-9._~/-]*$", route):
            rule.problems.add(rule.at("route"), f"{route!r} must be a literal path starting with '/'")
        noise.append(NoiseRule(method=method, route=route or ""))
    if len(set(noise)) != len(noise):
        reader.problems.add(reader.at("noise"), "lists a rule twice; remove the duplicate")
    return Collector(
        image=image,
        version=_collector_version(reader, image),
        replicas=reader.integer("replicas", 1),
        resources=_resources(reader.child("resources")),
        noise=tuple(noise),
        persistent_queue=reader.flag("persistentQueue"),
    )


def namespace_selector(entry: str) -> dict[str, str] | None:
    """The namespace label selector an entry of networkPolicies stands for:
    `*` (every namespace), a namespace name, or `key=value`; None when it is
    none of these."""
    if entry == ANY_NAMESPACE:
        return {}
    if len(entry) <= 63 and _DNS_LABEL.match(entry):
        return {NAMESPACE_NAME_LABEL: entry}
    key, equals, value = entry.partition("=")
    prefix, slash, name = key.rpartition("/")
    valid_key = (
        bool(_LABEL_NAME.match(name)) and len(name) <= 63
        and (not slash or (len(prefix) <= 253 and bool(_DNS_SUBDOMAIN.match(prefix))))
    )
    valid_value = value == "" or (len(value) <= 63 and bool(_LABEL_NAME.match(value)))
    return {key: value} if equals and valid_key and valid_value else None


def _namespace_selectors(reader: _Reader, name: str, default: tuple[str, ...]) -> tuple[dict[str, str], ...]:
    entries = default if reader.value.get(name) is None else reader.strings(name)
    selectors = []
    for entry in entries:
        selector = namespace_selector(entry)
        if selector is None:
            reader.problems.add(
                reader.at(name),
                f"{entry!r} is neither a namespace name, a label selector key=value (e.g. team=ml, "
                f"or {OPENSHIFT_ROUTER_SELECTOR} for an empty value) nor {ANY_NAMESPACE} (every namespace); fix it",
            )
        else:
            selectors.append(selector)
    return tuple(selectors)


def _default_ingress_namespaces(platform: str, exposure: Exposure) -> tuple[str, ...] | None:
    """Where the pods that forward external traffic to MLflow usually run
    (MLflow's own namespace is always admitted); None when there is no safe guess."""
    if exposure.kind == "none":
        return ()
    # Istio and most Gateway API implementations run a Gateway's proxy beside
    # the Gateway, which defaults to the route's own namespace.
    gateway = (exposure.gateway.namespace,) if exposure.kind == "httproute" and exposure.gateway.namespace else ()
    if platform == "openshift":
        return (OPENSHIFT_ROUTER_SELECTOR, *gateway)
    if exposure.kind == "httproute":
        return gateway
    if exposure.class_name in (None, "nginx"):
        return (INGRESS_NGINX_NAMESPACE,)
    return None


def _network_policies(reader: _Reader, platform: str, exposure: Exposure) -> NetworkPolicies:
    enabled = reader.flag("enabled")
    default = _default_ingress_namespaces(platform, exposure)
    if enabled and default is None and reader.value.get("ingressNamespaces") is None:
        reader.problems.add(
            reader.at("ingressNamespaces"),
            f"list the namespace of the {exposure.class_name!r} ingress controller, or MLflow refuses its "
            "traffic (ingress-nginx is assumed only for className nginx or none); or set enabled false",
        )
    return NetworkPolicies(
        enabled=enabled,
        ingress_namespaces=_namespace_selectors(reader, "ingressNamespaces", default or ()),
        otlp_namespaces=_namespace_selectors(reader, "otlpNamespaces", ()),
    )


def experiment_name_problem(name: Any) -> str | None:
    """Why `name` cannot be an MLflow experiment name, or None when it can."""
    if not isinstance(name, str) or not name.strip():
        return "must be a non-empty string"
    if name != name.strip():
        return "must not start or end with white space"
    if len(name) > 255:
        return "must be at most 255 characters"
    if any(ord(ch) < 32 for ch in name):
        return "must not contain control characters"
    return None


def _experiments(readers: list[_Reader], key: str, problems: _Problems) -> tuple[Experiment, ...]:
    experiments = []
    for item in readers:
        item.only("name", "services", "default", "tags", "renamedFrom")
        name = item.value.get("name")
        problem = experiment_name_problem(name)
        if problem:
            problems.add(item.at("name"), problem)
        experiments.append(
            Experiment(
                name=name if isinstance(name, str) else "",
                services=item.strings("services") if "services" in item.value else (),
                default=item.flag("default") if "default" in item.value else False,
                tags=item.string_map("tags") if "tags" in item.value else {},
                renamed_from=item.strings("renamedFrom") if "renamedFrom" in item.value else (),
            )
        )
    if not experiments:
        problems.add(key, "needs at least one experiment (one with default: true receives unmatched traffic)")
    names = [e.name for e in experiments]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.add(key, f"experiment {name!r} is listed twice; names must be unique")
    slugs = [experiment_slug(n) for n in names]
    for slug in sorted({s for s in slugs if slugs.count(s) > 1}):
        clash = [n for n in names if experiment_slug(n) == slug]
        if len(set(clash)) > 1:
            problems.add(key, f"experiments {clash} differ only in case or punctuation; rename one")
    defaults = [e.name for e in experiments if e.default]
    if experiments and len(defaults) != 1:
        problems.add(
            key,
            f"exactly one experiment must have default: true (it receives unmatched traffic); found {len(defaults)}"
            + (f": {defaults}" if defaults else ""),
        )
    seen: dict[str, str] = {}
    for experiment in experiments:
        for service in experiment.services:
            if service in seen and seen[service] != experiment.name:
                problems.add(
                    key,
                    f"service {service!r} is routed to both {seen[service]!r} and {experiment.name!r}; keep it in one",
                )
            seen[service] = experiment.name
    return tuple(experiments)


def experiment_slug(name: str) -> str:
    """A component-id-safe form of an experiment name (collector pipeline names)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "experiment"


# --------------------------------------------------------------------------- entry points


def parse_stack_config(values: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> StackConfig:
    """Typed, validated stack config from a stack's raw values (keys without the project prefix)."""
    defaults = project_defaults() if defaults is None else defaults
    problems = _Problems()
    for key in values:
        if key not in defaults:
            problems.unknown(key, list(defaults))
    merged = {key: merge_over(default, values.get(key, default)) for key, default in defaults.items()}
    for key, default in defaults.items():
        if isinstance(default, dict) and isinstance(values.get(key), dict):
            _unknown_keys(values[key], default, key, problems)

    root = _Reader(merged, "", problems)
    namespace = _dns_label(root, "namespace")
    platform = root.choice("platform", PLATFORMS)
    domain = root.text("domain", optional=True) or ""
    _dns_name(problems, "domain", domain or None)
    exposure = _exposure(_Reader(merged["exposure"], "exposure", problems), domain, platform)
    postgres = _postgres(_Reader(merged["postgres"], "postgres", problems))
    postgres_database = postgres.external.database if postgres.external else MLFLOW_DATABASE
    mlflow = _mlflow(_Reader(merged["mlflow"], "mlflow", problems), exposure, postgres_database)
    config = StackConfig(
        namespace=namespace,
        create_namespace=root.flag("createNamespace"),
        platform=platform,
        domain=domain,
        exposure=exposure,
        postgres=postgres,
        mlflow=mlflow,
        collector=_collector(_Reader(merged["collector"], "collector", problems)),
        network_policies=_network_policies(
            _Reader(merged["networkPolicies"], "networkPolicies", problems), platform, exposure
        ),
        experiments=_experiments(root.objects("experiments"), "experiments", problems),
        warnings=tuple(problems.warnings),  # evaluated last: every section has been read
    )
    if problems.items:
        raise ConfigError(problems.items)
    return config


def load_stack_config() -> StackConfig:
    """Read this stack's `mlflow-tracing:*` config from the Pulumi runtime and parse it."""
    import pulumi
    from pulumi.runtime import config as runtime_config

    config = pulumi.Config(PROJECT)
    prefix = f"{PROJECT}:"
    keys = {
        key[len(prefix):]
        for key in {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
        if key.startswith(prefix)
    }
    defaults = project_defaults()
    values: dict[str, Any] = {}
    for key in keys:
        raw = config.get(key)
        # Strings arrive as they are; objects, lists and booleans as JSON text.
        if isinstance(defaults.get(key), str):
            values[key] = raw
        else:
            try:
                values[key] = json.loads(raw) if raw is not None else None
            except json.JSONDecodeError:
                values[key] = raw  # reported as the wrong type by the parser
    stack = parse_stack_config(values, defaults)
    for warning in stack.warnings:
        pulumi.log.warn(warning)
    return stack
