"""Runs containers declared by the program on this machine, the way a kubelet
would: env from literal values and Secret/ConfigMap references, `$(VAR)`
expansion in command and args, ConfigMap volumes written as files, other
volumes as temp dirs, and cluster DNS names mapped to loopback addresses.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.program import ProgramRun, Registered

POD_HOST = "10.244.1.7:5000"  # what a kubelet's HTTP probe sends as Host: <pod IP>:<port>; never contacted
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def postgres_bin_dir() -> Path:
    """Debian's PostgreSQL server binaries (pg_ctl, postgres, initdb)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if not found:
        raise RuntimeError(
            "PostgreSQL server binaries not found under /usr/lib/postgresql; install Debian's "
            "`postgresql` package (.ci/run does this)"
        )
    return found[-1].parent


# In a private mount namespace: each writable directory bind-mounted onto
# itself (so it is a read-write mount of its own), then every other mount
# remounted read-only, except the kernel's /proc and /dev (which a container
# gets writable too).
_READ_ONLY_ROOT = r"""
n=$1; shift; writable=""
while [ "$n" -gt 0 ]; do
  mount --bind "$1" "$1" || exit 125
  writable="$writable
$1"; shift; n=$((n-1))
done
for point in $(awk '{print $5}' /proc/self/mountinfo); do
  case "$point" in /proc|/proc/*|/dev|/dev/*) continue ;; esac
  printf '%s\n' "$writable" | grep -qxF "$point" && continue
  mount -o remount,bind,ro "$point" || exit 125
done
exec "$@"
"""
# Mounts that stay read-write under `read_only_root`, besides the volumes.
KERNEL_MOUNTS = ("/proc", "/dev")


def read_only_root(argv: list[str], writable: list[Path]) -> list[str]:
    """`argv` run the way `readOnlyRootFilesystem: true` runs it: nothing is
    writable but the given directories (the pod's volumes), /proc and /dev."""
    as_root = [] if os.geteuid() == 0 else ["--map-root-user"]
    return ["unshare", "--mount", "--propagation", "private", *as_root,
            "sh", "-c", _READ_ONLY_ROOT, "sh", str(len(writable)), *map(str, writable), *argv]


class Kubelet:
    def __init__(self, run: ProgramRun, workdir: Path, rewrites: dict[str, str], ports: dict[int, int],
                 user_secrets: dict[str, dict[str, str]] | None = None):
        """`rewrites`: cluster addresses (`host:port`, `host`) -> loopback ones;
        `ports`: Service or container port -> loopback port, for values that are
        a bare port (PGPORT) and for `--port`; `user_secrets`: Secrets the
        operator creates outside the stack (name -> key -> value)."""
        self.run = run
        self.workdir = workdir
        self.ports = {str(k): str(v) for k, v in ports.items()}
        self.rewrites = dict(rewrites)
        self.user_secrets = user_secrets or {}
        workdir.mkdir(parents=True, exist_ok=True)

    def _secret_value(self, name: str, key: str) -> str:
        if name in self.user_secrets:
            return self.user_secrets[name][key]
        secret = self.run.get("Secret", name).outputs
        return (secret.get("stringData") or {}).get(key) or secret["data"][key]

    def _rewrite(self, text: str, mounts: dict[str, Path]) -> str:
        """One pass over cluster addresses and mount paths, longest first, so a
        replacement is never rewritten again (`/tmp` inside a rewritten path)."""
        table = {**self.rewrites, **{path: str(local) for path, local in mounts.items()}}
        pattern = "|".join(re.escape(key) + ("(?![\\w.-])" if key.startswith("/") else "")
                           for key in sorted(table, key=len, reverse=True))
        return re.sub(pattern, lambda m: table[m.group(0)], text) if table else text

    def mounts(self, pod_owner: Registered, container: dict) -> dict[str, Path]:
        """mountPath -> local directory. ConfigMap volumes hold their files, with
        cluster addresses and mount paths mapped like the env (DNS does that in a cluster)."""
        volumes = {v["name"]: v for v in pod_owner.outputs["spec"]["template"]["spec"].get("volumes", [])}
        local = {m["mountPath"]: self._volume_dir(pod_owner, m["name"])
                 for m in container.get("volumeMounts", [])}
        for mount in container.get("volumeMounts", []):
            directory = local[mount["mountPath"]]
            directory.mkdir(parents=True, exist_ok=True)
            volume = volumes[mount["name"]]
            if "configMap" in volume:
                data = self.run.get("ConfigMap", volume["configMap"]["name"]).outputs["data"]
                for file_name, content in data.items():
                    (directory / file_name).write_text(self._rewrite(content, local))
        return local

    def env(self, container: dict, mounts: dict[str, Path]) -> dict[str, str]:
        env: dict[str, str] = {}
        for entry in container.get("env", []):
            if "value" in entry:
                value = _VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), entry["value"])
                env[entry["name"]] = self.ports.get(value) or self._rewrite(value, mounts)
            else:
                ref = entry["valueFrom"]["secretKeyRef"]
                env[entry["name"]] = self._secret_value(ref["name"], ref["key"])
        return env

    def command(self, container: dict, env: dict[str, str], mounts: dict[str, Path]) -> list[str]:
        argv = [self._rewrite(_VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), arg), mounts)
                for arg in container.get("command", []) + container.get("args", [])]
        if "--port" in argv:
            at = argv.index("--port") + 1
            argv[at] = self.ports.get(argv[at], argv[at])
        return argv

    def prepare(self, pod_owner: Registered, container_name: str) -> tuple[list[str], dict[str, str]]:
        """The argv and environment the container's process would get."""
        spec = pod_owner.outputs["spec"]["template"]["spec"]
        container = next(c for c in spec.get("initContainers", []) + spec["containers"]
                         if c["name"] == container_name)
        mounts = self.mounts(pod_owner, container)
        env = self.env(container, mounts)
        argv = self.command(container, env, mounts)
        if "/tmp" in mounts:
            # The pod's /tmp is a volume; here it is reached through TMPDIR, as
            # this machine's /tmp (which holds the workdir) cannot be covered.
            env.setdefault("TMPDIR", str(mounts["/tmp"]))
        if container.get("securityContext", {}).get("readOnlyRootFilesystem"):
            writable = [mounts[m["mountPath"]] for m in container.get("volumeMounts", []) if not m.get("readOnly")]
            argv = read_only_root(argv, writable)
        # The image's PATH: this venv's mlflow, then Debian's PostgreSQL client tools.
        path = os.pathsep.join([str(Path(sys.executable).parent), str(postgres_bin_dir()), os.environ["PATH"]])
        return argv, {"PATH": path, "LANG": "C.UTF-8", **env}

    def _volume_dir(self, pod_owner: Registered, volume: str) -> Path:
        """Where a pod's volume lives on this machine."""
        return self.workdir / f"{pod_owner.name}-{volume}"

    def _new_pod(self, pod_owner: Registered) -> None:
        """A new pod starts with empty emptyDirs; PVCs keep their data."""
        for volume in pod_owner.outputs["spec"]["template"]["spec"].get("volumes", []):
            if "emptyDir" in volume:
                shutil.rmtree(self._volume_dir(pod_owner, volume["name"]), ignore_errors=True)

    def start(self, pod_owner: Registered, container_name: str, log: Path) -> subprocess.Popen:
        """A new pod of `pod_owner` running `container_name`."""
        self._new_pod(pod_owner)
        argv, env = self.prepare(pod_owner, container_name)
        return subprocess.Popen(argv, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                                cwd=self.workdir, start_new_session=True)

    def run_to_completion(self, pod_owner: Registered, container_name: str, timeout: float
                          ) -> subprocess.CompletedProcess:
        argv, env = self.prepare(pod_owner, container_name)
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, cwd=self.workdir)

    def run_pod_to_completion(self, pod_owner: Registered, timeout: float) -> subprocess.CompletedProcess:
        """A Job's pod: its init containers in order, then its container; stops at the first failure."""
        self._new_pod(pod_owner)
        spec = pod_owner.outputs["spec"]["template"]["spec"]
        for container in spec.get("initContainers", []) + spec["containers"]:
            done = self.run_to_completion(pod_owner, container["name"], timeout)
            if done.returncode != 0:
                break
        return done
