"""What `pulumi destroy` keeps (the namespace and the artifact volume: user
data) must not stop the next `pulumi up` with `already exists`.

pulumi-kubernetes refuses to create an object that exists unless its provider
may take existing objects over (`upsertExistingObjects`). Only the kept
objects get such a provider: on every other resource a rename without an
alias would otherwise update, then delete, the same object.
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components.config import ClusterTarget


class KeptObjects(pulumi.ComponentResource):
    """`provider`: a kubernetes provider, on the cluster the stack targets, that takes kept objects over."""

    provider: k8s.Provider

    def __init__(self, name: str, *, cluster: ClusterTarget, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-tracing:index:KeptObjects", name, None, opts)
        self.provider = k8s.Provider(
            f"{name}-provider", context=cluster.context, kubeconfig=cluster.kubeconfig, upsert_existing_objects=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({})
