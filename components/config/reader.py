"""Reading raw stack values: Pulumi.yaml's declared defaults, the merge of a
stack's values over them, and a typed reader that records every problem (key
and fix) instead of stopping at the first, so all are reported together."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

import yaml

PROJECT = "mlflow-tracing"
PROJECT_FILE = Path(__file__).resolve().parents[2] / "Pulumi.yaml"

_Choice = TypeVar("_Choice", bound=str)


class ConfigError(ValueError):
    """Raised with every problem of a stack's configuration, one per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(
            "invalid stack configuration:\n" + "\n".join(f"  - {p}" for p in problems)
        )


def project_defaults(project_file: Path = PROJECT_FILE) -> dict[str, Any]:
    """The `default` of every key declared in Pulumi.yaml."""
    declared = yaml.safe_load(project_file.read_text())["config"]
    return {key: spec.get("default") for key, spec in declared.items()}


def merge_over(defaults: Any, value: Any) -> Any:
    """A stack value over its default: objects merge key by key, anything else replaces."""
    if isinstance(defaults, dict) and isinstance(value, dict):
        merged = dict(defaults)
        for key, item in value.items():
            merged[key] = merge_over(defaults.get(key), item)
        return merged
    return value


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []
        self.warnings: list[str] = []
        self._unknown: set[str] = set()

    def add(self, key: str, message: str) -> None:
        self.items.append(f"{key}: {message}")

    def unknown(self, key: str, known: list[str] | tuple[str, ...]) -> None:
        """An undeclared key, reported once however many checks see it (the
        declared defaults and the section's own reader both do)."""
        if key not in self._unknown:
            self._unknown.add(key)
            self.add(key, f"unknown key; remove it (known keys: {', '.join(sorted(known))})")

    def warn(self, key: str, message: str) -> None:
        """Allowed, but risky: said at every `pulumi up`."""
        self.warnings.append(f"{key}: {message}")


def _unknown_keys(value: Mapping[str, Any], allowed: Mapping[str, Any], key: str, problems: _Problems) -> None:
    for name in value:
        if name not in allowed:
            problems.unknown(f"{key}.{name}", list(allowed))
    for name, default in allowed.items():
        if isinstance(default, dict) and isinstance(value.get(name), dict) and default:
            _unknown_keys(value[name], default, f"{key}.{name}", problems)


class _Reader:
    """Typed access to one merged object, recording problems under its key path."""

    def __init__(self, value: Any, key: str, problems: _Problems):
        self.key = key
        self.problems = problems
        self.value = value if isinstance(value, dict) else {}
        if not isinstance(value, dict):
            problems.add(key, f"must be an object, got {json.dumps(value)}")

    def at(self, name: str) -> str:
        """The full key path of `name` inside this object."""
        return f"{self.key}.{name}" if self.key else name

    def child(self, name: str) -> _Reader:
        return _Reader(self.value.get(name), self.at(name), self.problems)

    def _typed(self, name: str, kinds: tuple[type, ...], what: str, optional: bool) -> Any:
        value = self.value.get(name)
        if value is None and optional:
            return None
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            self.problems.add(self.at(name), f"must be {what}, got {json.dumps(value)}")
            return None
        return value

    def text(self, name: str, optional: bool = False) -> str | None:
        value = self._typed(name, (str,), "a string", optional)
        return value if value else None if optional else value

    def choice(self, name: str, choices: tuple[_Choice, ...]) -> _Choice:
        value = self.text(name)
        if value is not None and value not in choices:
            self.problems.add(self.at(name), f"must be one of {', '.join(choices)}, got {value!r}")
        return cast(_Choice, value or "")  # "" or a stray value only when a problem is recorded

    def integer(self, name: str, minimum: int) -> int:
        value = self._typed(name, (int, float), "a whole number", False)
        if value is None:
            return minimum
        if value != int(value) or value < minimum:
            self.problems.add(self.at(name), f"must be a whole number >= {minimum}, got {value}")
            return minimum
        return int(value)

    def flag(self, name: str) -> bool:
        return bool(self._typed(name, (bool,), "true or false", False))

    def strings(self, name: str) -> tuple[str, ...]:
        value = self.value.get(name)
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            self.problems.add(self.at(name), f"must be a list of non-empty strings, got {json.dumps(value)}")
            return ()
        return tuple(value)

    def string_map(self, name: str) -> dict[str, str]:
        value = self.value.get(name)
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            self.problems.add(self.at(name), f"must be a map of strings, got {json.dumps(value)}")
            return {}
        return dict(value)

    def objects(self, name: str) -> list[_Reader]:
        value = self.value.get(name)
        if not isinstance(value, list):
            self.problems.add(self.at(name), f"must be a list, got {json.dumps(value)}")
            return []
        return [_Reader(item, f"{self.at(name)}[{i}]", self.problems) for i, item in enumerate(value)]

    def only(self, *names: str) -> None:
        for name in self.value:
            if name not in names:
                self.problems.unknown(self.at(name), names)
