"""The stack's own upkeep: the post-deploy check and trace retention."""

from __future__ import annotations

from components.config.fields import _cron
from components.config.reader import _Reader
from components.config.types import Retention, Verify

MIN_VERIFY_SECONDS = 30  # a pod start, a batch timeout and a few polls
MAX_RETENTION_BATCH = 5000  # one DeleteTraces request; bounded so each stays short


def _verify(reader: _Reader) -> Verify:
    reader.only("enabled", "timeoutSeconds")
    return Verify(enabled=reader.flag("enabled"), timeout_seconds=reader.integer("timeoutSeconds", MIN_VERIFY_SECONDS))


def retention_days(reader: _Reader, name: str) -> int | None:
    """A limit in days (>= 1), or None (keep everything)."""
    if reader.value.get(name) is None:
        return None
    return reader.integer(name, 1)


def _retention(reader: _Reader) -> tuple[Retention, int | None]:
    """The retention settings and the default limit of experiments that set none."""
    reader.only("days", "schedule", "batchSize")
    schedule = _cron(reader, "schedule")
    batch = reader.integer("batchSize", 1)
    if batch > MAX_RETENTION_BATCH:
        reader.problems.add(reader.at("batchSize"), f"must be at most {MAX_RETENTION_BATCH}, got {batch}")
    return Retention(schedule=schedule, batch_size=batch), retention_days(reader, "days")
