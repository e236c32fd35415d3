"""What users install is what tests/engine deploys with: requirements.txt pins
the Pulumi SDKs exactly, engine/build.sh builds the CLI and providers of those
pins (and stops, naming both files, when its sources are of other releases),
and Pulumi.yaml admits no CLI older than the one tested."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.pins import ENGINE_PACKAGES, REQUIREMENTS, engine_versions, exact_pins

PROJECT_DIR = REQUIREMENTS.parent
ENGINE = PROJECT_DIR / "engine"
TARBALL = "engine/pulumi-sources.tar.gz"


def build_sh_versions(project: Path = PROJECT_DIR) -> subprocess.CompletedProcess:
    """`engine/build.sh versions` of `project`: what the script builds, or why it refuses."""
    return subprocess.run(["bash", str(project / "engine" / "build.sh"), "versions"], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "ENGINE_DIR": str(project / "no-build")})


@pytest.fixture
def project_copy(tmp_path) -> Path:
    """build.sh and its tarball in a project of their own, whose requirements.txt a test edits."""
    (tmp_path / "engine").mkdir()
    shutil.copy(ENGINE / "build.sh", tmp_path / "engine" / "build.sh")
    (tmp_path / "engine" / "pulumi-sources.tar.gz").symlink_to(ENGINE / "pulumi-sources.tar.gz")
    shutil.copy(REQUIREMENTS, tmp_path / "requirements.txt")
    return tmp_path


def test_requirements_pin_each_pulumi_sdk_exactly():
    pins = exact_pins()
    assert set(ENGINE_PACKAGES) <= set(pins)
    for package in ENGINE_PACKAGES:  # no second, looser line for the same package
        lines = [line for line in REQUIREMENTS.read_text().splitlines()
                 if re.match(rf"^\s*{re.escape(package)}\s*([<>=!~;\[]|$)", line)]
        assert lines == [f"{package}=={pins[package]}"], lines


def test_build_sh_builds_exactly_what_requirements_pin():
    done = build_sh_versions()
    assert done.returncode == 0, done.stderr
    built = dict(line.split("==") for line in done.stdout.split())
    assert built == engine_versions(), (
        f"engine/build.sh builds {built} but requirements.txt pins {engine_versions()}")
    assert not (PROJECT_DIR / "no-build").exists()  # `versions` builds nothing


def test_a_pin_the_tarball_has_no_source_for_stops_the_build_naming_both_files(project_copy):
    requirements = project_copy / "requirements.txt"
    tested = engine_versions()["pulumi-random"]
    requirements.write_text(requirements.read_text().replace(f"pulumi-random=={tested}", "pulumi-random==4.21.4"))
    done = build_sh_versions(project_copy)
    assert done.returncode != 0
    assert "requirements.txt pins pulumi-random==4.21.4" in done.stderr
    assert f"{TARBALL} holds the source of pulumi-random=={tested}" in done.stderr
    assert done.stdout == ""


def test_a_range_instead_of_a_pin_stops_the_build(project_copy):
    requirements = project_copy / "requirements.txt"
    tested = engine_versions()["pulumi-kubernetes"]
    requirements.write_text(requirements.read_text().replace(f"pulumi-kubernetes=={tested}",
                                                              f"pulumi-kubernetes>={tested},<5"))
    done = build_sh_versions(project_copy)
    assert done.returncode != 0
    assert "requirements.txt must pin pulumi-kubernetes exactly" in done.stderr
    with pytest.raises(ValueError, match="must pin pulumi-kubernetes exactly"):
        engine_versions(requirements)


def test_pulumi_yaml_admits_no_cli_older_than_the_tested_one():
    required = yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text())["requiredPulumiVersion"]
    assert required == f">={engine_versions()['pulumi']}", (
        f"Pulumi.yaml's requiredPulumiVersion {required!r} does not start at requirements.txt's "
        f"pulumi=={engine_versions()['pulumi']}, the CLI tests/engine runs")


def test_the_ci_recipe_installs_the_cli_the_engine_suite_runs():
    """examples/github-actions deploys with the tested CLI, not whatever `^3` resolves to."""
    tested = engine_versions()["pulumi"]
    for workflow in sorted((PROJECT_DIR / "examples" / "github-actions").glob("*.yml")):
        steps = [step for job in yaml.safe_load(workflow.read_text())["jobs"].values() for step in job["steps"]]
        pulumi_steps = [step for step in steps if step.get("uses", "").startswith("pulumi/actions@")]
        assert pulumi_steps, workflow.name
        assert {step["with"]["pulumi-version"] for step in pulumi_steps} == {tested}, workflow.name
