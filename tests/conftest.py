"""Marks each test with its suite (`integration`, `engine`) by directory, so
`-m "not engine"` and the like select suites without per-module markers."""

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
MARKED_SUITES = ("integration", "engine")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        suite = item.path.relative_to(TESTS).parts[0]
        if suite in MARKED_SUITES:
            item.add_marker(suite)
