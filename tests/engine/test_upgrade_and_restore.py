"""MLflow version changes and a restore with real pods, the way MLflow requires them: a basic-auth stack
deployed with MLflow 3.16.x is changed to the deployed 3.17.x under steady traffic. The upgrade
gate stops every writer (MLflow's pods, the retention CronJob) and backs the databases up before
the migration starts; no 3.16 pod runs from then on, the collector holds the spans meanwhile,
and afterwards every span sent is stored once, with the experiments, traces, tags and users of
before. A change within the schema line then rolls without MLflow ever going unavailable. Last, a
backup taken under ingest load is restored onto a lost data volume through `restoreFrom`.

The samples come from `tests/support/upgrades.py`: /version through the Service every 0.25 s,
and which MLflow and migration pods run with which image, as the node runs them."""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter

import pytest
import requests
from mlflow import MlflowClient

from components import backup as backup_component
from components import mlflow as mlflow_component
from components import postgres as postgres_component
from tests.support.collector import span_counts_in_mlflow, stored_spans, wait_stored_once
from tests.support.disruption import pods, recovered
from tests.support.images import deployed_mlflow_image, image_version
from tests.support.kubelet import new_filesystem
from tests.support.processes import wait_until
from tests.support.traffic import SteadySender
from tests.support.upgrades import UpgradeWatch, first_migration, longest_outage

NAMESPACE = "upgrades"
EXPERIMENT = "upgrade-traces"
PREVIOUS_MINOR = "ghcr.io/mlflow/mlflow:v3.16.1-full"
USER = ("alice", "alice-Password-2f9c")
ARRIVAL_TIMEOUT = 180
# The collector retries an export for up to 10 minutes (retry_on_failure.max_elapsed_time): an
# outage longer than that loses spans, so the upgrade's must stay well below it.
COLLECTOR_RETRY_SECONDS = 600


def stack_config(mlflow_url: str, image: str) -> dict:
    return {
        "namespace": NAMESPACE,
        "exposure": {"kind": "none"},
        "postgres": {"storageSize": "1Gi", "backup": {"size": "1Gi"}},
        # ReadWriteMany: the Deployment rolls (a new pod Ready before an old one stops), as a stack
        # with S3 artifacts or several replicas does; a ReadWriteOnce claim recreates its pod.
        "mlflow": {"image": image, "apiUrl": mlflow_url, "auth": {"kind": "basic"},
                   "artifacts": {"size": "1Gi", "accessMode": "ReadWriteMany"}},
        "retention": {"days": 30},  # a CronJob that writes: the gate must suspend it
        "experiments": [{"name": EXPERIMENT, "default": True}],
    }


@pytest.fixture(scope="module")
def stack(project, mlflow_url):
    """Up with the previous MLflow minor once for the module, destroyed at its end."""
    stack = project.stack("upgrades", stack_config(mlflow_url, PREVIOUS_MINOR))
    stack.up().check("up with MLflow 3.16")
    yield stack
    stack.destroy().check("destroy of the upgrades stack")


@pytest.fixture(scope="module")
def admin(stack) -> tuple[str, str]:
    credentials = stack.outputs()["mlflowCredentials"]
    return credentials["username"], credentials["password"]


@pytest.fixture(scope="module")
def app_traces() -> set[str]:
    """The trace ids the module's senders sent: its counts leave out the canary's passing traces (and one a
    backup taken mid-run holds, which a restore brings back)."""
    return set()


@pytest.fixture(autouse=True)
def signed_in(admin, monkeypatch):
    """MlflowClient signs in as the admin."""
    monkeypatch.setitem(os.environ, "MLFLOW_TRACKING_USERNAME", admin[0])
    monkeypatch.setitem(os.environ, "MLFLOW_TRACKING_PASSWORD", admin[1])


def served_version(mlflow_url: str, admin: tuple[str, str]) -> str:
    return requests.get(f"{mlflow_url}/version", auth=admin, timeout=10).text.strip()


def gate_log(node, container: str = "stop-writers") -> str:
    """The newest run's log of a container of the upgrade gate's stop Job."""
    logs = node.logs.glob(f"{NAMESPACE}-upgrade-stop-writers-*-{container}.log")
    return max(logs, key=lambda p: p.stat().st_mtime).read_text()


def test_a_minor_upgrade_stops_every_writer_backs_up_migrates_and_loses_nothing(
        stack, cluster, node, mlflow_url, otlp_url, admin, record_property, app_traces):
    new_image = deployed_mlflow_image()
    assert served_version(mlflow_url, admin) == image_version(PREVIOUS_MINOR)
    experiment_id = stack.outputs()["experimentIds"][EXPERIMENT]
    client = MlflowClient(tracking_uri=mlflow_url)
    created = requests.post(f"{mlflow_url}/api/2.0/mlflow/users/create", auth=admin, timeout=10,
                            json={"username": USER[0], "password": USER[1]})
    assert created.ok, created.text
    before = SteadySender(otlp_url, "before-upgrade", 0.1)
    before.start()
    wait_until(lambda: before.accepted_spans >= 8, 30, "spans before the upgrade")
    sent_before = before.finish()
    wait_stored_once(mlflow_url, experiment_id, before.trace_ids, sent_before, ARRIVAL_TIMEOUT,
                     "the spans sent before the upgrade")
    tagged = f"tr-{min(before.trace_ids)}"  # one of the application's traces, not a passing canary's
    client.set_trace_tag(tagged, "reviewed", "yes")
    app_traces.update(before.trace_ids)
    experiments_before = {e.experiment_id: e.name for e in client.search_experiments()}

    watch = UpgradeWatch(cluster, node, NAMESPACE, mlflow_url, admin)
    sender = SteadySender(otlp_url, "during-upgrade", 0.25)
    watch.start()
    sender.start()
    try:
        stack.configure(stack_config(mlflow_url, new_image))
        stack.up().check("up with MLflow 3.17")
        wait_until(lambda: served_version(mlflow_url, admin) == image_version(new_image), 60, "3.17 serving")
    finally:
        sent = sender.finish()
        samples = watch.finish()
        app_traces.update(sender.trace_ids)

    # No 3.16 pod ran from the moment the migration started, and the 3.16 server answered only before it.
    migration = first_migration(samples, new_image)
    assert not [s for s in samples if s.at >= migration and PREVIOUS_MINOR in s.serving]
    assert not [s for s in samples if s.at >= migration and s.version == image_version(PREVIOUS_MINOR)]
    assert any(s.version == image_version(PREVIOUS_MINOR) for s in samples)  # the watch saw the old server
    # The retention CronJob was suspended meanwhile, and runs on its schedule again.
    assert any(s.retention_suspended for s in samples) and samples[-1].retention_suspended is False
    outage = longest_outage(samples)
    record_property("mlflow_unavailable_seconds", round(outage, 1))
    record_property("spans_sent_during_upgrade", sent)
    print(f"\nMLflow 3.16 -> 3.17: unavailable {outage:.1f} s; {sent} spans sent during the upgrade")
    assert 0 < outage < COLLECTOR_RETRY_SECONDS / 4
    assert "writers stopped (schema 3.16 -> 3.17)" in gate_log(node)

    # A backup of every database, taken with the writers stopped.
    backups = node.workdir / "volumes" / f"{NAMESPACE}-{backup_component.CLAIM_NAME}"
    (taken,) = backups.glob("before-upgrade-*")
    assert sorted(p.name for p in taken.iterdir()) == ["mlflow.dump", "mlflow_auth.dump"]

    # Every span sent before and during the upgrade, once; experiments, tags and users as before.
    wait_stored_once(mlflow_url, experiment_id, before.trace_ids | sender.trace_ids, sent_before + sent,
                     ARRIVAL_TIMEOUT, f"the {sent} spans sent during the upgrade")
    assert {e.experiment_id: e.name for e in client.search_experiments()} == experiments_before
    assert client.get_trace(tagged).info.tags["reviewed"] == "yes"
    user = requests.get(f"{mlflow_url}/api/2.0/mlflow/users/get", params={"username": USER[0]}, auth=admin,
                        timeout=10)
    assert user.ok and user.json()["user"]["username"] == USER[0]
    assert requests.get(f"{mlflow_url}/api/2.0/mlflow/experiments/search", params={"max_results": 1},
                        auth=USER, timeout=10).ok  # the user still signs in
    stack.up("--expect-no-changes").check("up after the upgrade: nothing to change")


def test_a_change_within_the_schema_line_rolls_without_stopping_mlflow(stack, cluster, node, mlflow_url, admin):
    """The same 3.17 by digest: the gate leaves the writers running, and the Deployment rolls a new
    pod in before the old one stops, so MLflow answers throughout."""
    watch = UpgradeWatch(cluster, node, NAMESPACE, mlflow_url, admin)
    watch.start()
    try:
        stack.configure(stack_config(mlflow_url, f"{deployed_mlflow_image()}@sha256:{'0' * 64}"))
        stack.up().check("up with the same MLflow minor by digest")
    finally:
        samples = watch.finish()
    assert "rolls as usual" in gate_log(node)
    assert all(s.version is not None for s in samples), [s for s in samples if s.version is None][:3]
    assert any(len(s.serving) == 2 for s in samples)  # the old and the new pod overlapped
    deployment = cluster.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{mlflow_component.SERVICE_NAME}")
    assert deployment["spec"]["replicas"] == 1


def run_cronjob_now(cluster, name: str, job: str) -> dict:
    """`kubectl create job --from=cronjob/<name> <job>`; the Job once it has succeeded."""
    cronjob = cluster.get(f"/apis/batch/v1/namespaces/{NAMESPACE}/cronjobs/{name}")
    template = cronjob["spec"]["jobTemplate"]
    body = {"apiVersion": "batch/v1", "kind": "Job", "spec": template["spec"],
            "metadata": {"name": job, "labels": template["metadata"].get("labels", {}),
                         "annotations": {"cronjob.kubernetes.io/instantiate": "manual"}}}
    cluster.session().post(f"{cluster.url}/apis/batch/v1/namespaces/{NAMESPACE}/jobs", json=body,
                           timeout=10).raise_for_status()
    path = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{job}"
    wait_until(lambda: (cluster.get(path).get("status") or {}).get("succeeded") == 1, 300, f"Job {job}")
    return cluster.get(path)


def scale_postgres(cluster, replicas: int) -> None:
    cluster.session().patch(
        f"{cluster.url}/apis/apps/v1/namespaces/{NAMESPACE}/statefulsets/{postgres_component.SERVICE_NAME}",
        json={"spec": {"replicas": replicas}}, headers={"Content-Type": "application/merge-patch+json"},
        timeout=10).raise_for_status()


def lose_the_data_volume(cluster, node) -> None:
    """PostgreSQL stopped, its volume replaced by an empty file system, PostgreSQL started on it
    (which initialises a new cluster with only the `mlflow` database, as the image does)."""
    scale_postgres(cluster, 0)
    wait_until(lambda: not pods(cluster, NAMESPACE, postgres_component.COMPONENT), 120, "PostgreSQL's pod gone")
    wait_until(lambda: not [p for p in list(node.pods.values()) if p.namespace == NAMESPACE
                            and p.labels.get("app.kubernetes.io/name") == postgres_component.COMPONENT], 120,
               "PostgreSQL's processes gone")
    volume = node.workdir / "volumes" / f"{NAMESPACE}-data-{postgres_component.SERVICE_NAME}-0"
    shutil.rmtree(volume)
    new_filesystem(volume)
    scale_postgres(cluster, 1)
    wait_until(lambda: recovered(cluster, NAMESPACE, set()), 300, "PostgreSQL on an empty volume")


def test_a_backup_under_load_restores_onto_a_lost_volume(stack, cluster, node, mlflow_url, otlp_url, admin,
                                                         record_property, app_traces):
    """The scheduled backup's Job, run while traces stream in; the data volume lost; the backup named
    in `postgres.backup.restoreFrom`: MLflow comes back with the experiments (same IDs), the traces
    and tags, and the users the backup holds, every trace whole."""
    experiment_id = stack.outputs()["experimentIds"][EXPERIMENT]
    client = MlflowClient(tracking_uri=mlflow_url)
    extra = client.create_experiment("restored-with-its-id", tags={"team": "evals"})
    assert requests.post(f"{mlflow_url}/api/2.0/mlflow/users/create", auth=admin, timeout=10,
                         json={"username": "bob", "password": "bob-Password-77c1"}).ok
    experiments = {e.experiment_id: (e.name, e.tags.get("team")) for e in client.search_experiments()}

    sender = SteadySender(otlp_url, "backup-load", 0.1)
    sender.start()
    try:
        wait_until(lambda: sender.accepted_spans >= 40, 60, "ingest load before the backup")
        # MLflow is storing spans as the backup starts (the collector's batches reach it).
        baseline = span_counts_in_mlflow(mlflow_url, experiment_id, app_traces | sender.trace_ids)[0]
        wait_until(lambda: span_counts_in_mlflow(mlflow_url, experiment_id, app_traces | sender.trace_ids)[0]
                   > baseline, 60,
                   "spans being stored before the backup")
        stored_at_start = span_counts_in_mlflow(mlflow_url, experiment_id, app_traces | sender.trace_ids)[0]
        started = time.monotonic()
        job = run_cronjob_now(cluster, backup_component.CRONJOB_NAME, "backup-under-load")
        backup_seconds = time.monotonic() - started
        stored_at_end = span_counts_in_mlflow(mlflow_url, experiment_id, app_traces | sender.trace_ids)[0]
    finally:
        sender.finish()
        app_traces.update(sender.trace_ids)
    assert job["status"]["succeeded"] == 1
    backups = node.workdir / "volumes" / f"{NAMESPACE}-{backup_component.CLAIM_NAME}"
    (taken,) = backups.glob("scheduled-*")
    size = sum(dump.stat().st_size for dump in taken.iterdir())
    assert sorted(p.name for p in taken.iterdir()) == ["mlflow.dump", "mlflow_auth.dump"]

    lose_the_data_volume(cluster, node)
    assert requests.get(f"{mlflow_url}/api/2.0/mlflow/experiments/get", params={"experiment_id": extra},
                        auth=admin, timeout=10).status_code != 200  # gone with the volume

    config = stack.config()
    config["postgres"] = {**config["postgres"], "backup": {**config["postgres"]["backup"], "restoreFrom": taken.name}}
    stack.configure(config)
    started = time.monotonic()
    result = stack.up().check("up restoring the backup")
    restore_seconds = time.monotonic() - started
    assert f"{taken.name} is restored over MLflow's databases once" in result.output  # the warning
    log = gate_log(node, "restore")
    assert f"restore: mlflow from {taken.name}" in log and f"restore: mlflow_auth from {taken.name}" in log
    assert list(backups.glob("before-restore-*"))  # what the lost volume's databases held, kept too

    assert {e.experiment_id: (e.name, e.tags.get("team")) for e in client.search_experiments()} == experiments
    assert requests.get(f"{mlflow_url}/api/2.0/mlflow/experiments/search", params={"max_results": 1},
                        auth=("bob", "bob-Password-77c1"), timeout=10).ok
    spans = stored_spans(mlflow_url, experiment_id, app_traces)
    restored = len(spans)
    # At least what was stored when the backup began, plus what the collector still held when the
    # volume was lost (it retries into the restored database): each span once.
    assert stored_at_start <= restored and len({(s.trace_id, s.span_id) for s in spans}) == restored
    by_trace = Counter(s.trace_id for s in spans)
    assert set(by_trace.values()) == {4}, "a trace restored without all of its spans"  # each trace whole
    assert client.search_traces(locations=[experiment_id], filter_string="tag.reviewed = 'yes'")  # its tag too
    record_property("backup_bytes", size)
    print(f"\nbackup under load: {size} bytes in {backup_seconds:.1f} s (Job), {restored} spans restored "
          f"({stored_at_start}..{stored_at_end} stored while it ran); up with the restore {restore_seconds:.0f} s")

    # Once: with the key removed, the next up neither stops MLflow nor restores again.
    config["postgres"]["backup"] = {k: v for k, v in config["postgres"]["backup"].items() if k != "restoreFrom"}
    stack.configure(config)
    stack.up().check("up without restoreFrom")
    assert "rolls as usual" in gate_log(node)
    total, unique = span_counts_in_mlflow(mlflow_url, experiment_id, app_traces)
    assert total == unique >= restored  # not restored again: only the collector's late retries added
