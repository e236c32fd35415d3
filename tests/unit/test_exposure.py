"""Exposure: Ingress (nginx-tuned, optional TLS), OpenShift Route, Gateway API
HTTPRoute, or none."""

import kubernetes_validate
import pytest

from components.config import ConfigError, parse_stack_config
from tests.support.crds import validate_custom_resource
from tests.support.k8s import K8S_VERSION, integral
from tests.support.program import run_program

HTTPS_GATEWAY = {"name": "public", "sectionName": "https"}
# variant: (stack, exposure override or None for the stack's own, kind created, mlflowUrl)
EXPOSURES = {
    "ingress": ("dev", None, "Ingress", "http://mlflow.localtest.me"),
    "ingress-cluster-issuer": ("dev", {"kind": "ingress", "tls": {"enabled": True, "clusterIssuer": "letsencrypt"}},
                               "Ingress", "https://mlflow.localtest.me"),
    "ingress-own-secret": ("dev", {"kind": "ingress", "tls": {"enabled": True, "secretName": "traces-cert"}},
                           "Ingress", "https://mlflow.localtest.me"),
    "route": ("openshift", None, "Route", "https://mlflow.apps.example.com"),
    "httproute-https": ("dev", {"kind": "httproute", "tls": {"enabled": True}, "gateway": HTTPS_GATEWAY},
                        "HTTPRoute", "https://mlflow.localtest.me"),
    "httproute-http": ("dev", {"kind": "httproute", "gateway": {"name": "public"}},
                       "HTTPRoute", "http://mlflow.localtest.me"),
}


@pytest.mark.parametrize("variant", EXPOSURES)
def test_each_exposure_is_schema_valid_and_its_url_says_whether_tls_is_on(variant, stack_runs):
    stack, exposure, kind, url = EXPOSURES[variant]
    run = stack_runs[stack] if exposure is None else run_program(stack, exposure=exposure)
    (published,) = run.kinds(kind)
    manifest = integral(published.manifest)
    if kind == "Ingress":
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    else:
        validate_custom_resource(manifest)
    assert run.outputs["mlflowUrl"] == url


@pytest.mark.parametrize("variant", EXPOSURES)
def test_each_exposure_waits_for_the_service_it_routes_to(variant, stack_runs):
    """Created in parallel, the Ingress finds no backend Service and pulumi-kubernetes
    waits ~60 s for one (seen with the real engine)."""
    stack, exposure, kind, _ = EXPOSURES[variant]
    run = stack_runs[stack] if exposure is None else run_program(stack, exposure=exposure)
    (published,) = run.kinds(kind)
    (service,) = [r for r in run.kinds("Service") if r.k8s_name == "mlflow"]
    backend = published.outputs["spec"]
    backend_name = (backend.get("to") or {}).get("name") or (
        backend["rules"][0]["backendRefs"][0]["name"] if "backendRefs" in backend["rules"][0]
        else backend["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"])
    assert backend_name == service.k8s_name
    assert service.urn in published.dependencies


def test_ingress_routes_the_host_to_mlflow_with_nginx_limits_lifted(dev):
    ingress = dev.get("Ingress", "mlflow")
    annotations = ingress.outputs["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "0"
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 600
    spec = ingress.outputs["spec"]
    assert spec["ingressClassName"] == "nginx"  # Pulumi.dev.yaml
    (rule,) = spec["rules"]
    assert rule["host"] == "mlflow.localtest.me"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "mlflow", "port": {"number": 5000}}
    assert "tls" not in spec and dev.outputs["mlflowUrl"] == "http://mlflow.localtest.me"


def test_ingress_tls_with_a_cluster_issuer():
    run = run_program("dev", exposure={"kind": "ingress", "host": "traces.example.com",
                                       "annotations": {"team": "obs"},
                                       "tls": {"enabled": True, "clusterIssuer": "letsencrypt"}})
    ingress = run.get("Ingress", "mlflow")
    assert ingress.outputs["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert ingress.outputs["metadata"]["annotations"]["team"] == "obs"
    assert ingress.outputs["spec"]["tls"] == [{"hosts": ["traces.example.com"], "secretName": "mlflow-tls"}]
    assert run.outputs["mlflowUrl"] == "https://traces.example.com"


def test_ingress_tls_with_a_secret_of_your_own_needs_no_cert_manager():
    run = run_program("dev", exposure=EXPOSURES["ingress-own-secret"][1])
    ingress = run.get("Ingress", "mlflow")
    assert not any(key.startswith("cert-manager.io/") for key in ingress.outputs["metadata"]["annotations"])
    assert ingress.outputs["spec"]["tls"] == [{"hosts": ["mlflow.localtest.me"], "secretName": "traces-cert"}]


def test_openshift_route_terminates_tls_at_the_edge_and_redirects(stack_runs):
    run = stack_runs["openshift"]
    (route,) = run.kinds("Route")
    spec = route.outputs["spec"]
    assert route.outputs["apiVersion"] == "route.openshift.io/v1"
    assert spec["host"] == "mlflow.apps.example.com"
    assert spec["to"] == {"kind": "Service", "name": "mlflow", "weight": 100}
    assert spec["tls"] == {"termination": "edge", "insecureEdgeTerminationPolicy": "Redirect"}
    assert not run.kinds("Ingress")
    assert run.outputs["mlflowUrl"] == "https://mlflow.apps.example.com"


def test_httproute_attaches_to_the_named_gateway_listener():
    run = run_program("dev", exposure={"kind": "httproute", "tls": {"enabled": True},
                                       "gateway": {"name": "public", "namespace": "gateways", "sectionName": "https"}})
    (route,) = run.kinds("HTTPRoute")
    spec = route.outputs["spec"]
    assert route.outputs["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert spec["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public",
                                   "namespace": "gateways", "sectionName": "https"}]
    assert spec["hostnames"] == ["mlflow.localtest.me"]
    assert spec["rules"][0]["backendRefs"] == [{"name": "mlflow", "port": 5000}]
    assert run.outputs["mlflowUrl"] == "https://mlflow.localtest.me"


def test_no_exposure_creates_nothing_and_experiments_use_the_api_url():
    run = run_program("dev", exposure={"kind": "none"}, mlflow={"apiUrl": "http://localhost:5000"})
    assert not run.kinds("Ingress") and not run.kinds("Route") and not run.kinds("HTTPRoute")
    (experiment,) = run.dynamic("experiment")
    assert experiment.inputs["tracking_url"] == "http://localhost:5000"
    assert {user.inputs["tracking_url"] for user in run.dynamic("user")} == {"http://localhost:5000"}
    assert run.outputs["mlflowUrl"] == run.outputs["mlflowInternalUrl"]
    allowed = run.get("Deployment", "mlflow").outputs["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "mlflow.localtest.me" not in allowed[allowed.index("--allowed-hosts") + 1].split(",")


def test_httproute_without_tls_attaches_to_the_gateway_as_a_whole():
    run = run_program("dev", exposure=EXPOSURES["httproute-http"][1])
    (route,) = run.kinds("HTTPRoute")
    (parent,) = route.outputs["spec"]["parentRefs"]
    assert "sectionName" not in parent and parent["name"] == "public"


@pytest.mark.parametrize(
    "exposure, key, fix",
    [
        ({"kind": "httproute", "tls": {"enabled": True, "secretName": "cert"}, "gateway": HTTPS_GATEWAY},
         "exposure.tls.secretName", "certificateRefs of the Gateway's HTTPS listener"),
        ({"kind": "httproute", "tls": {"enabled": True}, "gateway": {"name": "public"}},
         "exposure.gateway.sectionName", "HTTPS listener"),
        ({"kind": "route", "tls": {"secretName": "cert"}}, "exposure.tls.secretName", "router's certificate"),
        ({"kind": "ingress", "tls": {"secretName": "cert"}}, "exposure.tls.enabled", "set it true"),
        ({"kind": "route", "tls": {"clusterIssuer": "letsencrypt", "enabled": True}}, "exposure.tls.clusterIssuer",
         "ingress only"),
    ],
)
def test_a_certificate_where_the_exposure_cannot_use_it_is_refused(exposure, key, fix):
    with pytest.raises(ConfigError) as caught:
        parse_stack_config({"domain": "example.com", "platform": "openshift", "exposure": exposure})
    assert any(p.startswith(f"{key}:") and fix in p for p in caught.value.problems), caught.value.problems
