"""Real processes for the integration suite and the benchmarks: PostgreSQL from
Debian's packages in a temp dir, and MLflow started from the containers the
program declares. Everything binds to loopback and every wait is bounded."""

from __future__ import annotations

import itertools
import os
import pwd
import random
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests

from tests.support.images import postgres_bin_dir
from tests.support.kubelet import Kubelet
from tests.support.program import ProgramRun


def ephemeral_port_range() -> range:
    """The ports the kernel picks for a `bind(0)` and for the local end of every outgoing connection."""
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return range(int(low), int(high) + 1)


# Ports handed out to processes that bind them later (a pod's container may start seconds after its
# ports are chosen). They lie below the kernel's ephemeral range: a port from `bind(0)` could meanwhile
# become the local end of any outgoing connection on this machine and the listener would fail with
# "address already in use", on every restart. Handed out in turn from a random start, never twice
# while the stretch lasts. Suites running side by side walk different stretches, but one may still
# hand out a port another has handed out and not bound yet: unlikely, not excluded.
_HANDED_OUT = range(max(1025, ephemeral_port_range().start - 12000), ephemeral_port_range().start)
if len(_HANDED_OUT) < 1000:
    raise RuntimeError(f"the kernel's ephemeral ports start at {ephemeral_port_range().start}: too few ports "
                       "below them for the tests (raise the start in /proc/sys/net/ipv4/ip_local_port_range)")
_start = random.randrange(len(_HANDED_OUT))
_next_candidate = itertools.cycle([*_HANDED_OUT[_start:], *_HANDED_OUT[:_start]])
_hand_out_lock = threading.Lock()


def free_port() -> int:
    """A loopback port nothing listens on, outside the ephemeral range, not handed out before in this stretch."""
    with _hand_out_lock:
        for _ in range(len(_HANDED_OUT)):
            port = next(_next_candidate)
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue  # taken by another suite or service: the next one
            return port
    raise RuntimeError(f"no free loopback port in {_HANDED_OUT.start}-{_HANDED_OUT.stop - 1}")


def wait_until(check: Callable[[], bool], timeout: float, what: str, process: subprocess.Popen | None = None,
               log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log.read_text()[-3000:] if log else ""
            raise RuntimeError(f"{what}: process exited with {process.returncode}\n{tail}")
        try:
            if check():
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    tail = log.read_text()[-3000:] if log else ""
    raise TimeoutError(f"{what}: not ready within {timeout:.0f}s\n{tail}")


def run_build(script: Path, timeout: float, needs: str) -> str:
    """Run a build script of this repository; its last line of output (a path). A failure or
    a timeout raises with the script's errors and what it `needs`."""
    process = subprocess.Popen(["bash", str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        raise RuntimeError(f"{script} did not finish within {timeout:.0f}s:\n{err[-4000:]}") from None
    if process.returncode != 0:
        raise RuntimeError(f"{script} failed (exit {process.returncode}); it needs {needs}:\n{err[-4000:]}")
    return out.strip().splitlines()[-1]


def forward_bytes(source: socket.socket, target: socket.socket,
                  counted: Callable[[int], None] | None = None) -> None:
    """Copy one direction of a TCP connection until it ends, then close both ways;
    `counted` is told the size of each chunk copied."""
    try:
        while data := source.recv(65536):
            target.sendall(data)
            if counted:
                counted(len(data))
    except OSError:
        pass
    finally:
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def stop(process: subprocess.Popen, timeout: float = 20, stop_signal: int = signal.SIGTERM) -> None:
    """`stop_signal` to the process group (an image's STOPSIGNAL), SIGKILL after `timeout`."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, stop_signal)
            process.wait(timeout)
        except ProcessLookupError:  # its group ended meanwhile (another thread stopped it)
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)


class PostgresCluster:
    """A fresh `initdb` cluster with password (scram) authentication on loopback.

    The superuser is named like the bundled image's POSTGRES_USER, so the
    declared containers connect with the declared Secret's credentials."""

    def __init__(self, directory: Path, superuser: str, password: str):
        self.directory, self.superuser, self.password = directory, superuser, password
        self.port = free_port()
        self.bin = postgres_bin_dir()
        self.process: subprocess.Popen | None = None
        # PostgreSQL refuses to run as root: use the package's postgres user then.
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _own(self, path: Path) -> None:
        if self.as_user:
            entry = pwd.getpwnam("postgres")
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self) -> PostgresCluster:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._own(self.directory)
        data, pwfile = self.directory / "data", self.directory / "pwfile"
        pwfile.write_text(self.password + "\n")
        self._own(pwfile)
        subprocess.run(
            [*self.as_user, str(self.bin / "initdb"), "-D", str(data), "-U", self.superuser,
             "--pwfile", str(pwfile), "--auth=scram-sha-256", "-E", "UTF8", "--locale=C"],
            check=True, capture_output=True, timeout=120,
        )
        log = self.directory / "postgres.log"
        self.process = subprocess.Popen(
            [*self.as_user, str(self.bin / "postgres"), "-D", str(data), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.directory}"],
            stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_until(self.ready, 60, "PostgreSQL", self.process, log)
        return self

    def ready(self) -> bool:
        return subprocess.run([str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                              timeout=10).returncode == 0

    def psql(self, sql: str, database: str = "postgres") -> str:
        done = subprocess.run(
            [str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.superuser, "-d", database,
             "-Atc", sql],
            env={**os.environ, "PGPASSWORD": self.password}, capture_output=True, text=True, timeout=30, check=True,
        )
        return done.stdout.strip()

    def schema(self, database: str) -> str:
        """The database's schema as `pg_dump --schema-only` writes it, without comments and
        the per-run `\\restrict` keys: equal text means equal tables, columns, indexes, constraints."""
        done = subprocess.run(
            [str(self.bin / "pg_dump"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.superuser,
             "--schema-only", "--no-owner", database],
            env={**os.environ, "PGPASSWORD": self.password}, capture_output=True, text=True, timeout=60, check=True,
        )
        return "\n".join(line for line in done.stdout.splitlines()
                         if line.strip() and not line.startswith(("--", "\\restrict", "\\unrestrict")))

    def stop(self) -> None:
        if self.process:
            stop(self.process)


def postgres_for(run: ProgramRun, directory: Path) -> PostgresCluster:
    """PostgreSQL started with the superuser and password of the run's bundled database Secret."""
    (secret,) = run.kinds("Secret")
    credentials = secret.outputs["stringData"]
    return PostgresCluster(directory, credentials["username"], credentials["password"]).start()


def run_job(kubelet: Kubelet, name: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """The pod of the stack's Job `name` (its resource name) run to completion;
    a failure raises with the Job's output."""
    (job,) = [j for j in kubelet.run.kinds("Job") if j.name == name]
    done = kubelet.run_pod_to_completion(job, timeout)
    if done.returncode != 0:
        raise RuntimeError(f"Job {name} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return done


class MlflowProcess:
    """The declared MLflow container, run by the kubelet emulation."""

    def __init__(self, kubelet: Kubelet, run: ProgramRun, port: int, log: Path):
        self.kubelet, self.run, self.port, self.log = kubelet, run, port, log
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None

    def migrate(self) -> subprocess.CompletedProcess:
        return run_job(self.kubelet, "mlflow-migrate")

    def startup_budget(self) -> float:
        """Seconds the declared startup probe allows before the kubelet restarts the pod."""
        container = self.run.get("Deployment", "mlflow").outputs["spec"]["template"]["spec"]["containers"][0]
        probe = container["startupProbe"]
        return probe.get("initialDelaySeconds", 0) + probe["periodSeconds"] * probe["failureThreshold"]

    def start(self) -> MlflowProcess:
        """Start the server and wait for `/health` within the declared startup budget,
        so a start slower than the probe allows fails the test as it would fail the pod."""
        began = time.monotonic()
        self.process = self.kubelet.start(self.run.get("Deployment", "mlflow"), self.log)
        wait_until(lambda: requests.get(f"{self.url}/health", timeout=5).status_code == 200,
                   self.startup_budget(), "MLflow", self.process, self.log)
        self.started_in = time.monotonic() - began
        return self

    def stop(self) -> None:
        if self.process:
            stop(self.process)


def kubelet_for(run: ProgramRun, workdir: Path, postgres: PostgresCluster, mlflow_port: int,
                rewrites: dict[str, str] | None = None, **options) -> Kubelet:
    """A kubelet for `run` whose cluster addresses are this machine's PostgreSQL and MLflow port."""
    return Kubelet(
        run, workdir,
        rewrites={"postgres.mlflow.svc:5432": f"127.0.0.1:{postgres.port}",
                  "postgres.mlflow.svc": "127.0.0.1",
                  "0.0.0.0": "127.0.0.1", **(rewrites or {})},
        ports={5432: postgres.port, 5000: mlflow_port},
        **options,
    )
