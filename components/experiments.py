"""MLflow experiments as Pulumi resources, so their IDs flow into the collector."""

from __future__ import annotations

import pulumi
from pulumi.dynamic import Resource

from components.config import Experiment, experiment_slug
from components.experiment_provider import DEFAULT_TIMEOUT_SECONDS, MlflowExperimentProvider


class MlflowExperiment(Resource):
    """One MLflow experiment; `experiment_id` is its MLflow id."""

    experiment_id: pulumi.Output[str]
    lifecycle_stage: pulumi.Output[str]

    def __init__(self, resource_name: str, *, name: pulumi.Input[str], tracking_url: pulumi.Input[str],
                 tags: pulumi.Input[dict] | None = None, artifact_location: pulumi.Input[str] | None = None,
                 credentials: pulumi.Input[dict] | None = None, timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS,
                 opts: pulumi.ResourceOptions | None = None):
        props = {
            "name": name,
            "tracking_url": tracking_url,
            "tags": tags or {},
            "artifact_location": artifact_location,
            "credentials": pulumi.Output.secret(credentials) if credentials is not None else None,
            "timeout_seconds": timeout_seconds,
            "experiment_id": None,
            "lifecycle_stage": None,
        }
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["credentials"]))
        super().__init__(MlflowExperimentProvider(), resource_name, props, opts)


class MlflowExperiments(pulumi.ComponentResource):
    """Every configured experiment; `ids` maps experiment name to MLflow id."""

    ids: pulumi.Output[dict[str, str]]

    def __init__(self, name: str, *, experiments: tuple[Experiment, ...], tracking_url: str,
                 server_ready: list[pulumi.Resource], credentials: pulumi.Input[dict] | None = None,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-tracing:index:MlflowExperiments", name, None, opts)
        resources = {
            experiment.name: MlflowExperiment(
                f"{name}-{experiment_slug(experiment.name)}",
                name=experiment.name,
                tracking_url=tracking_url,
                tags=dict(experiment.tags),
                credentials=credentials,
                # Created only once the server and its exposure exist; the provider
                # still retries while pods start and DNS or certificates settle.
                # `renamedFrom` keeps the resource (and the MLflow id) across a rename.
                opts=pulumi.ResourceOptions(
                    parent=self, depends_on=server_ready,
                    aliases=[pulumi.Alias(name=f"{name}-{experiment_slug(old)}") for old in experiment.renamed_from],
                ),
            )
            for experiment in experiments
        }
        self.ids = pulumi.Output.all(**{n: r.experiment_id for n, r in resources.items()})
        self.register_outputs({"ids": self.ids})
