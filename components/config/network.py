"""Network policies: which namespaces may reach MLflow and the collector, and
where the ingress controller's pods run when the stack does not say."""

from __future__ import annotations

import re

from components.config.fields import _DNS_LABEL, _DNS_SUBDOMAIN
from components.config.reader import _Reader
from components.config.types import Exposure, NetworkPolicies, Platform

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
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


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


def _default_ingress_namespaces(platform: Platform, exposure: Exposure) -> tuple[str, ...] | None:
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


def _network_policies(reader: _Reader, platform: Platform, exposure: Exposure) -> NetworkPolicies:
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
