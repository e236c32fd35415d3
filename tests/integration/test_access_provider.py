"""The user and role providers' methods, called directly against the real basic-auth MLflow
3.17.2 (as the engine calls them): create adopts, read sees what changed in the UI, update
puts it back, delete retires a person or deletes a machine user."""

from __future__ import annotations

import time
import uuid

import pytest
import requests

from components import access_provider
from components.access_provider import MlflowRoleProvider, MlflowUserProvider, canonical_grants
from components.mlflow_rest import MlflowApiError
from tests.support.k8s import auth_config
from tests.support.processes import free_port, wait_until


@pytest.fixture(scope="module")
def api(auth_server, admin) -> requests.Session:
    session = requests.Session()
    session.auth = admin
    return session


@pytest.fixture(scope="module")
def experiment_ids(api, auth_server) -> list[str]:
    suffix = uuid.uuid4().hex[:6]
    return [api.post(f"{auth_server.url}/api/2.0/mlflow/experiments/create", json={"name": f"acl-{n}-{suffix}"},
                     timeout=10).json()["experiment_id"] for n in range(2)]


def target(auth_server, admin) -> dict:
    return {"tracking_url": auth_server.url, "credentials": {"username": admin[0], "password": admin[1]},
            "timeout_seconds": 20}


def user_props(auth_server, admin, grants: list[dict], roles: list[str] = (), on_delete: str = "retire") -> dict:
    return {**target(auth_server, admin), "username": f"person-{uuid.uuid4().hex[:6]}",
            "password": "declared-password-123", "grants": canonical_grants(grants), "roles": list(roles),
            "on_delete": on_delete}


def grant(experiment_id: str, permission: str) -> dict:
    return {"resource_type": "experiment", "resource_id": experiment_id, "permission": permission}


def status_as(auth_server, user: tuple[str, str], experiment_id: str) -> int:
    return requests.get(f"{auth_server.url}/api/2.0/mlflow/experiments/get", params={"experiment_id": experiment_id},
                        auth=user, timeout=10).status_code


def test_a_refresh_while_mlflow_is_stopped_keeps_the_user_as_the_state_has_it(auth_server, admin, experiment_ids,
                                                                              monkeypatch):
    provider = MlflowUserProvider()
    created = provider.create(user_props(auth_server, admin, [grant(experiment_ids[0], "READ")]))
    stopped = {**created.outs, "tracking_url": f"http://127.0.0.1:{free_port()}"}
    monkeypatch.setattr(access_provider, "READ_TIMEOUT_SECONDS", 2)
    kept = provider.read(created.id, stopped)
    assert (kept.id, kept.outs) == (created.id, stopped)


def test_users_and_roles_are_gone_with_the_auth_app_when_auth_is_turned_off(auth_server, admin, experiment_ids,
                                                                            mlflow_server):
    """`mlflow.auth.kind` basic -> none: MLflow rolls without its auth app before the `up` deletes
    the users and roles, whose API now answers a plain 404; the deletes have nothing left to do."""
    users, roles = MlflowUserProvider(), MlflowRoleProvider()
    user = users.create(user_props(auth_server, admin, [grant(experiment_ids[0], "READ")]))
    role = roles.create({**target(auth_server, admin), "name": f"team-{uuid.uuid4().hex[:6]}", "grants": []})
    without_auth = {"tracking_url": mlflow_server.url}
    users.delete(user.id, {**user.outs, **without_auth})
    roles.delete(role.id, {**role.outs, **without_auth})


def test_a_user_gets_exactly_its_grants_and_a_refresh_after_it_sees_no_change(auth_server, admin, experiment_ids):
    provider = MlflowUserProvider()
    props = user_props(auth_server, admin, [grant(experiment_ids[0], "READ")])
    created = provider.create(props)
    read = provider.read(created.id, created.outs)
    assert read.outs["grants"] == props["grants"] and read.outs["password_accepted"] is True
    assert not provider.diff(created.id, read.outs, props).changes
    user = (props["username"], props["password"])
    assert status_as(auth_server, user, experiment_ids[0]) == 200
    assert status_as(auth_server, user, experiment_ids[1]) == 403


def test_grants_changed_in_the_ui_are_seen_and_put_back(auth_server, auth_run, admin, api, experiment_ids):
    provider = MlflowUserProvider()
    props = user_props(auth_server, admin, [grant(experiment_ids[0], "READ"),
                                            {"resource_type": "trace", "resource_id": "*", "permission": "MANAGE"}])
    created = provider.create(props)
    username = props["username"]
    permissions = f"{auth_server.url}/api/3.0/mlflow/users/permissions"
    api.post(f"{permissions}/revoke", json={"username": username, "resource_type": "trace", "resource_id": "*"},
             timeout=10).raise_for_status()
    api.post(f"{permissions}/grant", json={**grant(experiment_ids[1], "MANAGE"), "username": username},
             timeout=10).raise_for_status()
    api.patch(f"{auth_server.url}/api/2.0/mlflow/users/update-password", timeout=10,
              json={"username": username, "password": "changed-in-the-ui-1"}).raise_for_status()
    ttl = auth_config(auth_run).getint("auth_cache_ttl_seconds")
    # Another worker may accept the declared password from its cache until it expires: a refresh may
    # miss the change until then, and the update puts the password back whatever the refresh saw.
    refreshes = []

    def refresh_sees_the_change() -> bool:
        refreshes.append(provider.read(created.id, created.outs).outs)
        return refreshes[-1]["password_accepted"] is False

    wait_until(refresh_sees_the_change, ttl + 10, "the changed password seen by the refresh")
    drifted = refreshes[-1]
    assert drifted["grants"] == canonical_grants([grant(experiment_ids[0], "READ"), grant(experiment_ids[1], "MANAGE")])
    assert provider.diff(created.id, drifted, props).changes
    repaired = provider.update(created.id, drifted, props).outs
    assert repaired["grants"] == props["grants"] and repaired["password_accepted"] is True
    assert status_as(auth_server, (username, props["password"]), experiment_ids[1]) == 403


def test_a_level_change_is_applied_in_place(auth_server, admin, experiment_ids):
    provider = MlflowUserProvider()
    props = user_props(auth_server, admin, [grant(experiment_ids[0], "READ")])
    created = provider.create(props)
    edit = {**props, "grants": canonical_grants([grant(experiment_ids[0], "EDIT")])}
    assert provider.update(created.id, created.outs, edit).outs["grants"] == edit["grants"]
    lowered = provider.update(created.id, created.outs, props).outs
    assert lowered["grants"] == props["grants"]


def test_an_existing_user_is_adopted_with_the_declared_password(auth_server, admin, api, experiment_ids):
    props = user_props(auth_server, admin, [grant(experiment_ids[0], "READ")])
    api.post(f"{auth_server.url}/api/2.0/mlflow/users/create", timeout=10,
             json={"username": props["username"], "password": "made-by-hand-12345"}).raise_for_status()
    created = MlflowUserProvider().create(props)
    assert created.outs["password_accepted"] is True
    assert status_as(auth_server, (props["username"], props["password"]), experiment_ids[0]) == 200


def test_a_removed_person_is_retired_and_a_machine_user_deleted(auth_server, auth_run, admin, api, experiment_ids):
    provider = MlflowUserProvider()
    person = user_props(auth_server, admin, [grant(experiment_ids[0], "EDIT")])
    created = provider.create(person)  # its refresh signed the person in: a worker caches the password
    provider.delete(created.id, created.outs)
    retired_at = time.monotonic()
    roles = api.get(f"{auth_server.url}/api/3.0/mlflow/users/roles/list", params={"username": person["username"]},
                    timeout=10).json()["roles"]
    assert [p for role in roles for p in role["permissions"]] == []  # still a user, with nothing
    signed_in = (person["username"], person["password"])
    assert status_as(auth_server, signed_in, experiment_ids[0]) in (401, 403)  # at once: no rights left
    # A worker that verified the old password may accept it until its cache entry expires; then none does.
    time.sleep(max(0.0, retired_at + auth_config(auth_run).getint("auth_cache_ttl_seconds") + 1 - time.monotonic()))
    assert {status_as(auth_server, signed_in, experiment_ids[0]) for _ in range(8)} == {401}
    machine = user_props(auth_server, admin, [grant(experiment_ids[0], "EDIT")], on_delete="delete")
    created = provider.create(machine)
    provider.delete(created.id, created.outs)
    assert provider.read(created.id, created.outs).id is None


def test_a_role_gives_its_members_access_and_removing_its_grant_revokes_it(auth_server, admin, experiment_ids):
    roles, users = MlflowRoleProvider(), MlflowUserProvider()
    role_props = {**target(auth_server, admin), "name": f"team-{uuid.uuid4().hex[:6]}",
                  "grants": canonical_grants([grant(experiment_ids[1], "READ")])}
    role = roles.create(role_props)
    member = user_props(auth_server, admin, [], roles=[role_props["name"]])
    created = users.create(member)
    sign_in = (member["username"], member["password"])
    assert status_as(auth_server, sign_in, experiment_ids[1]) == 200
    roles.update(role.id, role.outs, {**role_props, "grants": []})
    assert status_as(auth_server, sign_in, experiment_ids[1]) == 403
    assert not roles.diff(role.id, roles.read(role.id, role.outs).outs, {**role_props, "grants": []}).changes
    users.delete(created.id, created.outs)
    roles.delete(role.id, role.outs)
    assert roles.read(role.id, role.outs).id is None


def test_a_role_that_mlflow_does_not_hold_is_named(auth_server, admin):
    with pytest.raises(MlflowApiError, match="role 'no-such-role' does not exist in MLflow; declare it under "
                                             "access.roles"):
        MlflowUserProvider().create(user_props(auth_server, admin, [], roles=["no-such-role"]))


def test_a_grant_on_every_experiment_covers_one_created_later_and_no_more_than_its_level(auth_server, admin, api):
    """`experiments: ["*"]` in `access`: the grant on the experiment wildcard reaches an experiment
    created after it, at its level only."""
    props = user_props(auth_server, admin, [grant("*", "READ")])
    MlflowUserProvider().create(props)
    later = api.post(f"{auth_server.url}/api/2.0/mlflow/experiments/create", timeout=10,
                     json={"name": f"later-{uuid.uuid4().hex[:6]}"}).json()["experiment_id"]
    signed_in = (props["username"], props["password"])
    assert status_as(auth_server, signed_in, later) == 200
    deleted = requests.post(f"{auth_server.url}/api/2.0/mlflow/experiments/delete", json={"experiment_id": later},
                            auth=signed_in, timeout=10)
    assert deleted.status_code == 403
