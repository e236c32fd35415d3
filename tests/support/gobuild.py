"""Tools the tests run, built from their Go modules with `go install` at pinned versions (cached in
.cache/<name>/<version>, git-ignored): what a module proxy serves is all they need."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 1200


def go_binary(package: str, version: str, name: str, ldflags: str = "") -> Path:
    """`.cache/<name>/<version>/<binary>`: `go install package@version` (pure Go, cgo off) on first use."""
    target = ROOT / ".cache" / name / version
    *_, parent, last = package.rstrip("/").split("/")
    binary = target / (parent if re.fullmatch(r"v\d+", last) else last)  # go names a /vN module by its parent
    if not binary.exists():
        go = shutil.which("go")
        if go is None:
            raise RuntimeError(f"go is not on PATH: {name} is built from its Go module {package} (as the collector is)")
        built = subprocess.run([go, "install", "-trimpath", f"-ldflags={ldflags}", f"{package}@{version}"],
                               capture_output=True, text=True, timeout=BUILD_TIMEOUT,
                               env={**os.environ, "GOBIN": str(target), "CGO_ENABLED": "0"})
        if built.returncode != 0:
            raise RuntimeError(f"go install {package}@{version}: {built.stderr[-3000:]}")
    return binary
