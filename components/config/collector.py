"""The OpenTelemetry Collector: the noise rules that drop spans, and the
collector version, which decides the form of its generated config."""

from __future__ import annotations

import re

from components.config.fields import _autoscaling, _image, _resources, _storage_size, version_from_image
from components.config.reader import _Reader
from components.config.types import Collector, NoiseRule

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_VERSION = re.compile(r"\d+\.\d+\.\d+")


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
    return Collector(
        image=image,
        version=_collector_version(reader, image),
        replicas=reader.integer("replicas", 1),
        resources=_resources(reader.child("resources")),
        noise=tuple(noise),
        persistent_queue=reader.flag("persistentQueue"),
        queue_volume_size=_storage_size(reader.child("queueVolume"), "size"),
        queue_volume_storage_class=reader.child("queueVolume").text("storageClass", optional=True),
        autoscaling=_autoscaling(reader.child("autoscaling")),
    )
