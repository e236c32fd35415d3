"""Who signs in to MLflow, as code: the stack's machine users, each with only the rights
its job needs, and the people and roles of `access`.

| machine user | rights | why |
|---|---|---|
| `otel-collector-*` | EDIT on each experiment it routes to | OTLP ingest is a trace create: experiment `update` |
| `trace-check-*` | READ on each routed experiment; MANAGE on traces and assessments | reads its traces, deletes them |
| `trace-retention-*` | READ on each experiment with a limit; MANAGE on traces and assessments | deletes old traces |

MLflow 3.17's DeleteTraces needs experiment READ plus `delete` on the trace tier and on
the assessment tier (whose absence falls back to experiment DELETE and UPDATE): the
wildcard tier grants give exactly that, and only in the experiments the user can read
(measured in tests/integration/test_access_matrix.py). MLflow 3.16 has no such tiers (it
refuses the grant) and asks for experiment MANAGE (`can_delete`): on an older image the
check and retention users get MANAGE on their experiments instead, and the upgrade to 3.17
narrows it.

Each machine user's name carries a suffix that is new with its password (`random.RandomId`
kept by the password): a rotation creates a new user beside the old one, the Secret is
replaced (new name), the pods that use it roll onto it, and the old user is deleted only
at the end of the `pulumi up`, after the roll and the post-deploy check: only a pod of the old
user still exporting by then (a slow drain of a Deployment's pod) can meet a refusal (docs/security.md:
Rotation).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random
from pulumi.dynamic import Resource

from components import auth
from components.access_provider import MlflowRoleProvider, MlflowUserProvider, canonical_grants
from components.collector import RoutedExperiment, routed_experiments
from components.config import ALL_EXPERIMENTS, MACHINE_USERS, Access, AccessGrant, Experiment, experiment_slug
from components.kube import NamespaceRef, labels_for
from components.mlflow_rest import DEFAULT_TIMEOUT_SECONDS
from components.trace_upkeep import check_service

COLLECTOR, CHECK, RETENTION = MACHINE_USERS
PERMISSION_ORDER = ("READ", "EDIT", "MANAGE")
# Deleting traces: `delete` on the trace tier and on the assessment tier (which a trace's deletion cascades to).
TRACE_DELETION = [{"resource_type": tier, "resource_id": "*", "permission": "MANAGE"}
                  for tier in ("trace", "assessment")]
USER_LABEL = "mlflow-tracing/mlflow-user"  # on each person's generated password Secret


def _experiment_grants(experiment_ids: list[str], permission: str) -> list[dict]:
    return [{"resource_type": "experiment", "resource_id": i, "permission": permission}
            for i in dict.fromkeys(experiment_ids)]


def machine_grants(machine: str, routed: list[RoutedExperiment], retention_days: dict[str, int | None], *,
                   trace_permissions: bool = True) -> list[dict]:
    """The least a machine user needs, on the experiments of its job, in an MLflow with
    (`trace_permissions`) or without trace-tier grants."""
    exported = [e.experiment_id for e in routed if check_service(e, routed) is not None]
    limited = [e.experiment_id for e in routed if retention_days.get(e.name) is not None]
    if machine == COLLECTOR:
        return canonical_grants(_experiment_grants(exported, "EDIT"))
    if machine not in (CHECK, RETENTION):
        raise ValueError(f"unknown machine user {machine!r}")
    deleting_in = exported if machine == CHECK else limited
    if not trace_permissions:
        return canonical_grants(_experiment_grants(deleting_in, "MANAGE"))
    return canonical_grants(_experiment_grants(deleting_in, "READ") + TRACE_DELETION)


def team_grants(grants: tuple[AccessGrant, ...], ids: dict[str, str]) -> list[dict]:
    """A person's or role's grants by experiment ID; MLflow holds one level per experiment, so
    the highest of several wins."""
    levels: dict[str, str] = {}
    for grant in grants:
        for name in grant.experiments:
            target = ALL_EXPERIMENTS if name == ALL_EXPERIMENTS else ids[name]
            held = levels.get(target)
            if held is None or PERMISSION_ORDER.index(grant.permission) > PERMISSION_ORDER.index(held):
                levels[target] = grant.permission
    return canonical_grants([{"resource_type": "experiment", "resource_id": target, "permission": permission}
                             for target, permission in levels.items()])


def team_grants_by_id(grants: tuple[AccessGrant, ...], ids: pulumi.Output[dict[str, str]]) -> pulumi.Output[list]:
    return ids.apply(lambda resolved: team_grants(grants, resolved))


def user_slug(name: str) -> str:
    """A DNS-label form of a user name, for its Secret (config checks that they differ)."""
    return experiment_slug(name)


@dataclass(frozen=True)
class AdminApi:
    """How `pulumi up` reaches MLflow as the admin, and what must exist first."""

    tracking_url: str
    credentials: pulumi.Input[dict]
    server_ready: list[pulumi.Resource]


class MlflowUser(Resource):
    """One MLflow user with exactly `grants` and `roles`; `on_delete`: delete or retire."""

    password_accepted: pulumi.Output[bool]

    def __init__(self, resource_name: str, *, username: pulumi.Input[str], password: pulumi.Input[str],
                 grants: pulumi.Input[list], roles: list[str], on_delete: str, admin: AdminApi,
                 opts: pulumi.ResourceOptions | None = None):
        props: dict[str, Any] = {
            "username": username,
            "password": pulumi.Output.secret(password),
            "grants": grants,
            "roles": roles,
            "on_delete": on_delete,
            "tracking_url": admin.tracking_url,
            "credentials": pulumi.Output.secret(admin.credentials),
            "timeout_seconds": DEFAULT_TIMEOUT_SECONDS,
            "password_accepted": None,
        }
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
            additional_secret_outputs=["password", "credentials"]))
        super().__init__(MlflowUserProvider(), resource_name, props, opts)


class MlflowRole(Resource):
    """One MLflow role with exactly `grants`."""

    role_id: pulumi.Output[str]

    def __init__(self, resource_name: str, *, name: str, grants: pulumi.Input[list], admin: AdminApi,
                 opts: pulumi.ResourceOptions | None = None):
        props: dict[str, Any] = {"name": name, "grants": grants, "tracking_url": admin.tracking_url,
                 "credentials": pulumi.Output.secret(admin.credentials), "timeout_seconds": DEFAULT_TIMEOUT_SECONDS,
                 "role_id": None}
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["credentials"]))
        super().__init__(MlflowRoleProvider(), resource_name, props, opts)


class MachineUser(pulumi.ComponentResource):
    """A machine client's MLflow user and the Secret its pods sign in with (`secret_name`,
    keys `username` and `password`). `revision` (mlflow.auth.machinePasswordRevision) or
    `pulumi up --replace` of the password rotates both."""

    secret_name: pulumi.Output[str]

    def __init__(self, name: str, *, machine: str, revision: int, grants: pulumi.Input[list], admin: AdminApi,
                 namespace: NamespaceRef, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-tracing:index:MachineUser", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        password = random.RandomPassword(f"{name}-password", length=32, special=True, override_special="-_.~",
                                         keepers={"revision": str(revision)}, opts=child)
        # New with every password, so a rotation is a new user beside the old one.
        generation = random.RandomId(f"{name}-generation", byte_length=3, keepers={"password": password.result},
                                     opts=child)
        username = generation.hex.apply(lambda suffix: f"{machine}-{suffix}")
        user = MlflowUser(f"{name}-user", username=username, password=password.result, grants=grants, roles=[],
                          on_delete="delete", admin=admin,
                          opts=pulumi.ResourceOptions(parent=self, depends_on=admin.server_ready))
        # Created once the user holds its grants: pods that mount it never start before.
        secret = k8s.core.v1.Secret(
            f"{name}-credentials",
            metadata={"namespace": namespace.ref, "labels": labels_for(machine)},
            string_data={auth.USERNAME_KEY: username, auth.PASSWORD_KEY: password.result},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[user]),
        )
        self.secret_name = secret.metadata.name
        self.register_outputs({"secretName": self.secret_name})


class TeamAccess(pulumi.ComponentResource):
    """The roles and people of `access`: a person's password is generated into the Secret
    `mlflow-user-<name>` (key `password`), or read from the Secret the config names."""

    def __init__(self, name: str, *, access: Access, experiment_ids: pulumi.Output[dict[str, str]], admin: AdminApi,
                 namespace: NamespaceRef, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-tracing:index:TeamAccess", name, None, opts)
        after_server = pulumi.ResourceOptions(parent=self, depends_on=admin.server_ready)
        roles = [
            MlflowRole(f"{name}-role-{user_slug(role.name)}", name=role.name, admin=admin, opts=after_server,
                       grants=team_grants_by_id(role.grants, experiment_ids))
            for role in access.roles
        ]
        for person in access.users:
            slug = user_slug(person.name)
            MlflowUser(
                f"{name}-user-{slug}", username=person.name, password=self._password(name, person.password_secret,
                                                                                     person.name, namespace),
                grants=team_grants_by_id(person.grants, experiment_ids),
                roles=list(person.roles), on_delete="retire", admin=admin,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[*admin.server_ready, *roles]),
            )
        self.register_outputs({})

    def _password(self, name: str, existing: str | None, username: str, namespace: NamespaceRef) -> pulumi.Output[str]:
        slug = user_slug(username)
        if existing is not None:
            brought = k8s.core.v1.Secret.get(f"{name}-password-{slug}", f"{namespace.name}/{existing}",
                                             opts=pulumi.ResourceOptions(parent=self))
            return pulumi.Output.secret(
                brought.data.apply(lambda data: base64.b64decode(data[auth.PASSWORD_KEY]).decode()))
        password = random.RandomPassword(f"{name}-password-{slug}", length=24, special=True, override_special="-_.~",
                                         opts=pulumi.ResourceOptions(parent=self))
        k8s.core.v1.Secret(
            f"{name}-secret-{slug}",
            metadata={"name": f"mlflow-user-{slug}", "namespace": namespace.ref,
                      "labels": {**labels_for("mlflow-user"), USER_LABEL: slug},
                      "annotations": {USER_LABEL: username}},
            string_data={auth.USERNAME_KEY: username, auth.PASSWORD_KEY: password.result},
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )
        return password.result


class MachineUsers(pulumi.ComponentResource):
    """The machine users the stack runs (`machines`), each with the grants of its job;
    `secrets` maps each to the Secret its pods sign in with."""

    secrets: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, *, machines: tuple[str, ...], revision: int, experiments: tuple[Experiment, ...],
                 experiment_ids: pulumi.Output[dict[str, str]], retention_days: dict[str, int | None],
                 trace_permissions: bool, admin: AdminApi, namespace: NamespaceRef,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-tracing:index:MachineUsers", name, None, opts)
        routed = experiment_ids.apply(lambda ids: routed_experiments(experiments, ids))

        def grants_of(machine: str) -> pulumi.Output[list]:
            return routed.apply(lambda resolved: machine_grants(machine, resolved, retention_days,
                                                                    trace_permissions=trace_permissions))

        self.secrets = {
            machine: MachineUser(f"{name}-{machine}", machine=machine, revision=revision, grants=grants_of(machine),
                                 admin=admin, namespace=namespace, opts=pulumi.ResourceOptions(parent=self)).secret_name
            for machine in machines
        }
        self.register_outputs({})
