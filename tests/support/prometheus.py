"""A real Prometheus and promtool, built from the Go module github.com/prometheus/prometheus at
prometheus/version.txt by prometheus/build.sh (cached under the git-ignored .cache/prometheus).

`PrometheusProcess` scrapes static loopback targets, each with the `namespace` label the
Prometheus Operator (or a pod-annotation scrape config) gives a pod's series, and evaluates a
rule file the program generated; the tests read its HTTP API.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import requests
import yaml

from tests.support.processes import free_port, run_build, stop, wait_until
from tests.support.program import PROJECT_DIR

BUILD_SCRIPT = PROJECT_DIR / "prometheus" / "build.sh"
BUILD_TIMEOUT = 2400  # cold, from empty Go caches, on 2 shared cores
START_TIMEOUT = 60


def build_prometheus() -> Path:
    """The directory holding the built `prometheus` and `promtool`; raises with the build's output."""
    directory = Path(run_build(BUILD_SCRIPT, BUILD_TIMEOUT, "Go and the Go module proxy"))
    for binary in ("prometheus", "promtool"):
        if not os.access(directory / binary, os.X_OK):
            raise RuntimeError(f"prometheus/build.sh printed {directory}, which holds no executable {binary}")
    return directory


def promtool(binaries: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(binaries / "promtool"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


class PrometheusProcess:
    """`prometheus` on 127.0.0.1 with a fresh TSDB, scraping and evaluating every `interval`."""

    def __init__(self, binaries: Path, directory: Path, *, targets: dict[str, str], namespace: str,
                 rules: dict, scrape_protocols: list[str], interval: str = "1s"):
        """`targets`: job -> host:port of its /metrics; `scrape_protocols`: what the scrapes negotiate."""
        self.binaries, self.directory = binaries, directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = directory / "prometheus.log"
        rules_file = directory / "rules.yaml"
        rules_file.write_text(yaml.safe_dump(rules, sort_keys=False))
        config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
            "rule_files": [str(rules_file)],
            "scrape_configs": [{"job_name": job, "scrape_protocols": scrape_protocols,
                                "static_configs": [{"targets": [target], "labels": {"namespace": namespace}}]}
                               for job, target in targets.items()],
        }
        self.config_file = directory / "prometheus.yml"
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        checked = promtool(binaries, "check", "config", str(self.config_file), cwd=directory)
        if checked.returncode != 0:
            raise RuntimeError(f"promtool check config: {checked.stdout}{checked.stderr}")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PrometheusProcess:
        argv = [str(self.binaries / "prometheus"), f"--config.file={self.config_file}",
                f"--storage.tsdb.path={self.directory / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"]
        self.process = subprocess.Popen(argv, cwd=self.directory, stdout=self.log.open("ab"),
                                        stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: requests.get(f"{self.url}/-/ready", timeout=2).status_code == 200,
                   START_TIMEOUT, "prometheus", self.process, self.log)
        return self

    def stop(self) -> None:
        if self.process:
            stop(self.process)

    def query(self, expr: str) -> list[dict]:
        """The instant vector of `expr` now (raises on a query error)."""
        answer = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10).json()
        if answer["status"] != "success":
            raise RuntimeError(f"query {expr!r}: {answer}")
        return answer["data"]["result"]

    def alerts(self) -> list[dict]:
        """Every pending or firing alert: labels (alertname, ...), state, annotations."""
        return requests.get(f"{self.url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]

    def states(self, alert: str) -> set[str]:
        return {a["state"] for a in self.alerts() if a["labels"]["alertname"] == alert}

    def await_state(self, alert: str, state: str, timeout: float) -> float:
        """Seconds until `alert` is in `state` ("pending", "firing", or "inactive": neither)."""
        began = time.monotonic()

        def reached() -> bool:
            states = self.states(alert)
            return not states if state == "inactive" else state in states

        try:
            wait_until(reached, timeout, f"alert {alert} {state}", self.process, self.log)
        except TimeoutError:
            rule = next(r for group in requests.get(f"{self.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
                        for r in group["rules"] if r.get("name") == alert)
            raise TimeoutError(f"alert {alert} not {state} within {timeout:.0f} s; the rule: {rule}; "
                               f"alerts now: {self.alerts()}") from None
        return time.monotonic() - began

    def watch(self, alerts: tuple[str, ...], until: str, timeout: float) -> dict[str, dict[str, float]]:
        """Wait until every alert is `until` ("firing", or "inactive"); for each, when (seconds from
        now) it was first pending and first firing, read from the ALERTS series the rule evaluation
        writes (a poll of the alerts could miss a pending state shorter than the poll under load),
        and when it was first seen inactive."""
        began, began_at = time.monotonic(), time.time()
        inactive: dict[str, float] = {}

        def all_there() -> bool:
            reached = True
            for alert in alerts:
                states = self.states(alert)
                if not states:
                    inactive.setdefault(alert, round(time.monotonic() - began, 1))
                reached = reached and (not states if until == "inactive" else until in states)
            return reached

        try:
            wait_until(all_there, timeout, f"alerts {until}", self.process, self.log)
        except TimeoutError:
            raise TimeoutError(f"not all of {alerts} {until} within {timeout:.0f} s: alerts now: "
                               f"{self.alerts()}") from None
        window = int(time.monotonic() - began) + 2
        seen: dict[str, dict[str, float]] = {alert: {} for alert in alerts}
        for series in self.query(f'ALERTS{{alertname=~"{"|".join(alerts)}"}}[{window}s]'):
            times = [float(at) - began_at for at, _ in series["values"] if float(at) >= began_at]
            labels = series["metric"]
            if times:
                state = seen[labels["alertname"]]
                state[labels["alertstate"]] = round(min(times + [state.get(labels["alertstate"], times[0])]), 1)
        for alert, at in inactive.items():
            seen[alert]["inactive"] = at
        return seen

    def target_health(self) -> dict[str, str]:
        """job -> up / down, as the last scrape found it."""
        targets = requests.get(f"{self.url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        return {t["labels"]["job"]: t["health"] for t in targets}
