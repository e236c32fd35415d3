"""Scaled out on real processes: a stack with two MLflow replicas and two
collectors with persistent queues, run as processes on one PostgreSQL of its
own, each replica behind a round-robin loopback balancer in place of its
Service (tests/support/balancer.py; per connection, as kube-proxy balances).

- Two migration runs racing on an empty database leave one schema, equal to
  what a single run makes (a run that loses the race fails and, as the Job's
  restart does, succeeds when run again).
- OTLP traffic through both collectors is spread over both MLflow processes and
  every accepted span is in the database, once.
- One MLflow process is killed under load: the collectors' retries reach the
  other, and nothing is lost.
- MLflow unreachable, each collector is restarted with spans in its queue: each
  queue directory (the pod's own claim) comes back and nothing is lost.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass

import pytest

from tests.support.balancer import RoundRobinProxy
from tests.support.collector import SETTLE_SECONDS, CollectorProcess, program_with_real_ids
from tests.support.processes import MlflowProcess, free_port, kubelet_for, postgres_for, run_job, wait_until
from tests.support.program import run_program
from tests.support.traffic import SteadySender, span_counts

# Two replicas of each: MLflow's artifacts on a ReadWriteMany volume, the collector a StatefulSet.
SCALED = {"mlflow": {"replicas": 2, "artifacts": {"accessMode": "ReadWriteMany"}, "auth": {"kind": "none"}},
          "collector": {"replicas": 2, "persistentQueue": True}}
EXPERIMENTS = [{"name": "scale-spread", "default": True},
               {"name": "scale-failover", "services": ["failover-app"]},
               {"name": "scale-restart", "services": ["restart-app"]}]
SEND_INTERVAL = 0.1  # per sender: ~40 spans/s
SENDERS = 2
DELIVERY_TIMEOUT = 150  # the exporters retry every 5 s at most; the rest is MLflow storing the backlog
KILLED_ENDPOINT_SECONDS = 5  # a killed pod stays an endpoint until the kubelet reports it


@pytest.fixture(scope="module")
def scaled():
    return run_program("dev", **SCALED)


@pytest.fixture(scope="module")
def scale_postgres(scaled, workdir):
    cluster = postgres_for(scaled, workdir / "scale-pg")  # its own: the migration race needs an empty database
    yield cluster
    cluster.stop()


@dataclass
class Race:
    first_codes: list[int]  # the two racing runs' exit codes
    retry_codes: list[int]  # a failed run's second attempt (the Job's restart)


@pytest.fixture(scope="module")
def migration_race(scaled, scale_postgres, workdir) -> Race:
    """The declared migration Job's pod, twice at once, on an empty `mlflow` database."""
    kubelets = [kubelet_for(scaled, workdir / f"race-{n}", scale_postgres, free_port()) for n in range(2)]
    run_job(kubelets[0], "postgres-init")
    (job,) = [j for j in scaled.kinds("Job") if j.name == "mlflow-migrate"]
    codes: dict[int, int] = {}
    start = threading.Barrier(2)

    def migrate(n: int) -> None:
        start.wait(30)
        codes[n] = kubelets[n].run_pod_to_completion(job, 300).returncode

    threads = [threading.Thread(target=migrate, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(320)
    first = [codes[0], codes[1]]
    retries = [kubelets[n].run_pod_to_completion(job, 300).returncode for n in range(2) if first[n] != 0]
    return Race(first, retries)


@dataclass
class Phase:
    sent: int
    stored: int
    distinct: int
    bytes_to: Counter  # bytes the MLflow balancer forwarded, per MLflow port, during the phase


@dataclass
class ScaledRun:
    ports: list[int]  # the two MLflow processes' ports
    spread: Phase
    failover: Phase
    failover_before_kill: Counter  # bytes per MLflow port from the phase's start to the kill
    killed_exit: int | None
    restart: Phase
    queued_at_restart: list[int]  # batches in each collector's queue when it was stopped
    starts: list[int]  # each collector's starts


def phase_traffic(url: str, service: str) -> list[SteadySender]:
    senders = [SteadySender(url, service, SEND_INTERVAL) for _ in range(SENDERS)]
    for sender in senders:
        sender.start()
    return senders


def delivered(postgres, experiment_id: str, senders: list[SteadySender], balancer: RoundRobinProxy,
              before: Counter) -> Phase:
    """Stop the senders, wait until MLflow holds what they sent, and count."""
    sent = sum(sender.finish() for sender in senders)
    wait_until(lambda: span_counts(postgres, experiment_id)[0] >= sent, DELIVERY_TIMEOUT,
               f"{sent} spans in experiment {experiment_id}")
    time.sleep(SETTLE_SECONDS)  # duplicates, if any, would arrive now
    stored, distinct = span_counts(postgres, experiment_id)
    return Phase(sent, stored, distinct, balancer.bytes_snapshot() - before)


@pytest.fixture(scope="module")
def scaled_run(scaled, scale_postgres, migration_race, collector_binary, workdir) -> ScaledRun:
    ports = [free_port(), free_port()]
    servers = [MlflowProcess(kubelet_for(scaled, workdir / f"scale-mlflow-{n}", scale_postgres, port), scaled,
                             port, workdir / f"scale-mlflow-{n}.log") for n, port in enumerate(ports)]
    endpoints = list(ports)  # the MLflow Service's Ready endpoints
    mlflow_service = RoundRobinProxy(lambda: list(endpoints))
    collectors: list[CollectorProcess] = []
    collector_service = RoundRobinProxy(lambda: [c.ports.http for c in collectors])
    try:
        starting = [threading.Thread(target=server.start) for server in servers]
        for thread in starting:
            thread.start()
        for thread in starting:
            thread.join(330)
        assert all(server.process and server.process.poll() is None for server in servers), "MLflow did not start"
        run = program_with_real_ids(mlflow_service.url, EXPERIMENTS, **SCALED)
        ids = run.outputs["experimentIds"]
        # One process per collector pod, each with its own queue directory (its claim).
        collectors += [CollectorProcess(collector_binary, run, mlflow_service.url,
                                        workdir / f"scale-collector-{n}").start() for n in range(2)]

        before = mlflow_service.bytes_snapshot()
        senders = phase_traffic(collector_service.url, "spread-app")
        time.sleep(15)
        spread = delivered(scale_postgres, ids["scale-spread"], senders, mlflow_service, before)

        before = mlflow_service.bytes_snapshot()
        senders = phase_traffic(collector_service.url, "failover-app")
        time.sleep(8)
        before_kill = mlflow_service.bytes_snapshot() - before
        killed = servers[1].process
        os.killpg(killed.pid, signal.SIGKILL)
        time.sleep(KILLED_ENDPOINT_SECONDS)
        endpoints.remove(ports[1])
        time.sleep(10)
        failover = delivered(scale_postgres, ids["scale-failover"], senders, mlflow_service, before)

        before = mlflow_service.bytes_snapshot()
        senders = phase_traffic(collector_service.url, "restart-app")
        endpoints.clear()  # MLflow unreachable: the exporters queue and retry
        time.sleep(8)
        queued = []
        for collector in collectors:  # one pod at a time, as the StatefulSet rolls them
            queued.append(collector.queued_batches())
            collector.restart()
        time.sleep(3)
        endpoints.append(ports[0])
        time.sleep(5)
        restart = delivered(scale_postgres, ids["scale-restart"], senders, mlflow_service, before)
        starts = [collector.log_text().count("Everything is ready") for collector in collectors]
        return ScaledRun(ports, spread, failover, before_kill, killed.wait(10), restart, queued, starts)
    finally:
        for collector in collectors:
            collector.stop()
        for server in servers:
            server.stop()
        mlflow_service.close()
        collector_service.close()


def test_the_declared_stack_runs_two_replicas_of_each(scaled):
    assert scaled.get("Deployment", "mlflow").outputs["spec"]["replicas"] == 2
    collector = scaled.get("StatefulSet", "otel-collector").outputs["spec"]
    assert collector["replicas"] == 2 and collector["volumeClaimTemplates"][0]["metadata"]["name"] == "queue"


def test_two_racing_migrations_leave_the_schema_one_migration_makes(migration_race, scale_postgres, postgres,
                                                                    mlflow_server):
    assert 0 in migration_race.first_codes, migration_race  # one run wins
    assert all(code == 0 for code in migration_race.retry_codes), migration_race  # a loser's restart succeeds
    # The session's database, migrated by one run alone, is the reference.
    assert scale_postgres.schema("mlflow") == postgres.schema("mlflow")
    version = "SELECT version_num FROM alembic_version"
    assert scale_postgres.psql(version, database="mlflow") == postgres.psql(version, database="mlflow")
    assert "\n" not in scale_postgres.psql(version, database="mlflow")  # one version row


def test_traffic_is_spread_over_both_mlflow_processes_and_nothing_is_lost(scaled_run):
    spread = scaled_run.spread
    assert spread.sent > 0 and spread.stored == spread.distinct == spread.sent, spread
    assert all(spread.bytes_to[port] > 0 for port in scaled_run.ports), spread.bytes_to


def test_a_killed_mlflow_process_loses_nothing(scaled_run):
    failover = scaled_run.failover
    killed, survivor = scaled_run.ports[1], scaled_run.ports[0]
    assert scaled_run.killed_exit == -signal.SIGKILL
    assert scaled_run.failover_before_kill[killed] > 0  # it was taking traffic when it was killed
    assert (failover.bytes_to - scaled_run.failover_before_kill)[survivor] > 0  # and then the other one
    assert failover.stored == failover.distinct == failover.sent, failover


def test_each_collector_keeps_its_queue_across_a_restart(scaled_run):
    restart = scaled_run.restart
    assert all(queued > 0 for queued in scaled_run.queued_at_restart), scaled_run.queued_at_restart
    assert scaled_run.starts == [2, 2]
    assert restart.stored == restart.distinct == restart.sent, restart
