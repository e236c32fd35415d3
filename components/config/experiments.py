"""The MLflow experiments the stack creates, and how traces are routed to
them: unique names and slugs, one default, each service in one experiment."""

from __future__ import annotations

from components.config.reader import _Problems, _Reader
from components.config.types import Experiment
from components.config.upkeep import retention_days
from components.names import experiment_name_problem, experiment_slug


def _experiments(readers: list[_Reader], key: str, problems: _Problems,
                 default_retention_days: int | None = None) -> tuple[Experiment, ...]:
    """`default_retention_days`: the limit of experiments that set no `retentionDays`."""
    experiments = []
    for item in readers:
        item.only("name", "services", "default", "tags", "renamedFrom", "retentionDays")
        name = item.value.get("name")
        problem = experiment_name_problem(name)
        if problem:
            problems.add(item.at("name"), problem)
        experiments.append(
            Experiment(
                name=name if isinstance(name, str) else "",
                services=item.strings("services") if "services" in item.value else (),
                default=item.flag("default") if "default" in item.value else False,
                tags=item.string_map("tags") if "tags" in item.value else {},
                renamed_from=item.strings("renamedFrom") if "renamedFrom" in item.value else (),
                retention_days=retention_days(item, "retentionDays") if "retentionDays" in item.value
                else default_retention_days,
            )
        )
    if not experiments:
        problems.add(key, "needs at least one experiment (one with default: true receives unmatched traffic)")
    names = [e.name for e in experiments]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.add(key, f"experiment {name!r} is listed twice; names must be unique")
    slugs = [experiment_slug(n) for n in names]
    for slug in sorted({s for s in slugs if slugs.count(s) > 1}):
        clash = [n for n in names if experiment_slug(n) == slug]
        if len(set(clash)) > 1:
            problems.add(key, f"experiments {clash} differ only in case or punctuation; rename one")
    defaults = [e.name for e in experiments if e.default]
    if experiments and len(defaults) != 1:
        problems.add(
            key,
            f"exactly one experiment must have default: true (it receives unmatched traffic); found {len(defaults)}"
            + (f": {defaults}" if defaults else ""),
        )
    seen: dict[str, str] = {}
    for experiment in experiments:
        for service in experiment.services:
            if service in seen and seen[service] != experiment.name:
                problems.add(
                    key,
                    f"service {service!r} is routed to both {seen[service]!r} and {experiment.name!r}; keep it in one",
                )
            seen[service] = experiment.name
    return tuple(experiments)
