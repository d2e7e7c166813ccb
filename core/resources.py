"""What the parallel stages run on: the `resources` spec section, and the one place where workers and GPUs are
decided from the Ray cluster's resources (not from the process that started the job)."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import Field

from core.config import StrictModel


class ClusterResourcesError(RuntimeError):
    """The job asks for more GPUs or CPUs per worker than the Ray cluster it runs on has."""


class StageResources(StrictModel):
    """One stage's parallelism; an unset field takes the shared value of `resources`."""

    workers: int | None = Field(None, gt=0, description="this stage's workers; unset: resources.workers")
    cpus_per_worker: float | None = Field(None, gt=0, description="unset: resources.cpus_per_worker")
    gpus_per_worker: float | None = Field(None, ge=0, description="unset: resources.gpus_per_worker")


ParallelStage = Literal["augment", "label", "train"]
#: torch.compile's modes, which `resources.compile` may name
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


class ResourcesSpec(StrictModel):
    workers: int | None = Field(
        None, gt=0, description="parallel workers (Ray actors / Ray Train workers) of every stage that does not set "
                                "its own; unset: each stage's default, from the Ray cluster's resources: "
                                "augmentation one actor per CPU but one (per GPU when its masked LM runs on GPUs), "
                                "labelling one actor per GPU (1 without GPUs), training 1 worker")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs reserved per worker; fractions allowed")
    gpus_per_worker: float | None = Field(
        None, ge=0, description="GPUs per worker; unset: 1 when the Ray cluster has a GPU (the workers', not the "
                                "head's), else 0. More than the cluster has fails the job before any stage")
    address: str | None = Field(None, description="Ray Jobs address (http://HEAD:8265); unset: Ray in-process")
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto", description="what every stage computes in on a GPU. auto: bf16 on compute capability 8.0+ (A100, "
                            "H100), fp16 with a loss scaler on older GPUs (V100), fp32 on CPU; bf16 on an older GPU "
                            "or half precision on CPU is refused")
    compile: bool | CompileMode = Field(
        False, description="torch.compile each training phase's model (the student, its projections and the "
                           "teachers it runs), in every worker: true or default is torch's default mode; "
                           "reduce-overhead also replays each step's kernels as CUDA graphs (one recording per batch "
                           "shape; a GPU's batches come in a few padded lengths); max-autotune and "
                           "max-autotune-no-cudagraphs also tune kernels (longer compilation). The first steps pay "
                           "for the compilation (minutes); faster steps on a GPU are the aim, not yet measured there "
                           "(benchmarks/gpu_bench.py --train). Results match an uncompiled run to rounding, except "
                           "that compiled dropout draws its own random masks")
    worker_restarts: int = Field(
        3, ge=0, description="times a multi-worker training phase restarts its workers from the last complete "
                             "checkpoint when a worker process or node dies (logged); 0: the phase fails at once")
    augment: StageResources = Field(
        StageResources(), description="the augmentation's Ray actors (masked-LM candidates and substitution); "
                                      "unset fields take the shared values above")
    label: StageResources = Field(
        StageResources(), description="the labelling actors (teacher inference); unset fields take the shared "
                                      "values above")
    train: StageResources = Field(
        StageResources(), description="the Ray Train workers (DDP world) of teacher fine-tuning, the masked LM's "
                                      "training and both distillation phases; unset fields take the shared values "
                                      "above")

    def for_stage(self, stage: ParallelStage) -> ResourcesSpec:
        """These resources with `stage`'s own settings in place of the shared ones."""
        return self.model_copy(update=getattr(self, stage).model_dump(exclude_none=True))

    @property
    def compile_mode(self) -> CompileMode | None:
        """The torch.compile mode `compile` asks for; None when it is off."""
        if self.compile is False:
            return None
        return "default" if self.compile is True else self.compile

    @property
    def worker_count(self) -> int:
        """`workers` as `resolve_resources` decided it, or 1 where nothing did (a training phase called on its own)."""
        return self.workers or 1


def asked_per_worker(resources: ResourcesSpec, what: Literal["cpus", "gpus"]) -> dict[str, float | None]:
    """The CPUs or GPUs per worker the spec sets, shared and per stage, by field path (None where unset)."""
    field = f"{what}_per_worker"
    asked = {f"resources.{field}": getattr(resources, field)}
    for stage in get_args(ParallelStage):
        asked[f"resources.{stage}.{field}"] = getattr(getattr(resources, stage), field)
    return asked


def resolve_resources(resources: ResourcesSpec, cluster: dict[str, float], *, masked_lm: bool) -> ResourcesSpec:
    """`resources` with every stage's GPUs and workers decided from the Ray cluster's resources, not from this
    process: on a cluster the job's driver runs on the head node, which often has no GPU while the workers have them.

    GPUs per worker: an unset shared value becomes 1 when the cluster has a whole GPU, else 0, and a stage's unset
    value takes it; but augmentation computes on a GPU only for its masked LM (`masked_lm`), so without one it
    takes 0 and leaves the GPUs to the other stages.
    Workers: a stage's own value, else the shared one, else the stage's default: augmentation one actor per GPU when
    it computes on GPUs, else one per CPU but one (left to the driver, which plans the blocks and reads the results,
    and to Ray's own processes); labelling one actor per GPU (one actor on CPUs); training 1, since the batch is
    global and more workers split it (resources.train.workers is a choice about the batch,
    trainer.thin_worker_batch).

    Raises:
        ClusterResourcesError: more GPUs or CPUs per worker than the cluster has, named with what it has.
    """
    gpus_in_cluster = cluster.get("GPU", 0.0)
    has = ", ".join(f"{cluster.get(name, 0):g} {name}" for name in ("CPU", "GPU"))
    for field, asked in asked_per_worker(resources, "gpus").items():
        if asked is not None and asked > gpus_in_cluster:
            raise ClusterResourcesError(
                f"{field}: {asked:g} GPU per worker, but the Ray cluster has {has}; set gpus_per_worker: 0 to run "
                "on CPUs, or run on a cluster with GPU nodes")
    for field, asked in asked_per_worker(resources, "cpus").items():
        if asked is not None and asked > cluster.get("CPU", 0.0):
            raise ClusterResourcesError(f"{field}: {asked:g} CPUs per worker, but the Ray cluster has {has}; no "
                                        "worker could start: lower cpus_per_worker")
    shared_gpus = resources.gpus_per_worker
    if shared_gpus is None:
        shared_gpus = 1.0 if gpus_in_cluster >= 1 else 0.0
    update: dict[str, Any] = {"gpus_per_worker": shared_gpus}
    for stage in get_args(ParallelStage):
        own: StageResources = getattr(resources, stage)
        gpus = own.gpus_per_worker
        if gpus is None:
            gpus = 0.0 if stage == "augment" and not masked_lm else shared_gpus
        workers = own.workers or resources.workers
        if workers is None:
            cpus = own.cpus_per_worker or resources.cpus_per_worker
            workers = _default_workers(stage, gpus, cpus, cluster)
        update[stage] = own.model_copy(update={"gpus_per_worker": gpus, "workers": workers})
    return resources.model_copy(update=update)


def _default_workers(stage: ParallelStage, gpus: float, cpus: float, cluster: dict[str, float]) -> int:
    if stage == "train":
        return 1
    if gpus > 0:
        return max(1, int(cluster.get("GPU", 0.0) // gpus))
    if stage == "augment":
        return max(1, int((cluster.get("CPU", 1.0) - 1) // cpus))
    return 1
