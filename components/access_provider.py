"""Pulumi dynamic providers for MLflow's users and roles (basic-auth app, 3.17),
speaking its REST API as the admin.

Pickled into the state like the experiment provider: nothing with side effects
is imported, HTTP sessions are built inside each call, and `check` and `diff`
never touch the network (preview hands them unknown values).

A grant is `{"resource_type", "resource_id", "permission"}`, e.g. EDIT on
experiment 12, or MANAGE on every trace (`trace`, `*`). What the provider
holds it to:
- a user's direct grants (its `__user_<id>__` role) and its role memberships
  are exactly the declared ones: a grant added, changed or revoked in the UI is
  seen by the refresh before every `pulumi up` and put back;
- a user whose password MLflow no longer accepts (changed in the UI) is seen by
  the refresh and gets the declared password again (every update sets it: the
  refresh can miss a change while MLflow's workers still have the declared
  password in their credential cache);
- `create` adopts a user or role that already has the name;
- a level change is one in-place update of the grant, never a revoke followed
  by a grant, so a client never loses its access in between;
- `delete` of a user either deletes it (`on_delete: delete`, the machine users,
  whose names change with each password) or retires it (`retire`, people):
  every grant and membership revoked and the password replaced by one nobody
  knows; the user row stays, so names in assessments stay known and a later
  `up` that lists the person again adopts it. A role is deleted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    ResourceProvider,
    UpdateResult,
)

from components.mlflow_rest import (
    ABSENT,
    READ_TIMEOUT_SECONDS,
    MlflowApiError,
    MlflowRest,
    NotMlflowError,
    is_unknown,
    read_or_keep,
)

USERS = "/api/2.0/mlflow/users"
PERMISSIONS = "/api/3.0/mlflow/users/permissions"
ROLES = "/api/3.0/mlflow/roles"
# Without MLflow workspaces (MLFLOW_ENABLE_WORKSPACES, off here) every grant lives in this one.
WORKSPACE = "default"
PERMISSIONS_GRANTED = ("READ", "USE", "EDIT", "MANAGE", "DENY")
ON_DELETE = ("delete", "retire")
MIN_PASSWORD = 12  # MLflow refuses shorter ones
SIGN_IN_ATTEMPTS = 4  # the refresh's password check, each on a new connection


def _key(grant: dict) -> tuple[str, str]:
    return str(grant["resource_type"]), str(grant["resource_id"])


def canonical_grants(grants: list[dict]) -> list[dict]:
    """Grants sorted by resource, as the state and `diff` compare them."""
    return sorted(({"resource_type": str(g["resource_type"]), "resource_id": str(g["resource_id"]),
                    "permission": str(g["permission"])} for g in grants), key=_key)


def _grant_failures(grants: Any) -> list[CheckFailure]:
    if is_unknown(grants):
        return []
    if not isinstance(grants, list):
        return [CheckFailure("grants", "grants must be a list")]
    failures = []
    for grant in grants:
        if is_unknown(grant) or not isinstance(grant, dict):
            continue
        permission = grant.get("permission")
        if not is_unknown(permission) and permission not in PERMISSIONS_GRANTED:
            failures.append(CheckFailure("grants", f"{permission!r} is not one of {', '.join(PERMISSIONS_GRANTED)}"))
    keys = [_key(g) for g in grants if isinstance(g, dict) and not any(is_unknown(v) for v in g.values())]
    for key in sorted({k for k in keys if keys.count(k) > 1}):
        failures.append(CheckFailure("grants", f"{key[0]} {key[1]} is granted twice; keep one level"))
    return failures


class _Admin(MlflowRest):
    """The user, permission and role calls, as the admin."""

    def user(self, username: str, action: str) -> dict | None:
        return self.get_or_none(f"{USERS}/get", "user", action, username=username)

    def unless_auth_is_off(self, lookup: Callable[[], dict | None], action: str) -> dict | None:
        """`lookup()`, or None when MLflow answers without its auth app: the stack set
        `mlflow.auth.kind` to none, so the users and roles went with it and a delete has nothing
        left to do. A URL that is not MLflow at all still fails."""
        try:
            return lookup()
        except NotMlflowError as missing:
            try:
                self.call("GET", "/api/2.0/mlflow/experiments/search", action, params={"max_results": 1})
            except (NotMlflowError, MlflowApiError):
                raise missing from None
            return None

    def set_password(self, username: str, password: str, action: str) -> None:
        self.call("PATCH", f"{USERS}/update-password", action, json={"username": username, "password": password})

    def roles_of(self, username: str, action: str) -> list[dict]:
        return self.call("GET", "/api/3.0/mlflow/users/roles/list", action, params={"username": username})["roles"]

    def role(self, role_id: int, action: str) -> dict | None:
        return self.get_or_none(f"{ROLES}/get", "role", action, role_id=role_id)

    def role_named(self, name: str, action: str) -> dict | None:
        roles = self.call("GET", f"{ROLES}/list", action, params={"workspace": WORKSPACE})["roles"]
        return next((role for role in roles if role["name"] == name), None)


def _synthetic_role(user: dict) -> str:
    """The role MLflow keeps a user's direct grants in."""
    return f"__user_{user['id']}__"


def _live_grants(role: dict | None) -> dict[tuple[str, str], dict]:
    return {(p["resource_type"], p["resource_pattern"]): p for p in (role or {}).get("permissions", [])}


def _as_grants(role: dict | None) -> list[dict]:
    return canonical_grants([{"resource_type": t, "resource_id": i, "permission": p["permission"]}
                             for (t, i), p in _live_grants(role).items()])


def _password_accepted(props: dict, username: str, password: str) -> bool:
    """Whether MLflow signs the user in with `password`, asked on SIGN_IN_ATTEMPTS new
    connections (so of several workers): a worker that verified a password keeps accepting it
    from its credential cache for up to the cache's lifetime after a change, so one refusal
    means a changed password, and a change can still go unseen while every worker asked has
    the old password cached."""
    for _ in range(SIGN_IN_ATTEMPTS):
        try:
            MlflowRest({**props, "credentials": {"username": username, "password": password}}).call(
                "GET", f"{USERS}/current", f"sign in as {username!r}")
        except MlflowApiError as error:
            if error.status == 401:
                return False
            raise
    return True


class MlflowUserProvider(ResourceProvider):
    def check(self, _olds: dict, news: dict) -> CheckResult:
        failures = _grant_failures(news.get("grants"))
        password = news.get("password")
        if not is_unknown(password) and not (isinstance(password, str) and len(password) >= MIN_PASSWORD):
            failures.append(CheckFailure("password", f"MLflow needs a password of at least {MIN_PASSWORD} characters"))
        if news.get("on_delete") not in ON_DELETE:
            failures.append(CheckFailure("on_delete", f"must be one of {', '.join(ON_DELETE)}"))
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        if olds.get("username") != news.get("username"):
            return DiffResult(changes=True, replaces=["username"], delete_before_replace=False)
        changed = [key for key in ("password", "grants", "roles", "on_delete", "tracking_url", "credentials",
                                   "timeout_seconds") if olds.get(key) != news.get(key)]
        # Changed in MLflow behind the stack (seen by refresh): an update sets it again.
        drifted = olds.get("password_accepted") is False
        return DiffResult(changes=bool(changed or drifted), replaces=[], delete_before_replace=False)

    def create(self, props: dict) -> CreateResult:
        client, username = _Admin(props), props["username"]
        action = f"create MLflow user {username!r}"
        if client.user(username, action) is None:
            try:
                client.call("POST", f"{USERS}/create", action, json={"username": username,
                                                                     "password": props["password"]})
            except MlflowApiError as error:
                if error.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                client.set_password(username, props["password"], action)  # created meanwhile: adopted
        else:
            client.set_password(username, props["password"], action)  # adopted: signs in as declared
        return CreateResult(username, self._converge(client, props, action))

    def read(self, id_: str, props: dict) -> ReadResult:
        def found() -> ReadResult:
            client = _Admin(props, READ_TIMEOUT_SECONDS)
            action = f"read MLflow user {id_!r}"
            user = client.user(id_, action)
            if user is None:
                return ReadResult(None, {})  # deleted outside Pulumi: the next `up` creates it again
            return ReadResult(id_, self._outputs(client, props, user, action))

        return read_or_keep(found, ReadResult(id_, props))

    def update(self, id_: str, olds: dict, news: dict) -> UpdateResult:
        client = _Admin(news)
        action = f"update MLflow user {id_!r}"
        # Every update sets the password: a change made in the UI may have looked accepted to the
        # refresh (a worker's credential cache), and setting the declared one again changes nothing else.
        client.set_password(id_, news["password"], action)
        return UpdateResult(self._converge(client, news, action))

    def delete(self, id_: str, props: dict) -> None:
        client = _Admin(props)
        action = f"{'delete' if props.get('on_delete') == 'delete' else 'retire'} MLflow user {id_!r}"
        if client.unless_auth_is_off(lambda: client.user(id_, action), action) is None:
            return
        if props.get("on_delete") == "delete":
            try:
                client.call("DELETE", f"{USERS}/delete", action, json={"username": id_})
            except MlflowApiError as error:
                if error.error_code != ABSENT:
                    raise
            return
        import secrets

        # First the password nobody knows (signed out for good; a worker that verified the old one may
        # accept it until its credential cache entry expires), then nothing left to sign in to.
        client.set_password(id_, secrets.token_urlsafe(32), action)
        self._hold_to_declared(client, {**props, "grants": [], "roles": []}, action)

    def _converge(self, client: _Admin, props: dict, action: str) -> dict:
        """Make the user's direct grants and role memberships exactly the declared ones; the state
        as read from MLflow afterwards."""
        return self._outputs(client, props, self._hold_to_declared(client, props, action), action)

    def _hold_to_declared(self, client: _Admin, props: dict, action: str) -> dict:
        """Revoke, change and grant until the user's direct grants and role memberships are exactly
        the declared ones; the user as MLflow holds it."""
        username = props["username"]
        user = client.user(username, action)
        if user is None:
            raise MlflowApiError(action, 404, ABSENT, f"user {username!r} was deleted meanwhile; run `pulumi up` again")
        roles = client.roles_of(username, action)
        synthetic = next((r for r in roles if r["name"] == _synthetic_role(user)), None)
        live = _live_grants(synthetic)
        wanted = {_key(g): g["permission"] for g in props.get("grants") or []}
        for (resource_type, resource_id), granted in live.items():
            if (resource_type, resource_id) not in wanted:
                client.call("POST", f"{PERMISSIONS}/revoke", action, json={
                    "username": username, "resource_type": resource_type, "resource_id": resource_id})
            elif granted["permission"] != wanted[(resource_type, resource_id)]:
                client.call("PATCH", f"{ROLES}/permissions/update", action, json={
                    "role_permission_id": granted["id"], "permission": wanted[(resource_type, resource_id)]})
        for (resource_type, resource_id), permission in wanted.items():
            if (resource_type, resource_id) not in live:
                client.call("POST", f"{PERMISSIONS}/grant", action, json={
                    "username": username, "resource_type": resource_type, "resource_id": resource_id,
                    "permission": permission})
        member_of = {r["name"]: r for r in roles if r["name"] != _synthetic_role(user)}
        wanted_roles = list(props.get("roles") or [])
        for name, role in member_of.items():
            if name not in wanted_roles:
                client.call("DELETE", f"{ROLES}/unassign", action, json={"username": username, "role_id": role["id"]})
        for name in wanted_roles:
            if name not in member_of:
                declared = client.role_named(name, action)
                if declared is None:
                    raise MlflowApiError(action, 404, ABSENT, f"role {name!r} does not exist in MLflow; declare it "
                                         "under access.roles")
                client.call("POST", f"{ROLES}/assign", action, json={"username": username, "role_id": declared["id"]})
        return user

    def _outputs(self, client: _Admin, props: dict, user: dict, action: str) -> dict:
        """State as read from MLflow: the live grants and memberships, and whether the
        declared password still signs in."""
        roles = client.roles_of(user["username"], action)
        synthetic = next((r for r in roles if r["name"] == _synthetic_role(user)), None)
        member_of = sorted(r["name"] for r in roles if r["name"] != _synthetic_role(user))
        declared = list(props.get("roles") or [])
        return {
            **props,
            "grants": _as_grants(synthetic),
            # The declared order when nothing drifted, so that `diff` sees no change.
            "roles": declared if sorted(declared) == member_of else member_of,
            "password_accepted": _password_accepted(props, user["username"], props["password"]),
        }


class MlflowRoleProvider(ResourceProvider):
    def check(self, _olds: dict, news: dict) -> CheckResult:
        return CheckResult(news, _grant_failures(news.get("grants")))

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        if olds.get("name") != news.get("name"):
            return DiffResult(changes=True, replaces=["name"], delete_before_replace=True)
        changed = [key for key in ("grants", "tracking_url", "credentials", "timeout_seconds")
                   if olds.get(key) != news.get(key)]
        return DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

    def create(self, props: dict) -> CreateResult:
        client, name = _Admin(props), props["name"]
        action = f"create MLflow role {name!r}"
        role = client.role_named(name, action)
        if role is None:
            role = client.call("POST", f"{ROLES}/create", action, json={
                "name": name, "workspace": WORKSPACE, "description": "managed by Pulumi (mlflow-tracing)"})["role"]
        return CreateResult(str(role["id"]), self._converge(client, str(role["id"]), props, action))

    def read(self, id_: str, props: dict) -> ReadResult:
        def found() -> ReadResult:
            role = _Admin(props, READ_TIMEOUT_SECONDS).role(int(id_), f"read MLflow role {props.get('name')!r}")
            if role is None:
                return ReadResult(None, {})
            return ReadResult(id_, {**props, "name": role["name"], "grants": _as_grants(role)})

        return read_or_keep(found, ReadResult(id_, props))

    def update(self, id_: str, _olds: dict, news: dict) -> UpdateResult:
        return UpdateResult(self._converge(_Admin(news), id_, news, f"update MLflow role {news['name']!r}"))

    def delete(self, id_: str, props: dict) -> None:
        client = _Admin(props)
        action = f"delete MLflow role {props.get('name')!r}"
        if client.unless_auth_is_off(lambda: client.role(int(id_), action), action) is not None:
            client.call("DELETE", f"{ROLES}/delete", action, json={"role_id": int(id_)})

    def _converge(self, client: _Admin, id_: str, props: dict, action: str) -> dict:
        role = client.role(int(id_), action)
        if role is None:
            raise MlflowApiError(action, 404, ABSENT, f"role {id_} was deleted meanwhile; run `pulumi up` again")
        live = _live_grants(role)
        wanted = {_key(g): g["permission"] for g in props.get("grants") or []}
        for key, granted in live.items():
            if key not in wanted:
                client.call("DELETE", f"{ROLES}/permissions/remove", action, json={"role_permission_id": granted["id"]})
            elif granted["permission"] != wanted[key]:
                client.call("PATCH", f"{ROLES}/permissions/update", action, json={
                    "role_permission_id": granted["id"], "permission": wanted[key]})
        for (resource_type, resource_id), permission in wanted.items():
            if (resource_type, resource_id) not in live:
                client.call("POST", f"{ROLES}/permissions/add", action, json={
                    "role_id": int(id_), "resource_type": resource_type, "resource_pattern": resource_id,
                    "permission": permission})
        converged = client.role(int(id_), action)
        return {**props, "role_id": id_, "grants": _as_grants(converged)}
