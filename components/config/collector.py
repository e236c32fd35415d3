"""The OpenTelemetry Collector: the noise rules that drop spans, and the
collector version, which decides the form of its generated config."""

from __future__ import annotations

import re

from components.config.fields import (
    _DNS_LABEL,
    _DNS_SUBDOMAIN,
    _autoscaling,
    _image,
    _resources,
    _storage_size,
    _valid_quantity,
    version_from_image,
)
from components.config.reader import _Reader
from components.config.types import (
    DESTINATION_AUTH_KINDS,
    OTLP_PROTOCOLS,
    READ_BACKS,
    Collector,
    NoiseRule,
    ObjectKey,
    Resources,
    TraceDestination,
)
from components.quantities import quantity_bytes

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_VERSION = re.compile(r"\d+\.\d+\.\d+")
_ENDPOINT = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$")
_GRPC_ENDPOINT = re.compile(r"^https?://[A-Za-z0-9.-]+:[0-9]{1,5}$")  # the gRPC exporter dials host:port
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")  # an HTTP token (RFC 9110)
# Headers the program or the HTTP client sets itself, or that would put a credential in the ConfigMap.
_RESERVED_HEADERS = ("authorization", "x-mlflow-experiment-id", "content-type", "content-encoding", "content-length",
                     "host", "transfer-encoding", "connection")
MIN_QUEUE_SIZE = 256 * 2**10  # a destination's queue holds at least one full export request (256 spans)
_SCOPE = re.compile(r"^[A-Za-z0-9._/@:-]+\*?$")
# The export queues of the further destinations may hold together at most this share of the
# collector's memory limit: a destination that is down fills its queue, and the heap a full queue
# takes is 5.3-5.8 times the serialized bytes it counts (benchmarks/destination_down.py), so the
# queues stay within about 30 % of the limit, below the memory_limiter's 80 %.
DESTINATION_QUEUES_SHARE = 0.05


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
    replicas = reader.integer("replicas", 1)
    autoscaling = _autoscaling(reader.child("autoscaling"))
    resources = _resources(reader.child("resources"))
    destinations = _destinations(reader, scales_out=replicas > 1 or autoscaling.enabled, resources=resources)
    return Collector(
        image=image,
        version=_collector_version(reader, image),
        replicas=replicas,
        resources=resources,
        noise=tuple(noise),
        persistent_queue=reader.flag("persistentQueue"),
        queue_volume_size=_storage_size(reader.child("queueVolume"), "size"),
        queue_volume_storage_class=reader.child("queueVolume").text("storageClass", optional=True),
        autoscaling=autoscaling,
        destinations=destinations,
    )


def _optional_child(reader: _Reader, name: str) -> _Reader | None:
    return reader.child(name) if reader.value.get(name) is not None else None


def _ca(tls: _Reader) -> ObjectKey | None:
    """tls.caSecret or tls.caConfigMap (one of them), with tls.key (default ca.crt)."""
    tls.only("caSecret", "caConfigMap", "key")
    secret, config_map = tls.text("caSecret", optional=True), tls.text("caConfigMap", optional=True)
    key = tls.text("key", optional=True) or "ca.crt"
    if secret and config_map:
        tls.problems.add(tls.key, "names both caSecret and caConfigMap; keep the one that holds the CA bundle")
    for name in (secret, config_map):
        if name is not None and (len(name) > 253 or not _DNS_SUBDOMAIN.match(name)):
            tls.problems.add(tls.key, f"{name!r} is not a Secret or ConfigMap name")
    if secret:
        return ObjectKey("Secret", secret, key)
    return ObjectKey("ConfigMap", config_map, key) if config_map else None


def _destination(item: _Reader, scales_out: bool) -> TraceDestination:
    item.only("name", "endpoint", "protocol", "headers", "tls", "auth", "select", "queueSize", "readBack")
    name = item.text("name") or ""
    if name and (len(name) > 40 or not _DNS_LABEL.match(name)):
        item.problems.add(item.at("name"), f"{name!r} must be a DNS label of at most 40 characters "
                          "(lower-case letters, digits and '-')")
    endpoint = item.text("endpoint") or ""
    if endpoint and not _ENDPOINT.match(endpoint):
        item.problems.add(item.at("endpoint"), f"{endpoint!r} must be http://host:port or https://host:port "
                          "(e.g. http://phoenix.phoenix.svc.cluster.local:6006)")
    protocol = item.choice("protocol", OTLP_PROTOCOLS) if "protocol" in item.value else "http"
    if protocol == "grpc" and _ENDPOINT.match(endpoint) and not _GRPC_ENDPOINT.match(endpoint):
        item.problems.add(item.at("endpoint"), f"{endpoint!r}: a gRPC endpoint is http(s)://host:port, with the "
                          "port and no path (e.g. https://otlp.example.com:4317)")
    headers = item.string_map("headers") if "headers" in item.value else {}
    for header, value in headers.items():
        if not _HEADER_NAME.match(header) or header.lower() in _RESERVED_HEADERS:
            item.problems.add(item.at(f"headers.{header}"), "is not a header this destination may set: "
                              "credentials go in auth (from a Secret), and the program or the client sets "
                              + ", ".join(_RESERVED_HEADERS[1:]))
        elif any(ord(c) < 32 or ord(c) == 127 for c in value):
            item.problems.add(item.at(f"headers.{header}"), "holds a control character (a line break?); "
                              "write the value on one line")
    tls = _optional_child(item, "tls")
    ca = _ca(tls) if tls else None
    if ca and not endpoint.startswith("https://"):
        item.problems.add(item.at("tls"), "a CA bundle is for an https:// endpoint; "
                          f"{endpoint!r} is plain HTTP")
    auth_kind, auth_secret, auth_header = None, None, None
    auth = _optional_child(item, "auth")
    if auth:
        auth.only("type", "secret", "header")
        auth_kind = auth.choice("type", DESTINATION_AUTH_KINDS)
        auth_secret = auth.text("secret") or ""
        if auth_secret and (len(auth_secret) > 253 or not _DNS_SUBDOMAIN.match(auth_secret)):
            auth.problems.add(auth.at("secret"), f"{auth_secret!r} is not a Secret name")
        if auth_kind == "header":
            auth_header = auth.text("header") or ""
            if auth_header and (not _HEADER_NAME.match(auth_header) or auth_header.lower() in _RESERVED_HEADERS[1:]):
                auth.problems.add(auth.at("header"), f"{auth_header!r} is not a header name this destination may "
                                  "set (e.g. x-api-key)")
        elif "header" in auth.value:
            auth.problems.add(auth.at("header"), "is for type header only; remove it")
    services: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    select = _optional_child(item, "select")
    if select:
        select.only("services", "scopes")
        services = select.strings("services") if "services" in select.value else ()
        scopes = select.strings("scopes") if "scopes" in select.value else ()
        for scope in scopes:
            if not _SCOPE.match(scope):
                select.problems.add(select.at("scopes"), f"{scope!r} must be an instrumentation scope name, "
                                    "or a prefix ending in '*' (e.g. openinference.instrumentation.*)")
        if (services or scopes) and scales_out:
            select.problems.add(select.key, "keeps traces whole only when one collector sees all of a trace's "
                                "spans; with collector.replicas > 1 or collector.autoscaling.enabled a trace's "
                                "spans are spread over several collectors. Set collector.replicas to 1 and "
                                "autoscaling off, or remove select (every trace)")
    queue_size = _storage_size(item, "queueSize") if "queueSize" in item.value else "16Mi"
    if queue_size and _valid_quantity(queue_size) and quantity_bytes(queue_size) < MIN_QUEUE_SIZE:
        item.problems.add(item.at("queueSize"), f"{queue_size!r} is too small to hold an export request; "
                          "give it at least 256Ki")
    read_back = item.choice("readBack", READ_BACKS) if "readBack" in item.value else "none"
    if read_back == "phoenix" and protocol != "http":
        item.problems.add(item.at("readBack"), "phoenix reads the project from the x-project-name header, "
                          "which Phoenix takes over OTLP/HTTP only: set protocol: http")
    if read_back == "phoenix" and auth_kind not in (None, "bearer"):
        item.problems.add(item.at("readBack"), "the check reads Phoenix with the destination's bearer token "
                          "(Phoenix's API key): use auth type bearer, or readBack none")
    return TraceDestination(
        name=name, endpoint=endpoint, protocol=protocol, headers=headers, ca=ca, auth=auth_kind,
        auth_secret=auth_secret, auth_header=auth_header, services=services, scopes=scopes,
        queue_size=queue_size, read_back=read_back,
    )


def _destinations(reader: _Reader, *, scales_out: bool, resources: Resources) -> tuple[TraceDestination, ...]:
    """collector.destinations: further OTLP backends, each with a queue of its own."""
    if reader.value.get("destinations") is None:
        return ()
    destinations = tuple(_destination(item, scales_out) for item in reader.objects("destinations"))
    names = [d.name for d in destinations if d.name]
    if len(set(names)) != len(names):
        reader.problems.add(reader.at("destinations"), "names a destination twice; give each a name of its own")
    queued = sum(quantity_bytes(d.queue_size) for d in destinations if d.queue_size)
    limit = quantity_bytes(resources.limits["memory"]) if "memory" in resources.limits else 0
    if limit and queued > limit * DESTINATION_QUEUES_SHARE:
        reader.problems.add(reader.at("destinations"), f"the queueSize values add up to {queued / 2**20:.0f} MiB, "
                            f"more than {DESTINATION_QUEUES_SHARE:.0%} of collector.resources.limits.memory "
                            f"({limit / 2**20:.0f} MiB): a destination that is down fills its queue, which then "
                            "takes about 6 times that in memory, the memory MLflow's traces need. Lower "
                            "queueSize or raise the memory limit")
    return destinations
