"""How MLflow is reached from outside the cluster (Ingress, OpenShift Route,
Gateway API HTTPRoute, or not at all): the host it gets and the TLS and Gateway
settings each kind can and cannot carry."""

from __future__ import annotations

from components.config.fields import _dns_name
from components.config.reader import _Reader
from components.config.types import EXPOSURE_KINDS, Exposure, GatewayRef, Platform, Tls


def _exposure(reader: _Reader, domain: str, platform: Platform) -> Exposure:
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
