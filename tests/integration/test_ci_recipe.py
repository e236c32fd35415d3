"""The GitHub Actions recipe (examples/github-actions, docs/operations.md "Deploy from CI") checked by
actionlint, built from its Go module at a pinned version (cached in .cache/actionlint): workflow
keys, expressions, the contexts they read, the runner labels. Broken copies must fail it. (Its data
on pulumi/actions stops at v6, so v7's inputs are not checked; `run:` scripts need shellcheck.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.gobuild import go_binary

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "examples" / "github-actions"
ACTIONLINT_VERSION = "v1.7.12"
ACTIONLINT_MODULE = "github.com/rhysd/actionlint/cmd/actionlint"


@pytest.fixture(scope="module")
def actionlint() -> Path:
    return go_binary(ACTIONLINT_MODULE, ACTIONLINT_VERSION, "actionlint")


def lint(actionlint: Path, *workflows: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(actionlint), "-no-color", *map(str, workflows)], capture_output=True, text=True,
                          timeout=120)


def test_the_recipes_workflows_pass_actionlint(actionlint):
    workflows = sorted(RECIPE.glob("*.yml"))
    assert [w.name for w in workflows] == ["pulumi-preview.yml", "pulumi-up.yml"]
    done = lint(actionlint, *workflows)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(("good", "bad", "reported"), [
    ("${{ vars.PULUMI_STACK }}", "${{ var.PULUMI_STACK }}", 'undefined variable "var"'),
    ("runs-on: ubuntu-latest", "run-on: ubuntu-latest", 'unexpected key "run-on"'),
])
def test_a_broken_workflow_fails_actionlint(actionlint, tmp_path, good, bad, reported):
    broken = tmp_path / "pulumi-up.yml"
    original = (RECIPE / "pulumi-up.yml").read_text()
    assert good in original
    broken.write_text(original.replace(good, bad))
    done = lint(actionlint, broken)
    assert done.returncode != 0 and reported in done.stdout, done.stdout + done.stderr
