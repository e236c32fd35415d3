"""The MLflow users and roles a program run declares, created in a real MLflow by the
providers themselves (as `pulumi up` would), so that the pods of that run sign in as
their declared users with their declared grants."""

from __future__ import annotations

from components.access_provider import MlflowRoleProvider, MlflowUserProvider
from tests.support.program import ProgramRun


def apply_declared_access(run: ProgramRun, url: str, admin: tuple[str, str]) -> dict[str, str]:
    """Create (or converge) every declared role and user at `url`; returns username -> password."""
    target = {"tracking_url": url, "credentials": {"username": admin[0], "password": admin[1]},
              "timeout_seconds": 30}
    for role in run.dynamic("role"):
        MlflowRoleProvider().create({**role.inputs, **target})
    users = {}
    for user in run.dynamic("user"):
        MlflowUserProvider().create({**user.inputs, **target})
        users[user.inputs["username"]] = user.inputs["password"]
    return users
