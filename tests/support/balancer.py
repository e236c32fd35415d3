"""A loopback TCP load balancer that works like kube-proxy in front of a Service:
each new connection goes to the next endpoint, round-robin, of those listed at
that moment (HTTP keep-alive connections stay on their endpoint, as in a
cluster). An endpoint that is listed but refuses the connection (a killed pod
before its readiness probe fails) resets the client's connection; with none
listed the connection waits, bounded, for one to appear."""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable

from tests.support.processes import forward_bytes

POLL_SECONDS = 0.5


class RoundRobinProxy:
    """`endpoints()` lists the loopback ports connections may go to; `port` is where clients connect."""

    def __init__(self, endpoints: Callable[[], list[int]], wait_seconds: float = 0, port: int = 0):
        self.endpoints, self.wait_seconds = endpoints, wait_seconds
        self.listener = socket.create_server(("127.0.0.1", port))
        self.listener.settimeout(POLL_SECONDS)
        self.port = self.listener.getsockname()[1]
        self.connections: Counter[int] = Counter()  # forwarded connections, per endpoint port
        self.refused: Counter[int] = Counter()  # connections a listed endpoint refused
        self.bytes_sent: Counter[int] = Counter()  # bytes from clients, per endpoint port
        self._turn = itertools.count()
        self._lock = threading.Lock()
        self.stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._forward, args=(client,), daemon=True).start()

    def _next_endpoint(self) -> int | None:
        deadline = time.monotonic() + self.wait_seconds
        while not self.stopped.is_set():
            listed = self.endpoints()
            if listed:
                with self._lock:
                    return listed[next(self._turn) % len(listed)]
            if time.monotonic() >= deadline:
                return None
            time.sleep(POLL_SECONDS)
        return None

    def _forward(self, client: socket.socket) -> None:
        port = self._next_endpoint()
        try:
            upstream = socket.create_connection(("127.0.0.1", port), timeout=10) if port else None
        except OSError:
            upstream = None
            with self._lock:
                self.refused[port] += 1
        if upstream is None:
            client.close()
            return
        with self._lock:
            self.connections[port] += 1
        upstream.settimeout(None)
        threading.Thread(target=forward_bytes, args=(upstream, client), daemon=True).start()
        forward_bytes(client, upstream, lambda size: self._count(port, size))
        client.close()
        upstream.close()

    def _count(self, port: int, size: int) -> None:
        with self._lock:
            self.bytes_sent[port] += size

    def bytes_snapshot(self) -> Counter[int]:
        """A copy of `bytes_sent`, taken while no connection adds to it."""
        with self._lock:
            return self.bytes_sent.copy()

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()
