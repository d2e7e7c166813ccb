"""The one Ray start-up: whichever stage needs Ray first starts it, in this process or joined to a cluster."""

from __future__ import annotations

import os


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


def cluster_resources() -> dict[str, float]:
    """What the Ray cluster this process is connected to has in all (CPU, GPU, memory, ...)."""
    import ray

    return ray.cluster_resources()
