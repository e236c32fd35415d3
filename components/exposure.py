"""How MLflow is reached from outside: Ingress, OpenShift Route, Gateway API
HTTPRoute, or nothing (port-forward)."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components import mlflow
from components.config import Exposure
from components.kube import NamespaceRef, labels_for
from components.mlflow import MlflowServer

DEFAULT_TLS_SECRET = "mlflow-tls"
# Artifact uploads can be large and trace searches slow: no body limit, long timeouts.
NGINX_ANNOTATIONS = {
    "nginx.ingress.kubernetes.io/proxy-body-size": "0",
    "nginx.ingress.kubernetes.io/proxy-read-timeout": "600",
    "nginx.ingress.kubernetes.io/proxy-send-timeout": "600",
}
ROUTE_ANNOTATIONS = {"haproxy.router.openshift.io/timeout": "600s"}


def _tls_secret(exposure: Exposure) -> str:
    return exposure.tls.secret_name or DEFAULT_TLS_SECRET


def ingress_manifest(exposure: Exposure, service: str, port: int) -> tuple[dict, dict]:
    """(annotations, spec) of the Ingress."""
    annotations = dict(NGINX_ANNOTATIONS)
    if exposure.tls.cluster_issuer:
        annotations["cert-manager.io/cluster-issuer"] = exposure.tls.cluster_issuer
    annotations.update(exposure.annotations)
    spec: dict = {
        "rules": [{
            "host": exposure.host,
            "http": {"paths": [{
                "path": "/",
                "pathType": "Prefix",
                "backend": {"service": {"name": service, "port": {"number": port}}},
            }]},
        }],
    }
    if exposure.class_name:
        spec["ingressClassName"] = exposure.class_name
    if exposure.tls.enabled:
        spec["tls"] = [{"hosts": [exposure.host], "secretName": _tls_secret(exposure)}]
    return annotations, spec


def route_manifest(exposure: Exposure, service: str, port_name: str) -> tuple[dict, dict]:
    """(annotations, spec) of the OpenShift Route: edge TLS, HTTP redirected, to the Service's
    `port_name` (the sign-in proxy's with oidc, else MLflow's)."""
    tls: dict = {"termination": "edge", "insecureEdgeTerminationPolicy": "Redirect"}
    spec = {
        "host": exposure.host,
        "to": {"kind": "Service", "name": service, "weight": 100},
        "port": {"targetPort": port_name},
        "tls": tls,
    }
    return {**ROUTE_ANNOTATIONS, **exposure.annotations}, spec


def httproute_manifest(exposure: Exposure, service: str, port: int) -> tuple[dict, dict]:
    """(annotations, spec) of the Gateway API HTTPRoute."""
    gateway = exposure.gateway
    parent = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": gateway.name}
    if gateway.namespace:
        parent["namespace"] = gateway.namespace
    if gateway.section_name:
        parent["sectionName"] = gateway.section_name
    spec = {
        "parentRefs": [parent],
        "hostnames": [exposure.host],
        "rules": [{
            "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            "backendRefs": [{"name": service, "port": port}],
        }],
    }
    return dict(exposure.annotations), spec


class MlflowExposure(pulumi.ComponentResource):
    """Publishes the server's Service at `exposure.host`; `url` is the external URL.

    The route is created after the Service it routes to: pulumi-kubernetes
    otherwise finds no backend for the Ingress rule and waits for one."""

    url: str | None
    resource: pulumi.Resource | None

    def __init__(self, name: str, *, config: Exposure, namespace: NamespaceRef, server: MlflowServer,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-tracing:index:MlflowExposure", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, depends_on=[server.service])
        service, port = server.service_name, server.port
        labels = labels_for(mlflow.COMPONENT)
        self.url = config.url
        self.resource = None
        if config.kind == "ingress":
            annotations, spec = ingress_manifest(config, service, port)
            self.resource = k8s.networking.v1.Ingress(
                f"{name}-ingress",
                metadata={"name": service, "namespace": namespace.ref, "labels": labels, "annotations": annotations},
                spec=spec, opts=child,
            )
        elif config.kind == "route":
            annotations, spec = route_manifest(config, service, server.port_name)
            self.resource = k8s.apiextensions.CustomResource(
                f"{name}-route", api_version="route.openshift.io/v1", kind="Route",
                metadata={"name": service, "namespace": namespace.ref, "labels": labels, "annotations": annotations},
                spec=spec, opts=child,
            )
        elif config.kind == "httproute":
            annotations, spec = httproute_manifest(config, service, port)
            self.resource = k8s.apiextensions.CustomResource(
                f"{name}-httproute", api_version="gateway.networking.k8s.io/v1", kind="HTTPRoute",
                metadata={"name": service, "namespace": namespace.ref, "labels": labels, "annotations": annotations},
                spec=spec, opts=child,
            )
        self.register_outputs({"url": self.url})
