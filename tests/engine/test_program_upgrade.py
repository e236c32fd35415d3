"""Program upgrades with real pods: the dev stack deployed by the previous release of this program
(PREVIOUS_RELEASE, a commit of this repository, its files taken with `git archive`), then `pulumi up`
with this checkout's program under steady traffic, as a user who pulls the new release does. No
object that holds data is replaced (the live objects keep their UIDs), the experiments keep their
IDs, and every span sent during the upgrade is stored once.

Bump PREVIOUS_RELEASE to the newest landed release whenever one lands (docs/operations.md, Upgrading)."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import yaml

from components.config import PROJECT
from tests.support.collector import wait_stored_once
from tests.support.engine import PulumiProject, program_at
from tests.support.program import PROJECT_DIR
from tests.support.traffic import SteadySender
from tests.support.upgrades import UpgradeWatch, longest_outage

PREVIOUS_RELEASE = "f2f6882"  # stop 29, the newest landed release
NAMESPACE = "previous-release"
ARRIVAL_TIMEOUT = 180
# What holds data, by type: the namespace, every claim (the StatefulSet's claim template included),
# PostgreSQL's StatefulSet and the experiments.
DATA_TYPES = ("kubernetes:core/v1:Namespace", "kubernetes:core/v1:PersistentVolumeClaim",
              "kubernetes:apps/v1:StatefulSet", "pulumi-python:dynamic:Resource")
REPLACING = ("replace", "create-replacement", "delete-replaced")


def previous_dev_config(mlflow_url: str) -> dict:
    """The previous release's Pulumi.dev.yaml, in a namespace of its own, reached through a port-forward."""
    text = subprocess.run(["git", "-C", str(PROJECT_DIR), "show", f"{PREVIOUS_RELEASE}:Pulumi.dev.yaml"],
                          capture_output=True, text=True, check=True, timeout=30).stdout
    config = {key.removeprefix(f"{PROJECT}:"): value for key, value in yaml.safe_load(text)["config"].items()}
    config["namespace"] = NAMESPACE
    config["mlflow"] = {**config["mlflow"], "apiUrl": mlflow_url}
    return config


@pytest.fixture(scope="module")
def previous(engine, workdir, cluster, mlflow_url):
    """A project of the previous release with the dev stack up; destroyed (with this release) at the end."""
    program = program_at(PREVIOUS_RELEASE, workdir / "previous-release-program")
    project = PulumiProject(engine, workdir / "previous-release", cluster.kubeconfig, program=program)
    stack = project.stack("dev", previous_dev_config(mlflow_url))
    stack.up().check(f"up with the release {PREVIOUS_RELEASE}")
    yield project, stack
    stack.destroy().check("destroy of the upgraded stack")


def data_objects(cluster) -> dict[str, str]:
    """kind/name -> UID of the live objects that hold data."""
    found = {f"Namespace/{NAMESPACE}": cluster.get(f"/api/v1/namespaces/{NAMESPACE}")["metadata"]["uid"]}
    for kind, path in (("PersistentVolumeClaim", f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims"),
                       ("StatefulSet", f"/apis/apps/v1/namespaces/{NAMESPACE}/statefulsets")):
        for item in cluster.get(path)["items"]:
            found[f"{kind}/{item['metadata']['name']}"] = item["metadata"]["uid"]
    return found


def test_the_previous_release_upgrades_to_this_one_keeping_data_ids_and_spans(
        previous, cluster, node, mlflow_url, otlp_url, record_property):
    project, stack = previous
    ids = stack.outputs()["experimentIds"]
    objects = data_objects(cluster)
    assert {"StatefulSet/postgres", "PersistentVolumeClaim/data-postgres-0",
            "PersistentVolumeClaim/mlflow-artifacts"} <= set(objects)
    (experiment_id,) = ids.values()

    project.install_program(PROJECT_DIR)
    plan = json.loads(stack.preview().check("preview of this release over the previous one").stdout)
    replaced = [(step["op"], step["urn"]) for step in plan["steps"]
                if step["op"] in REPLACING and step["urn"].split("::")[2].split("$")[-1] in DATA_TYPES]
    assert replaced == []

    watch = UpgradeWatch(cluster, node, NAMESPACE, mlflow_url)
    sender = SteadySender(otlp_url, "during-program-upgrade", 0.25)
    watch.start()
    sender.start()
    started = time.monotonic()
    try:
        stack.up().check("up with this release")
    finally:
        took = time.monotonic() - started
        sent = sender.finish()
        outage = longest_outage(watch.finish())
    record_property("program_upgrade_seconds", round(took))
    record_property("mlflow_unavailable_seconds", round(outage, 1))
    print(f"\nprogram {PREVIOUS_RELEASE} -> this checkout: up {took:.0f} s, MLflow unavailable {outage:.1f} s, "
          f"{sent} spans sent during it")

    assert stack.outputs()["experimentIds"] == ids
    assert {key: uid for key, uid in data_objects(cluster).items() if key in objects} == objects
    wait_stored_once(mlflow_url, experiment_id, sender.trace_ids, sent, ARRIVAL_TIMEOUT,
                     f"the {sent} spans sent during the program upgrade")
    stack.up("--expect-no-changes").check("a second up of this release: nothing to change")
