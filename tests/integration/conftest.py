"""Fixtures of the integration suite: one PostgreSQL cluster, the declared
database init and migration, one MLflow server and the built collector, shared by
the session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.collector import build_collector
from tests.support.images import postgres_bin_dir
from tests.support.kubelet import Kubelet
from tests.support.processes import MlflowProcess, free_port, kubelet_for, postgres_for, run_job
from tests.support.program import BASIC_AUTH_MLFLOW, ProgramRun, run_program


@pytest.fixture(scope="session")
def declared() -> ProgramRun:
    """The dev stack as the program declares it."""
    return run_program("dev")


@pytest.fixture(scope="session")
def postgres(declared, workdir):
    cluster = postgres_for(declared, workdir / "pg")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def mlflow_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def kubelet(declared, workdir, postgres, mlflow_port) -> Kubelet:
    return kubelet_for(declared, workdir, postgres, mlflow_port)


@pytest.fixture(scope="session")
def databases_created(declared, kubelet):
    return run_job(kubelet, "postgres-init")


@pytest.fixture(scope="session")
def mlflow_server(declared, kubelet, databases_created, mlflow_port, workdir):
    server = MlflowProcess(kubelet, declared, mlflow_port, workdir / "mlflow.log")
    server.migrate()
    yield server.start()
    server.stop()


@pytest.fixture(scope="module")
def own_mlflow(declared, workdir, postgres, mlflow_server, request):
    """A second MLflow from the declared spec, for a module that stops it: on its own port and
    kubelet directory (the shared server's /tmp volume must not be emptied under it), against the
    session's (already migrated) PostgreSQL."""
    name = request.module.__name__.rsplit(".", 1)[-1]
    port = free_port()
    server = MlflowProcess(kubelet_for(declared, workdir / name, postgres, port), declared, port,
                           workdir / f"mlflow-{name}.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def auth_run() -> ProgramRun:
    """The dev stack with basic auth, as every other stack runs."""
    return run_program("dev", mlflow=BASIC_AUTH_MLFLOW)


@pytest.fixture(scope="session")
def admin(auth_run) -> tuple[str, str]:
    """The generated admin's (username, password), as `pulumi up` holds them (no Secret does)."""
    credentials = auth_run.outputs["mlflowCredentials"]
    return credentials["username"], credentials["password"]


@pytest.fixture(scope="session")
def auth_server(auth_run, postgres, workdir):
    """The basic-auth stack's MLflow, its auth database created and both migrated by the declared steps."""
    port = free_port()
    kubelet = kubelet_for(auth_run, workdir / "auth", postgres, port)
    run_job(kubelet, "postgres-init")  # creates the auth database beside mlflow
    server = MlflowProcess(kubelet, auth_run, port, workdir / "mlflow-auth.log")
    server.migrate()
    yield server.start()
    server.stop()


@pytest.fixture(autouse=True, scope="session")
def _tools_present():
    """A missing prerequisite fails the suite loudly; it never skips."""
    missing = [tool for tool in ("runuser", "sh", "unshare", "mount") if shutil.which(tool) is None]
    postgres_bin_dir()
    if missing:
        raise RuntimeError(f"missing tools for the integration suite: {missing}")


@pytest.fixture(scope="session")
def collector_binary() -> Path:
    """The real collector at the deployed version, built by collector/build.sh (cached under
    .cache/otelcol). No Go or no module proxy fails every test that needs it, never skips."""
    return build_collector()
