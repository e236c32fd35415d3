"""What a deployed stack does while `pulumi up` changes it, sampled on the real-engine suite's
node: which MLflow version answers through its Service (and when nothing does), which MLflow
and migration pods run with which image, and whether the retention CronJob is suspended."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import requests

from components import mlflow as mlflow_component
from components import trace_upkeep
from tests.support.cluster import ControlPlane
from tests.support.nodeagent import NodeAgent

SAMPLE_SECONDS = 0.25
COMPONENT_LABEL = "app.kubernetes.io/name"


@dataclass
class Sample:
    at: float  # time.monotonic()
    version: str | None  # what MLflow's /version answered through its Service; None: no answer
    serving: list[str]  # images of the MLflow pods whose processes run
    migrating: list[str]  # images of the migration Job's pods seen (any phase)
    retention_suspended: bool | None  # None: no retention CronJob


class UpgradeWatch(threading.Thread):
    """Samples the namespace every SAMPLE_SECONDS until `finish()`."""

    def __init__(self, cluster: ControlPlane, node: NodeAgent, namespace: str, mlflow_url: str,
                 auth: tuple[str, str] | None = None):
        super().__init__(daemon=True)
        self.cluster, self.node, self.namespace, self.mlflow_url, self.auth = cluster, node, namespace, mlflow_url, auth
        self.samples: list[Sample] = []
        self._halt = threading.Event()

    def _version(self) -> str | None:
        try:
            response = requests.get(f"{self.mlflow_url}/version", auth=self.auth, timeout=2)
        except requests.RequestException:
            return None
        return response.text.strip() if response.ok else None

    def _pods(self) -> tuple[list[str], list[str]]:
        found = (self.cluster.get(f"/api/v1/namespaces/{self.namespace}/pods") or {}).get("items", [])
        alive = {uid for uid, pod in list(self.node.pods.items())
                 if any(process.poll() is None for process in list(pod.processes.values()))}
        serving, migrating = [], []
        for pod in found:
            component = pod["metadata"].get("labels", {}).get(COMPONENT_LABEL)
            image = pod["spec"]["containers"][0]["image"]
            if component == mlflow_component.COMPONENT and pod["metadata"]["uid"] in alive:
                serving.append(image)
            elif component == mlflow_component.MIGRATION_COMPONENT:
                migrating.append(image)
        return serving, migrating

    def _suspended(self) -> bool | None:
        cronjob = self.cluster.get(f"/apis/batch/v1/namespaces/{self.namespace}/cronjobs/"
                                   f"{trace_upkeep.RETENTION_CRONJOB_NAME}")
        return None if cronjob is None else bool(cronjob["spec"].get("suspend"))

    def run(self) -> None:
        while not self._halt.is_set():
            at = time.monotonic()
            version = self._version()
            serving, migrating = self._pods()
            self.samples.append(Sample(at, version, serving, migrating, self._suspended()))
            self._halt.wait(max(0.0, SAMPLE_SECONDS - (time.monotonic() - at)))

    def finish(self) -> list[Sample]:
        self._halt.set()
        self.join(30)
        return self.samples


def first_migration(samples: list[Sample], image: str) -> float:
    """When a migration pod of `image` was first seen."""
    return next(s.at for s in samples if image in s.migrating)


def longest_outage(samples: list[Sample]) -> float:
    """The longest time MLflow's Service gave no answer: from the first failed sample of a run of
    them to the next answered one."""
    longest, began = 0.0, None
    for sample in samples:
        if sample.version is None and began is None:
            began = sample.at
        elif sample.version is not None and began is not None:
            longest, began = max(longest, sample.at - began), None
    assert began is None, "MLflow did not answer at the end of the watch"
    return longest
