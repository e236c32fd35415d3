"""MLflow's REST API as `pulumi up` calls it, shared by the dynamic providers
(experiments, users, roles).

The providers are pickled into the state and run in the engine's provider
host, so this module imports nothing with side effects and `requests` only
inside calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from pulumi.runtime.rpc import UNKNOWN  # a value not known until apply (preview passes it to check/diff)

DEFAULT_TIMEOUT_SECONDS = 300
RETRIED_STATUS = {502, 503, 504}
ABSENT = "RESOURCE_DOES_NOT_EXIST"  # MLflow's error_code for an object it does not hold
# How long a refresh waits for MLflow before it keeps what the state holds (`read_or_keep`).
READ_TIMEOUT_SECONDS = 30
Found = TypeVar("Found")


def is_unknown(value: Any) -> bool:
    return value == UNKNOWN


class MlflowApiError(Exception):
    """MLflow refused a request (a 4xx answer); never retried."""

    def __init__(self, action: str, status: int, error_code: str, message: str):
        self.status, self.error_code = status, error_code
        super().__init__(f"{action}: MLflow answered {status} {error_code}: {message}")


class MlflowUnreachable(TimeoutError):
    """No answer from MLflow, or only 502-504, until the deadline."""


class NotMlflowError(Exception):
    """A 404 without MLflow's JSON error: the URL does not lead to MLflow's API
    (a proxy, an ingress default backend, a Gateway not yet programmed, a
    wrong path). Never taken for an absent object."""

    def __init__(self, action: str, url: str, excerpt: str):
        super().__init__(
            f"{action}: {url} answered 404 without MLflow's error code, so it is probably not MLflow "
            "(a proxy or ingress default backend, a Gateway not yet programmed, or a wrong URL); check "
            f"mlflow.apiUrl and the exposure (exposure.host, exposure.kind). Answer: {excerpt!r}"
        )


class MlflowRest:
    """MLflow REST calls signed in with `props["credentials"]`, retried while the server is
    not reachable yet (no answer, 502-504) until `props["timeout_seconds"]` have passed."""

    def __init__(self, props: dict, timeout_seconds: float | None = None):
        import requests

        self.base = str(props["tracking_url"]).rstrip("/")
        self.timeout_seconds = timeout_seconds or float(props.get("timeout_seconds") or DEFAULT_TIMEOUT_SECONDS)
        self.deadline = time.monotonic() + self.timeout_seconds
        self.session = requests.Session()
        credentials = props.get("credentials") or {}
        if credentials.get("token"):
            self.session.headers["Authorization"] = f"Bearer {credentials['token']}"
        elif credentials.get("username"):
            self.session.auth = (credentials["username"], credentials.get("password", ""))

    def call(self, method: str, path: str, action: str, **kwargs) -> dict:
        """`path` from the server's root, e.g. /api/2.0/mlflow/experiments/get."""
        import requests

        delay, last_error = 1.0, "no answer"
        while True:
            url = f"{self.base}{path}"
            try:
                response = self.session.request(method, url, timeout=30, **kwargs)
                if response.status_code < 400:
                    return response.json() if response.content else {}
                if response.status_code not in RETRIED_STATUS:
                    try:
                        body = response.json()
                    except ValueError:
                        body = None
                    if not isinstance(body, dict):
                        body = {"message": response.text[:200]}
                    if response.status_code == 404 and not body.get("error_code"):
                        raise NotMlflowError(action, url, response.text[:200])
                    raise MlflowApiError(action, response.status_code, body.get("error_code", "UNKNOWN"),
                                         body.get("message", ""))
                last_error = f"HTTP {response.status_code}"
            except requests.RequestException as error:
                last_error = f"{type(error).__name__}: {error}"
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise MlflowUnreachable(
                    f"{action}: MLflow at {self.base} did not answer within {self.timeout_seconds:.0f}s "
                    f"(last error: {last_error}); check that the server is up and that the URL is reachable "
                    "from this machine (mlflow.apiUrl)"
                )
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 10.0)

    def get_or_none(self, path: str, key: str, action: str, **params) -> dict | None:
        """`GET path?params`'s `key`, or None when MLflow says it holds no such object."""
        try:
            return self.call("GET", path, action, params=params)[key]
        except MlflowApiError as error:
            if error.error_code == ABSENT:
                return None
            raise


def read_or_keep(read: Callable[[], Found], kept: Found) -> Found:
    """What a provider's `read` finds, or `kept` (the state as it was) when MLflow does not answer.
    Every `up` refreshes first (Pulumi.yaml), and MLflow may be stopped by then: a migration that
    failed half-way, a restore pending on a lost volume. Those `up`s are the ones that start it
    again, so a refresh must not fail them; create, update and delete still wait the full timeout."""
    try:
        return read()
    except MlflowUnreachable:
        return kept
