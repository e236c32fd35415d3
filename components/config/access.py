"""The people and roles of `access`, who may not take the admin's or a machine user's name."""

from __future__ import annotations

import re

from components.config.fields import _DNS_SUBDOMAIN
from components.config.reader import _Problems, _Reader
from components.config.types import (
    MACHINE_USERS,
    TEAM_PERMISSIONS,
    Access,
    AccessGrant,
    Auth,
    Experiment,
    TeamRole,
    TeamUser,
)
from components.names import experiment_slug

ALL_EXPERIMENTS = "*"
_USERNAME = re.compile(r"^[A-Za-z0-9._@-]+$")


def _name(reader: _Reader, what: str) -> str:
    name = reader.text("name") or ""
    if name and (not _USERNAME.match(name) or name.startswith("__")):
        reader.problems.add(reader.at("name"), f"{what} {name!r}: use letters, digits and . _ @ - only, and do not "
                            "start with __ (MLflow's own roles)")
    return name


def _grants(reader: _Reader, experiments: tuple[Experiment, ...]) -> tuple[AccessGrant, ...]:
    if "grants" not in reader.value:
        return ()
    names = {e.name for e in experiments}
    grants = []
    for item in reader.objects("grants"):
        item.only("experiments", "permission")
        permission = item.choice("permission", TEAM_PERMISSIONS)
        targets = item.strings("experiments")
        for target in targets:
            if target != ALL_EXPERIMENTS and target not in names:
                item.problems.add(item.at("experiments"), f"{target!r} is not one of the stack's experiments "
                                  f"({', '.join(sorted(names))}); name one of them, or \"*\" for every experiment")
        grants.append(AccessGrant(experiments=targets, permission=permission))
    return tuple(grants)


def _unique(problems: _Problems, key: str, what: str, names: list[str]) -> None:
    """Each name once, and no two that differ only in case or punctuation: their Pulumi
    resources (and a person's Secret, mlflow-user-<name>) are named after the slug."""
    for name in sorted({n for n in names if n and names.count(n) > 1}):
        problems.add(key, f"{what} {name!r} is listed twice; names must be unique")
    for slug in sorted({experiment_slug(n) for n in names if n}):
        clash = sorted({n for n in names if n and experiment_slug(n) == slug})
        if len(clash) > 1:
            problems.add(key, f"{what}s {clash} differ only in case or punctuation; rename one")


def _access(reader: _Reader, auth: Auth, experiments: tuple[Experiment, ...]) -> Access:
    reader.only("roles", "users")
    roles = []
    for item in reader.objects("roles"):
        item.only("name", "grants")
        roles.append(TeamRole(name=_name(item, "role"), grants=_grants(item, experiments)))
    role_names = [r.name for r in roles]
    _unique(reader.problems, reader.at("roles"), "role", role_names)
    users = []
    for item in reader.objects("users"):
        item.only("name", "roles", "grants", "passwordSecret")
        name = _name(item, "user")
        if name == auth.admin_username or any(name.startswith(f"{machine}-") for machine in MACHINE_USERS):
            item.problems.add(item.at("name"), f"{name!r} is the admin's or a machine user's name "
                              f"({', '.join(f'{m}-*' for m in MACHINE_USERS)}); choose another")
        member_of = item.strings("roles") if "roles" in item.value else ()
        for role in member_of:
            if role not in role_names:
                item.problems.add(item.at("roles"), f"role {role!r} is not declared; add it under "
                                  f"{reader.at('roles')} or remove it here")
        secret = item.text("passwordSecret", optional=True)
        if secret is not None and (len(secret) > 253 or not _DNS_SUBDOMAIN.match(secret)):
            item.problems.add(item.at("passwordSecret"), f"{secret!r} is not a Secret name")
        users.append(TeamUser(name=name, roles=member_of, grants=_grants(item, experiments), password_secret=secret))
    _unique(reader.problems, reader.at("users"), "user", [u.name for u in users])
    if (roles or users) and not auth.enabled:
        reader.problems.add(reader.key, "people sign in only with mlflow.auth.kind basic or oidc; set one, or empty "
                            f"{reader.at('roles')} and {reader.at('users')}")
    return Access(roles=tuple(roles), users=tuple(users))
