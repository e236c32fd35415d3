"""A node for a control plane without kubelets: the real-engine suite's kubelet,
kube-proxy, volume provisioner and ingress controller, on loopback.

- **Pods** (no scheduler binds them; kube-controller-manager creates them for
  Deployments, StatefulSets and Jobs): each container runs as a real process
  through the kubelet emulation (`tests/support/kubelet.py`: the declared users,
  groups and capabilities, volumes prepared and walked with fsGroup, env from
  Secrets, ConfigMap files, `$(VAR)` expansion, read-only roots), its init
  containers first. A pod turns Ready only when its declared startup and readiness
  probes pass against the process; a Job's pod Succeeds only when its command exits 0.
  A container that exits is restarted with the kubelet's back-off (Deployments,
  StatefulSets; a failing init container too) or fails the pod (Jobs, whose
  controller then retries). A container the kubelet would refuse (runAsNonRoot and
  uid 0, say) never starts: its pod waits with `CreateContainerConfigError`. A
  deleted pod leaves every Service at once; each container then runs its preStop
  `sleep` (the one hook emulated: any other is reported in the run's warnings), gets the
  image's stop signal, and SIGKILL when the pod's terminationGracePeriodSeconds
  is over. Unlike a kubelet's, a deleted pod is gone from the API at once (no node
  is bound, so no graceful deletion): a successor of the same name (a StatefulSet's)
  is held until it has ended, as graceful deletion would hold it; one of another name
  (a ReplicaSet's) starts at once, as on a real node.
- **OpenShift**: in a namespace with `openshift.io/sa.scc.uid-range` (as OpenShift
  annotates a project), pods are admitted as restricted-v2 admits them (a UID from the
  range, GID 0, the range's fsGroup) and run by CRI-O's rules.
- **Images** are mapped to what this machine has (`tests/support/images.py`):
  MLflow's to a virtualenv with the -full image's install, the collector's to the
  binary `collector/build.sh` built, PostgreSQL's to Debian's server with the
  image's entrypoint (reduced). Any other image fails its pod, saying so.
- **Services**: one loopback TCP proxy per Service port (`tests/support/balancer.py`),
  forwarding each connection round-robin to the Ready pods that the selector
  matches; each pod listens on ports of its own, so rolling updates and
  restarts work as in a cluster. `<svc>.<ns>.svc[.cluster.local]:<port>` in a
  pod's env, args and ConfigMap files becomes that proxy's address.
- **Volumes**: a PersistentVolume for each pending claim (the controller manager
  binds it), a new file system's root the first time; data survives pod restarts
  and replacements, and each new pod walks it with its fsGroup as a CSI block
  driver's volumes are.
- **Ingress**: a load-balancer address in its status, which pulumi-kubernetes
  waits for.

Everything is polled (bounded by the agent's own stop) and listens on 127.0.0.1.
"""

from __future__ import annotations

import base64
import itertools
import json
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import requests

from tests.support.balancer import RoundRobinProxy
from tests.support.cluster import ControlPlane
from tests.support.images import Images
from tests.support.kubelet import ContainerRefused, Kubelet, RestrictedV2, new_filesystem
from tests.support.processes import free_port, stop

POLL_SECONDS = 0.5
DEFAULT_GRACE_SECONDS = 30  # a pod's terminationGracePeriodSeconds when it declares none
# kube-proxy refuses a connection to a Service without a Ready endpoint. A connection here waits at most
# this long for one (endpoint propagation lags in a cluster too), then is reset. Holding it longer is
# kinder than a cluster and worse: a client that timed out and retried would have both requests
# delivered at once when a pod turns Ready.
BACKEND_WAIT_SECONDS = 1
# The kubelet's restart back-off: 10 s, doubling up to 5 min, reset after 10 min of running.
BACKOFF_SECONDS, BACKOFF_CAP_SECONDS, BACKOFF_RESET_SECONDS = 10, 300, 600


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiObjects:
    """The kubelet emulation's view of one namespace: Secrets (decoded) and ConfigMaps, read from the API,
    and tokens of its ServiceAccounts, issued by the API as a kubelet asks for them."""

    def __init__(self, cluster: ControlPlane, namespace: str):
        self.cluster, self.namespace = cluster, namespace

    def token(self, service_account: str, expiration_seconds: int) -> str:
        response = self.cluster.session().post(
            f"{self.cluster.url}/api/v1/namespaces/{self.namespace}/serviceaccounts/{service_account}/token",
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                  "spec": {"expirationSeconds": expiration_seconds}}, timeout=10)
        if response.status_code == 404:
            raise LookupError(f"ServiceAccount {self.namespace}/{service_account} does not exist")
        response.raise_for_status()
        return response.json()["status"]["token"]

    def get(self, kind: str, name: str) -> SimpleNamespace:
        plural = {"Secret": "secrets", "ConfigMap": "configmaps"}[kind]
        found = self.cluster.get(f"/api/v1/namespaces/{self.namespace}/{plural}/{name}")
        if found is None:
            raise LookupError(f"{kind} {self.namespace}/{name} does not exist")
        if kind == "Secret":
            found["stringData"] = {k: base64.b64decode(v).decode() for k, v in (found.get("data") or {}).items()}
        return SimpleNamespace(outputs=found)


class PodKubelet(Kubelet):
    """The kubelet emulation for one pod (`owner`, in the emulation's form of a pod's owner):
    claim volumes live in their PersistentVolume's directory."""

    def __init__(self, *args: Any, owner: SimpleNamespace, claims: dict[str, Path], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.owner, self.claims = owner, claims

    def _volume_dir(self, pod_owner: Any, volume: str) -> Path:
        return self.claims.get(volume) or super()._volume_dir(pod_owner, volume)


@dataclass
class RunningPod:
    namespace: str
    name: str
    uid: str
    labels: dict[str, str]
    ports: dict[int, int]  # containerPort -> loopback port of this pod
    port_names: dict[str, int]  # port name -> containerPort
    ip: str
    ready: bool = False
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    stop_signals: dict[str, signal.Signals] = field(default_factory=dict)  # container -> its image's STOPSIGNAL
    stopped: threading.Event = field(default_factory=threading.Event)
    grace: float = DEFAULT_GRACE_SECONDS  # terminationGracePeriodSeconds
    pre_stop_sleeps: dict[str, float] = field(default_factory=dict)  # container -> its preStop `sleep` seconds


class Backoff:
    """The kubelet's restart delay for one container."""

    def __init__(self) -> None:
        self.delay, self.started = 0.0, time.monotonic()

    def next(self) -> float:
        if time.monotonic() - self.started > BACKOFF_RESET_SECONDS:
            self.delay = 0
        self.delay = min(BACKOFF_CAP_SECONDS, self.delay * 2 or BACKOFF_SECONDS)
        return self.delay

    def restarted(self) -> None:
        self.started = time.monotonic()


class NodeAgent:
    """Runs the cluster's pods as processes until `stop()`. `errors` collects what
    could not be run; `logs` holds each container's output."""

    def __init__(self, cluster: ControlPlane, workdir: Path, collector_binary: Path):
        self.cluster, self.workdir = cluster, workdir
        self.images = Images(collector_binary)
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.pods: dict[str, RunningPod] = {}
        self.proxies: dict[tuple[str, str, int], RoundRobinProxy] = {}
        self.errors: list[str] = []
        self.ips = (f"10.244.0.{n}" for n in itertools.cycle(range(2, 255)))
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    # ------------------------------------------------------------------ public

    def start(self) -> NodeAgent:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(30)
        for pod in list(self.pods.values()):
            self._stop_pod(pod)
        for proxy in self.proxies.values():
            proxy.close()

    def service_url(self, namespace: str, service: str, port: int) -> str:
        """`http://127.0.0.1:<p>`: the Service's port as this machine reaches it (the address exists before the
        Service does; connections are reset while no pod of it is Ready)."""
        return f"http://127.0.0.1:{self._proxy(namespace, service, port).port}"

    # ------------------------------------------------------------------ API helpers

    def _api(self, method: str, path: str, body: Any = None, patch: bool = False) -> requests.Response:
        headers = {"Content-Type": "application/merge-patch+json"} if patch else {}
        return self.cluster.session().request(method, f"{self.cluster.url}{path}", timeout=10, headers=headers,
                                              data=json.dumps(body) if body is not None else None)

    def _list(self, path: str) -> list[dict]:
        found = self.cluster.get(path)
        return found.get("items", []) if found else []

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> None:
        while not self.stopped.is_set():
            for step in (self._provision_volumes, self._publish_ingresses, self._sync_pods):
                try:
                    step()
                except (requests.RequestException, OSError, ValueError, KeyError) as error:
                    self._error(f"{step.__name__}: {type(error).__name__}: {error}")
            self.stopped.wait(POLL_SECONDS)

    def _error(self, message: str) -> None:
        with self.lock:
            if message not in self.errors:
                self.errors.append(message)

    def _provision_volumes(self) -> None:
        for claim in self._list("/api/v1/persistentvolumeclaims"):
            meta, spec = claim["metadata"], claim["spec"]
            if claim.get("status", {}).get("phase") != "Pending" or spec.get("volumeName"):
                continue
            name = f"pv-{meta['namespace']}-{meta['name']}"[:253]
            if self.cluster.get(f"/api/v1/persistentvolumes/{name}") is not None:
                continue
            directory = self._claim_dir(meta["namespace"], meta["name"])
            if not directory.exists():
                new_filesystem(directory)
            volume = {
                "apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": name},
                "spec": {
                    "capacity": {"storage": spec["resources"]["requests"]["storage"]},
                    "accessModes": spec["accessModes"],
                    "storageClassName": spec.get("storageClassName") or "",
                    "persistentVolumeReclaimPolicy": "Retain",
                    "hostPath": {"path": str(directory)},
                    "claimRef": {"namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"]},
                },
            }
            self._api("POST", "/api/v1/persistentvolumes", volume).raise_for_status()

    def _claim_dir(self, namespace: str, claim: str) -> Path:
        return self.workdir / "volumes" / f"{namespace}-{claim}"

    def _publish_ingresses(self) -> None:
        for ingress in self._list("/apis/networking.k8s.io/v1/ingresses"):
            if (ingress.get("status") or {}).get("loadBalancer", {}).get("ingress"):
                continue
            meta = ingress["metadata"]
            self._api("PATCH", f"/apis/networking.k8s.io/v1/namespaces/{meta['namespace']}/ingresses/"
                               f"{meta['name']}/status",
                      {"status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}}}, patch=True)

    def _sync_pods(self) -> None:
        listed = {pod["metadata"]["uid"]: pod for pod in self._list("/api/v1/pods")}
        gone = [uid for uid, pod in list(self.pods.items()) if not pod.stopped.is_set()
                and (uid not in listed or listed[uid]["metadata"].get("deletionTimestamp"))]
        for uid in gone:  # out of every Service at once, as kube-proxy drops a deleted pod's endpoint
            self.pods[uid].ready = False
            self.pods[uid].stopped.set()
        for uid in gone:  # each pod terminates on its own, as a kubelet's pod workers do
            threading.Thread(target=self._terminate, args=(self.pods[uid],), daemon=True).start()
        # A pod whose name a terminating pod still holds (a StatefulSet's successor) waits: on a real node the
        # deleted pod stays in the API until the kubelet has ended it, so its controller creates no successor
        # before; here the deletion is at once (no node bound), and both would run on the same claim.
        terminating = {(p.namespace, p.name) for p in list(self.pods.values()) if p.stopped.is_set()}
        for uid, pod in listed.items():
            meta = pod["metadata"]
            if uid not in self.pods and not meta.get("deletionTimestamp") \
                    and pod.get("status", {}).get("phase", "Pending") == "Pending" \
                    and (meta["namespace"], meta["name"]) not in terminating:
                self.pods[uid] = self._admit(pod)

    # ------------------------------------------------------------------ pods

    def _admit(self, pod: dict) -> RunningPod:
        meta, spec = pod["metadata"], pod["spec"]
        containers = spec.get("initContainers", []) + spec["containers"]
        declared = [p for c in containers for p in c.get("ports", [])]
        running = RunningPod(
            namespace=meta["namespace"], name=meta["name"], uid=meta["uid"], labels=meta.get("labels") or {},
            ports={p["containerPort"]: free_port() for p in declared},
            port_names={p["name"]: p["containerPort"] for p in declared if "name" in p},
            ip=next(self.ips),
            grace=spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS),
            pre_stop_sleeps=self._pre_stop_sleeps(meta, spec["containers"]),
        )
        threading.Thread(target=self._run_pod, args=(running, pod), daemon=True).start()
        return running

    def _path(self, pod: RunningPod) -> str:
        return f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}"

    def _set_status(self, pod: RunningPod, spec: dict, phase: str, ready: bool,
                    states: dict[str, dict], restarts: int = 0) -> None:
        conditions = [{"type": kind, "status": "True" if ok else "False", "lastTransitionTime": now()}
                      for kind, ok in (("PodScheduled", True), ("Initialized", phase != "Pending"),
                                       ("ContainersReady", ready), ("Ready", ready))]
        status = {
            "phase": phase, "hostIP": "127.0.0.1", "podIP": pod.ip, "podIPs": [{"ip": pod.ip}],
            "startTime": now(), "conditions": conditions,
            "initContainerStatuses": [{
                "name": c["name"], "image": c["image"], "imageID": "", "ready": phase != "Pending",
                "restartCount": restarts if c["name"] in states else 0,
                "state": states.get(c["name"], {"terminated": {"exitCode": 0, "reason": "Completed"}}
                                    if phase != "Pending" else {"waiting": {"reason": "PodInitializing"}}),
            } for c in spec.get("initContainers", [])],
            "containerStatuses": [{
                "name": c["name"], "image": c["image"], "imageID": "", "ready": ready and phase == "Running",
                "started": phase == "Running", "restartCount": restarts,
                "state": states.get(c["name"], {"waiting": {"reason": "ContainerCreating"}}),
            } for c in spec["containers"]],
        }
        if not pod.stopped.is_set():
            self._api("PATCH", f"{self._path(pod)}/status", {"status": status}, patch=True)

    def _kubelet(self, pod: RunningPod, spec: dict) -> PodKubelet:
        claims = {v["name"]: self._claim_dir(pod.namespace, v["persistentVolumeClaim"]["claimName"])
                  for v in spec.get("volumes", []) if "persistentVolumeClaim" in v}
        rewrites = {"0.0.0.0": "127.0.0.1"}
        ports: dict[int, int] = {}
        for service in self._list(f"/api/v1/namespaces/{pod.namespace}/services"):
            name = service["metadata"]["name"]
            for port in service["spec"].get("ports", []):
                local = self._proxy(pod.namespace, name, port["port"]).port
                ports[port["port"]] = local
                for host in (f"{name}.{pod.namespace}.svc", f"{name}.{pod.namespace}.svc.cluster.local"):
                    rewrites[f"{host}:{port['port']}"] = f"127.0.0.1:{local}"
                    rewrites[host] = "127.0.0.1"
        for container_port, local in pod.ports.items():  # the pod's own listeners
            ports[container_port] = local
            # a listener's address, and the pod's loopback, on which its containers reach each other
            for host in ("0.0.0.0", "127.0.0.1", "localhost"):
                rewrites[f"{host}:{container_port}"] = f"127.0.0.1:{local}"
            rewrites[f"port: {container_port}\n"] = f"port: {local}\n"  # a YAML `port:` of a listener
        namespace = self.cluster.get(f"/api/v1/namespaces/{pod.namespace}") or {}
        admission = RestrictedV2.from_annotations((namespace.get("metadata") or {}).get("annotations") or {})
        owner = SimpleNamespace(name=f"{pod.namespace}-{pod.name}", outputs={"spec": {"template": {"spec": spec}}})
        kubelet = PodKubelet(ApiObjects(self.cluster, pod.namespace), self.workdir / "pods", rewrites, ports,
                             images=self.images, admission=admission, owner=owner, claims=claims)
        kubelet.pod_ip = pod.ip
        # The API server as a pod reaches it: the `kubernetes` Service, here its loopback address.
        kubelet.cluster_env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1",
                               "KUBERNETES_SERVICE_PORT": str(self.cluster.port)}
        return kubelet

    def _start(self, pod: RunningPod, kubelet: PodKubelet, container: dict) -> subprocess.Popen:
        argv, env = kubelet.prepare(kubelet.owner, container["name"])
        pod.stop_signals[container["name"]] = kubelet.stop_signal(kubelet.owner, container["name"])
        log = self._log_path(pod, container)
        return subprocess.Popen(argv, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd="/",
                                start_new_session=True)

    def _run_pod(self, pod: RunningPod, manifest: dict) -> None:
        spec = manifest["spec"]
        job = spec.get("restartPolicy", "Always") != "Always"
        try:
            self._wait_for_claims(pod, spec)
            kubelet = self._kubelet(pod, spec)
            spec = kubelet.pod_spec(kubelet.owner)  # as admitted (ContainerRefused if it would not be)
            self._setup_volumes(pod, kubelet, spec)
            if not self._run_init_containers(pod, kubelet, spec, job):
                return
            if job:
                self._run_job(pod, kubelet, spec)
            else:
                self._serve(pod, kubelet, spec)
        except (ContainerRefused, LookupError) as refused:  # LookupError: a Secret or ConfigMap it needs is gone
            self._error(f"pod {pod.namespace}/{pod.name}: {refused}")
            waiting = {"waiting": {"reason": "CreateContainerConfigError", "message": str(refused)}}
            self._set_status(pod, spec, "Pending", False, {c["name"]: waiting for c in spec["containers"]})
        except Exception as error:  # noqa: BLE001 - any failure is the pod's, reported and kept
            self._error(f"pod {pod.namespace}/{pod.name}: {type(error).__name__}: {error}")
            if not pod.stopped.is_set():
                self._set_status(pod, spec, "Failed", False, {})

    def _setup_volumes(self, pod: RunningPod, kubelet: PodKubelet, spec: dict) -> None:
        """As a kubelet, retried while what a volume needs is missing (a namespace's `kube-root-ca.crt`
        is published a moment after the namespace); a missing Secret of the env is the pod's failure."""
        while True:
            try:
                kubelet.setup_volumes(kubelet.owner)
                return
            except LookupError as missing:
                waiting = {"waiting": {"reason": "ContainerCreating", "message": f"MountVolume.SetUp: {missing}"}}
                self._set_status(pod, spec, "Pending", False, {c["name"]: waiting for c in spec["containers"]})
                if pod.stopped.wait(2):
                    raise

    def _run_init_containers(self, pod: RunningPod, kubelet: PodKubelet, spec: dict, job: bool) -> bool:
        """Each init container to success, in order. A failure fails a Job's pod; any other pod
        retries the failed one with the kubelet's back-off (Init:CrashLoopBackOff) until deleted."""
        for container in spec.get("initContainers", []):
            backoff, restarts = Backoff(), 0
            while (code := self._run_to_end(pod, kubelet, container)) != 0:
                terminated = {"terminated": {"exitCode": code, "reason": "Error"}}
                if job:
                    self._set_status(pod, spec, "Failed", False, {container["name"]: terminated})
                    return False
                restarts += 1
                self._set_status(pod, spec, "Pending", False, {container["name"]: terminated}, restarts)
                if pod.stopped.wait(backoff.next()):
                    return False
        return not pod.stopped.is_set()

    def _wait_for_claims(self, pod: RunningPod, spec: dict) -> None:
        for volume in spec.get("volumes", []):
            if "persistentVolumeClaim" not in volume:
                continue
            path = f"/api/v1/namespaces/{pod.namespace}/persistentvolumeclaims/" \
                   f"{volume['persistentVolumeClaim']['claimName']}"
            while not pod.stopped.is_set() and ((self.cluster.get(path) or {}).get("status") or {}).get(
                    "phase") != "Bound":
                time.sleep(POLL_SECONDS)

    def _run_to_end(self, pod: RunningPod, kubelet: PodKubelet, container: dict) -> int:
        process = self._start(pod, kubelet, container)
        pod.processes[container["name"]] = process
        while process.poll() is None:
            if pod.stopped.wait(POLL_SECONDS):
                stop(process)
        return process.returncode

    def _run_job(self, pod: RunningPod, kubelet: PodKubelet, spec: dict) -> None:
        states = {}
        for container in spec["containers"]:
            code = self._run_to_end(pod, kubelet, container)
            reason = "Completed" if code == 0 else "Error"
            states[container["name"]] = {"terminated": {"exitCode": code, "reason": reason}}
            if code != 0 and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
                states[container["name"]]["terminated"]["message"] = self._log_tail(pod, container)
            if code != 0:
                self._set_status(pod, spec, "Failed", False, states)
                return
        self._set_status(pod, spec, "Succeeded", False, states)

    def _log_path(self, pod: RunningPod, container: dict) -> Path:
        return self.logs / f"{pod.namespace}-{pod.name}-{container['name']}.log"

    def _log_tail(self, pod: RunningPod, container: dict) -> str:
        """What a kubelet makes the termination message of a failed container under
        FallbackToLogsOnError: the end of its log, at most 80 lines and 2048 bytes."""
        log = self._log_path(pod, container)
        lines = log.read_bytes().splitlines()[-80:] if log.exists() else []
        return b"\n".join(lines)[-2048:].decode(errors="replace")

    def _serve(self, pod: RunningPod, kubelet: PodKubelet, spec: dict) -> None:
        """Keep the containers running (an exited one restarted after the kubelet's back-off); Ready
        once the startup and readiness probes pass, unready again after the readiness probe's
        failureThreshold consecutive failures (as a kubelet)."""
        restarts, failures, started = 0, 0, False
        running = {"running": {"startedAt": now()}}
        readiness = [c["readinessProbe"] for c in spec["containers"] if "readinessProbe" in c]
        threshold = min((probe.get("failureThreshold", 3) for probe in readiness), default=1)
        period = min((probe.get("periodSeconds", 10) for probe in readiness), default=10)
        backoffs = {c["name"]: Backoff() for c in spec["containers"]}
        restart_at: dict[str, float] = {}
        for container in spec["containers"]:
            pod.processes[container["name"]] = self._start(pod, kubelet, container)
        self._set_status(pod, spec, "Running", False, {c["name"]: running for c in spec["containers"]})
        while not pod.stopped.is_set():
            for container in spec["containers"]:
                name = container["name"]
                if pod.processes[name].poll() is None or pod.stopped.is_set():
                    continue
                if name not in restart_at:  # exited: CrashLoopBackOff until its delay has passed
                    restarts += 1
                    started, failures, pod.ready = False, 0, False
                    restart_at[name] = time.monotonic() + backoffs[name].next()
                    waiting = {"waiting": {"reason": "CrashLoopBackOff"}}
                    self._set_status(pod, spec, "Running", False,
                                     {c["name"]: waiting if c["name"] in restart_at else running
                                      for c in spec["containers"]}, restarts)
                elif time.monotonic() >= restart_at[name]:
                    del restart_at[name]
                    backoffs[name].restarted()
                    pod.processes[name] = self._start(pod, kubelet, container)
            if not started and not restart_at:
                started = all(self._probe(pod, kubelet, c, "startupProbe") for c in spec["containers"])
            passed = started and not restart_at and all(self._probe(pod, kubelet, c, "readinessProbe")
                                                        for c in spec["containers"])
            failures = 0 if passed else failures + 1
            ready = passed or (pod.ready and failures < threshold)
            if ready != pod.ready:
                pod.ready = ready
                self._set_status(pod, spec, "Running", ready, {c["name"]: running for c in spec["containers"]},
                                 restarts)
            pod.stopped.wait(period if ready else POLL_SECONDS)

    def _probe(self, pod: RunningPod, kubelet: PodKubelet, container: dict, kind: str) -> bool:
        return kubelet.probe(kubelet.owner, container["name"], kind)

    def _pre_stop_sleeps(self, meta: dict, containers: list[dict]) -> dict[str, float]:
        """container -> the seconds of its preStop `sleep`; a lifecycle hook this emulation does not run
        is reported among the node's errors (the run's warnings), not ignored."""
        sleeps = {}
        for container in containers:
            hooks = container.get("lifecycle") or {}
            for hook, handler in hooks.items():
                if hook == "preStop" and set(handler) == {"sleep"}:
                    sleeps[container["name"]] = float(handler["sleep"]["seconds"])
                else:
                    self._error(f"pod {meta['namespace']}/{meta['name']}: {hook} {sorted(handler)} not emulated")
        return sleeps

    def _terminate(self, pod: RunningPod) -> None:
        """A deleted pod's end, as a kubelet: each container's preStop sleep, then its stop signal, then
        SIGKILL when the grace period (counted from the deletion) is over, with at least 2 s after
        the hook. The pod is forgotten only once its processes have exited (wait_stopped relies on it)."""
        deadline = time.monotonic() + pod.grace

        def end(name: str, process: subprocess.Popen) -> None:
            time.sleep(min(pod.pre_stop_sleeps.get(name, 0), max(deadline - time.monotonic(), 0)))
            stop(process, timeout=max(deadline - time.monotonic(), 2),
                 stop_signal=pod.stop_signals.get(name, signal.SIGTERM))

        ending = [threading.Thread(target=end, args=item, daemon=True) for item in list(pod.processes.items())]
        for thread in ending:
            thread.start()
        for thread in ending:
            thread.join()
        for name, process in list(pod.processes.items()):  # one started while the deletion arrived
            stop(process, timeout=2, stop_signal=pod.stop_signals.get(name, signal.SIGTERM))
        with self.lock:
            self.pods.pop(pod.uid, None)

    def _stop_pod(self, pod: RunningPod) -> None:
        """At once, without hooks: the node agent itself stops (the end of a test session)."""
        pod.ready = False
        pod.stopped.set()
        for name, process in pod.processes.items():
            stop(process, stop_signal=pod.stop_signals.get(name, signal.SIGTERM))

    def wait_stopped(self, namespace: str, timeout: float) -> None:
        """Until every process of the namespace's pods has exited (a kubelet's termination)."""
        deadline = time.monotonic() + timeout
        while any(p.poll() is None for pod in list(self.pods.values()) if pod.namespace == namespace
                  for p in pod.processes.values()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"processes of namespace {namespace} still run after {timeout:.0f}s")
            time.sleep(POLL_SECONDS)

    # ------------------------------------------------------------------ services

    def _proxy(self, namespace: str, service: str, port: int) -> RoundRobinProxy:
        """The Service port's proxy: each connection to the next Ready pod, reset when none is Ready (as
        kube-proxy rejects it) after BACKEND_WAIT_SECONDS."""
        key = (namespace, service, port)
        with self.lock:
            if key not in self.proxies:
                self.proxies[key] = RoundRobinProxy(lambda: self._endpoints(*key), BACKEND_WAIT_SECONDS,
                                                    port=free_port())
            return self.proxies[key]

    def _endpoints(self, namespace: str, service: str, port: int) -> list[int]:
        """The loopback ports of the Ready pods the Service selects, for its `port`."""
        try:
            found = self.cluster.get(f"/api/v1/namespaces/{namespace}/services/{service}")
        except (requests.RequestException, OSError):
            return []
        if not found:
            return []
        selector = found["spec"].get("selector") or {}
        target = next((p.get("targetPort", p["port"]) for p in found["spec"]["ports"] if p["port"] == port), None)
        endpoints = []
        for pod in list(self.pods.values()):
            if pod.namespace == namespace and pod.ready and not pod.stopped.is_set() \
                    and selector.items() <= pod.labels.items():
                container_port = pod.port_names.get(target, target) if isinstance(target, str) else target
                if container_port in pod.ports:
                    endpoints.append(pod.ports[container_port])
        return endpoints
