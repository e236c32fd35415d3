"""Runs containers declared by the program on this machine, the way a kubelet and its
container runtime would, reading only the declared pod and container specs:

- **the process** is the image's ENTRYPOINT/CMD unless the container's command/args
  replace them (`tests/support/images.py`), with the image's ENV, the container's env
  (literal values, Secret references, `$(VAR)` expansion), HOME from the image's
  /etc/passwd entry for the user (else `/`), in `/`;
- **the user**: `runAsUser`/`runAsGroup` (container over pod, else the image's USER and the
  primary group its passwd gives, else 0), with `supplementalGroups` and `fsGroup` as
  supplementary groups; `runAsNonRoot` refuses uid 0 (and a named USER it cannot check);
  the capability bounding set is the runtime's default minus `drop` plus `add` (`drop: [ALL]`
  leaves none); `allowPrivilegeEscalation: false` sets no_new_privs; the container sees the
  image's /etc/passwd and /etc/group (none for a `scratch` image), so a user the image lacks
  has no entry, as in a cluster (CRI-O, OpenShift's runtime, adds one for a UID the image
  lacks);
- **volumes** as a kubelet prepares them: an emptyDir is a new 0777 directory; a claim's
  volume starts as a new file system's root (root-owned 0755, with lost+found) and keeps
  its data; ConfigMap files are written with their `defaultMode`; then every volume is
  walked with `fsGroup` at every mount (chgrp, g+rw, g+x and setgid on directories; read-only
  volumes g+r), skipped for a claim whose root already matches under
  `fsGroupChangePolicy: OnRootMismatch` (kubernetes pkg/volume/volume_linux.go), as a CSI
  block driver's volumes are;
- **a read-only root** (`readOnlyRootFilesystem`): nothing writable but the volumes, /proc
  and /dev;
- **OpenShift** (`admission=RestrictedV2(...)`): restricted-v2 assigns a UID from the
  namespace's range, GID 0 and an fsGroup from the range to a pod that sets none, and
  refuses one that sets others.

Cluster addresses in env, args and ConfigMap files become loopback ones, and the
container's ports loopback ports (there is no pod network here); mount paths become the
local directories that hold the volumes. Containers need this process to be root (it
switches to each container's user).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from tests.support.images import Image, Images
from tests.support.k8s import integral

POD_IP = "10.244.1.7"  # what a kubelet's HTTP probe sends as Host: <pod IP>:<port>; never contacted
POD_HOST = f"{POD_IP}:5000"
PROBE_TIMEOUT = 5
INIT_TIMEOUT = 300
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
# Mounts that stay read-write under a read-only root, besides the volumes.
KERNEL_MOUNTS = ("/proc", "/dev")
# The capabilities a runtime grants a container that asks for nothing else.
CONTAINERD_CAPABILITIES = ("CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
                           "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE")
CRIO_CAPABILITIES = ("CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "SETGID", "SETUID", "SETPCAP", "NET_BIND_SERVICE",
                     "KILL")
# kubernetes pkg/volume/volume_linux.go: what an fsGroup walk ORs into each file and directory.
RW_MASK, RO_MASK, EXEC_MASK = 0o660, 0o440, 0o110
EMPTY_DIR_MODE = 0o777
TOOLS = {tool: shutil.which(tool) or f"/usr/bin/{tool}" for tool in ("unshare", "setpriv", "sh")}

# Run inside the container's private mount namespace, as root: the image's /etc/passwd and
# /etc/group over the node's, then (with a read-only root) each writable volume bind-mounted
# onto itself and every other mount remounted read-only except /proc and /dev; then the
# process, through setpriv, as the container's user (the tools from the shell's default PATH).
#   $1 passwd file, $2 group file, $3 number of writable dirs (-1: root stays writable), dirs..., setpriv argv
_CONTAINER_SETUP = r"""
command -p mount --bind "$1" /etc/passwd || exit 125
command -p mount --bind "$2" /etc/group || exit 125
n=$3; shift 3
if [ "$n" -ge 0 ]; then
  writable=""
  while [ "$n" -gt 0 ]; do
    command -p mount --bind "$1" "$1" || exit 125
    writable="$writable
$1"; shift; n=$((n-1))
  done
  for point in $(command -p awk '{print $5}' /proc/self/mountinfo); do
    case "$point" in /proc|/proc/*|/dev|/dev/*) continue ;; esac
    printf '%s\n' "$writable" | command -p grep -qxF "$point" && continue
    command -p mount -o remount,bind,ro "$point" || exit 125
  done
fi
exec "$@"
"""


class ContainerFailed(Exception):
    """A container that ran and exited non-zero where it had to succeed (an init container)."""


class ContainerRefused(Exception):
    """What a kubelet reports as CreateContainerConfigError (or admission as a refusal): the
    container never starts."""


@dataclass(frozen=True)
class RestrictedV2:
    """OpenShift's restricted-v2 SCC for one namespace: the ranges of its
    `openshift.io/sa.scc.uid-range` and `.../supplemental-groups` annotations."""

    uid_start: int = 1000680000
    uid_size: int = 10000
    group_start: int | None = None  # the first supplemental group (the fsGroup); by default uid_start

    @classmethod
    def from_annotations(cls, annotations: dict[str, str]) -> RestrictedV2 | None:
        value = annotations.get("openshift.io/sa.scc.uid-range")
        if not value:
            return None
        start, _, size = value.partition("/")
        groups = annotations.get("openshift.io/sa.scc.supplemental-groups", value)
        return cls(int(start), int(size), int(groups.partition("/")[0].partition(",")[0]))

    @property
    def fs_group(self) -> int:
        return self.uid_start if self.group_start is None else self.group_start

    def admit(self, pod: dict) -> dict:
        """The pod spec as admission stores it: the namespace's UID (the first of its range) on
        each container that sets none, its fsGroup on the pod, every capability dropped;
        anything outside the range, or privilege escalation, refused."""
        pod = json.loads(json.dumps(pod))
        context = pod.setdefault("securityContext", {})
        in_range = range(self.uid_start, self.uid_start + self.uid_size)
        groups = range(self.fs_group, self.fs_group + self.uid_size)
        for key, allowed in (("runAsUser", in_range), ("fsGroup", groups), ("runAsGroup", groups)):
            if key in context and context[key] not in allowed:
                raise ContainerRefused(f"restricted-v2: pod securityContext.{key} {context[key]} is not in "
                                       f"the namespace's range")
        context.setdefault("fsGroup", self.fs_group)
        for container in pod.get("initContainers", []) + pod["containers"]:
            own = container.setdefault("securityContext", {})
            uid = own.get("runAsUser", context.get("runAsUser"))
            if uid is not None and uid not in in_range:
                raise ContainerRefused(f"restricted-v2: container {container['name']} runAsUser {uid} is not in "
                                       f"the namespace's range {self.uid_start}/{self.uid_size}")
            if own.get("allowPrivilegeEscalation") is True:
                raise ContainerRefused(f"restricted-v2: container {container['name']} allows privilege escalation")
            own.setdefault("runAsUser", self.uid_start)
            own.setdefault("allowPrivilegeEscalation", False)
            drops = own.setdefault("capabilities", {}).setdefault("drop", [])
            if "ALL" not in drops:
                drops.append("ALL")
        return pod


def _setting(pod: dict, container: dict, key: str) -> Any:
    """A security setting as the kubelet applies it: the container's, else the pod's."""
    own = container.get("securityContext") or {}
    return own[key] if key in own else (pod.get("securityContext") or {}).get(key)


@dataclass(frozen=True)
class Identity:
    """Who a container's process is."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    capabilities: tuple[str, ...]  # the bounding set
    no_new_privs: bool
    passwd: tuple[str, ...]  # the /etc/passwd and /etc/group the process sees
    group: tuple[str, ...]
    home: str

    def setpriv(self) -> list[str]:
        caps = ",".join(["-all", *(f"+{c.lower()}" for c in self.capabilities)])
        groups = ["--groups", ",".join(map(str, self.groups))] if self.groups else ["--clear-groups"]
        return [TOOLS["setpriv"], f"--reuid={self.uid}", f"--regid={self.gid}", *groups,
                f"--bounding-set={caps}", f"--inh-caps={caps}", *(["--no-new-privs"] if self.no_new_privs else []),
                "--"]


def identity_for(pod: dict, container: dict, image: Image, cri_o: bool) -> Identity:
    """The container's user, groups and capabilities, as the kubelet and runtime (containerd, or
    CRI-O with `cri_o`) resolve them; `ContainerRefused` where the kubelet refuses to start it."""
    image_uid, image_gid = image.user_ids()
    uid = _setting(pod, container, "runAsUser")
    if _setting(pod, container, "runAsNonRoot"):
        if uid is None and image.user and not image.user.partition(":")[0].isdigit():
            raise ContainerRefused(f"container {container['name']}: image has non-numeric user "
                                   f"({image.user}), cannot verify user is non-root")
        if (image_uid if uid is None else uid) == 0:
            raise ContainerRefused(f"container {container['name']} has runAsNonRoot and image will run as root")
    uid = image_uid if uid is None else uid
    entry = image.passwd_entry(uid)
    gid = _setting(pod, container, "runAsGroup")
    if gid is None:
        gid = image_gid if image_gid is not None and _setting(pod, container, "runAsUser") is None \
            else int(entry[3]) if entry else 0
    context = pod.get("securityContext") or {}
    groups = [gid, *context.get("supplementalGroups", []), *([context["fsGroup"]] if "fsGroup" in context else [])]
    passwd = list(image.passwd or ())
    if cri_o and entry is None and image.passwd is not None:
        # CRI-O writes an entry for a UID the image's /etc/passwd lacks (OpenShift's arbitrary UIDs).
        entry = [str(uid), "x", str(uid), str(gid), f"{uid} user", "/", "/sbin/nologin"]
        passwd.append(":".join(entry))
    capabilities = set(CRIO_CAPABILITIES if cri_o else CONTAINERD_CAPABILITIES)
    asked = (container.get("securityContext") or {}).get("capabilities") or {}
    drop = set(asked.get("drop", []))
    capabilities = set() if "ALL" in drop else capabilities - drop
    capabilities |= set(asked.get("add", []))
    return Identity(
        uid=uid, gid=gid, groups=tuple(dict.fromkeys(groups)), capabilities=tuple(sorted(capabilities)),
        no_new_privs=_setting(pod, container, "allowPrivilegeEscalation") is False,
        passwd=tuple(passwd), group=tuple(image.group or ()), home=entry[5] if entry else "/",
    )


def set_volume_ownership(root: Path, fs_group: int | None, policy: str | None, read_only: bool = False) -> None:
    """What the kubelet does to a volume at every mount of a pod with `fsGroup`
    (pkg/volume/volume_linux.go SetVolumeOwnership): each file and directory is chgrp'd to
    fsGroup and gets g+rw (g+r when read-only), directories also g+x and setgid; symlinks
    are chgrp'd only. `OnRootMismatch` skips the walk when the root already has the group,
    at least those permissions and setgid."""
    if fs_group is None:
        return
    mask = RO_MASK if read_only else RW_MASK
    if policy == "OnRootMismatch":
        info = root.stat()
        wanted = mask | EXEC_MASK
        if info.st_gid == fs_group and info.st_mode & wanted == wanted and info.st_mode & stat.S_ISGID:
            return
    for path in [root, *root.rglob("*")]:
        info = path.lstat()
        os.lchown(path, -1, fs_group)
        if stat.S_ISLNK(info.st_mode):
            continue
        extra = mask | (stat.S_ISGID | EXEC_MASK if stat.S_ISDIR(info.st_mode) else 0)
        path.chmod(stat.S_IMODE(info.st_mode) | extra)


def new_filesystem(directory: Path) -> None:
    """A claim's volume on first use: the root of a new file system (mkfs leaves it root-owned
    0755, with a lost+found only root may enter)."""
    directory.mkdir(parents=True)
    directory.chmod(0o755)
    (directory / "lost+found").mkdir(mode=0o700)


def reachable(directory: Path) -> None:
    """Let every user pass through `directory`'s ancestors (search, not read), as a node's pod
    directories are: the containers' users must reach their volumes."""
    for parent in (directory, *directory.parents):
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


def container_argv(argv: list[str], identity: Identity, workdir: Path, writable: list[Path] | None) -> list[str]:
    """`argv` run as the container runs it: in a private mount namespace with the image's users,
    as `identity`; `writable`: the only writable paths of a read-only root (None: a writable root)."""
    digest = hashlib.sha256(json.dumps([identity.passwd, identity.group]).encode()).hexdigest()[:12]
    users = workdir / f"users-{digest}"  # named after its content: written once, never rewritten
    users.mkdir(parents=True, exist_ok=True)
    for name, lines in (("passwd", identity.passwd), ("group", identity.group)):
        # A running container sees this file through a bind mount: rewriting it in place (a probe's exec
        # starting meanwhile) would show it empty for a moment, and initdb then failed "could not look
        # up effective user ID". A new file is put in place whole, and only when missing.
        if not (users / name).exists():
            partial = users / f".{name}.{os.getpid()}.{threading.get_ident()}"
            partial.write_text("".join(f"{line}\n" for line in lines))
            partial.chmod(0o644)
            os.replace(partial, users / name)
    dirs = [] if writable is None else [str(d) for d in writable]
    return [TOOLS["unshare"], "--mount", "--propagation", "private", TOOLS["sh"], "-c", _CONTAINER_SETUP, "sh",
            str(users / "passwd"), str(users / "group"), str(-1 if writable is None else len(dirs)), *dirs,
            *identity.setpriv(), *argv]


def require_root() -> None:
    if os.geteuid() != 0:
        raise RuntimeError("the kubelet emulation runs each container as its declared user: run the suite as root "
                           "(CI does)")


class Kubelet:
    def __init__(self, run: Any, workdir: Path, rewrites: dict[str, str], ports: dict[int, int],
                 user_secrets: dict[str, dict[str, str]] | None = None, images: Images | None = None,
                 admission: RestrictedV2 | None = None):
        """`run`: where Secrets and ConfigMaps are read (a ProgramRun, or the API);
        `rewrites`: cluster addresses (`host:port`, `host`) -> loopback ones; `ports`: Service or
        container port -> loopback port, for values that are a bare port (PGPORT) and for `--port`;
        `user_secrets`: Secrets the operator creates outside the stack (name -> key -> value);
        `admission`: OpenShift's restricted-v2 for the pods' namespace (CRI-O runs them)."""
        require_root()
        self.run = run
        self.workdir = workdir
        self.ports = {str(k): str(v) for k, v in ports.items()}
        self.rewrites = dict(rewrites)
        self.user_secrets = user_secrets or {}
        self.images = images or Images()
        self.admission = admission
        self.pod_ip = POD_IP
        self.cluster_env: dict[str, str] = {}  # what a kubelet gives every container (KUBERNETES_SERVICE_HOST/PORT)
        workdir.mkdir(parents=True, exist_ok=True)
        reachable(workdir)

    # ------------------------------------------------------------------ the pod as admitted

    def pod_spec(self, pod_owner: Any) -> dict:
        """The owner's pod spec as admission leaves it (numbers as the API server holds them, not the
        mocks' floats); claim templates become the claims' volumes."""
        spec = integral(pod_owner.outputs["spec"])
        pod = spec["template"]["spec"]
        templates = [t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])]
        if templates:
            pod = {**pod, "volumes": [*pod.get("volumes", []),
                                      *({"name": n, "persistentVolumeClaim": {"claimName": n}} for n in templates)]}
        return self.admission.admit(pod) if self.admission else pod

    def _container(self, pod: dict, name: str) -> dict:
        return next(c for c in pod.get("initContainers", []) + pod["containers"] if c["name"] == name)

    # ------------------------------------------------------------------ values

    def _secret_value(self, name: str, key: str) -> str:
        if name in self.user_secrets:
            return self.user_secrets[name][key]
        secret = self.run.get("Secret", name).outputs
        return (secret.get("stringData") or {}).get(key) or secret["data"][key]

    def _rewrite(self, text: str, mounts: dict[str, Path]) -> str:
        """One pass over cluster addresses and mount paths, longest first, so a
        replacement is never rewritten again (`/tmp` inside a rewritten path)."""
        table = {**self.rewrites, **{path: str(local) for path, local in mounts.items()}}
        pattern = "|".join(re.escape(key) + ("(?![\\w.-])" if key.startswith("/") else "(?!\\d)" if key[-1].isdigit()
                                                else "") for key in sorted(table, key=len, reverse=True))
        return re.sub(pattern, lambda m: table[m.group(0)], text) if table else text

    def _value(self, value: str, env: dict[str, str], mounts: dict[str, Path]) -> str:
        value = _VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), value)
        return self.ports.get(value) or self._rewrite(value, mounts)

    def env(self, container: dict, mounts: dict[str, Path], image: Image | None = None) -> dict[str, str]:
        """The container's env: the image's ENV, then the container's own (which wins)."""
        env: dict[str, str] = {}
        for name, value in (image.env if image else {}).items():
            env[name] = self._value(value, env, mounts)
        for entry in container.get("env", []):
            if "value" in entry:
                env[entry["name"]] = self._value(entry["value"], env, mounts)
            elif "fieldRef" in entry["valueFrom"]:
                env[entry["name"]] = self._field(entry["valueFrom"]["fieldRef"]["fieldPath"])
            else:
                ref = entry["valueFrom"]["secretKeyRef"]
                env[entry["name"]] = self._secret_value(ref["name"], ref["key"])
        return env

    def _field(self, path: str) -> str:
        """A downward API field, as the kubelet resolves it for this pod."""
        if path == "status.podIP":
            return self.pod_ip
        if path == "metadata.namespace":
            return self.run.namespace
        raise NotImplementedError(f"downward API field {path}")

    def command(self, container: dict, env: dict[str, str], mounts: dict[str, Path],
                image: Image | None = None) -> list[str]:
        """ENTRYPOINT and CMD, each replaced by the container's command and args (CMD also dropped
        when only the command is given), `$(VAR)` expanded."""
        command = container.get("command") or list(image.entrypoint if image else ())
        args = container.get("args") or ([] if container.get("command") else list(image.cmd if image else ()))
        argv = [self._rewrite(_VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), arg), mounts)
                for arg in [*command, *args]]
        if "--port" in argv:
            at = argv.index("--port") + 1
            argv[at] = self.ports.get(argv[at], argv[at])
        return argv

    # ------------------------------------------------------------------ volumes

    def _volume_dir(self, pod_owner: Any, volume: str) -> Path:
        """Where a pod's volume lives on this machine."""
        return self.workdir / f"{pod_owner.name}-{volume}"

    def mounts(self, pod_owner: Any, container: dict) -> dict[str, Path]:
        """mountPath -> the local directory of its volume."""
        return {m["mountPath"]: self._volume_dir(pod_owner, m["name"]) for m in container.get("volumeMounts", [])}

    def setup_volumes(self, pod_owner: Any) -> None:
        """A new pod's volumes, as the kubelet sets them up before its first container."""
        pod = self.pod_spec(pod_owner)
        context = pod.get("securityContext") or {}
        fs_group, policy = context.get("fsGroup"), context.get("fsGroupChangePolicy")
        all_mounts: dict[str, Path] = {}
        for container in pod.get("initContainers", []) + pod["containers"]:
            all_mounts.update(self.mounts(pod_owner, container))
        for volume in pod.get("volumes", []):
            directory = self._volume_dir(pod_owner, volume["name"])
            if "persistentVolumeClaim" in volume:
                if not directory.exists():
                    new_filesystem(directory)
                set_volume_ownership(directory, fs_group, policy)
                continue
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
            directory.chmod(EMPTY_DIR_MODE)
            source = volume.get("configMap") or volume.get("secret") or volume.get("projected")
            if "projected" in volume:
                self._write_projected(volume["projected"], directory, pod)
            elif source is not None:
                self._write_files(volume, source, directory, all_mounts)
            # ConfigMap, Secret and projected volumes are walked without a policy, read-only (volume plugins).
            set_volume_ownership(directory, fs_group, None if source else policy, read_only=source is not None)

    def _write_files(self, volume: dict, source: dict, directory: Path, mounts: dict[str, Path]) -> None:
        """A ConfigMap's (or Secret's) keys as files of `defaultMode` (0644), cluster addresses and
        mount paths mapped like the env (DNS does that in a cluster)."""
        if "items" in source:
            raise NotImplementedError(f"volume {volume['name']}: `items` is not emulated")
        if "configMap" in volume:
            data = self.run.get("ConfigMap", source["name"]).outputs["data"]
        else:
            data = {key: self._secret_value(source["secretName"], key)
                    for key in self.run.get("Secret", source["secretName"]).outputs.get("stringData", {})}
        mode = source.get("defaultMode", 0o644)
        for file_name, content in data.items():
            path = directory / file_name
            path.write_text(self._rewrite(content, mounts))
            path.chmod(mode)

    def _write_projected(self, projected: dict, directory: Path, pod: dict) -> None:
        """The ServiceAccount volume admission adds to every pod (`kube-api-access-*`): a token the API
        issues for the pod's ServiceAccount, the cluster's CA from `kube-root-ca.crt`, the namespace.
        Needs `run` to be the API (`token`, `namespace`): the node agent's."""
        files: dict[str, str] = {}
        for source in projected["sources"]:
            if "serviceAccountToken" in source:
                token = source["serviceAccountToken"]
                files[token["path"]] = self.run.token(pod.get("serviceAccountName", "default"),
                                                      token.get("expirationSeconds", 3607))
            elif "configMap" in source:
                data = self.run.get("ConfigMap", source["configMap"]["name"]).outputs["data"]
                files.update({item["path"]: data[item["key"]] for item in source["configMap"]["items"]})
            elif "downwardAPI" in source:
                for item in source["downwardAPI"]["items"]:
                    if item["fieldRef"]["fieldPath"] != "metadata.namespace":
                        raise NotImplementedError(f"downward API field {item['fieldRef']['fieldPath']}")
                    files[item["path"]] = self.run.namespace
            else:
                raise NotImplementedError(f"projected volume source {sorted(source)}")
        for name, content in files.items():
            (directory / name).write_text(content)
            (directory / name).chmod(projected.get("defaultMode", 0o644))

    # ------------------------------------------------------------------ processes

    def prepare(self, pod_owner: Any, container_name: str,
                command: list[str] | None = None) -> tuple[list[str], dict[str, str]]:
        """The argv and environment of the container's process (its volumes already set up), or of
        `command` run inside it (an exec probe)."""
        pod = self.pod_spec(pod_owner)
        container = self._container(pod, container_name)
        if command is not None:
            container = {**container, "command": command, "args": []}
        image = self.images(container["image"])
        identity = identity_for(pod, container, image, cri_o=self.admission is not None)
        mounts = self.mounts(pod_owner, container)
        env = {"PATH": image.path, "HOSTNAME": pod_owner.name[-63:], "HOME": identity.home, **self.cluster_env,
               **self.env(container, mounts, image)}
        argv = self.command(container, env, mounts, image)
        if not argv:
            raise ContainerRefused(f"container {container_name}: no command and the image has none")
        if "/tmp" in mounts:
            # The pod's /tmp is a volume; here it is reached through TMPDIR, as this
            # machine's /tmp (which holds the workdir) cannot be covered.
            env.setdefault("TMPDIR", str(mounts["/tmp"]))
        writable = None
        if (container.get("securityContext") or {}).get("readOnlyRootFilesystem"):
            writable = [mounts[m["mountPath"]] for m in container.get("volumeMounts", []) if not m.get("readOnly")]
        return container_argv(argv, identity, self.workdir, writable), env

    def stop_signal(self, pod_owner: Any, container_name: str) -> signal.Signals:
        """The image's STOPSIGNAL."""
        image = self.images(self._container(self.pod_spec(pod_owner), container_name)["image"])
        return signal.Signals[image.stop_signal]

    def start(self, pod_owner: Any, log: Path) -> subprocess.Popen:
        """A new pod of `pod_owner`: its volumes set up, its init containers run to success
        (`ContainerFailed` otherwise), then its one container started."""
        self.setup_volumes(pod_owner)
        pod = self.pod_spec(pod_owner)
        for init in pod.get("initContainers", []):
            done = self.run_to_completion(pod_owner, init["name"], INIT_TIMEOUT)
            with log.open("a") as out:
                out.write(done.stdout + done.stderr)
            if done.returncode != 0:
                raise ContainerFailed(f"init container {init['name']} exited with {done.returncode}:\n"
                                      f"{(done.stdout + done.stderr)[-3000:]}")
        (container,) = pod["containers"]
        argv, env = self.prepare(pod_owner, container["name"])
        return subprocess.Popen(argv, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd="/",
                                start_new_session=True)

    def probe(self, pod_owner: Any, container_name: str, kind: str) -> bool:
        """One run of the container's declared probe (a missing one passes, as in a kubelet): HTTP with
        the kubelet's Host and User-Agent, TCP, or exec inside the container, as its user."""
        container = self._container(self.pod_spec(pod_owner), container_name)
        probe = container.get(kind)
        if probe is None:
            return True
        names = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
        timeout = probe.get("timeoutSeconds", PROBE_TIMEOUT)
        try:
            if "httpGet" in probe:
                port = names.get(probe["httpGet"]["port"], probe["httpGet"]["port"])
                response = requests.get(f"http://127.0.0.1:{self.ports[str(port)]}{probe['httpGet'].get('path', '/')}",
                                        headers={"Host": f"{self.pod_ip}:{port}", "User-Agent": "kube-probe/1.32"},
                                        timeout=timeout)
                return 200 <= response.status_code < 400
            if "tcpSocket" in probe:
                port = names.get(probe["tcpSocket"]["port"], probe["tcpSocket"]["port"])
                with socket.create_connection(("127.0.0.1", int(self.ports[str(port)])), timeout=timeout):
                    return True
            if "exec" in probe:
                command = [re.sub(r"\b\d+\b", lambda m: self.ports.get(m.group(0), m.group(0)), arg)
                           for arg in probe["exec"]["command"]]
                argv, env = self.prepare(pod_owner, container_name, command=command)
                return subprocess.run(argv, env=env, capture_output=True, cwd="/", timeout=timeout + 5).returncode == 0
        except (requests.RequestException, OSError, subprocess.TimeoutExpired):
            return False
        raise ValueError(f"unsupported probe {probe}")

    def run_to_completion(self, pod_owner: Any, container_name: str, timeout: float) -> subprocess.CompletedProcess:
        argv, env = self.prepare(pod_owner, container_name)
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, cwd="/")

    def run_pod_to_completion(self, pod_owner: Any, timeout: float) -> subprocess.CompletedProcess:
        """A Job's pod: its init containers in order, then its container; stops at the first failure."""
        self.setup_volumes(pod_owner)
        pod = self.pod_spec(pod_owner)
        for container in pod.get("initContainers", []) + pod["containers"]:
            done = self.run_to_completion(pod_owner, container["name"], timeout)
            if done.returncode != 0:
                break
        return done

