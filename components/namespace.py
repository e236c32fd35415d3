"""The stack's namespace: created with Pod Security labels, or an existing one."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components.kube import NamespaceRef, labels_for

COMPONENT = "namespace"  # the label of the namespace the stack creates


def namespace_labels(platform: str) -> dict[str, str]:
    """Pod Security Admission `restricted` on Kubernetes. OpenShift applies its
    own SCCs (restricted-v2) and synchronises these labels itself."""
    labels = labels_for(COMPONENT)
    if platform == "kubernetes":
        labels.update({
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/audit": "restricted",
            "pod-security.kubernetes.io/warn": "restricted",
        })
    return labels


class StackNamespace(pulumi.ComponentResource):
    """`ref` is what workloads put in `metadata.namespace`; `kept_provider` creates
    the namespace, which `destroy` keeps (components/kept.py)."""

    ref: NamespaceRef

    def __init__(self, name: str, *, namespace: str, create: bool, platform: str, kept_provider: k8s.Provider,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-tracing:index:StackNamespace", name, None, opts)
        if create:
            resource = k8s.core.v1.Namespace(
                name, metadata={"name": namespace, "labels": namespace_labels(platform)},
                # Deleting a namespace deletes every volume in it: keep it on destroy,
                # and take it over again on the next up.
                opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True, provider=kept_provider),
            )
            self.ref = NamespaceRef(name=namespace, ref=resource.metadata.name)
        else:
            self.ref = NamespaceRef(name=namespace, ref=namespace)
        self.register_outputs({"name": namespace})
