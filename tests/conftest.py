"""Shared by every suite: each test marked with its suite (`integration`,
`engine`) by directory, so `-m "not engine"` and the like select suites
without per-module markers; the session's work directory; and a real Phoenix
for the modules that use a second trace backend."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.support.phoenix import PhoenixProcess

TESTS = Path(__file__).resolve().parent
MARKED_SUITES = ("integration", "engine")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        suite = item.path.relative_to(TESTS).parts[0]
        if suite in MARKED_SUITES:
            item.add_marker(suite)


@pytest.fixture(scope="session")
def workdir():
    """A temp dir every container user can enter (pytest's own are root-only): containers run as their
    declared users. Kept for inspection (logs, volumes) with MLFLOW_TRACING_KEEP_WORKDIR=1."""
    path = Path(tempfile.mkdtemp(prefix="mlflow-tracing-"))
    path.chmod(0o755)
    yield path
    if os.environ.get("MLFLOW_TRACING_KEEP_WORKDIR") == "1":
        print(f"\nwork directory kept: {path}")
    else:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def phoenix(workdir, request):
    """A real Arize Phoenix on loopback for the module, with a database of its own."""
    phoenix = PhoenixProcess(workdir / f"phoenix-{request.module.__name__.rsplit('.', 1)[-1]}").start()
    yield phoenix
    phoenix.stop()
