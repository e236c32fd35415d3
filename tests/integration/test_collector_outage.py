"""An MLflow outage under steady traffic, through the real collector: the
exporters' retrying queue delivers every span once MLflow is back, counted
exactly in the database. With `persistentQueue`, the collector is also restarted
during the outage and still loses nothing.

The outage is taken on an MLflow of its own (`own_mlflow`: the same declared spec, against
the same PostgreSQL, on its own port), so the session's shared server stays up."""

import time
from dataclasses import dataclass

import pytest
import requests

from tests.support.collector import SETTLE_SECONDS, CollectorProcess, program_with_real_ids
from tests.support.processes import wait_until
from tests.support.traffic import SteadySender, span_counts

OUTAGE_SECONDS = 60
SEND_INTERVAL = 0.25  # one 4-span chat trace per interval and collector
# Traffic runs 5 s before, through and 5 s after the outage; allow for slow sends.
MIN_SPANS = 4 * int(0.75 * (OUTAGE_SECONDS + 10) / SEND_INTERVAL)
DELIVERY_TIMEOUT = 150  # the exporters retry every 5 s at most; the rest is MLflow storing the backlog


@dataclass
class Outcome:
    sent: int  # spans the collector accepted
    stored: int  # spans in MLflow's database
    distinct: int  # distinct (trace, span) ids among them
    retried_requests: int  # sends the collector refused (while restarting)
    export_failures: int  # exporter errors logged while MLflow was down
    starts: int  # collector starts
    queued_at_restart: int  # batches on disk when the collector was stopped


@pytest.fixture(scope="module")
def outage(own_mlflow, postgres, collector_binary, workdir) -> dict[str, Outcome]:
    """Two collectors from the program's config, one with the in-memory queue and
    one with persistentQueue, under steady traffic through one MLflow outage; the
    persistent one is restarted in the middle of it."""
    collectors, senders, experiment_ids = {}, {}, {}
    for queue in ("memory", "disk"):
        run = program_with_real_ids(own_mlflow.url, [{"name": f"outage-{queue}", "default": True}],
                                    collector={"persistentQueue": queue == "disk"})
        experiment_ids[queue] = run.outputs["experimentIds"][f"outage-{queue}"]
        collectors[queue] = CollectorProcess(collector_binary, run, own_mlflow.url,
                                             workdir / f"collector-outage-{queue}").start()
    assert "file_storage" in collectors["disk"].config["extensions"]
    assert "file_storage" not in collectors["memory"].config["extensions"]
    try:
        for queue, collector in collectors.items():
            senders[queue] = SteadySender(collector.http_url, f"steady-{queue}", SEND_INTERVAL)
            senders[queue].start()
        time.sleep(5)
        own_mlflow.stop()
        down_at = time.monotonic()
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{own_mlflow.url}/health", timeout=2)
        time.sleep(OUTAGE_SECONDS / 3)
        queued_at_restart = collectors["disk"].queued_batches()
        collectors["disk"].restart()  # a rollout while the queue holds undelivered spans
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))
        own_mlflow.start()
        time.sleep(5)
        sent = {queue: sender.finish() for queue, sender in senders.items()}

        def delivered():
            return all(span_counts(postgres, experiment_ids[queue])[0] >= sent[queue] for queue in collectors)

        wait_until(delivered, DELIVERY_TIMEOUT, "every span in MLflow after the outage")
        time.sleep(SETTLE_SECONDS)  # duplicates, if any, would arrive now
        outcome = {}
        for queue, collector in collectors.items():
            stored, distinct = span_counts(postgres, experiment_ids[queue])
            log = collector.log_text()
            outcome[queue] = Outcome(sent[queue], stored, distinct, senders[queue].retried_requests,
                                     log.count("Exporting failed"), log.count("Everything is ready"),
                                     queued_at_restart if queue == "disk" else 0)
        return outcome
    finally:
        for sender in senders.values():
            sender.halt()
        for collector in collectors.values():
            collector.stop()


def test_an_outage_loses_nothing_with_the_in_memory_queue(outage):
    memory = outage["memory"]
    assert memory.export_failures > 0  # the exporter did see MLflow down and retried
    assert memory.starts == 1 and memory.sent >= MIN_SPANS, memory
    assert memory.stored == memory.distinct == memory.sent, memory


def test_a_collector_restart_during_the_outage_loses_nothing_with_the_persistent_queue(outage):
    disk = outage["disk"]
    assert disk.export_failures > 0
    assert disk.starts == 2 and disk.sent >= MIN_SPANS, disk
    assert disk.queued_at_restart > 0, disk  # the restart had undelivered spans to keep
    assert disk.stored == disk.distinct == disk.sent, disk
