"""A real headless Chromium (Debian's package) driven by Playwright from PyPI, which is told to use it:
Playwright's own browser download is not reachable from here. Screenshots of each step go to the
test artifacts directory (ARTIFACTS, git-ignored; CI keeps it)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("MLFLOW_TRACING_ARTIFACTS", ROOT / ".artifacts"))
CHROMIUM = "/usr/bin/chromium"
# Headless as root, with nothing that reaches for Google's hosts (refused here, many at a time).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]


@contextmanager
def chromium() -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        raise RuntimeError(f"{CHROMIUM} not found: install Debian's `chromium` package (.ci/run does this)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def artifacts_dir(name: str) -> Path:
    directory = ARTIFACTS / name
    directory.mkdir(parents=True, exist_ok=True)
    return directory
