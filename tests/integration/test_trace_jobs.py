"""The post-deploy check and the retention job, run as their pods declare them
(`trace_jobs.py` from the ConfigMap, env and credentials from their machine users'
Secrets, read-only root) against the real collector and a real basic-auth MLflow on
PostgreSQL, where each run's MLflow users exist with exactly their declared grants.

The check must pass on a good stack, leave nothing behind, and fail with the line
that names the broken hop when each hop is broken in turn."""

from __future__ import annotations

import json
import time
import uuid
from types import SimpleNamespace

import pytest
import requests

from components.collector import GRPC_PORT, HTTP_PORT
from tests.support.access import apply_declared_access
from tests.support.collector import CollectorProcess, RealIdMocks, configmap_config
from tests.support.k8s import container, env_of
from tests.support.otlp import aged_traces
from tests.support.processes import kubelet_for
from tests.support.program import BASIC_AUTH_MLFLOW, ProgramRun, run_program

TIMEOUT = 30  # verify.timeoutSeconds of the failing runs: the smallest the config accepts
CHECK_JOB = "trace-check"
DAY = 86_400


@pytest.fixture(scope="module")
def api(auth_server, admin) -> requests.Session:
    session = requests.Session()
    session.auth = admin
    return session


def create_experiment(api, auth_server, name: str) -> str:
    response = api.post(f"{auth_server.url}/api/2.0/mlflow/experiments/create", json={"name": name}, timeout=10)
    response.raise_for_status()
    return response.json()["experiment_id"]


@pytest.fixture(scope="module")
def experiments(api, auth_server) -> dict[str, str]:
    """name -> ID of the stack's experiments in the real MLflow."""
    suffix = uuid.uuid4().hex[:6]
    return {name: create_experiment(api, auth_server, name) for name in (f"default-{suffix}", f"chat-{suffix}")}


def stack(experiments: dict[str, str], ids: dict[str, str] | None = None, **overrides) -> ProgramRun:
    """The basic-auth stack routing `chat-api` to the chat experiment; `ids` replaces the IDs
    the experiments resolve to (a stale one, say)."""
    default, chat = experiments
    return run_program("dev", mocks=RealIdMocks({**experiments, **(ids or {})}), mlflow=BASIC_AUTH_MLFLOW,
                       experiments=[{"name": default, "default": True}, {"name": chat, "services": ["chat-api"]}],
                       **overrides)


@pytest.fixture(scope="module")
def good(experiments) -> ProgramRun:
    return stack(experiments, verify={"timeoutSeconds": TIMEOUT})


@pytest.fixture(autouse=True)
def good_users(good, auth_server, admin):
    """The good stack's users and grants before each test (a test may apply a broken stack's)."""
    apply_declared_access(good, auth_server.url, admin)


@pytest.fixture(scope="module")
def collector(good, auth_server, collector_binary, postgres, workdir):
    container = good.get("Deployment", "otel-collector").outputs["spec"]["template"]["spec"]["containers"][0]
    env = kubelet_for(good, workdir / "jobs", postgres, auth_server.port).env(container, {})
    process = CollectorProcess(collector_binary, good, auth_server.url, workdir / "jobs-collector",
                               env=env).start()
    yield process
    process.stop()


def run_check(run: ProgramRun, auth_server, collector, postgres, workdir, **kubelet_options) -> tuple[int, str]:
    """The check Job's pod, signed in as the run's check user, with the Services' addresses mapped
    to the processes; (exit code, output). The test has applied the run's users and grants (the good
    stack's: `good_users`); another run's may carry other user names, as the mocks number each
    run's random IDs in the order they resolve."""
    rewrites = {f"mlflow.mlflow.svc:{5000}": f"127.0.0.1:{auth_server.port}",
                f"otel-collector.mlflow.svc:{HTTP_PORT}": f"127.0.0.1:{collector.ports.http}",
                f"otel-collector.mlflow.svc:{GRPC_PORT}": f"127.0.0.1:{collector.ports.grpc}"}
    kubelet = kubelet_for(run, workdir / "check", postgres, auth_server.port, rewrites=rewrites, **kubelet_options)
    (job,) = [j for j in run.kinds("Job") if j.name == CHECK_JOB]
    done = kubelet.run_pod_to_completion(job, timeout=TIMEOUT + 60)
    return done.returncode, (done.stdout + done.stderr).strip()


def run_check_on_drifted_collector(checked: ProgramRun, running: ProgramRun, auth_server, collector, postgres,
                                   workdir, restore: ProgramRun | None = None) -> tuple[int, str]:
    """The check of `checked` while the collector runs the config of `running` (a hand-edited
    ConfigMap, a pod left on an old config); the collector is put back on the config of `restore`
    (by default `checked`) afterwards."""
    collector.configure(configmap_config(running), auth_server.url)
    collector.restart()
    try:
        return run_check(checked, auth_server, collector, postgres, workdir)
    finally:
        collector.configure(configmap_config(restore or checked), auth_server.url)
        collector.restart()


def trace_count(api, auth_server, experiment_id: str) -> int:
    found, token = 0, None
    while True:
        body = {"locations": [{"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment_id}}],
                "max_results": 500, **({"page_token": token} if token else {})}
        page = api.post(f"{auth_server.url}/api/3.0/mlflow/traces/search", json=body, timeout=30).json()
        found += len(page.get("traces", []))
        token = page.get("next_page_token")
        if not token:
            return found


def only_line(output: str) -> str:
    """A failing check prints exactly one line: the termination message `pulumi up` shows."""
    lines = output.splitlines()
    assert len(lines) == 1, output
    return lines[0]


def test_a_good_stack_passes_and_the_check_leaves_nothing_behind(good, auth_server, collector, api, experiments,
                                                               postgres, workdir):
    before = {name: trace_count(api, auth_server, i) for name, i in experiments.items()}
    code, output = run_check(good, auth_server, collector, postgres, workdir)
    assert code == 0, output
    assert output.startswith("ok: traces flow through the collector to MLflow"), output
    for name, experiment_id in experiments.items():
        assert f"-> {name} ({experiment_id})" in output
    assert {name: trace_count(api, auth_server, i) for name, i in experiments.items()} == before


def machine_secret(run: ProgramRun, machine: str):
    (secret,) = [s for s in run.kinds("Secret") if s.outputs["stringData"].get("username", "").startswith(machine)]
    return secret


def test_wrong_check_credentials_are_named_as_a_refused_sign_in(good, auth_server, collector, postgres, workdir):
    secret = machine_secret(good, "trace-check-")
    wrong = {**secret.outputs["stringData"], "password": "not-the-check-password"}
    code, output = run_check(good, auth_server, collector, postgres, workdir,
                             user_secrets={secret.k8s_name: wrong})
    assert code == 1
    assert only_line(output).startswith("verify failed: sign-in refused: MLflow answers HTTP 401 to the check's "
                                        f"own user (Secret {secret.k8s_name})"), output


def test_a_revoked_read_grant_of_the_check_is_named(good, experiments, auth_server, collector, api, postgres,
                                                    workdir):
    username = machine_secret(good, "trace-check-").outputs["stringData"]["username"]
    default, default_id = next(iter(experiments.items()))
    api.post(f"{auth_server.url}/api/3.0/mlflow/users/permissions/revoke", timeout=10, json={
        "username": username, "resource_type": "experiment", "resource_id": default_id}).raise_for_status()
    code, output = run_check(good, auth_server, collector, postgres, workdir)
    assert code == 1
    assert only_line(output).startswith(f"verify failed: permission refused: the check's user may not read "
                                        f"experiment '{default}' (ID {default_id}, HTTP 403)"), output


def test_a_revoked_edit_grant_of_the_collector_times_out_naming_the_collectors_log(
        good, experiments, auth_server, collector, api, postgres, workdir):
    username = machine_secret(good, "otel-collector-").outputs["stringData"]["username"]
    chat_id = list(experiments.values())[1]
    api.post(f"{auth_server.url}/api/3.0/mlflow/users/permissions/revoke", timeout=10, json={
        "username": username, "resource_type": "experiment", "resource_id": chat_id}).raise_for_status()
    code, output = run_check(good, auth_server, collector, postgres, workdir)
    assert code == 1
    line = only_line(output)
    assert line.startswith("verify failed: timeout:") and "403, its EDIT grant" in line, line
    assert "403" in collector.log_text()


def test_a_stale_experiment_id_is_named_with_its_id(experiments, auth_server, admin, collector, postgres, workdir):
    default = next(iter(experiments))
    stale = stack(experiments, ids={default: "987654"}, verify={"timeoutSeconds": TIMEOUT})
    apply_declared_access(stale, auth_server.url, admin)  # the check's READ follows the stale ID, as in the stack
    code, output = run_check(stale, auth_server, collector, postgres, workdir)
    assert code == 1
    line = only_line(output)
    assert line.startswith(f"verify failed: export refused: the collector exports experiment '{default}' to ID "
                           "987654, which MLflow does not have (HTTP 404)"), line


def test_a_noise_rule_missing_from_the_running_collector_is_named_and_the_noise_removed(
        good, experiments, auth_server, collector, api, postgres, workdir):
    """The collector runs a config without the rule the stack declares (drift, an old pod): the
    probe request is stored, the check says where, and deletes it with its own traces."""
    default_id = next(iter(experiments.values()))
    before = trace_count(api, auth_server, default_id)
    without_rules = stack(experiments, collector={"noise": []})
    code, output = run_check_on_drifted_collector(good, without_rules, auth_server, collector, postgres, workdir)
    assert code == 1
    assert only_line(output).startswith("verify failed: noise stored: the probe request 'GET /v1/models' was "
                                        f"stored in experiment {default_id}"), output
    assert trace_count(api, auth_server, default_id) == before


def test_without_noise_rules_the_check_sends_a_kubelet_probe_that_the_collector_drops(
        good, experiments, auth_server, admin, collector, postgres, workdir):
    """With `collector.noise: []` the probe request is a kubelet probe; the filter the program
    generates drops kubelet probes whatever the rules, so the check passes on that config."""
    without_rules = stack(experiments, collector={"noise": []}, verify={"timeoutSeconds": TIMEOUT})
    apply_declared_access(without_rules, auth_server.url, admin)  # its check signs in as its own user
    (job,) = [j for j in without_rules.kinds("Job") if j.name == CHECK_JOB]
    plan = json.loads(env_of(container(job, "verify"))["TRACE_JOB_PLAN"]["value"])
    assert plan["noise"]["attributes"]["user_agent.original"].startswith("kube-probe/"), plan["noise"]
    code, output = run_check_on_drifted_collector(without_rules, without_rules, auth_server, collector, postgres,
                                                  workdir, restore=good)
    assert code == 0, output


def test_traces_routed_to_another_experiment_are_named(good, experiments, auth_server, collector, postgres,
                                                       workdir):
    default, chat = experiments
    swapped = run_program("dev", mocks=RealIdMocks(experiments), mlflow=BASIC_AUTH_MLFLOW,
                          experiments=[{"name": default, "default": True, "services": ["chat-api"]},
                                       {"name": chat, "services": ["other"]}])
    code, output = run_check_on_drifted_collector(good, swapped, auth_server, collector, postgres, workdir)
    assert code == 1
    assert only_line(output).startswith(
        f"verify failed: trace in the wrong experiment: the trace of experiment '{chat}' (service 'chat-api') is "
        f"stored in experiment {experiments[default]} ({default})"), output


@pytest.mark.parametrize(("down", "line"), [
    ("collector", "verify failed: collector unreachable: POST http://127.0.0.1:"),
    ("auth_server", "verify failed: MLflow unreachable: GET http://127.0.0.1:"),
])
def test_a_stopped_server_is_named(down, line, good, auth_server, collector, postgres, workdir):
    process = {"collector": collector, "auth_server": auth_server}[down]
    process.stop()
    try:
        code, output = run_check(good, auth_server, collector, postgres, workdir)
    finally:
        process.start()
    assert code == 1
    assert only_line(output).startswith(line), output


# --- retention -----------------------------------------------------------------------------------


def ingest(auth_server, admin, experiment_id: str, count: int, age_seconds: float, batch: int = 1000) -> None:
    """`count` single-span traces that started `age_seconds` ago, straight into MLflow."""
    for start in range(0, count, batch):
        request = aged_traces("chat-api", min(batch, count - start), age_seconds)
        requests.post(f"{auth_server.url}/v1/traces", data=request.SerializeToString(), auth=admin, timeout=120,
                      headers={"Content-Type": "application/x-protobuf",
                               "x-mlflow-experiment-id": experiment_id}).raise_for_status()


def run_retention(run: ProgramRun, auth_server, admin, postgres, workdir) -> tuple[int, str, float]:
    """The CronJob's pod, once, signed in as the run's retention user; (exit code, output, seconds)."""
    apply_declared_access(run, auth_server.url, admin)
    kubelet = kubelet_for(run, workdir / "retention", postgres, auth_server.port,
                          rewrites={"mlflow.mlflow.svc:5000": f"127.0.0.1:{auth_server.port}"})
    cronjob = run.get("CronJob", "trace-retention")
    job_spec = cronjob.outputs["spec"]["jobTemplate"]["spec"]
    pod_owner = SimpleNamespace(name="trace-retention", outputs={"spec": job_spec})
    began = time.monotonic()
    done = kubelet.run_pod_to_completion(pod_owner, timeout=900)
    return done.returncode, (done.stdout + done.stderr).strip(), time.monotonic() - began


@pytest.fixture(scope="module")
def retention_stack(api, auth_server, admin) -> tuple[ProgramRun, dict[str, str]]:
    """`limited` keeps 7 days, `kept` sets no limit, `retired` has one but is soft-deleted;
    each holds traces 30 days old and 1 day old."""
    suffix = uuid.uuid4().hex[:6]
    ids = {role: create_experiment(api, auth_server, f"{role}-{suffix}") for role in ("limited", "kept", "retired")}
    for experiment_id in ids.values():
        ingest(auth_server, admin, experiment_id, 120, 30 * DAY)
        ingest(auth_server, admin, experiment_id, 40, 1 * DAY)
    experiments = [{"name": f"limited-{suffix}", "default": True, "retentionDays": 7},
                   {"name": f"kept-{suffix}", "services": ["kept"]},
                   {"name": f"retired-{suffix}", "services": ["retired"], "retentionDays": 7}]
    run = run_program("dev", mocks=RealIdMocks({f"{role}-{suffix}": i for role, i in ids.items()}),
                      mlflow=BASIC_AUTH_MLFLOW, experiments=experiments, retention={"batchSize": 50})
    api.post(f"{auth_server.url}/api/2.0/mlflow/experiments/delete", json={"experiment_id": ids["retired"]},
             timeout=10).raise_for_status()
    return run, ids


def test_retention_deletes_old_traces_keeps_recent_ones_and_leaves_other_experiments_alone(
        retention_stack, api, auth_server, admin, postgres, workdir):
    run, ids = retention_stack
    code, output, _ = run_retention(run, auth_server, admin, postgres, workdir)
    assert code == 0, output
    assert trace_count(api, auth_server, ids["limited"]) == 40  # 120 old ones gone in batches of 50
    assert trace_count(api, auth_server, ids["kept"]) == 160  # no limit: everything kept
    assert trace_count(api, auth_server, ids["retired"]) == 160  # soft-deleted: left alone
    assert f"({ids['limited']}): deleted 120 traces older than 7 days" in output
    assert f"({ids['retired']}): deleted; left alone" in output
    code, output, _ = run_retention(run, auth_server, admin, postgres, workdir)
    assert code == 0 and f"({ids['limited']}): deleted 0 traces" in output  # idempotent
    assert trace_count(api, auth_server, ids["limited"]) == 40


def test_retention_over_ten_thousand_traces_finishes_in_bounded_time(api, auth_server, admin, postgres, workdir):
    name = f"bulk-{uuid.uuid4().hex[:6]}"
    experiment_id = create_experiment(api, auth_server, name)
    ingest(auth_server, admin, experiment_id, 10_000, 10 * DAY)
    run = run_program("dev", mocks=RealIdMocks({name: experiment_id}), mlflow=BASIC_AUTH_MLFLOW,
                      experiments=[{"name": name, "default": True, "retentionDays": 1}])
    code, output, seconds = run_retention(run, auth_server, admin, postgres, workdir)
    assert code == 0, output
    assert "deleted 10000 traces older than 1 days" in output
    assert trace_count(api, auth_server, experiment_id) == 0
    print(f"\nretention: 10,000 traces deleted in {seconds:.1f} s (batches of 500, the default)")
    assert seconds < 600
