"""Checks of values that several sections share (names, images, sizes,
requests and limits), so each rule and its message exist once."""

from __future__ import annotations

import json
import re
from typing import Any

from components.config.reader import _Problems, _Reader
from components.config.types import Autoscaling, Resources
from components.quantities import quantity_bytes

_DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# An image reference as the container runtimes parse it (distribution/reference):
# [registry[:port]/]path[:tag][@algorithm:digest], the path in lower case.
_IMAGE_DOMAIN = (r"(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
                 r"(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?")
_IMAGE_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
_IMAGE_REFERENCE = re.compile(
    rf"(?:{_IMAGE_DOMAIN}/)?{_IMAGE_PATH}(?::[\w][\w.-]{{0,127}})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?"
)
# Five cron fields (Kubernetes' CronJob syntax) or one of its macros.
_CRON = re.compile(r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|(\S+\s+){4}\S+)$")
_VERSION_IN_TAG = re.compile(r":v?(\d+\.\d+\.\d+)(?:-[A-Za-z0-9.]+)?$")


def version_from_image(image: str) -> str | None:
    """`3.17.2` from `ghcr.io/mlflow/mlflow:v3.17.2-full` (a digest after the tag aside); None for a tag
    without one."""
    match = _VERSION_IN_TAG.search(image.split("@", 1)[0])
    return match.group(1) if match else None


def schema_line(image: str) -> str:
    """MLflow adds schema migrations in minor releases: two images whose tags name the same
    MAJOR.MINOR share a schema (`3.17` for `...:v3.17.2-full`, with or without a digest). An
    image whose tag names no version is a line of its own, so any change of it may change the
    schema."""
    version = version_from_image(image)
    return ".".join(version.split(".")[:2]) if version else image


# MLflow 3.17 added trace- and assessment-tier permissions (`resource_type` trace, assessment).
TRACE_PERMISSIONS_SINCE = (3, 17)


def has_trace_permissions(image: str) -> bool:
    """Whether the image's MLflow grants on traces and assessments. An image whose tag names no
    version is taken to be as new as the deployed default."""
    version = version_from_image(image)
    return version is None or tuple(int(part) for part in version.split(".")[:2]) >= TRACE_PERMISSIONS_SINCE


def _cron(reader: _Reader, name: str) -> str:
    """A Kubernetes CronJob schedule: five fields or one of its macros."""
    schedule = reader.text(name) or ""
    if not _CRON.match(schedule.strip()):
        reader.problems.add(reader.at(name), f"{schedule!r} is not a cron schedule; write five fields, "
                            "e.g. \"17 3 * * *\" (03:17 daily)")
    return schedule


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


def _autoscaling(reader: _Reader) -> Autoscaling:
    """A CPU autoscaler's bounds and target; checked only when it is enabled."""
    enabled = reader.flag("enabled")
    minimum, maximum = reader.integer("minReplicas", 1), reader.integer("maxReplicas", 1)
    target = reader.integer("targetCPUUtilizationPercentage", 1)
    if enabled and maximum < minimum:
        reader.problems.add(reader.at("maxReplicas"), f"{maximum} is below minReplicas {minimum}; raise it")
    if enabled and maximum < 2:
        reader.problems.add(reader.at("maxReplicas"),
                            "an autoscaler that never goes above 1 replica does nothing; raise it to 2 or more, "
                            f"or set {reader.at('enabled')} false")
    return Autoscaling(enabled=enabled, min_replicas=minimum, max_replicas=maximum, target_cpu_percent=target)
