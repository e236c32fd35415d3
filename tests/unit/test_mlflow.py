"""The MLflow Deployment: the Host check list, probes, backend URI and env,
migrations first, artifacts on a PVC or S3, sizes that fit."""

import fnmatch

import pytest

from components.config import mlflow_footprint_mib, parse_stack_config, quantity_bytes
from components.mlflow import allowed_hosts_for
from tests.support.k8s import arg_after, container, env_of, pod_spec
from tests.support.program import run_program

S3 = {"artifacts": {"kind": "s3", "uri": "s3://traces/mlflow", "endpointUrl": "http://minio.minio:9000",
                    "secretName": "s3-creds"}}


def host_accepted(allowed: list[str], host: str) -> bool:
    """MLflow's rule: exact match, or fnmatch for a pattern with `*`."""
    return any(fnmatch.fnmatch(host, p) if "*" in p else host == p for p in allowed)


@pytest.fixture(scope="module")
def server(dev):
    return container(dev.get("Deployment", "mlflow"), "mlflow")


def test_allowed_hosts_cover_every_form_clients_send():
    allowed = allowed_hosts_for(namespace="obs", external_host="mlflow.example.com", extra=("mlflow.corp.net",))
    for name in ("mlflow", "mlflow.obs", "mlflow.obs.svc", "mlflow.obs.svc.cluster.local"):
        assert host_accepted(allowed, name) and host_accepted(allowed, f"{name}:5000"), name
    for host in ("mlflow.example.com", "mlflow.example.com:443", "localhost", "localhost:8080", "127.0.0.1:5000",
                 "mlflow.corp.net"):
        assert host_accepted(allowed, host), host
    for host in ("evil.com", "mlflow.example.com.evil.com", "mlflow:5001", "mlflow.other.svc.cluster.local"):
        assert not host_accepted(allowed, host), host
    assert "*" not in allowed and len(allowed) == len(set(allowed))


def test_server_runs_uvicorn_on_all_interfaces_with_the_generated_host_list(dev, server):
    args = server["command"]
    assert args[:2] == ["mlflow", "server"] and not any("gunicorn" in a for a in args)
    assert arg_after(args, "--host") == "0.0.0.0" and arg_after(args, "--port") == "5000"
    assert arg_after(args, "--workers") == "2"
    allowed = arg_after(args, "--allowed-hosts").split(",")
    # scraped at its pod's address: monitoring is on by default
    assert allowed == allowed_hosts_for(namespace="mlflow", external_host="mlflow.localtest.me", scraped=True)
    assert allowed[-2:] == ["$(POD_IP):5000", "[$(POD_IP)]:5000"]  # IPv4 and IPv6 pod addresses
    assert dev.get("Service", "mlflow").outputs["spec"]["ports"][0]["port"] == 5000


def test_backend_uri_names_its_driver_and_holds_no_credentials(server):
    env = env_of(server)
    uri = env["MLFLOW_BACKEND_STORE_URI"]["value"]
    assert uri == "postgresql+psycopg2://postgres.mlflow.svc:5432/mlflow"
    assert arg_after(server["command"], "--backend-store-uri") == "$(MLFLOW_BACKEND_STORE_URI)"
    assert env["MLFLOW_TRACKING_URI"]["value"] == uri
    assert "secretKeyRef" in env["PGUSER"]["valueFrom"] and "secretKeyRef" in env["PGPASSWORD"]["valueFrom"]
    assert env["HOME"]["value"] == "/tmp"
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]["value"] == "false"


def test_probes_use_tcp_for_startup_and_health_after(server):
    assert server["startupProbe"]["tcpSocket"]["port"] == "http"
    # The CLI retries the database for ~100 s before the port opens.
    assert server["startupProbe"]["periodSeconds"] * server["startupProbe"]["failureThreshold"] >= 180
    for probe in ("readinessProbe", "livenessProbe"):
        assert server[probe]["httpGet"] == {"path": "/health", "port": "http"}
    assert {"name": "http", "containerPort": 5000} in server["ports"]


def test_migrations_run_once_in_a_job_before_the_deployment(dev, server):
    (job,) = [j for j in dev.kinds("Job") if j.name == "mlflow-migrate"]
    deployment = dev.get("Deployment", "mlflow")
    assert job.urn in deployment.dependencies
    template = deployment.outputs["spec"]["template"]["metadata"]["annotations"]
    assert template["mlflow-tracing/migration-job"] == job.k8s_name
    migrate = container(job, "migrate")
    assert migrate["command"] == ["mlflow", "db", "upgrade", "$(MLFLOW_BACKEND_STORE_URI)"]
    # the server's env but its own address, which only a scraped server's Host check needs
    assert env_of(migrate) == {name: entry for name, entry in env_of(server).items() if name != "POD_IP"}


def test_pvc_artifacts_use_recreate_and_a_retained_claim(dev, server):
    deployment = dev.get("Deployment", "mlflow")
    assert deployment.outputs["spec"]["strategy"] == {"type": "Recreate"}
    claim = dev.get("PersistentVolumeClaim", "mlflow-artifacts")
    assert claim.outputs["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim.outputs["spec"]["resources"]["requests"]["storage"] == "5Gi"  # Pulumi.dev.yaml
    volume = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == "artifacts")
    assert volume["persistentVolumeClaim"]["claimName"] == claim.k8s_name
    mount = next(m for m in server["volumeMounts"] if m["name"] == "artifacts")
    assert arg_after(server["command"], "--artifacts-destination") == mount["mountPath"]


def test_s3_artifacts_use_the_bucket_and_the_credentials_secret():
    run = run_program("dev", mlflow={**S3, "replicas": 2, "auth": {"kind": "none"}})  # no sign-in, as dev
    deployment = run.get("Deployment", "mlflow")
    server = container(deployment, "mlflow")
    assert arg_after(server["command"], "--artifacts-destination") == "s3://traces/mlflow"
    env = env_of(server)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "s3-creds", "key": key}
    assert env["MLFLOW_S3_ENDPOINT_URL"]["value"] == "http://minio.minio:9000"
    assert env["MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE"]["value"] == "path"
    assert [c.k8s_name for c in run.kinds("PersistentVolumeClaim")] == ["postgres-backups"]  # no artifact claim
    assert deployment.outputs["spec"]["replicas"] == 2


def selects(selector: dict, labels: dict) -> bool:
    return selector["matchLabels"].items() <= labels.items()


def test_several_replicas_get_a_budget_a_spread_and_a_roll_that_keeps_capacity():
    run = run_program("dev", mlflow={**S3, "replicas": 3, "auth": {"kind": "none"}})
    deployment = run.get("Deployment", "mlflow")
    spec, pod_labels = deployment.outputs["spec"], deployment.outputs["spec"]["template"]["metadata"]["labels"]
    assert spec["replicas"] == 3
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    budget = run.get("PodDisruptionBudget", "mlflow").outputs["spec"]
    assert budget["maxUnavailable"] == 1 and selects(budget["selector"], pod_labels)
    # The budget covers the server's pods only, not the Jobs'.
    assert run.kinds("Job")
    assert not any(selects(budget["selector"], job.outputs["spec"]["template"]["metadata"]["labels"])
                   for job in run.kinds("Job"))
    (spread,) = pod_spec(deployment)["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname" and selects(spread["labelSelector"], pod_labels)
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway"  # a one-node cluster still runs every replica
    assert not run.kinds("HorizontalPodAutoscaler")


def test_one_replica_gets_no_budget_that_would_block_node_drains(dev):
    deployment = dev.get("Deployment", "mlflow")
    assert not dev.kinds("PodDisruptionBudget") and not dev.kinds("HorizontalPodAutoscaler")
    assert "topologySpreadConstraints" not in pod_spec(deployment)
    assert deployment.outputs["spec"]["replicas"] == 1


def test_autoscaling_owns_the_replica_count_of_the_deployment():
    autoscaling = {"enabled": True, "minReplicas": 3, "maxReplicas": 7, "targetCPUUtilizationPercentage": 60}
    run = run_program("dev", mlflow={**S3, "replicas": 5, "autoscaling": autoscaling, "auth": {"kind": "none"}})
    deployment = run.get("Deployment", "mlflow")
    # A replica count in the Deployment would be re-applied by every `pulumi up`, undoing the autoscaler.
    assert "replicas" not in deployment.outputs["spec"]
    hpa = run.get("HorizontalPodAutoscaler", "mlflow").outputs
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment", deployment.k8s_name)
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 7)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"] == {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}
    # Utilization is a share of the request: the container must declare one.
    assert container(deployment, "mlflow")["resources"]["requests"]["cpu"]
    assert run.get("PodDisruptionBudget", "mlflow").outputs["spec"]["maxUnavailable"] == 1


def test_a_read_write_many_volume_allows_several_replicas_with_a_rolling_update():
    run = run_program("dev", mlflow={"replicas": 2, "artifacts": {"accessMode": "ReadWriteMany"},
                                     "auth": {"kind": "none"}})
    deployment = run.get("Deployment", "mlflow")
    assert deployment.outputs["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert run.get("PersistentVolumeClaim", "mlflow-artifacts").outputs["spec"]["accessModes"] == ["ReadWriteMany"]
    assert run.get("PodDisruptionBudget", "mlflow")


@pytest.mark.parametrize("workers, job_execution", [(2, False), (4, True)])
def test_memory_limit_follows_workers_and_job_execution(workers, job_execution):
    # Scale the default limit to what the config layer requires, then check the Deployment carries it.
    limit = f"{int(mlflow_footprint_mib(workers, job_execution) / 0.75) + 1}Mi"
    values = {"domain": "x.io", "mlflow": {"workers": workers, "jobExecution": job_execution,
                                           "resources": {"requests": {"memory": "512Mi"}, "limits": {"memory": limit}},
                                           "auth": {"kind": "none"}}}  # no sign-in, as dev
    config = parse_stack_config(values)
    run = run_program("dev", mlflow=values["mlflow"])
    server = container(run.get("Deployment", "mlflow"), "mlflow")
    assert arg_after(server["command"], "--workers") == str(workers)
    assert env_of(server)["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]["value"] == str(job_execution).lower()
    assert quantity_bytes(server["resources"]["limits"]["memory"]) == config.mlflow.resources.memory_limit_bytes
