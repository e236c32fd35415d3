"""Monitoring as the program declares it: what is scraped and how, the rules each stack gets,
the canary and the dashboard. The rules' behaviour (fire, stay quiet, resolve) is proven with
promtool and a real Prometheus in tests/integration/test_monitoring.py."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from components.config import ConfigError, parse_stack_config
from components.monitoring import RUNBOOK, Watched, alert_rules, dashboard, dashboard_panels
from tests.support.crds import validate_custom_resource
from tests.support.k8s import integral
from tests.support.program import run_program, stack_values

ALL_WATCHED = Watched(namespace="mlflow", mlflow_scraped=True, bundled_postgres=True, canary=True,
                      retention=True, check=True)


def pod_template(run, kind: str, name: str) -> dict:
    return run.get(kind, name).outputs["spec"]["template"]


def rules_of(run) -> list[dict]:
    """The stack's rules: its PrometheusRule's, or its rules ConfigMap's."""
    shipped = [r.outputs["spec"] for r in run.resources if r.typ.endswith("PrometheusRule")]
    shipped += [yaml.safe_load(c.outputs["data"]["mlflow-tracing.rules.yaml"]) for c in run.kinds("ConfigMap")
                if "mlflow-tracing.rules.yaml" in c.outputs.get("data", {})]
    ((group,),) = [rules["groups"] for rules in shipped]
    return group["rules"]


def test_every_alert_names_its_hop_and_the_runbook_and_reads_only_its_namespace():
    rules = alert_rules(ALL_WATCHED)["groups"][0]["rules"]
    assert len({rule["alert"] for rule in rules}) == len(rules) == 15
    for rule in rules:
        annotations = rule["annotations"]
        assert annotations["summary"] and RUNBOOK in annotations["description"], rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical")
        selectors = re.findall(r"\{([^}]*)\}", rule["expr"].replace("{{", "").replace("}}", ""))
        assert selectors and all('namespace="mlflow"' in selector for selector in selectors), rule["expr"]


@pytest.mark.parametrize(("change", "gone"), [
    ({"mlflow_scraped": False}, {"MlflowDown", "MlflowServerErrors", "TracesNotStored"}),
    ({"bundled_postgres": False}, {"PostgresDown"}),
    ({"canary": False}, {"TraceCanaryFailing"}),
    ({"retention": False}, {"TraceRetentionFailing"}),
    ({"check": False}, {"TraceCheckFailed"}),
])
def test_a_stack_gets_no_rule_for_what_it_does_not_run(change, gone):
    every = {rule["alert"] for rule in alert_rules(ALL_WATCHED)["groups"][0]["rules"]}
    fewer = {rule["alert"] for rule in alert_rules(Watched(**{**ALL_WATCHED.__dict__, **change}))["groups"][0]["rules"]}
    assert every - fewer == gone


def test_by_default_both_servers_are_annotated_for_scraping_and_mlflow_serves_metrics(dev):
    collector = pod_template(dev, "Deployment", "otel-collector")["metadata"]["annotations"]
    assert collector["prometheus.io/scrape"] == "true" and collector["prometheus.io/port"] == "8888"
    template = pod_template(dev, "Deployment", "mlflow")
    assert template["metadata"]["annotations"]["prometheus.io/port"] == "5000"
    (server,) = template["spec"]["containers"]
    args = server["command"]
    metrics_dir = args[args.index("--expose-prometheus") + 1]
    mounts = {m["mountPath"]: m["name"] for m in server["volumeMounts"]}
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    # the multiprocess files of several workers, on a volume of the pod (the root is read-only)
    assert volumes[mounts[metrics_dir]]["emptyDir"]["sizeLimit"]
    assert server["securityContext"]["readOnlyRootFilesystem"]
    pod_ip = next(e for e in server["env"] if e["name"] == "POD_IP")
    assert pod_ip["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert {"$(POD_IP):5000", "[$(POD_IP)]:5000"} <= set(args[args.index("--allowed-hosts") + 1].split(","))


def test_mlflow_behind_basic_auth_is_not_scraped_and_its_rules_are_left_out(stack_runs):
    run = stack_runs["openshift"]
    template = pod_template(run, "Deployment", "mlflow")
    (server,) = template["spec"]["containers"]
    assert "--expose-prometheus" not in server["command"]
    assert "prometheus.io/scrape" not in template["metadata"].get("annotations", {})
    assert "POD_IP" not in {e["name"] for e in server["env"]}
    names = {rule["alert"] for rule in rules_of(run)}
    assert "TraceExportRejected" in names and not names & {"MlflowDown", "MlflowServerErrors", "TracesNotStored"}


def test_with_the_prometheus_operator_servicemonitors_and_a_rule_replace_annotations():
    run = run_program("dev", monitoring={"prometheusOperator": True, "labels": {"release": "kube-prometheus-stack"}})
    monitors = {m.name: m.outputs for m in run.resources if m.typ.endswith("ServiceMonitor")}
    (rule,) = [r.outputs for r in run.resources if r.typ.endswith("PrometheusRule")]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"] == alert_rules(Watched(namespace="mlflow", mlflow_scraped=True, bundled_postgres=True,
                                               canary=True, retention=False, check=True))
    scraped = set()
    for monitor in monitors.values():
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        wanted = monitor["spec"]["selector"]["matchLabels"]
        (service,) = [s for s in run.kinds("Service")
                      if wanted.items() <= s.outputs["metadata"]["labels"].items()]
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] in {port["name"] for port in service.outputs["spec"]["ports"]}
        assert endpoint["path"] == "/metrics"
        scraped.add(service.k8s_name)
    assert scraped == {"mlflow", "otel-collector"}
    for resource in run.resources:
        if resource.typ.endswith(("ServiceMonitor", "PrometheusRule")):
            validate_custom_resource(integral(resource.manifest))
    assert "prometheus.io/scrape" not in pod_template(run, "Deployment", "otel-collector")["metadata"]["annotations"]
    assert not [c for c in run.kinds("ConfigMap") if "mlflow-tracing.rules.yaml" in c.outputs.get("data", {})]


def test_switched_off_nothing_is_exposed_and_no_canary_runs():
    run = run_program("dev", monitoring={"enabled": False})
    assert "--expose-prometheus" not in pod_template(run, "Deployment", "mlflow")["spec"]["containers"][0]["command"]
    assert "prometheus.io/scrape" not in pod_template(run, "Deployment", "otel-collector")["metadata"]["annotations"]
    assert not [c for c in run.kinds("CronJob") if c.k8s_name == "trace-canary"]
    assert not [c for c in run.kinds("ConfigMap") if "monitoring" in c.name]


def test_the_canary_runs_the_post_deploy_checks_job_on_its_schedule(dev):
    canary = dev.get("CronJob", "trace-canary").outputs["spec"]
    assert canary["schedule"] == "*/10 * * * *" and canary["concurrencyPolicy"] == "Forbid"
    check = dev.get("Job", next(j.k8s_name for j in dev.kinds("Job") if j.name == "trace-check")).outputs["spec"]
    job = canary["jobTemplate"]["spec"]
    assert job["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == "trace-canary"
    # the same container, plan and deadline; only the check carries the revision it checks
    assert job["template"]["spec"] == check["template"]["spec"]
    assert job["activeDeadlineSeconds"] == check["activeDeadlineSeconds"] and job["backoffLimit"] == 0
    assert "annotations" not in job["template"]["metadata"]


def test_with_auth_the_canary_signs_in_as_the_checks_user_even_without_the_check():
    run = run_program("openshift", verify={"enabled": False})
    assert not [j for j in run.kinds("Job") if j.name == "trace-check"]
    (container,) = run.get("CronJob", "trace-canary").outputs["spec"]["jobTemplate"]["spec"]["template"]["spec"][
        "containers"]
    secrets = {e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e}
    assert len(secrets) == 1 and "trace-check" in next(iter(secrets))


def test_the_dashboard_is_a_configmap_for_the_grafana_sidecar_with_a_query_per_target(dev):
    (config_map,) = [c for c in dev.kinds("ConfigMap") if c.outputs["metadata"]["labels"].get("grafana_dashboard")]
    model = json.loads(config_map.outputs["data"]["mlflow-tracing.json"])
    assert model["uid"] and model["title"] == "MLflow tracing (mlflow)"
    panels = model["panels"]
    assert panels == dashboard_panels("mlflow", mlflow_scraped=True, canary=True)
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        assert panel["targets"] and all('namespace="mlflow"' in t["expr"] for t in panel["targets"]), panel["title"]


@pytest.mark.parametrize(("values", "key"), [
    ({"labels": {"bad key": "x"}}, "monitoring.labels"),
    ({"dashboardLabels": {"grafana_dashboard": "not ok!"}}, "monitoring.dashboardLabels"),
    ({"scraperNamespaces": ["Not_A_Namespace"]}, "monitoring.scraperNamespaces"),
    ({"canary": {"schedule": "every ten minutes"}}, "monitoring.canary.schedule"),
    ({"canary": {"period": 10}}, "monitoring.canary.period"),
    ({"enabled": "yes"}, "monitoring.enabled"),
])
def test_bad_monitoring_config_names_the_key(values, key):
    with pytest.raises(ConfigError) as error:
        parse_stack_config({**stack_values("dev"), "monitoring": values})
    assert key in str(error.value)


def test_the_canarys_alert_waits_out_a_run_however_long_the_check_may_take():
    def canary_hold(run_seconds: int) -> str:
        watched = Watched(**{**ALL_WATCHED.__dict__, "canary_run_seconds": run_seconds})
        return next(r["for"] for r in alert_rules(watched)["groups"][0]["rules"] if r["alert"] == "TraceCanaryFailing")

    assert canary_hold(240) == "10m"  # the default check: 180 s and the pod's margin
    assert canary_hold(1860) == "33m"  # verify.timeoutSeconds 1800


def test_openshift_uses_the_operators_objects_by_default_as_its_user_workload_monitoring_reads_only_those(
        stack_runs):
    run = stack_runs["openshift"]
    assert [r for r in run.resources if r.typ.endswith("PrometheusRule")]
    assert "prometheus.io/scrape" not in pod_template(run, "Deployment", "otel-collector")["metadata"]["annotations"]
    kubernetes = run_program("dev", monitoring={"prometheusOperator": None})
    assert not [r for r in kubernetes.resources if r.typ.endswith("PrometheusRule")]


def test_dashboard_uids_stay_distinct_for_long_namespaces_with_one_prefix():
    uids = {dashboard(f"team-observability-tracing-{n}", mlflow_scraped=True, canary=True)["uid"] for n in range(3)}
    assert len(uids) == 3 and all(len(uid) <= 40 for uid in uids)
