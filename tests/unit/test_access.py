"""Who signs in as whom, under mocks: the machine users' grants (pure builders), the
people and roles of `access`, their passwords, and what a bad `access` says."""

import pytest

from components.access import CHECK, COLLECTOR, RETENTION, machine_grants, team_grants
from components.collector import RoutedExperiment
from components.config import AccessGrant, ConfigError, has_trace_permissions
from tests.support.program import BASIC_AUTH_MLFLOW, MOCK_PASSWORD, VARIANTS, run_program

ROUTED = [RoutedExperiment(name="default", experiment_id="1", services=(), default=True),
          RoutedExperiment(name="chat", experiment_id="2", services=("chat-api",), default=False),
          RoutedExperiment(name="unrouted", experiment_id="3", services=(), default=False)]
TIERS = [{"resource_type": "assessment", "resource_id": "*", "permission": "MANAGE"},
         {"resource_type": "trace", "resource_id": "*", "permission": "MANAGE"}]


def experiment(experiment_id: str, permission: str) -> dict:
    return {"resource_type": "experiment", "resource_id": experiment_id, "permission": permission}


def test_the_collector_edits_exactly_the_experiments_it_routes_to():
    assert machine_grants(COLLECTOR, ROUTED, {}) == [experiment("1", "EDIT"), experiment("2", "EDIT")]
    assert machine_grants(COLLECTOR, ROUTED[:1], {}) == [experiment("1", "EDIT")]  # a removed route, revoked


def test_the_check_reads_the_routed_experiments_and_may_delete_traces_there():
    assert machine_grants(CHECK, ROUTED, {}) == [*TIERS[:1], experiment("1", "READ"), experiment("2", "READ"),
                                                 TIERS[1]]


def test_retention_reads_only_the_experiments_with_a_limit():
    assert machine_grants(RETENTION, ROUTED, {"chat": 7, "default": None}) == [TIERS[0], experiment("2", "READ"),
                                                                              TIERS[1]]


def test_before_mlflow_3_17_the_check_and_retention_manage_their_experiments_as_it_has_no_trace_tiers():
    assert machine_grants(CHECK, ROUTED, {}, trace_permissions=False) == [experiment("1", "MANAGE"),
                                                                          experiment("2", "MANAGE")]
    assert machine_grants(RETENTION, ROUTED, {"chat": 7}, trace_permissions=False) == [experiment("2", "MANAGE")]
    assert machine_grants(COLLECTOR, ROUTED, {}, trace_permissions=False) == machine_grants(COLLECTOR, ROUTED, {})


@pytest.mark.parametrize(("image", "tiers"), [("ghcr.io/mlflow/mlflow:v3.16.1-full", False),
                                              ("ghcr.io/mlflow/mlflow:v3.17.2-full", True),
                                              ("ghcr.io/mlflow/mlflow:v4.0.0", True),
                                              ("registry.example.com/mlflow:latest", True)])
def test_which_images_grant_on_the_trace_tiers(image, tiers):
    assert has_trace_permissions(image) is tiers


def test_a_persons_grants_go_by_id_the_highest_level_wins_and_star_means_every_experiment():
    grants = (AccessGrant(("chat", "default"), "READ"), AccessGrant(("chat",), "MANAGE"), AccessGrant(("*",), "READ"))
    assert team_grants(grants, {"chat": "2", "default": "1"}) == [
        experiment("*", "READ"), experiment("1", "READ"), experiment("2", "MANAGE")]


@pytest.fixture(scope="module")
def team():
    return run_program("dev", **VARIANTS["team-access"])


def test_each_machine_user_and_person_is_declared_with_its_secret(team):
    users = {u.inputs["username"]: u.inputs for u in team.dynamic("user")}
    machines = sorted(name.rsplit("-", 1)[0] for name in users if name not in ("alice@example.com", "bob"))
    assert machines == ["otel-collector", "trace-check", "trace-retention"]
    assert {name: inputs["on_delete"] for name, inputs in users.items()} == {
        **{name: "delete" for name in users if name not in ("alice@example.com", "bob")},
        "alice@example.com": "retire", "bob": "retire"}
    assert users["alice@example.com"]["roles"] == ["readers"]
    assert users["bob"]["password"] == f"{MOCK_PASSWORD}-brought-bob-mlflow"  # read from the operator's Secret
    generated = team.get("Secret", "mlflow-user-alice-example-com").outputs["stringData"]
    assert generated == {"username": "alice@example.com", "password": users["alice@example.com"]["password"]}
    (role,) = team.dynamic("role")
    assert role.inputs["grants"] == [experiment("*", "READ")]


def test_a_machine_users_secret_waits_for_its_user_and_its_name_follows_the_password(team):
    users = {u.inputs["username"]: u for u in team.dynamic("user")}
    for secret in team.kinds("Secret"):
        username = secret.outputs.get("stringData", {}).get("username", "")
        if username.startswith("otel-collector-"):
            assert users[username].urn in secret.dependencies
    (generation,) = [r for r in team.of_type("random:index/randomId:RandomId") if "otel-collector" in r.name]
    (password,) = [r for r in team.of_type("random:index/randomPassword:RandomPassword")
                   if r.name == "machine-users-otel-collector-password"]
    assert generation.inputs["keepers"] == {"password": password.outputs["result"]}
    assert password.inputs["keepers"] == {"revision": "1"}


def test_without_auth_no_user_is_declared(dev):
    assert not dev.dynamic("user") and not dev.dynamic("role")


@pytest.mark.parametrize("access, key", [
    ({"users": [{"name": "carol", "roles": ["nobody"]}]}, "access.users[0].roles"),
    ({"users": [{"name": "otel-collector-x"}]}, "access.users[0].name"),
    ({"users": [{"name": "admin"}]}, "access.users[0].name"),
    ({"users": [{"name": "a b"}]}, "access.users[0].name"),
    ({"users": [{"name": "Dave"}, {"name": "dave"}]}, "access.users"),
    ({"users": [{"name": "erin", "passwordSecret": "Not_A_Name"}]}, "access.users[0].passwordSecret"),
    ({"roles": [{"name": "r", "grants": [{"experiments": ["nope"], "permission": "READ"}]}]},
     "access.roles[0].grants[0].experiments"),
    ({"roles": [{"name": "r", "grants": [{"experiments": ["*"], "permission": "OWNER"}]}]},
     "access.roles[0].grants[0].permission"),
    ({"roles": [{"name": "r"}, {"name": "r"}]}, "access.roles"),
    ({"teams": []}, "access.teams"),
])
def test_bad_access_names_the_key(access, key):
    with pytest.raises(ConfigError) as error:
        run_program("dev", mlflow=BASIC_AUTH_MLFLOW, access=access)
    assert any(line.startswith(f"{key}:") for line in error.value.problems), error.value.problems


def test_people_without_basic_auth_are_refused():
    with pytest.raises(ConfigError) as error:
        run_program("dev", access={"users": [{"name": "frank"}]})
    assert any(line.startswith("access: people sign in only with mlflow.auth.kind basic") for line in
               error.value.problems)
