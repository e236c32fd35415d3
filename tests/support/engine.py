"""The real Pulumi engine for tests/engine: `engine/build.sh` builds it (cached
under the git-ignored .cache/engine), `PulumiProject` runs the CLI on a copy of
this program with a local file backend, providers installed from the built
files and every download refused.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from components.config import PROJECT
from tests.support.pins import engine_versions
from tests.support.processes import run_build
from tests.support.program import PROJECT_DIR

BUILD_SCRIPT = PROJECT_DIR / "engine" / "build.sh"
BUILD_TIMEOUT = 3600  # cold ~21 min on 2 cores, warm ~1-2 min
COMMAND_TIMEOUT = 900
PROGRAM_FILES = ("Pulumi.yaml", "__main__.py", "requirements.txt", "components")
# The provider plugins build.sh builds: the versions requirements.txt pins their SDKs to.
PROVIDERS = {package.removeprefix("pulumi-"): version
             for package, version in engine_versions().items() if package != "pulumi"}
PASSPHRASE = "engine-tests-only"


def build_engine() -> Path:
    """The engine directory (bin/, venv/); raises with the build's output on failure."""
    return Path(run_build(BUILD_SCRIPT, BUILD_TIMEOUT, "Go, the Go module proxy and PyPI"))


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def check(self, what: str) -> Result:
        if self.returncode != 0:
            raise AssertionError(f"{what} failed (exit {self.returncode}):\n{self.output[-6000:]}")
        return self


def program_at(commit: str, directory: Path) -> Path:
    """The program's files as `commit` of this repository has them (`git archive`), in `directory`."""
    directory.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(PROJECT_DIR), "archive", commit, *PROGRAM_FILES],
                             capture_output=True, check=True, timeout=60).stdout
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True, timeout=60)
    return directory


class PulumiProject:
    """A copy of the program (this checkout's, or another version's files in `program`) in `directory`,
    run by the built CLI against `kubeconfig`."""

    def __init__(self, engine: Path, directory: Path, kubeconfig: Path, program: Path = PROJECT_DIR):
        self.engine, self.directory = engine, directory
        self.project = directory / "project"
        self.install_program(program)
        state = directory / "state"
        state.mkdir(exist_ok=True)
        closed = "http://127.0.0.1:9"  # any download attempt fails at once
        self.env = {
            "PATH": f"{engine / 'bin'}{os.pathsep}{os.environ['PATH']}",
            "HOME": os.environ.get("HOME", str(directory)),
            "PULUMI_HOME": str(directory / "pulumi-home"),
            "PULUMI_BACKEND_URL": f"file://{state}",
            "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DIY_BACKEND_NO_LEGACY_WARNING": "true",
            "PULUMI_IGNORE_AMBIENT_PLUGINS": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "KUBECONFIG": str(kubeconfig),
            "HTTP_PROXY": closed, "HTTPS_PROXY": closed, "http_proxy": closed, "https_proxy": closed,
            "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
            "LANG": "C.UTF-8",
        }
        for provider, version in PROVIDERS.items():
            self.run("plugin", "install", "resource", provider, f"v{version}", "--file",
                     str(engine / "bin" / f"pulumi-resource-{provider}")).check(f"plugin install {provider}")

    def install_program(self, program: Path) -> None:
        """The program files of `program` in place of the project's (a user checking out another
        version); the stacks, their files and the state stay."""
        self.project.mkdir(parents=True, exist_ok=True)
        for name in PROGRAM_FILES:
            source, target = program / name, self.project / name
            if source.is_dir():
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(source, target)
        # The engine's venv holds requirements.txt, so the SDKs of the providers installed in __init__.
        document = yaml.safe_load((self.project / "Pulumi.yaml").read_text())
        document["runtime"]["options"]["virtualenv"] = str(self.engine / "venv")
        (self.project / "Pulumi.yaml").write_text(yaml.safe_dump(document, sort_keys=False))

    def run(self, *args: str, timeout: float = COMMAND_TIMEOUT) -> Result:
        done = subprocess.run(["pulumi", *args, "--non-interactive"], cwd=self.project, env=self.env,
                              capture_output=True, text=True, timeout=timeout)
        return Result(done.returncode, done.stdout, done.stderr)

    def stack(self, name: str, config: dict[str, Any]) -> Stack:
        """A new stack whose Pulumi.<name>.yaml holds `config` (keys without the project prefix)."""
        self.run("stack", "init", name).check(f"stack init {name}")
        stack = Stack(self, name)
        stack.configure(config)
        return stack


class Stack:
    def __init__(self, project: PulumiProject, name: str):
        self.project, self.name = project, name

    @property
    def file(self) -> Path:
        return self.project.project / f"Pulumi.{self.name}.yaml"

    def configure(self, config: dict[str, Any]) -> None:
        """Replace the stack file's config, as a user editing Pulumi.<stack>.yaml would."""
        text = yaml.safe_dump({"config": {f"{PROJECT}:{key}": value for key, value in config.items()}},
                              sort_keys=False)
        self.file.write_text(text)

    def config(self) -> dict[str, Any]:
        document = yaml.safe_load(self.file.read_text()) or {}
        prefix = f"{PROJECT}:"
        return {key[len(prefix):]: value for key, value in (document.get("config") or {}).items()}

    def cli(self, *args: str) -> Result:
        return self.project.run(*args, "--stack", self.name)

    def preview(self) -> Result:
        return self.cli("preview", "--json")

    def up(self, *flags: str) -> Result:
        return self.cli("up", "--yes", "--skip-preview", *flags)

    def destroy(self) -> Result:
        return self.cli("destroy", "--yes", "--skip-preview")

    def outputs(self) -> dict[str, Any]:
        return json.loads(self.cli("stack", "output", "--json", "--show-secrets").check("stack output").stdout)

    def plain_outputs(self) -> dict[str, Any]:
        """Outputs as `pulumi stack output` shows them without --show-secrets."""
        return json.loads(self.cli("stack", "output", "--json").check("stack output").stdout)

    def resources(self) -> list[dict]:
        """The stack's resources as the state holds them."""
        state = json.loads(self.cli("stack", "export").check("stack export").stdout)
        return state["deployment"].get("resources") or []
