"""Stops MLflow's writers before a migration or a restore, and lets them start again after.

Run inside the cluster by the upgrade gate's Jobs (components/upgrade.py), with the MLflow
image's Python and nothing but the standard library, as the gate's ServiceAccount, whose Role
reaches only the MLflow Deployment, the retention CronJob and a read-only list of pods:

    python upgrade_gate.py stop-writers     # before the migration Job
    python upgrade_gate.py resume-writers   # after the Deployment's update: waits until it has rolled out

`stop-writers` compares what runs with what the stack now declares (the plan in
`UPGRADE_PLAN`). MLflow's upgrade notes ask for every writer stopped and a backup taken
before `mlflow db upgrade` ("mixed-version rolling upgrades are not supported"), so when the
schema line changes (another MAJOR.MINOR, or an image whose tag names no version), or a
restore is pending, it suspends the retention CronJob, scales the Deployment to 0, waits until
no MLflow or retention pod is left, and tells the pod's next containers what to do: take a
backup (`backup`: its series), restore one (`restore`: its name). A change within a schema
line does nothing here: the Deployment rolls as usual, a new pod Ready before an old one stops.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
GATE_DIR = Path("/gate")  # shared with the backup and restore containers of the gate's pod
SCHEMA_ANNOTATION = "mlflow-tracing/schema"
RESTORED_ANNOTATION = "mlflow-tracing/restored-from"
STOPPED_ANNOTATION = "mlflow-tracing/writers-stopped"  # the replicas the Deployment had
SUSPENDED_ANNOTATION = "mlflow-tracing/suspended-by-upgrade"
FIELD_MANAGER = "mlflow-tracing-upgrade-gate"
POLL_SECONDS = 2


class Api:
    """The Kubernetes API as the pod's ServiceAccount."""

    def __init__(self) -> None:
        self.base = f"https://{os.environ['KUBERNETES_SERVICE_HOST']}:{os.environ['KUBERNETES_SERVICE_PORT']}"
        self.namespace = (ACCOUNT / "namespace").read_text().strip()
        self.context = ssl.create_default_context(cafile=str(ACCOUNT / "ca.crt"))

    def request(self, method: str, path: str, body: dict | None = None) -> dict | None:
        """The answer's JSON; None for 404."""
        headers = {"Authorization": f"Bearer {(ACCOUNT / 'token').read_text().strip()}",
                   "Accept": "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/merge-patch+json"
            data = json.dumps(body).encode()
            path += f"?fieldManager={FIELD_MANAGER}"
        request = urllib.request.Request(f"{self.base}{path}", data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=30) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise SystemExit(f"upgrade gate: {method} {path} answered {error.code}: {error.read()[:500]!r}") from None

    def deployment(self, name: str) -> str:
        return f"/apis/apps/v1/namespaces/{self.namespace}/deployments/{name}"

    def cronjob(self, name: str) -> str:
        return f"/apis/batch/v1/namespaces/{self.namespace}/cronjobs/{name}"

    def pods(self, component: str) -> list[str]:
        """The component's pods that run or may still run (terminating ones included)."""
        selector = urllib.parse.quote(f"app.kubernetes.io/name={component}")
        found = self.request("GET", f"/api/v1/namespaces/{self.namespace}/pods?labelSelector={selector}") or {}
        return [pod["metadata"]["name"] for pod in found.get("items", [])
                if pod.get("status", {}).get("phase") not in ("Succeeded", "Failed")]


def reasons_to_stop(deployment: dict | None, plan: dict) -> list[str]:
    """Why the writers must stop before the migration: a schema line change, a pending restore, or
    a stop an earlier run made that nothing has resumed yet."""
    if deployment is None:
        return ["restore"] if plan["restoreFrom"] else []
    annotations = deployment["metadata"].get("annotations") or {}
    reasons = []
    running = annotations.get(SCHEMA_ANNOTATION)
    # A Deployment of an earlier program version carries no schema annotation: only the same image is the same line.
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    if running != plan["schema"] if running is not None else image != plan["image"]:
        reasons.append(f"schema {running or image} -> {plan['schema']}")
    if plan["restoreFrom"] and annotations.get(RESTORED_ANNOTATION) != plan["restoreFrom"]:
        reasons.append("restore")
    if STOPPED_ANNOTATION in annotations:
        reasons.append("stopped by an earlier run")
    return reasons


def wait_gone(api: Api, components: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while left := [pod for component in components for pod in api.pods(component)]:
        if time.monotonic() > deadline:
            raise SystemExit(f"upgrade gate: pods still running after {timeout:.0f}s: {', '.join(left)}; "
                             "they must be gone before the migration")
        time.sleep(POLL_SECONDS)


def stop_writers(api: Api, plan: dict) -> None:
    deployment = api.request("GET", api.deployment(plan["deployment"]))
    reasons = reasons_to_stop(deployment, plan)
    if not reasons:
        print("upgrade gate: " + (f"schema line {plan['schema']} as running, no restore pending: MLflow rolls as usual"
                                  if deployment else "no MLflow Deployment yet: nothing runs, nothing to stop"))
        return
    for name in plan["cronJobs"]:
        cronjob = api.request("GET", api.cronjob(name))
        if cronjob is not None and not cronjob["spec"].get("suspend"):
            api.request("PATCH", api.cronjob(name), {"metadata": {"annotations": {SUSPENDED_ANNOTATION: "true"}},
                                                     "spec": {"suspend": True}})
    if deployment is not None:
        annotations = deployment["metadata"].get("annotations") or {}
        replicas = annotations.get(STOPPED_ANNOTATION, str(deployment["spec"].get("replicas", 1)))
        api.request("PATCH", api.deployment(plan["deployment"]),
                    {"metadata": {"annotations": {STOPPED_ANNOTATION: replicas}}, "spec": {"replicas": 0}})
    started = time.monotonic()
    wait_gone(api, plan["writerPods"], plan["timeoutSeconds"])
    print(f"upgrade gate: writers stopped ({'; '.join(reasons)}) in {time.monotonic() - started:.1f}s")
    (GATE_DIR / "backup").write_text("before-restore" if "restore" in reasons else "before-upgrade")
    if "restore" in reasons:
        (GATE_DIR / "restore").write_text(plan["restoreFrom"])


def rolled_out(deployment: dict | None) -> bool:
    """The Deployment's current template runs in all its replicas, each available, and no old pod is
    left: what `kubectl rollout status` waits for. The controller's first status after a template
    change can still say Available and NewReplicaSetAvailable from the previous rollout (with
    `Recreate` it writes one before it creates the new ReplicaSet), which pulumi-kubernetes'
    Deployment await takes as done; `updatedReplicas` counts only the new template's pods."""
    if deployment is None:
        return True
    status, wanted = deployment.get("status") or {}, deployment["spec"].get("replicas", 1)
    return (status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 0)
            and status.get("updatedReplicas", 0) == status.get("replicas", 0) == wanted
            and status.get("availableReplicas", 0) >= wanted)


def wait_rolled_out(api: Api, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not rolled_out(api.request("GET", api.deployment(name))):
        if time.monotonic() > deadline:
            raise SystemExit(f"upgrade gate: Deployment {name} did not roll out within {timeout:.0f}s: "
                             f"kubectl describe deployment {name}, and its newest pod's events and log, say why")
        time.sleep(POLL_SECONDS)


def resume_writers(api: Api, plan: dict) -> None:
    """Undo what `stop-writers` did once the new version runs: the replicas an autoscaler owned
    (the Deployment then declares none, so nothing else brings them back) and the CronJobs. Then
    wait until the Deployment has rolled out: what runs after this Job (the collector's roll, the
    post-deploy check) must find the new MLflow serving."""
    deployment = api.request("GET", api.deployment(plan["deployment"]))
    annotations = (deployment or {}).get("metadata", {}).get("annotations") or {}
    if deployment is not None and STOPPED_ANNOTATION in annotations:
        spec: dict = {}
        if not deployment["spec"].get("replicas"):
            spec["replicas"] = int(annotations[STOPPED_ANNOTATION])
        api.request("PATCH", api.deployment(plan["deployment"]),
                    {"metadata": {"annotations": {STOPPED_ANNOTATION: None}}, "spec": spec})
    for name in plan["cronJobs"]:
        cronjob = api.request("GET", api.cronjob(name))
        if cronjob is not None and SUSPENDED_ANNOTATION in (cronjob["metadata"].get("annotations") or {}):
            api.request("PATCH", api.cronjob(name), {"metadata": {"annotations": {SUSPENDED_ANNOTATION: None}},
                                                     "spec": {"suspend": False}})
    print("upgrade gate: writers resumed")
    started = time.monotonic()
    wait_rolled_out(api, plan["deployment"], plan["timeoutSeconds"])
    print(f"upgrade gate: {plan['deployment']} rolled out (waited {time.monotonic() - started:.1f}s)")


def main(argv: list[str]) -> int:
    commands = {"stop-writers": stop_writers, "resume-writers": resume_writers}
    if len(argv) != 2 or argv[1] not in commands:
        print(f"usage: {argv[0]} {'|'.join(commands)}", file=sys.stderr)
        return 2
    commands[argv[1]](Api(), json.loads(os.environ["UPGRADE_PLAN"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
