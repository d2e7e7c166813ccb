"""The training loop every phase shares, in this process or on N Ray Train workers.

A phase describes itself as a `TrainPlan` (picklable, so Ray can ship it to workers) whose `build` function makes
an `Objective`: the trained module (student, projections), which maps a padded batch to named loss terms. The
`Recipe` runs it with the torchtune lifecycle `setup` -> `train` -> `save_checkpoint` -> `cleanup`:

- data: the features folder memory-mapped (`distill.training_data`), a shuffled order per epoch drawn from
  (seed, epoch) and grouped by length (`epoch_order`), micro-batches of `config.batch_size` features padded
  per batch (`FlatFeatures.batch`) and collated a few batches ahead in a background thread, `grad_accum_steps`
  of them per optimizer step;
- workers: every worker runs this same loop; each micro-batch is cut into `workers` disjoint contiguous slices
  and each worker takes its own (rank order); DDP averages gradients, and each slice's loss is weighted by its
  share of the step's features, so N workers take the same steps as one worker with the same global batch;
- optimisation: AdamW (no weight decay on biases and LayerNorm weights, i.e. parameters with fewer than 2
  dimensions), linear warm-up then linear decay, gradient clipping, mixed precision on GPU;
- progress: every `log_every` steps a line in metrics.jsonl, the same as TensorBoard scalars in tensorboard/,
  and a progress line in the job log (`core.progress`);
- validation (when the plan has a `ValidationSet`): every `validation_every` steps and at the end, rank 0 scores
  the student on the slice (`distill.evaluate.Validator`), appends a line to validation.jsonl and TensorBoard's
  validation/* scalars, and keeps the best student so far (by F1 or accuracy) in best/, beside the last;
- outputs in `out_dir`: train_config.json (resolved config, every loss setting, code version), metrics.jsonl,
  tensorboard/, checkpoints/ (resumable; see `save_checkpoint`; every `checkpoint_minutes` of training, every
  `checkpoint_every` steps when set, at each epoch's end, the last KEEP_CHECKPOINTS kept), and whatever the
  objective saves at the end.

Run a plan with `run_plan(plan)`; `workers > 1` goes through Ray Train's `TorchTrainer`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import safetensors.torch
import torch
import torch.distributed as dist
from torch import nn
from transformers import get_linear_schedule_with_warmup

from core.devices import autocast, device_precision, needs_a_gpu_elsewhere, pick_device
from core.loop import LoopSpec
from core.progress import LOG_FORMATTER, Progress
from core.ray_runtime import resolve_on_cluster
from core.resources import ResourcesSpec
from core.tasks import Task
from distill.evaluate import ValidationSet, Validator
from distill.features import FlatFeatures
from distill.training_data import open_training_view, prefetch

# ---------------------------------------------------------------------------------------------------------------
# Defaults of the loop itself (everything else comes from the phase's spec)
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8             # AdamW and schedule as BERT/TinyBERT fine-tuning
KEEP_CHECKPOINTS = 2        # complete checkpoints kept on disk; older ones are deleted once a newer one is complete
COMPLETE_MARKER = "COMPLETE"  # written last into a checkpoint; a folder without it is never read
LENGTH_GROUP_BATCHES = 50   # batches per length-sorted group of an epoch's shuffle (as HF's group_by_length)
LOG_LINES_PER_PHASE = 200    # metric lines a phase aims for when log_every is unset ...
LOG_EVERY_AT_MOST = 50       # ... logging at least every 50 steps
# the job log (jobs.runner attaches its handlers to "distillery")
log = logging.getLogger("distillery.train")
HostBatch = tuple[dict[str, torch.Tensor], float]  # a micro-batch's tensors on the host and its share of the step


class TrainingError(RuntimeError):
    """A phase that cannot start or resume: missing features, an incompatible checkpoint, a bad configuration."""


class Objective(Protocol):
    """What a phase trains: an `nn.Module` holding every trained parameter, plus what the loop needs to know.

    Calling it with a batch from `FlatFeatures.batch` (on the device) returns one scalar per name in
    `term_weights`; the loss is sum(weight * term). Teachers live outside its registered submodules, so they are
    never trained, synchronised between workers, or checkpointed.
    """

    term_weights: dict[str, float]        # loss term name -> weight in the loss
    columns: tuple[str, ...]              # feature columns to read
    pad_token_id: int
    find_unused_parameters: bool          # DDP: some parameters (e.g. the task head in phase 1) get no gradient

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...
    def check_features(self, data: FlatFeatures) -> None: ...
    def settings(self) -> dict[str, Any]: ...
    def save_outputs(self, out_dir: Path) -> dict[str, str | None]: ...


class ObjectiveOptions(Protocol):
    """A phase's own inputs (which models, which losses), picklable, and how its objective is made from them."""

    def build(self, plan: TrainPlan, device: torch.device) -> Objective: ...


@dataclass(frozen=True)
class TrainPlan:
    """Everything a worker needs to run one phase; picklable, as Ray Train sends it to every worker."""

    phase: str                      # names the run in train_config.json and logs
    options: ObjectiveOptions       # built into the objective on each worker's device
    task: Task
    features_dir: Path
    config: LoopSpec
    resources: ResourcesSpec
    seed: int
    out_dir: Path
    progress: bool = True
    # scored every `validation_every` steps; the objective must then have `student` and `tokenizer`
    validation: ValidationSet | None = None
    validation_every: int | None = None


@dataclass(frozen=True)
class PhaseResult:
    """What a phase reports back; `dataclasses.asdict` gives its JSON form."""

    phase: str
    steps: int
    epochs: float
    loss: float                 # mean loss over the last logged window (the last metrics line)
    seconds: float              # wall time of the call, model loading included
    out_dir: str
    model_dir: str              # the trained model, loadable with from_pretrained, tokenizer beside it
    metrics: str                # metrics.jsonl
    checkpoints: str
    train_config: str
    projections: str | None = None  # phase 1 with projections: projections.safetensors
    best: dict[str, Any] | None = None  # with validation: step, metric, value and model_dir of the best student
    validation: str | None = None       # with validation: validation.jsonl
    resumed_from: int | None = None     # the checkpoint step the last start continued from (resume or restart)


@dataclass
class Worker:
    """Where this copy of the loop runs: rank, world size, device, and whether Ray Train started it."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    ray: bool = False

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor


# ---------------------------------------------------------------------------------------------------------------
# Entry


def run_plan(plan: TrainPlan) -> PhaseResult:
    """Run `plan` in this process (one worker without a GPU, or with this process's GPU) or on Ray Train workers:
    several, or one on a GPU node when this process has none (a cluster's head node)."""
    started = time.perf_counter()
    if plan.resources.worker_count > 1 or needs_a_gpu_elsewhere(plan.resources):
        summary = _run_on_ray(plan)
    else:
        summary = train_loop(plan, Worker(device=pick_device(plan.resources.gpus_per_worker)))
    return PhaseResult(phase=plan.phase, seconds=round(time.perf_counter() - started, 3), **summary)


def train_loop(plan: TrainPlan, where: Worker) -> dict[str, Any]:
    """The loop every worker runs (the whole run when there is one worker); returns the summary from rank 0."""
    recipe = Recipe(plan, where)
    try:
        recipe.setup()
        return recipe.train()
    finally:
        recipe.cleanup()


# Below this many features per micro-batch a worker spends its step on overhead and synchronisation, not compute.
MIN_FEATURES_PER_WORKER = 8


def thin_worker_batch(batch_size: int, workers: int) -> str | None:
    """A warning when the global batch split over several workers leaves each fewer than MIN_FEATURES_PER_WORKER
    features, else None.

    The batch is global, so the steps and the result do not change with the number of workers; splitting a small
    batch over many workers only makes each of them slower."""
    if workers == 1 or batch_size / workers >= MIN_FEATURES_PER_WORKER:
        return None
    return (f"batch_size {batch_size} over {workers} workers gives each {batch_size / workers:g} features per "
            f"micro-batch (fewer than {MIN_FEATURES_PER_WORKER}): the same steps as one worker, at a fraction of each "
            f"worker's speed. Use at most {max(1, batch_size // MIN_FEATURES_PER_WORKER)} training workers "
            "(resources.train.workers) or raise batch_size with a matching learning rate")


def _ray_worker(config: dict[str, Any]) -> dict[str, Any]:
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    if context.get_world_rank() == 0:   # rank 0's progress lines go to the job log, as in one process
        logger = logging.getLogger("distillery")
        logger.setLevel(logging.INFO)
        for path in config["log_files"]:
            handler = logging.FileHandler(path)
            handler.setFormatter(LOG_FORMATTER)
            logger.addHandler(handler)
    where = Worker(rank=context.get_world_rank(), world=context.get_world_size(),
                  device=ray.train.torch.get_device(), ray=True)
    return train_loop(config["plan"], where)


def _run_on_ray(plan: TrainPlan) -> dict[str, Any]:
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    resources = resolve_on_cluster(plan.resources, masked_lm=False).for_stage("train")
    gpus = resources.gpus_per_worker
    per_worker = {"CPU": resources.cpus_per_worker, **({"GPU": gpus} if gpus > 0 else {})}
    # workers import distill as this process does: Ray puts the driver's working directory on their path, and an
    # installed package is found anyway (a remote cluster needs it installed)
    trainer = TorchTrainer(
        _ray_worker,
        # the driver's log files: the workers reach them as they reach out_dir (the run store is shared)
        train_loop_config={"plan": plan, "log_files": [
            h.baseFilename for h in logging.getLogger("distillery").handlers if isinstance(h, logging.FileHandler)]},
        torch_config=TorchConfig(backend="nccl" if gpus > 0 else "gloo"),
        scaling_config=ScalingConfig(num_workers=resources.worker_count, use_gpu=gpus > 0,
                                     resources_per_worker=per_worker),
        run_config=RunConfig(name=f"{plan.phase}-{os.getpid()}-{time.time_ns()}",
                             storage_path=str((plan.out_dir / "ray").resolve()),
                             # a lost worker or node: the worker group restarts from the last complete checkpoint
                             failure_config=FailureConfig(max_failures=resources.worker_restarts)),
    )
    result = trainer.fit()
    if result.return_value is None:
        raise TrainingError(f"{plan.phase}: Ray Train finished without a result from rank 0: {result.error}")
    return result.return_value


# ---------------------------------------------------------------------------------------------------------------
# Data


def require_filled(data: FlatFeatures, column: str, fix: str) -> None:
    """Raise when any feature has no `column`, saying how many and how to fix it."""
    nulls = data.null_counts[column]
    if nulls:
        raise TrainingError(f"{nulls} of {data.num_rows} features have no {column}; {fix}")


def epoch_order(offsets: np.ndarray, seed: int, epoch: int, batch_size: int) -> np.ndarray:
    """The feature order of one epoch: a function of (lengths, seed, epoch, batch_size), so a resumed run sees it
    too. Feature i has offsets[i + 1] - offsets[i] tokens (`FlatFeatures.offsets`, memory-mapped and shared).

    A fresh shuffle is cut into groups of LENGTH_GROUP_BATCHES batches, and each group is sorted longest first:
    consecutive batches then hold features of similar length and pad little (SST-2 sentences run from 3 to 60
    wordpieces, so random batches are mostly padding), while which features meet still changes every epoch.
    The order is the only array a worker holds per feature: int32 and sorted in place (12 MB at 3M features);
    lengths are read from the offsets a group at a time.
    """
    order = np.arange(len(offsets) - 1, dtype=np.int32)
    np.random.default_rng([seed % 2**32, epoch]).shuffle(order)  # the same draw as permutation(len(order))
    group = batch_size * LENGTH_GROUP_BATCHES
    for start in range(0, len(order), group):
        members = order[start:start + group]
        lengths = offsets[members + 1] - offsets[members]
        members[:] = members[np.argsort(-lengths, kind="stable")]
    return order


@dataclass(frozen=True)
class EpochSteps:
    """An epoch's optimizer steps, each a list of up to `accum` micro-batches of up to `batch_size` features of
    `order`, cut when asked for: an epoch of 100k steps holds no object per step."""

    order: np.ndarray
    batch_size: int
    accum: int

    def __len__(self) -> int:
        return math.ceil(math.ceil(len(self.order) / self.batch_size) / self.accum)

    def __getitem__(self, step: int) -> list[np.ndarray]:
        if not 0 <= step < len(self):
            raise IndexError(f"step {step} of an epoch of {len(self)}")
        first, size = step * self.accum * self.batch_size, self.batch_size
        end = min(first + self.accum * size, len(self.order))
        return [self.order[i:i + size] for i in range(first, end, size)]

    def __iter__(self) -> Iterator[list[np.ndarray]]:
        return (self[step] for step in range(len(self)))


def epoch_steps(order: np.ndarray, batch_size: int, accum: int) -> EpochSteps:
    """An epoch's optimizer steps, each a list of up to `accum` micro-batches of up to `batch_size` features."""
    return EpochSteps(order, batch_size, accum)


def worker_slice(micro_batch: np.ndarray, rank: int, world: int) -> np.ndarray:
    """This worker's contiguous share of a global micro-batch (sizes differ by at most one)."""
    return np.array_split(micro_batch, world)[rank]


# ---------------------------------------------------------------------------------------------------------------
# The recipe


class Recipe:
    """One phase's training run on one worker: setup -> train (with save_checkpoint) -> cleanup."""

    def __init__(self, plan: TrainPlan, where: Worker):
        self.plan = plan
        self.where = where
        self.config = plan.config
        self.out_dir = Path(plan.out_dir)
        self.checkpoints = self.out_dir / "checkpoints"
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self.validation_path = self.out_dir / "validation.jsonl"
        self.best_dir = self.out_dir / "best"
        self._deterministic_before: tuple[bool, bool] | None = None
        self._progress: Progress | None = None
        self._events = None   # rank 0's TensorBoard writer

    # -- setup --------------------------------------------------------------------------------------------------

    def setup(self) -> None:
        plan, where, config = self.plan, self.where, self.config
        if where.device.type == "cpu":
            # bitwise-reproducible CPU runs (resume == uninterrupted); restored in cleanup, as this may be the
            # caller's process
            self._deterministic_before = (torch.are_deterministic_algorithms_enabled(),
                                          torch.is_deterministic_algorithms_warn_only_enabled())
            torch.use_deterministic_algorithms(True, warn_only=True)
        if where.rank == 0:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            for stale in self.checkpoints.glob(".tmp-*"):  # left by a run killed while writing a checkpoint
                shutil.rmtree(stale)
        where.barrier()

        torch.manual_seed(plan.seed)  # same fresh weights (student, projections) on every worker
        self.objective = plan.options.build(plan, where.device)
        self.data = open_training_view(plan.features_dir, self.objective.columns)
        self.objective.check_features(self.data)
        self.longest_feature = int(self.data.lengths.max(initial=1))  # batches on a GPU are padded up to this
        self.term_names = list(self.objective.term_weights)

        self.steps_per_epoch = math.ceil(math.ceil(self.data.num_rows / config.batch_size) / config.grad_accum_steps)
        self.total_steps = math.ceil(config.epochs * self.steps_per_epoch)
        self.warmup_steps = math.ceil(config.warmup_ratio * self.total_steps)
        # a short phase still draws a readable curve, a long one a few thousand lines at most per 100k steps
        self.log_every = config.log_every or min(LOG_EVERY_AT_MOST, max(1, self.total_steps // LOG_LINES_PER_PHASE))
        module: nn.Module = self.objective  # type: ignore[assignment]
        module.train()  # the student (dropout on); teachers sit outside the module and stay in eval mode
        self.trained_parameters = [p for p in module.parameters() if p.requires_grad]
        decay = [p for p in self.trained_parameters if p.dim() >= 2]
        no_decay = [p for p in self.trained_parameters if p.dim() < 2]  # biases, LayerNorm weights
        # one fused kernel for every parameter on a GPU; the CPU keeps the reference loop, bit for bit as before
        self.fused_adam = where.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.learning_rate, betas=ADAM_BETAS, eps=ADAM_EPS, fused=self.fused_adam or None)
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, self.warmup_steps, self.total_steps)
        # decided here, on the worker and its device, not in the process that started the job
        self.precision = device_precision(where.device, plan.resources.precision)
        self.scaler = torch.amp.GradScaler(where.device.type, enabled=self.precision == "fp16")

        self.validator = None
        if plan.validation is not None and where.rank == 0:
            self.validator = Validator(plan.validation, plan.task, self.objective.tokenizer, where.device,
                                       self.precision)

        # position and logging state; a checkpoint overwrites all of it
        self.step, self.epoch, self.step_in_epoch = 0, 0, 0
        self.elapsed_before = 0.0
        self.last_loss = float("nan")
        self._reset_window()
        self.resumed_from = self._load_latest_checkpoint()
        if self.resumed_from is None:  # each worker its own dropout stream; a checkpoint restores it instead
            torch.manual_seed(plan.seed + 1 + where.rank)
        elif where.rank == 0:  # a resume, or Ray Train's restart of the workers after one was lost
            log.warning("%s: continuing from the checkpoint at step %d", plan.phase, self.resumed_from)
        self.best = self._best_so_far()

        if plan.resources.compile_mode is not None:
            # in place, so parameter names (checkpoints, the saved model) stay those of the plain module; dynamic,
            # as every batch is padded to its own longest feature
            module.compile(dynamic=True, mode=plan.resources.compile_mode)
        self.model = self._wrap(module)
        if where.rank == 0:
            self._write_train_config()
            for path in (self.metrics_path, self.validation_path):
                _trim_jsonl(path, self.step)
            # a line per log step (from _log), a bar in a terminal
            self._progress = Progress(plan.phase, self.total_steps, "step", bar=plan.progress, every_s=None,
                                      initial=self.step)
            from tensorboardX import SummaryWriter

            # the metric lines as TensorBoard scalars; a resumed run drops what was logged after its checkpoint
            self._events = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=self.step or None)

    def _wrap(self, module: nn.Module) -> nn.Module:
        if not self.where.ray:
            return module
        import ray.train.torch

        return ray.train.torch.prepare_model(
            module, move_to_device=self.where.device,
            parallel_strategy_kwargs={"find_unused_parameters": self.objective.find_unused_parameters})

    def _write_train_config(self) -> None:
        plan = self.plan
        thin = thin_worker_batch(plan.config.batch_size, self.where.world)
        if thin is not None:
            log.warning("%s: %s", plan.phase, thin)
        record = {
            "phase": plan.phase,
            "task": plan.task,
            "seed": plan.seed,
            "features_dir": str(plan.features_dir),
            "features": self.data.num_rows,
            "config": plan.config.model_dump(mode="json"),
            "resources": plan.resources.model_dump(mode="json"),
            "schedule": {"steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps,
                         "warmup_steps": self.warmup_steps, "decay": "linear to 0", "log_every": self.log_every,
                         "global_batch": plan.config.batch_size * plan.config.grad_accum_steps,
                         "micro_batch_per_worker": plan.config.batch_size / self.where.world,
                         "warning": thin},
            "optimizer": {"name": "AdamW", "betas": ADAM_BETAS, "eps": ADAM_EPS, "fused": self.fused_adam,
                          "no_weight_decay": "parameters with fewer than 2 dims (biases, LayerNorm weights)"},
            "precision": {"fp32": "fp32", "bf16": "bf16 autocast",
                          "fp16": "fp16 autocast + GradScaler"}[self.precision]
                         + (", TF32 matmuls" if torch.backends.cuda.matmul.fp32_precision == "tf32" else ""),
            "device": _device_name(self.where.device),
            "objective": self.objective.settings(),
            "code_version": _code_version(),
            "versions": {"torch": torch.__version__, "transformers": _version("transformers")},
        }
        _atomic_write_text(self.out_dir / "train_config.json", json.dumps(record, indent=2, default=str))

    # -- train ---------------------------------------------------------------------------------------------------

    def train(self) -> dict[str, Any]:
        config, where = self.config, self.where
        started = time.perf_counter()
        self._window_started = started
        self._last_checkpoint = started
        # a run resumed from its final checkpoint trains nothing and goes straight to saving its outputs
        while self.step < self.total_steps:
            steps = epoch_steps(epoch_order(self.data.offsets, self.plan.seed, self.epoch, config.batch_size),
                                config.batch_size, config.grad_accum_steps)
            batches = prefetch((steps[s] for s in range(self.step_in_epoch, len(steps))), self._collate_step)
            try:
                for micro_batches, step_features in batches:
                    self._optimizer_step(micro_batches, step_features)
                    self.step += 1
                    self.step_in_epoch += 1
                    if self._progress is not None:
                        self._progress.update(1)
                    end_of_epoch = self.step_in_epoch == len(steps)
                    if end_of_epoch:
                        self.epoch, self.step_in_epoch = self.epoch + 1, 0
                    elapsed = self.elapsed_before + time.perf_counter() - started
                    log_step = self.step % self.log_every == 0
                    if log_step or self.step == self.total_steps:
                        self._log(elapsed)
                    if self.plan.validation_every is not None and (
                            self.step % self.plan.validation_every == 0 or self.step == self.total_steps):
                        self._validate()
                    if (end_of_epoch or self.step == self.total_steps
                            or (config.checkpoint_every is not None and self.step % config.checkpoint_every == 0)
                            or (log_step and self._checkpoint_due())):
                        self.save_checkpoint(elapsed)
                    if self.step == self.total_steps:
                        break
            finally:
                batches.close()
        outputs: dict[str, str | None] = {}
        if where.rank == 0:
            outputs = self.objective.save_outputs(self.out_dir)
        where.barrier()
        return {
            "steps": self.step, "epochs": round(self.step / self.steps_per_epoch, 6), "loss": self.last_loss,
            "out_dir": str(self.out_dir), "model_dir": outputs.get("model_dir", ""),
            "projections": outputs.get("projections"), "metrics": str(self.metrics_path),
            "checkpoints": str(self.checkpoints), "train_config": str(self.out_dir / "train_config.json"),
            "best": None if self.best is None else {**self.best, "model_dir": str(self.best_dir / "student")},
            "validation": str(self.validation_path) if self.plan.validation is not None else None,
            "resumed_from": self.resumed_from,
        }

    def _checkpoint_due(self) -> bool:
        """Whether `checkpoint_minutes` have passed since the last checkpoint, by rank 0's clock (asked at log
        steps only, so workers agree without a collective on every step)."""
        if self.config.checkpoint_minutes is None:
            return False
        due = torch.tensor([time.perf_counter() - self._last_checkpoint >= 60 * self.config.checkpoint_minutes],
                           dtype=torch.int32, device=self.where.device)
        if self.where.world > 1:
            dist.broadcast(due, src=0)
        return bool(due.item())

    def _collate_step(self, micro_batches: list[np.ndarray]) -> tuple[list[HostBatch], int]:
        """One optimizer step's micro-batches as this worker's padded tensors (pinned for an asynchronous copy to a
        GPU), each with the share of the step's loss it carries, and the step's feature count over all workers."""
        step_features = sum(len(micro) for micro in micro_batches)
        pin = self.where.device.type == "cuda"
        collated = []
        for micro in micro_batches:
            local = worker_slice(micro, self.where.rank, self.where.world)
            # fewer features than workers: join the gradient exchange with zero weight
            rows, share = (local, len(local) / step_features) if len(local) else (micro[:1], 0.0)
            collated.append((self.data.batch(rows, self.objective.pad_token_id, pin_memory=pin,
                                             device=self.where.device, limit=self.longest_feature), share))
        return collated, step_features

    def _optimizer_step(self, micro_batches: list[HostBatch], step_features: int) -> None:
        where, weights = self.where, self.objective.term_weights
        for index, (host_batch, share) in enumerate(micro_batches):
            batch = {key: value.to(where.device, non_blocking=True) for key, value in host_batch.items()}
            last = index == len(micro_batches) - 1
            no_sync = self.model.no_sync() if (where.world > 1 and not last) else contextlib.nullcontext()
            with no_sync:
                with autocast(where.device, self.precision):
                    terms = self.model(batch)
                    loss = sum(weight * terms[name] for name, weight in weights.items())
                # read at once: under compile's CUDA graphs (reduce-overhead) a forward's outputs live in the
                # graphs' memory pool, valid only until the graphs run again
                self._window[0] += loss.detach().double() * share
                self._window[1:] += torch.stack([terms[name].detach().double() for name in self.term_names]) * share
                # DDP averages over workers, hence the * world
                self.scaler.scale(loss * (share * where.world)).backward()
        self._window_features += step_features
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.trained_parameters, self.config.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._window_steps += 1

    # -- metrics ------------------------------------------------------------------------------------------------

    def _reset_window(self) -> None:
        self._window = torch.zeros(1 + len(self.term_names), dtype=torch.float64, device=self.where.device)
        self._window_steps = 0
        self._window_features = 0
        self._window_started = time.perf_counter()

    def _log(self, elapsed: float) -> None:
        # every worker holds its slices' weighted sums; their sum over workers is the global mean per step
        sums = self.where.all_sum(self._window.clone()).tolist()
        steps = max(self._window_steps, 1)
        seconds = max(time.perf_counter() - self._window_started, 1e-9)
        line = {
            "step": self.step,
            "epoch": round(self.epoch + self.step_in_epoch / self.steps_per_epoch, 6),
            "lr": self.scheduler.get_last_lr()[0],
            "loss": sums[0] / steps,
            **{f"loss/{name}": value / steps for name, value in zip(self.term_names, sums[1:])},
            "examples_per_s": round(self._window_features / seconds, 3),
            "elapsed": round(elapsed, 3),
        }
        self.last_loss = line["loss"]
        if self.where.rank == 0:
            with open(self.metrics_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(line) + "\n")
            if self._progress is not None:
                self._progress.fields = {key: line[key] for key in line if key not in ("step", "elapsed")}
                self._progress.line()
            if self._events is not None:
                for key, value in line.items():
                    if key not in ("step", "epoch", "elapsed"):
                        self._events.add_scalar(key, value, self.step)
                self._events.flush()   # `jobs logs --follow` and TensorBoard show the same moment
        # not also ray.train.report: in Ray Train 2.60 a report waits for the controller's poll (seconds), which
        # would throttle short steps; metrics.jsonl is the record
        self._reset_window()

    def _validate(self) -> None:
        """Rank 0 scores the student on the validation slice and keeps it in best/ when it is the best so far;
        the other workers wait."""
        if self.where.rank == 0:
            scores = self.validator.score(self.objective.student)
            metric = self.plan.validation.metric(self.plan.task)
            line = {"step": self.step, "epoch": round(self.epoch + self.step_in_epoch / self.steps_per_epoch, 6),
                    **scores}
            with open(self.validation_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(line) + "\n")
            if self._events is not None:
                for key, value in scores.items():
                    self._events.add_scalar(f"validation/{key}", value, self.step)
                self._events.flush()
            if self.best is None or scores[metric] > self.best["value"]:
                self.best = {"step": self.step, "metric": metric, "value": scores[metric]}
                self._save_best()
            log.info("%s validation at step %d: %s %.4g (best %.4g at step %d)", self.plan.phase, self.step,
                     metric, scores[metric], self.best["value"], self.best["step"])
        self.where.barrier()

    def _best_so_far(self) -> dict[str, Any] | None:
        """best/'s best.json when resuming (step, metric, value), None for a fresh start (rank 0 clears best/).

        best/ is replaced only by a strictly better score, so it holds the best student this run of the phase has
        validated, also one validated after the checkpoint a killed run resumes from (the same student again on
        CPU, where a resumed run repeats the killed one exactly); best/ and this record always agree."""
        record = self.best_dir / "best.json"
        if self.resumed_from is None:
            if self.where.rank == 0:
                shutil.rmtree(self.best_dir, ignore_errors=True)
            return None
        return json.loads(record.read_text(encoding="utf-8")) if record.exists() else None

    def _save_best(self) -> None:
        """The student as it is now into best/ (student/ and best.json), replacing the previous best whole."""
        temp = self.out_dir / ".best.tmp"
        shutil.rmtree(temp, ignore_errors=True)
        self.objective.save_outputs(temp)
        (temp / "best.json").write_text(json.dumps(self.best) + "\n", encoding="utf-8")
        previous = self.out_dir / ".best.old"
        shutil.rmtree(previous, ignore_errors=True)
        if self.best_dir.exists():
            os.replace(self.best_dir, previous)
        os.replace(temp, self.best_dir)
        shutil.rmtree(previous, ignore_errors=True)

    # -- checkpoints ----------------------------------------------------------------------------------------------

    def save_checkpoint(self, elapsed: float) -> None:
        """Write checkpoints/step-NNNNNNNN/ atomically: into a temp folder, marker last, then one rename.

        Holds the trained module (student and projections, safetensors), optimizer, scheduler, grad scaler, the
        precision, the data position (epoch, optimizer step within it), and each worker's own state: its RNG
        streams and the unlogged loss sums of its slices. A resumed run continues exactly where this one stood.
        """
        where = self.where
        final = self.checkpoints / f"step-{self.step:08d}"
        temp = self.checkpoints / f".tmp-step-{self.step:08d}"
        temp.mkdir(parents=True, exist_ok=True)
        own = {"torch": torch.get_rng_state(), "window": self._window.cpu()}
        if where.device.type == "cuda":
            own["cuda"] = torch.cuda.get_rng_state(where.device)
        torch.save(own, temp / f"worker-rank{where.rank}.pt")
        where.barrier()  # every worker's state is in before rank 0 seals the folder
        if where.rank == 0:
            safetensors.torch.save_model(self.objective, str(temp / "trainable.safetensors"))
            torch.save(self.optimizer.state_dict(), temp / "optimizer.pt")
            torch.save(self.scheduler.state_dict(), temp / "scheduler.pt")
            torch.save(self.scaler.state_dict(), temp / "scaler.pt")
            state = {
                "step": self.step, "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                "world": where.world, "precision": self.precision, "elapsed": elapsed, "last_loss": self.last_loss,
                "window_steps": self._window_steps, "window_features": self._window_features,
                "identity": self._identity(),
            }
            (temp / "state.json").write_text(json.dumps(state, default=str), encoding="utf-8")
            for written in temp.iterdir():  # contents on disk before the marker can be
                _fsync(written)
            (temp / COMPLETE_MARKER).write_text("ok\n", encoding="utf-8")
            _fsync(temp / COMPLETE_MARKER)
            _fsync(temp)
            if final.exists():  # an earlier run reached this step and was killed before going further
                shutil.rmtree(final)
            os.replace(temp, final)
            _fsync(self.checkpoints)
            for old in self._complete_checkpoints()[:-KEEP_CHECKPOINTS]:
                shutil.rmtree(old)
        where.barrier()
        self._last_checkpoint = time.perf_counter()

    def _identity(self) -> dict[str, Any]:
        """What a checkpoint must share with the run resuming it to continue the same run."""
        return {"phase": self.plan.phase, "seed": self.plan.seed, "features": self.data.num_rows,
                "config": self.config.model_dump(mode="json"), "objective": self.objective.settings()}

    def _complete_checkpoints(self) -> list[Path]:
        return sorted(p for p in self.checkpoints.glob("step-*") if (p / COMPLETE_MARKER).exists())

    def _load_latest_checkpoint(self) -> int | None:
        complete = self._complete_checkpoints()
        if not complete:
            return None
        latest = complete[-1]
        state = json.loads((latest / "state.json").read_text(encoding="utf-8"))
        identity = json.loads(json.dumps(self._identity(), default=str))
        if state["identity"] != identity:
            differing = sorted(k for k in identity if state["identity"].get(k) != identity[k])
            raise TrainingError(f"{latest} comes from a different run ({', '.join(differing)} differ); resume with "
                                "the same spec, or give a fresh out_dir")
        if state["world"] != self.where.world:
            raise TrainingError(f"{latest} was written by {state['world']} worker(s), this run has "
                                f"{self.where.world}; resume with resources.workers: {state['world']} (dropout "
                                "streams are per worker) or give a fresh out_dir")
        safetensors.torch.load_model(self.objective, str(latest / "trainable.safetensors"),
                                     device=str(self.where.device))
        self.optimizer.load_state_dict(torch.load(latest / "optimizer.pt", weights_only=True,
                                                  map_location=self.where.device))
        self.scheduler.load_state_dict(torch.load(latest / "scheduler.pt", weights_only=True))
        if state["precision"] == self.precision:
            self.scaler.load_state_dict(torch.load(latest / "scaler.pt", weights_only=True))
        elif self.where.rank == 0:  # precision auto on another kind of GPU (say, a restart on another node)
            log.warning("%s: the checkpoint at step %d was trained in %s, this device computes in %s; continuing in "
                        "%s%s", self.plan.phase, state["step"], state["precision"], self.precision,
                        self.precision, " with a fresh loss scale" if self.precision == "fp16" else "")
        own = torch.load(latest / f"worker-rank{self.where.rank}.pt", weights_only=True)
        torch.set_rng_state(own["torch"])
        if "cuda" in own:
            torch.cuda.set_rng_state(own["cuda"], self.where.device)
        self._window = own["window"].to(self.where.device)
        self.step, self.epoch, self.step_in_epoch = state["step"], state["epoch"], state["step_in_epoch"]
        self.elapsed_before, self.last_loss = state["elapsed"], state["last_loss"]
        self._window_steps, self._window_features = state["window_steps"], state["window_features"]
        return self.step

    # -- cleanup ------------------------------------------------------------------------------------------------

    def cleanup(self) -> None:
        if self._progress is not None:
            self._progress.close()
        if self._events is not None:
            self._events.close()
        if self._deterministic_before is not None:
            enabled, warn_only = self._deterministic_before
            torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


# ---------------------------------------------------------------------------------------------------------------
# Small helpers


def _device_name(device: torch.device) -> str:
    if device.type != "cuda":
        return "cpu"
    major, minor = torch.cuda.get_device_capability(device)
    return f"{torch.cuda.get_device_name(device)} (compute capability {major}.{minor})"


def _code_version() -> str | None:
    """`git describe` of the checkout this code runs from; None outside a git checkout."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _trim_jsonl(path: Path, step: int) -> None:
    """Drop the lines of a metrics file past `step` (written after the checkpoint a run resumes from)."""
    if not path.exists():
        return
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if lines:
        try:
            json.loads(lines[-1])
        except json.JSONDecodeError:  # the line a killed run was writing; the lines before it are whole
            lines.pop()
    kept = [line for line in lines if json.loads(line)["step"] <= step]
    _atomic_write_text(path, "".join(line + "\n" for line in kept))


def _atomic_write_text(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)


def _fsync(path: Path) -> None:
    """Flush a file's or a folder's entries to disk (a rename is durable once its folder is synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

