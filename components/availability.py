"""What keeps a scaled-out workload serving: a PodDisruptionBudget once several
pods may run, and a CPU HorizontalPodAutoscaler when the stack enables one.
Created inside the workload's own component (its `opts` carry the parent)."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components.config import Autoscaling
from components.kube import cpu_autoscaler_spec, disruption_budget_spec


def keep_available(name: str, *, component: str, scales_out: bool, autoscaling: Autoscaling, workload_kind: str,
                   workload_name: str, metadata: dict, opts: pulumi.ResourceOptions) -> None:
    """A budget when more than one pod may run (with one, a budget would only block node
    drains), and the autoscaler of `workload_kind`/`workload_name` when enabled."""
    if scales_out:
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-disruption-budget", metadata={**metadata, "name": workload_name},
            spec=disruption_budget_spec(component), opts=opts,
        )
    if autoscaling.enabled:
        k8s.autoscaling.v2.HorizontalPodAutoscaler(
            f"{name}-autoscaler", metadata={**metadata, "name": workload_name},
            spec=cpu_autoscaler_spec(autoscaling, workload_kind, workload_name), opts=opts,
        )
