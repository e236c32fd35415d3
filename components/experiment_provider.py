"""Pulumi dynamic provider for MLflow experiments, speaking MLflow's REST API.

Pulumi pickles the provider (dill, recurse=True) into the state and runs it in
a separate process, so this module imports nothing with side effects and
builds its HTTP session inside each call. `check` and `diff` run during
preview with unknown values: they never touch the network.

Behaviour that keeps users' traces safe:
- `create` adopts an experiment that already has the name (restoring it if
  soft-deleted) instead of failing, so a re-run or an import converges;
- `delete` is MLflow's soft delete: the experiment and its traces stay
  recoverable, and a later `create` of the same name restores the same id;
- `read` reports renames and deletions made outside Pulumi, so the next
  `pulumi up` (the project refreshes on every run) repairs them;
- only MLflow's own `RESOURCE_DOES_NOT_EXIST` means an experiment is gone: a
  404 without MLflow's error code (a proxy, a Gateway not yet programmed, a
  wrong `mlflow.apiUrl`) is an error, so a refresh never drops an experiment
  from the state because something else answered.
"""

from __future__ import annotations

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
    DEFAULT_TIMEOUT_SECONDS,
    READ_TIMEOUT_SECONDS,
    MlflowApiError,
    MlflowRest,
    NotMlflowError,
    is_unknown,
    read_or_keep,
)
from components.names import experiment_name_problem

__all__ = ["DEFAULT_TIMEOUT_SECONDS", "MlflowApiError", "MlflowExperimentProvider", "NotMlflowError"]

API = "/api/2.0/mlflow/experiments"
# Properties whose change the provider can apply in place; anything else is a replacement.
UPDATABLE = ("name", "tags", "tracking_url", "credentials", "timeout_seconds")
REPLACING = ("artifact_location",)


class _Client(MlflowRest):
    """The experiments REST API."""

    def experiments(self, method: str, path: str, action: str, **kwargs) -> dict:
        return self.call(method, f"{API}/{path}", action, **kwargs)

    def get(self, experiment_id: str, action: str) -> dict | None:
        return self.get_or_none(f"{API}/get", "experiment", action, experiment_id=experiment_id)

    def get_by_name(self, name: str, action: str) -> dict | None:
        return self.get_or_none(f"{API}/get-by-name", "experiment", action, experiment_name=name)


def _tags_of(experiment: dict) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in experiment.get("tags", [])}


def _outputs(props: dict, experiment: dict) -> dict:
    """State as read from MLflow: the live name and lifecycle, and the live
    values of the tags this resource manages."""
    live_tags = _tags_of(experiment)
    managed = props.get("tags") or {}
    return {
        **props,
        "name": experiment["name"],
        "tags": {key: live_tags[key] for key in managed if key in live_tags},
        "experiment_id": experiment["experiment_id"],
        "lifecycle_stage": experiment.get("lifecycle_stage", "active"),
        "artifact_location": props.get("artifact_location"),
    }


class MlflowExperimentProvider(ResourceProvider):
    def check(self, _olds: dict, news: dict) -> CheckResult:
        failures = []
        name = news.get("name")
        if not is_unknown(name):
            problem = experiment_name_problem(name)
            if problem:
                failures.append(CheckFailure("name", f"experiment name {name!r} {problem}"))
        url = news.get("tracking_url")
        if not is_unknown(url) and not (isinstance(url, str) and url.startswith(("http://", "https://"))):
            failures.append(CheckFailure("tracking_url", f"{url!r} is not an http(s) URL of the MLflow server"))
        tags = news.get("tags") or {}
        if not is_unknown(tags) and not (
            isinstance(tags, dict) and all(isinstance(v, str) or is_unknown(v) for v in tags.values())
        ):
            failures.append(CheckFailure("tags", "tags must map names to string values"))
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        replaces = [key for key in REPLACING if olds.get(key) != news.get(key)]
        changed = [key for key in UPDATABLE if olds.get(key) != news.get(key)]
        # Deleted outside Pulumi (seen by refresh): an update restores it.
        restore = olds.get("lifecycle_stage") == "deleted"
        return DiffResult(
            changes=bool(replaces or changed or restore),
            replaces=replaces,
            stables=["experiment_id"] if not replaces else [],
            delete_before_replace=False,
        )

    def create(self, props: dict) -> CreateResult:
        client, name = _Client(props), props["name"]
        action = f"create experiment {name!r}"
        experiment = client.get_by_name(name, action)
        if experiment is None:
            body: dict[str, Any] = {
                "name": name,
                "tags": [{"key": k, "value": v} for k, v in (props.get("tags") or {}).items()],
            }
            if props.get("artifact_location"):
                body["artifact_location"] = props["artifact_location"]
            try:
                experiment_id = client.experiments("POST", "create", action, json=body)["experiment_id"]
            except MlflowApiError as error:
                if error.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                holder = client.get_by_name(name, action)  # created meanwhile
                if holder is None:
                    raise
                experiment_id = holder["experiment_id"]
        else:
            # Adopt the holder of the name: same id, same traces.
            experiment_id = experiment["experiment_id"]
            wanted = props.get("artifact_location")
            if wanted and experiment.get("artifact_location") != wanted:
                raise MlflowApiError(
                    action, 409, "ARTIFACT_LOCATION_MISMATCH",
                    f"experiment {experiment_id} already holds the name with artifact location "
                    f"{experiment.get('artifact_location')!r}, and MLflow cannot change it; keep that location "
                    "or give the experiment a new name",
                )
        return CreateResult(experiment_id, self._converge(client, experiment_id, props, {}, action))

    def _converge(self, client: _Client, experiment_id: str, props: dict, old_tags: dict, action: str) -> dict:
        """Bring an existing experiment to `props`: restored, named, tagged."""
        experiment = client.get(experiment_id, action)
        if experiment is None:
            raise MlflowApiError(action, 404, ABSENT,
                                 f"experiment {experiment_id} was permanently deleted; run `pulumi refresh` "
                                 "so that the next `pulumi up` creates it again")
        if experiment.get("lifecycle_stage") == "deleted":
            client.experiments("POST", "restore", action, json={"experiment_id": experiment_id})
        if experiment["name"] != props["name"]:
            # MLflow answers a clash with a raw database error: name the holder instead.
            holder = client.get_by_name(props["name"], action)
            if holder is not None:
                deleted = holder.get("lifecycle_stage") == "deleted"
                raise MlflowApiError(
                    action, 409, "RESOURCE_ALREADY_EXISTS",
                    f"experiment {holder['experiment_id']} already holds the name {props['name']!r}"
                    + (" (soft-deleted: restore it and drop this one, or purge it with `mlflow gc`)" if deleted
                       else "; choose another name"),
                )
            client.experiments("POST", "update", action,
                               json={"experiment_id": experiment_id, "new_name": props["name"]})
        tags = props.get("tags") or {}
        live = _tags_of(experiment)
        for key, value in tags.items():
            if live.get(key) != value:
                client.experiments("POST", "set-experiment-tag", action,
                            json={"experiment_id": experiment_id, "key": key, "value": value})
        for key in old_tags:
            if key not in tags and key in live:
                client.experiments("POST", "delete-experiment-tag", action,
                                   json={"experiment_id": experiment_id, "key": key})
        converged = client.get(experiment_id, action)
        if converged is None:
            raise MlflowApiError(action, 404, ABSENT, f"experiment {experiment_id} was permanently deleted meanwhile")
        return _outputs(props, converged)

    def read(self, id_: str, props: dict) -> ReadResult:
        def found() -> ReadResult:
            experiment = _Client(props, READ_TIMEOUT_SECONDS).get(id_, f"read experiment {props.get('name')!r}")
            if experiment is None:
                return ReadResult(None, {})  # purged outside Pulumi: the next `up` creates it again
            return ReadResult(id_, _outputs(props, experiment))

        return read_or_keep(found, ReadResult(id_, props))

    def update(self, id_: str, olds: dict, news: dict) -> UpdateResult:
        client = _Client(news)
        return UpdateResult(self._converge(client, id_, news, olds.get("tags") or {},
                                           f"update experiment {news['name']!r}"))

    def delete(self, id_: str, props: dict) -> None:
        """Soft delete: MLflow keeps the experiment and its traces restorable."""
        client = _Client(props)
        action = f"delete experiment {props.get('name')!r}"
        experiment = client.get(id_, action)
        if experiment is not None and experiment.get("lifecycle_stage") != "deleted":
            client.experiments("POST", "delete", action, json={"experiment_id": id_})
