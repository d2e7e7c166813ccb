"""The one Ray start-up: whichever stage needs Ray first starts it, in this process or joined to a cluster; and
the resources decided from that cluster."""

from __future__ import annotations

import os

from core.resources import ResourcesSpec, resolve_resources


def ensure_ray() -> None:
    """Start Ray in this process (the embedded default), or join the cluster that RAY_ADDRESS names (a Ray Job's
    driver, or a user who pointed us at one); nothing when Ray is already up.

    `address="local"` keeps a job from silently attaching to some other cluster a `ray start` left running on this
    machine. Ray's own output goes to its log files, not the driver's console: the stages draw their own progress
    (`core.progress`).
    """
    import ray

    if ray.is_initialized():
        return
    ray.init(address=os.environ.get("RAY_ADDRESS") or "local", include_dashboard=False, log_to_driver=False,
             configure_logging=False)


def resolve_on_cluster(resources: ResourcesSpec, *, masked_lm: bool) -> ResourcesSpec:
    """`resources` with workers and GPUs decided from the resources of the Ray cluster this process runs on, joined
    or started first (`ensure_ray`), by `core.resources.resolve_resources`'s rules. A job's stages get theirs decided
    this way by the runner; a stage function called on its own decides them the same way."""
    import ray

    ensure_ray()
    return resolve_resources(resources, ray.cluster_resources(), masked_lm=masked_lm)
