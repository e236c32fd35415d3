"""Fixtures of the real-engine suite: the engine and the collector built from
this repository, a control plane on loopback, the node agent that runs its
pods as processes, and a copy of the program the CLI deploys. All are shared
by the session and stopped at its end."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from components import collector, mlflow
from tests.support.cluster import ControlPlane
from tests.support.collector import build_collector
from tests.support.engine import PulumiProject, build_engine
from tests.support.nodeagent import NodeAgent


@pytest.fixture(scope="session")
def engine() -> Path:
    """engine/build.sh's output; no Go, module proxy or PyPI fails the suite, never skips it."""
    return build_engine()


@pytest.fixture(scope="session")
def cluster(engine, workdir):
    directory = workdir / "cluster"
    directory.mkdir()
    plane = ControlPlane(engine / "bin", directory).start()
    yield plane
    plane.stop()


@pytest.fixture(scope="session")
def node(cluster, workdir):
    agent = NodeAgent(cluster, workdir / "node", build_collector()).start()
    yield agent
    agent.stop()
    for error in agent.errors:  # what the node could not do: shown in the run's warnings summary
        warnings.warn(f"node agent: {error}", stacklevel=1)


@pytest.fixture(scope="session")
def project(engine, workdir, cluster) -> PulumiProject:
    return PulumiProject(engine, workdir / "pulumi", cluster.kubeconfig)


@pytest.fixture(scope="module")
def mlflow_url(node, request) -> str:
    """MLflow's Service in the test module's NAMESPACE, reached the way `kubectl port-forward` reaches it."""
    return node.service_url(request.module.NAMESPACE, mlflow.SERVICE_NAME, mlflow.PORT)


@pytest.fixture(scope="module")
def otlp_url(node, request) -> str:
    """The collector's OTLP/HTTP Service port in the test module's NAMESPACE."""
    return node.service_url(request.module.NAMESPACE, collector.SERVICE_NAME, collector.HTTP_PORT)
