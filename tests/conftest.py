"""Shared by every suite: each test marked with its suite (`integration`,
`engine`) by directory, so `-m "not engine"` and the like select suites
without per-module markers; and the session's work directory."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

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
