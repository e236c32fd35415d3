"""The Pulumi versions, from their one source: requirements.txt's exact pins.

Users install them (`pulumi install`), `engine/build.sh` builds the CLI and
the providers of these versions (and refuses a tarball of other releases),
and `tests/engine` deploys with them.
"""

from __future__ import annotations

import re
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parents[2] / "requirements.txt"
# The SDKs whose engine pieces engine/build.sh builds: the CLI (= the SDK's release) and two providers.
ENGINE_PACKAGES = ("pulumi", "pulumi-kubernetes", "pulumi-random")
_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([0-9][0-9A-Za-z.+!-]*)\s*(?:#.*)?$")


def exact_pins(requirements: Path = REQUIREMENTS) -> dict[str, str]:
    """`package -> version` of each `package==version` line."""
    pins = {}
    for line in requirements.read_text().splitlines():
        match = _PIN.match(line)
        if match:
            pins[match[1].lower()] = match[2]
    return pins


def engine_versions(requirements: Path = REQUIREMENTS) -> dict[str, str]:
    """The pinned version of each of ENGINE_PACKAGES; raises, naming the file, when one is not pinned exactly."""
    pins = exact_pins(requirements)
    missing = [package for package in ENGINE_PACKAGES if package not in pins]
    if missing:
        raise ValueError(f"{requirements} must pin {', '.join(missing)} exactly (package==X.Y.Z): "
                         "the engine suite builds and tests one version of each, the one users install")
    return {package: pins[package] for package in ENGINE_PACKAGES}
