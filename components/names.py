"""Experiment names and their slugs: kept free of heavy imports because the
experiment provider, pickled into every stack's state, imports it."""

from __future__ import annotations

import re
from typing import Any


def experiment_name_problem(name: Any) -> str | None:
    """Why `name` cannot be an MLflow experiment name, or None when it can."""
    if not isinstance(name, str) or not name.strip():
        return "must be a non-empty string"
    if name != name.strip():
        return "must not start or end with white space"
    if len(name) > 255:
        return "must be at most 255 characters"
    if any(ord(ch) < 32 for ch in name):
        return "must not contain control characters"
    return None


def experiment_slug(name: str) -> str:
    """A component-id-safe form of an experiment name (collector pipeline names)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "experiment"
