"""The GitHub Actions recipe (examples/github-actions, docs/operations.md "Deploy from CI") checked by
actionlint, built from its Go module at a pinned version (cached in .cache/actionlint): workflow
syntax, expressions, the contexts they read, the runner labels. A broken copy must fail it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "examples" / "github-actions"
ACTIONLINT_VERSION = "v1.7.12"
ACTIONLINT_MODULE = "github.com/rhysd/actionlint/cmd/actionlint"
BUILD_TIMEOUT = 900


@pytest.fixture(scope="module")
def actionlint() -> Path:
    target = ROOT / ".cache" / "actionlint" / ACTIONLINT_VERSION
    binary = target / "actionlint"
    if not binary.exists():
        go = shutil.which("go")
        if go is None:
            raise RuntimeError("go is not on PATH: actionlint is built from its Go module (as the collector is)")
        built = subprocess.run([go, "install", f"{ACTIONLINT_MODULE}@{ACTIONLINT_VERSION}"], capture_output=True,
                               text=True, timeout=BUILD_TIMEOUT,
                               env={**os.environ, "GOBIN": str(target), "CGO_ENABLED": "0"})
        if built.returncode != 0:
            raise RuntimeError(f"go install {ACTIONLINT_MODULE}@{ACTIONLINT_VERSION}: {built.stderr[-3000:]}")
    return binary


def lint(actionlint: Path, *workflows: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(actionlint), "-no-color", *map(str, workflows)], capture_output=True, text=True,
                          timeout=120)


def test_the_recipes_workflows_pass_actionlint(actionlint):
    workflows = sorted(RECIPE.glob("*.yml"))
    assert [w.name for w in workflows] == ["pulumi-preview.yml", "pulumi-up.yml"]
    done = lint(actionlint, *workflows)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_broken_workflow_fails_actionlint(actionlint, tmp_path):
    broken = tmp_path / "pulumi-up.yml"
    broken.write_text((RECIPE / "pulumi-up.yml").read_text().replace("${{ vars.PULUMI_STACK }}",
                                                                       "${{ var.PULUMI_STACK }}"))
    done = lint(actionlint, broken)
    assert done.returncode != 0 and 'undefined variable "var"' in done.stdout, done.stdout + done.stderr
