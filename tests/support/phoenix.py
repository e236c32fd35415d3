"""A real Arize Phoenix (`arize-phoenix` from PyPI, the version below) as a second trace
backend: started headless on loopback with its own SQLite working directory, read back
through its REST API (spans per project, the stored token counts through GraphQL).

Phoenix answers OTLP/HTTP with 200 before it stores the spans (a background insert), so
readers poll. One Phoenix keeps a trace in one project: the first span to arrive decides it.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.support.images import python_venv
from tests.support.processes import free_port, stop, wait_until

# The Phoenix the two-backend example (docs/configuration.md) deploys (arizephoenix/phoenix:version-<this>).
# It turns OpenTelemetry GenAI attributes into OpenInference ones on intake since 15.10.0.
PHOENIX_VERSION = "20.26.1"
START_TIMEOUT = 180  # 15-25 s on this machine (migrations, then /readyz); generous for a loaded CI box


@dataclass(frozen=True)
class PhoenixSpan:
    trace_id: str  # hex
    span_id: str  # hex
    parent_id: str  # hex, "" for a root
    name: str
    span_kind: str
    attributes: dict


class PhoenixProcess:
    """`phoenix serve` on 127.0.0.1 (HTTP: UI, REST, OTLP/HTTP at /v1/traces). Its gRPC port binds
    every interface (Phoenix ignores PHOENIX_HOST there): a free port, never 4317."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.venv = python_venv(f"phoenix-{PHOENIX_VERSION}", f"arize-phoenix=={PHOENIX_VERSION}")
        self.port, self.grpc_port = free_port(), free_port()
        self.log = directory / "phoenix.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PhoenixProcess:
        env = {
            "PATH": f"{self.venv / 'bin'}:/usr/bin:/bin", "HOME": str(self.directory), "LANG": "C.UTF-8",
            "PHOENIX_HOST": "127.0.0.1", "PHOENIX_PORT": str(self.port), "PHOENIX_GRPC_PORT": str(self.grpc_port),
            "PHOENIX_WORKING_DIR": str(self.directory / "work"),
            # offline: no telemetry pixels, web fonts or sandbox download
            "PHOENIX_TELEMETRY_ENABLED": "false", "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
        }
        self.process = subprocess.Popen([str(self.venv / "bin" / "phoenix"), "serve"], env=env, cwd=self.directory,
                                        stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: requests.get(f"{self.url}/readyz", timeout=2).status_code == 200, START_TIMEOUT,
                   "Phoenix", self.process, self.log)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process, timeout=30)

    def spans(self, project: str) -> list[PhoenixSpan]:
        """Every span the project holds (none for a project Phoenix does not have yet)."""
        found: list[PhoenixSpan] = []
        cursor = None
        while True:
            params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
            response = requests.get(f"{self.url}/v1/projects/{project}/spans", params=params, timeout=10)
            if response.status_code == 404:
                return found
            response.raise_for_status()
            body = response.json()
            found += [PhoenixSpan(s["context"]["trace_id"], s["context"]["span_id"], s.get("parent_id") or "",
                                  s["name"], s.get("span_kind", ""), s.get("attributes") or {})
                      for s in body["data"]]
            cursor = body.get("next_cursor")
            if not cursor:
                return found

    def stored_token_counts(self, project: str) -> dict[str, tuple[int, int, int]]:
        """span ID (hex) -> (prompt, completion, total) tokens as Phoenix stored them for its UI and totals
        (it counts only spans it classes as LLM)."""
        query = """{ projects { edges { node { name
            spans(first: 1000) { edges { node { spanId tokenCountPrompt tokenCountCompletion tokenCountTotal } } }
        } } } }"""
        response = requests.post(f"{self.url}/graphql", json={"query": query}, timeout=10)
        response.raise_for_status()
        body = response.json()
        assert not body.get("errors"), body["errors"]
        counts = {}
        for project_edge in body["data"]["projects"]["edges"]:
            if project_edge["node"]["name"] != project:
                continue
            for edge in project_edge["node"]["spans"]["edges"]:
                node = edge["node"]
                counts[node["spanId"]] = (node["tokenCountPrompt"] or 0, node["tokenCountCompletion"] or 0,
                                          node["tokenCountTotal"] or 0)
        return counts
