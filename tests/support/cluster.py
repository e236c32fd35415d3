"""A real Kubernetes control plane on loopback for the real-engine suite: etcd
(Debian's), kube-apiserver and kube-controller-manager (built by
engine/build.sh), a throwaway CA and an admin token. No kubelet and no
scheduler: `tests/support/nodeagent.py` plays the node.
"""

from __future__ import annotations

import socket
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import requests

from tests.support.processes import free_port, stop, wait_until

START_TIMEOUT = 90


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(directory: Path) -> str:
    """A CA (with keyUsage, so strict TLS clients accept it), an apiserver certificate
    for 127.0.0.1, a service-account key pair and an admin token; returns the token."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.cnf").write_text(textwrap.dedent("""\
        [req]
        distinguished_name = dn
        [dn]
        [ca]
        basicConstraints = critical,CA:TRUE
        keyUsage = critical,keyCertSign,cRLSign,digitalSignature
        subjectKeyIdentifier = hash
        [server]
        basicConstraints = critical,CA:FALSE
        keyUsage = critical,digitalSignature,keyEncipherment
        extendedKeyUsage = serverAuth
        subjectAltName = IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc
        authorityKeyIdentifier = keyid,issuer
        """))
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "30",
             "-subj", "/CN=engine-test-ca", "-config", "ca.cnf", "-extensions", "ca", cwd=directory)
    server_certificate(directory, "apiserver")
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=directory)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=directory)
    token = subprocess.run(["openssl", "rand", "-hex", "24"], check=True, capture_output=True, text=True).stdout.strip()
    (directory / "tokens.csv").write_text(f"{token},admin,admin-uid,system:masters\n")
    return token


def server_certificate(pki: Path, name: str) -> tuple[Path, Path]:
    """(certificate, key) `<name>.crt/.key` for 127.0.0.1 and localhost, signed by make_pki's CA in `pki`."""
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", f"/CN={name}", "-config", "ca.cnf", cwd=pki)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", f"{name}.crt", "-days", "30", "-extfile", "ca.cnf", "-extensions", "server", cwd=pki)
    return pki / f"{name}.crt", pki / f"{name}.key"


def _listening(port: int) -> bool:
    """kube-controller-manager serves its health on a certificate of its own; an open port is enough."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager, started and stopped by the tests."""

    def __init__(self, engine_bin: Path, directory: Path):
        self.bin, self.directory = engine_bin, directory
        self.processes: list[subprocess.Popen] = []
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.kubeconfig = directory / "kubeconfig"
        self.ca = directory / "pki" / "ca.crt"
        self.token = ""

    def _start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = self.directory / f"{name}.log"
        process = subprocess.Popen(argv, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        return process

    def start(self) -> ControlPlane:
        pki = self.directory / "pki"
        self.token = make_pki(pki)
        etcd_port, peer_port, kcm_port = free_port(), free_port(), free_port()
        etcd = self._start("etcd", [
            "etcd", "--name", "engine-test", "--data-dir", str(self.directory / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"engine-test=http://127.0.0.1:{peer_port}",
        ])
        wait_until(lambda: requests.get(f"http://127.0.0.1:{etcd_port}/health", timeout=2).ok, START_TIMEOUT,
                   "etcd", etcd, self.directory / "etcd.log")
        # No kubelet can be the `kubernetes` Service's endpoint on loopback; the service range is configuration only.
        apiserver = self._start("kube-apiserver", [
            str(self.bin / "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.port}",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}", f"--token-auth-file={pki / 'tokens.csv'}",
            "--authorization-mode=RBAC", "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki / 'sa.pub'}", f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-cluster-ip-range=10.96.0.0/24", "--endpoint-reconciler-type=none",
        ])
        self.kubeconfig.write_text(textwrap.dedent(f"""\
            apiVersion: v1
            kind: Config
            clusters:
            - name: engine-test
              cluster: {{server: "{self.url}", certificate-authority: "{self.ca}"}}
            users:
            - name: admin
              user: {{token: "{self.token}"}}
            contexts:
            - name: engine-test
              context: {{cluster: engine-test, user: admin}}
            current-context: engine-test
            """))
        self.kubeconfig.chmod(0o600)
        wait_until(lambda: self.session().get(f"{self.url}/readyz", timeout=5).ok, START_TIMEOUT,
                   "kube-apiserver", apiserver, self.directory / "kube-apiserver.log")
        # Namespaces finalise and Jobs, ReplicaSets and endpoints work through these controllers;
        # there are no nodes and no cloud, so those controllers stay off.
        controllers = self._start("kube-controller-manager", [
            str(self.bin / "kube-controller-manager"), f"--kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={kcm_port}",
            f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={pki / 'ca.crt'}",
            "--use-service-account-credentials=false", "--leader-elect=false",
            "--controllers=*,-nodeipam,-service-lb-controller,-cloud-node-lifecycle",
        ])
        wait_until(lambda: _listening(kcm_port), START_TIMEOUT, "kube-controller-manager", controllers,
                   self.directory / "kube-controller-manager.log")
        return self

    def session(self) -> requests.Session:
        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE would override `verify`
        session.verify = str(self.ca)
        session.headers["Authorization"] = f"Bearer {self.token}"
        return session

    def get(self, path: str) -> dict[str, Any] | None:
        """An API object or list, or None when absent."""
        response = self.session().get(f"{self.url}{path}", timeout=10)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()

    def stop(self) -> None:
        for process in reversed(self.processes):
            stop(process)
