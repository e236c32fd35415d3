"""Monitoring: metrics for a Prometheus, its alert rules, the canary and the dashboard."""

from __future__ import annotations

from components.config.fields import _cron
from components.config.network import _namespace_selectors, namespace_selector
from components.config.reader import _Reader
from components.config.types import Canary, Monitoring, Platform

# Where Prometheus usually runs when the stack does not say: kube-prometheus-stack's and the
# Prometheus Operator's quick start namespace, and OpenShift's monitoring of user workloads.
DEFAULT_SCRAPER_NAMESPACES: dict[str, tuple[str, ...]] = {
    "kubernetes": ("monitoring",),
    "openshift": ("openshift-user-workload-monitoring",),
}


def _labels(reader: _Reader, name: str) -> dict[str, str]:
    labels = reader.string_map(name)
    for key, value in labels.items():
        if namespace_selector(f"{key}={value}") is None:
            reader.problems.add(reader.at(name), f"{key}: {value!r} is not a Kubernetes label (name, optional "
                                                 "prefix/, value of at most 63 letters, digits, '-', '_', '.'); fix it")
    return labels


def _monitoring(reader: _Reader, platform: Platform) -> Monitoring:
    reader.only("enabled", "prometheusOperator", "labels", "scraperNamespaces", "canary", "dashboardLabels")
    canary = reader.child("canary")
    canary.only("enabled", "schedule")
    enabled = reader.flag("enabled")
    # OpenShift's monitoring of user workloads reads ServiceMonitors and PrometheusRules only.
    operator = platform == "openshift" if reader.value.get("prometheusOperator") is None \
        else reader.flag("prometheusOperator")
    return Monitoring(
        enabled=enabled,
        prometheus_operator=operator,
        labels=_labels(reader, "labels"),
        scraper_namespaces=_namespace_selectors(reader, "scraperNamespaces",
                                                DEFAULT_SCRAPER_NAMESPACES.get(platform, ())),
        # the canary is part of the monitoring: off with it
        canary=Canary(enabled=enabled and canary.flag("enabled"), schedule=_cron(canary, "schedule")),
        dashboard_labels=_labels(reader, "dashboardLabels"),
    )
