"""Exposure: Ingress (nginx-tuned, optional TLS), OpenShift Route, Gateway API
HTTPRoute, or none."""

from tests.program import run_program


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
    (experiment,) = run.of_type("pulumi-python:dynamic:Resource")
    assert experiment.inputs["tracking_url"] == "http://localhost:5000"
    assert run.outputs["mlflowUrl"] == run.outputs["mlflowInternalUrl"]
    allowed = run.get("Deployment", "mlflow").outputs["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "mlflow.localtest.me" not in allowed[allowed.index("--allowed-hosts") + 1].split(",")
