"""Teacher labelling: tokenize examples into features and store the teachers' soft logits beside them.

One entry point, `label_examples`. The examples are cut into blocks of `examples_per_shard` consecutive rows
(blocks never span two input shards); block k becomes `out_dir/shards/part-{k:05d}.parquet`. A pool of
Ray actors (`core.blocks.run_on_actors`) takes the blocks: each actor loads the tokenizer and every
teacher once, then per block reads the rows, tokenizes them in one batch, runs every teacher on every feature
(sorted by length and cut into batches of `label.batch_size` features, so little padding is computed), mixes the
teachers and writes the shard atomically (temp file, then `os.replace`). An actor with a GPU holds two blocks at
once, so the next block is read and tokenized (CPU) while the teachers run on the previous one; an actor on CPU
takes one at a time, since its teachers already use every core it has.

Why blocks: a shard's bytes must depend on nothing but its examples and the settings, so that an interrupted run
resumes by skipping the shards already on disk and the result is byte-identical to an uninterrupted run with any
number of workers. A forward pass's last bits depend on which rows share its padded batch, so the unit of
scheduling is the unit of output, and everything inside a block is computed in a fixed order.

Ensembles (`distill.ensemble`), with weights normalised to sum 1 and T the distillation temperature:
`label.ensemble = "probs"` (default) stores T * log(sum_k w_k softmax(z_k / T)), so that the loss's
softmax(stored / T) is the mix of the softened teachers (with one teacher, its log-probabilities at T = 1: softmax
of them at any temperature equals softmax of the raw logits, the shift cancels, so one teacher's labels do not
depend on T); "logits" stores sum_k w_k z_k. For QA the softmax runs over the real tokens of each window,
separately for start and end; for classification over the classes. `label.keep_teacher_logits` also stores each
teacher's raw logits.

    out_dir/
      shards/part-00000.parquet ...   features with teacher columns, the task's `feature_schema` (`distill.tasks`)
      label_config.json               what the shards were computed from; a rerun with other settings is refused
      stats.json                      counts, teachers and weights, bytes on disk, seconds
      meta.json                       copied from the examples folder

Example::

    result = label_examples(Path("runs/x/augment"), "qa", [ModelRef("deepset/bert-base-uncased-squad2")],
                            ModelRef("huawei-noah/TinyBERT_General_6L_768D"), spec.features, spec.label,
                            spec.resources, Path("runs/x/label"))
"""

from __future__ import annotations

import inspect
import json
import math
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from core.blocks import claim_output, run_on_actors
from core.devices import autocast, choose_precision, device_precision, padded_length, pick_device
from core.progress import Progress
from core.ray_runtime import resolve_on_cluster
from core.resources import ResourcesSpec
from core.shards import SHARD_GLOB, atomic_output, read_rows, shard_paths, write_json
from core.tasks import TRAITS, Task, task_traits
from distill.tasks import task_kind
from distill.models import (ModelCheckError, ModelRef, check_label_order, check_max_seq_len, check_same_vocabulary,
                            load_config, load_model, load_tokenizer)
from distill.spec import FeaturesSpec, LabelSpec


#: Examples per output shard: the unit of work, of resumption and of progress.
DEFAULT_EXAMPLES_PER_SHARD = 1024
# Shards are compared byte for byte across runs, so every writer option is pinned here.
# Byte-stream split lays out the high and low bytes of the float16 logits apart, which zstd compresses ~10% better.
_PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd", "compression_level": 3, "use_dictionary": ["feature_id", "example_id"],
    "write_statistics": False,
    "use_byte_stream_split": list(dict.fromkeys(  # tasks share column names; each once
        f"{name}.list.element" + (".list.element" if name.startswith("teachers_") else "")
        for traits in TRAITS.values() for name in (*traits.teacher_columns, *traits.per_teacher_columns))),
}


def _blocks_per_actor(gpus: float) -> int:
    """Blocks one labelling actor works on at once. With a GPU, two: one read and tokenized on the CPU while the
    other is in the teachers. On CPU one: the teachers' threads take every core the actor reserves, and a tokenizer
    beside them only makes them wait (label_bench.py, 4,096 questions on 2 cores: teachers 62.0 s with the
    overlap against 53.3 s without, the stage 68.8 s against 61.4 s)."""
    return 2 if gpus > 0 else 1


class LabelError(RuntimeError):
    """Labelling cannot start or continue: a missing examples folder, or shards the plan does not make."""


@dataclass(frozen=True)
class LabelResult:
    """What `label_examples` produced; `dataclasses.asdict` gives the stage summary."""

    out_dir: str
    shards_dir: str
    task: str
    examples: int
    features: int
    shards: int
    shards_reused: int              # shards found complete on disk and skipped (a resumed run)
    teachers: tuple[str, ...]
    weights: tuple[float, ...]      # normalised to sum 1
    ensemble: str
    bytes_on_disk: int              # all shard files
    bytes_per_feature: float
    teacher_logit_bytes_per_feature: float  # the teacher columns alone, compressed
    seconds: float
    # worker seconds per part (read_and_tokenize, teachers, write), summed over this run's blocks
    busy_seconds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _Block:
    index: int
    path: str
    start: int
    stop: int

    @property
    def name(self) -> str:
        return f"part-{self.index:05d}.parquet"


# ---------------------------------------------------------------------------------------------------------------
# Teacher inference: plain functions and one class, usable without Ray


def _list_column(flat: np.ndarray, lengths: np.ndarray) -> pa.Array:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat.astype(np.float16)))


def _per_teacher_column(flats: list[np.ndarray], lengths: np.ndarray) -> pa.Array:
    """list<list<float16>>: per feature, K lists (one per teacher) of that feature's length."""
    k = len(flats)
    starts = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    position = np.arange(int(lengths.sum())) - np.repeat(starts, lengths)
    values = np.empty(k * len(position), dtype=np.float32)
    for t, flat in enumerate(flats):
        # token p of feature j, teacher t goes to k * start_j + t * len_j + p
        values[k * np.repeat(starts, lengths) + t * np.repeat(lengths, lengths) + position] = flat
    inner = _list_column(values, np.repeat(lengths, k))
    outer = np.arange(0, k * len(lengths) + 1, k, dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(outer), inner)


class TeacherEnsemble:
    """The teachers of one labelling run, loaded once, labelling feature tables.

    Args:
        teachers: one or more; weights are normalised to sum 1; one with init="random" is built from its seed.
        task: "qa" or "classification".
        num_labels: classification: the number of classes (checked against each teacher's head).
        config: batch size, ensemble mode, whether to keep each teacher's logits.
        device: where the teachers run.
        temperature: the distillation temperature the labels are for; a probs mix of several teachers depends on it.
        precision: resources.precision, resolved for `device` (`core.devices.choose_precision`: auto is fp32 on
            CPU, bf16 or fp16 on a GPU).
    """

    def __init__(self, teachers: list[ModelRef], task: Task, num_labels: int | None, config: LabelSpec,
                 device: torch.device, pad_token_id: int, temperature: float = 1.0, precision: str = "auto"):
        if not teachers:
            raise ValueError("TeacherEnsemble needs at least one teacher")
        self.task, self.config, self.device, self.pad_token_id = task, config, device, pad_token_id
        self.temperature = temperature
        self.precision = device_precision(device, precision)
        self.models = [load_model(ref, task, num_labels).to(device).eval() for ref in teachers]
        # token_type_ids go only to models whose forward takes them (not DistilBERT, for one)
        self.takes_types = ["token_type_ids" in inspect.signature(m.forward).parameters for m in self.models]
        total = sum(ref.weight for ref in teachers)
        self.weights = torch.tensor([ref.weight / total for ref in teachers], dtype=torch.float32)
        self.kind = task_kind(task)
        counts = {m.config.num_labels for m in self.models}
        if self.kind.traits.classes and len(counts) > 1:
            raise ModelCheckError(f"the teachers classify into different numbers of labels {sorted(counts)}; "
                                  "an ensemble needs one label set")
        self.num_labels = counts.pop()

    @torch.inference_mode()
    def label(self, table: pa.Table) -> pa.Table:
        """`table` (features of `distill.features`) with its teacher columns filled."""
        n = table.num_rows
        if n == 0:
            return table
        ids = table.column("input_ids").combine_chunks()
        types = table.column("token_type_ids").combine_chunks()
        row_starts = ids.offsets.to_numpy().astype(np.int64)
        lengths = np.diff(row_starts)
        id_values, type_values = ids.values.to_numpy(), types.values.to_numpy()
        per_token = self.kind.traits.windows
        keep = self.config.keep_teacher_logits
        heads = self.kind.output_names
        # results in feature order: QA flat per token like input_ids' values, classification (n, C)
        shape = (len(id_values),) if per_token else (n, self.num_labels)
        mixed = {h: np.empty(shape, dtype=np.float32) for h in heads}
        raw = {h: [np.empty(shape, dtype=np.float32) for _ in self.models] if keep else [] for h in heads}
        weights = self.weights.to(self.device)
        # longest first (stable): batches of similar length pad little, and the order depends on the block alone
        order = np.argsort(-lengths, kind="stable")
        longest = int(lengths.max())
        for begin in range(0, n, self.config.batch_size):
            rows = order[begin:begin + self.config.batch_size]
            width = padded_length(int(lengths[rows].max()), self.device, longest)
            mask = np.arange(width)[None, :] < lengths[rows][:, None]                     # (B, T)
            # flat positions of the batch's tokens, row by row: input_ids[mask] is in this order
            gather = np.concatenate([np.arange(row_starts[r], row_starts[r + 1]) for r in rows])
            input_ids = np.full(mask.shape, self.pad_token_id, dtype=np.int64)
            input_ids[mask] = id_values[gather]
            token_types = np.zeros(mask.shape, dtype=np.int64)
            token_types[mask] = type_values[gather]
            mask_t = torch.from_numpy(mask).to(self.device)
            inputs = {"input_ids": torch.from_numpy(input_ids).to(self.device), "attention_mask": mask_t.long()}
            outputs: dict[str, list[torch.Tensor]] = {h: [] for h in heads}
            for model, takes_types in zip(self.models, self.takes_types):
                extra = {"token_type_ids": torch.from_numpy(token_types).to(self.device)} if takes_types else {}
                with autocast(self.device, self.precision):
                    output = model(**inputs, **extra)
                for h in heads:
                    outputs[h].append(getattr(output, h).float())                     # (B, T) or (B, C)
            for h in heads:
                batch_mixed = self.kind.mix_teachers(outputs[h], weights, self.config.ensemble,
                                                     mask_t if per_token else None, self.temperature).cpu().numpy()
                if per_token:
                    mixed[h][gather] = batch_mixed[mask]
                else:
                    mixed[h][rows] = batch_mixed
                for t, logits in enumerate(outputs[h] if keep else []):
                    logits = logits.cpu().numpy()
                    if per_token:
                        raw[h][t][gather] = logits[mask]
                    else:
                        raw[h][t][rows] = logits
        if per_token:
            per_row = lengths
        else:
            per_row = np.full(n, self.num_labels, dtype=np.int64)
            mixed = {h: m.reshape(-1) for h, m in mixed.items()}
            raw = {h: [r.reshape(-1) for r in rs] for h, rs in raw.items()}
        traits = self.kind.traits
        columns = {name: _list_column(mixed[h], per_row) for name, h in zip(traits.teacher_columns, heads)}
        if keep:
            columns |= {name: _per_teacher_column(raw[h], per_row)
                        for name, h in zip(traits.per_teacher_columns, heads)}
        for name, column in columns.items():
            index = table.schema.get_field_index(name)
            table = table.set_column(index, table.schema.field(name), column)
        return table


# ---------------------------------------------------------------------------------------------------------------
# One block, as an actor runs it


def _read_block(block: _Block, task: Task) -> pa.Table:
    """Rows [start, stop) of one examples shard, reading only the row groups that hold them."""
    present = pq.read_schema(block.path).names
    return read_rows(block.path, block.start, block.stop,
                     [c for c in task_traits(task).example_columns if c in present])


def _write_shard(table: pa.Table, path: Path) -> int:
    with atomic_output(path) as temp:
        pq.write_table(table, temp, **_PARQUET_OPTIONS)
    return path.stat().st_size


class _BlockLabeller:
    """A labelling actor: tokenizer and teachers loaded once; each call labels one block and writes its shard.

    With a GPU Ray runs two calls at once on one actor (`max_concurrency`, `_blocks_per_actor`), each in its own
    thread, so that one block is read and tokenized while another runs through the teachers: the teachers wait for the tokenizer only
    where tokenizing a block takes longer than labelling one. The tokenizer's Rust encoding and torch's kernels
    release the GIL, so the threads mostly run in parallel. Each stage takes one block at a time: the fast tokenizer
    is shared state (a QA block switches its truncation setting between two calls), and one forward pass at a time
    keeps the device's memory and the CPU threads to what a single block needs. Every block is still computed
    alone, so its shard's bytes do not change.
    """

    def __init__(self, task: Task, teachers: list[ModelRef], tokenizer: ModelRef, features: FeaturesSpec,
                 config: LabelSpec, temperature: float, num_labels: int | None, gpus: float, precision: str,
                 threads: int, shards_dir: str):
        # whole cores for the maths even on a fractional reservation, and as many for the Rust tokenizer: the job's
        # environment turns its threads off for processes that fork, which an actor does not, and on a GPU node
        # one core's tokenizing would keep the teachers waiting
        torch.set_num_threads(threads)
        os.environ["TOKENIZERS_PARALLELISM"] = "true"
        os.environ.setdefault("RAYON_NUM_THREADS", str(threads))
        self.task, self.features, self.shards_dir = task, features, Path(shards_dir)
        self.tokenizer = load_tokenizer(tokenizer)
        device = pick_device(gpus)
        self.ensemble = (TeacherEnsemble(teachers, task, num_labels, config, device, self.tokenizer.pad_token_id,
                                         temperature, precision) if teachers else None)
        self.tokenizing, self.labelling = threading.Lock(), threading.Lock()

    def label_block(self, block: _Block) -> tuple[int, int, dict[str, float]]:
        """Label one block and write its shard; returns (examples, features, seconds spent per part)."""
        seconds = {"read_and_tokenize": 0.0, "teachers": 0.0, "write": 0.0}   # each timed once its lock is held
        with self.tokenizing:
            began = time.perf_counter()
            table = task_kind(self.task).build_features(_read_block(block, self.task), self.tokenizer,
                                                        self.features)
            seconds["read_and_tokenize"] = time.perf_counter() - began
        if self.ensemble is not None:   # without teachers the teacher columns stay null
            with self.labelling:
                began = time.perf_counter()
                table = self.ensemble.label(table)
                seconds["teachers"] = time.perf_counter() - began
        began = time.perf_counter()
        _write_shard(table, self.shards_dir / block.name)
        seconds["write"] = time.perf_counter() - began
        return block.stop - block.start, table.num_rows, seconds


# ---------------------------------------------------------------------------------------------------------------
# The entry point


def _plan(examples_dir: Path, examples_per_shard: int) -> tuple[list[_Block], list[dict[str, Any]]]:
    """Every block in output order, and a description of the input files for label_config.json."""
    blocks, inputs = [], []
    for path in shard_paths(examples_dir):
        rows = pq.read_metadata(path).num_rows
        inputs.append({"file": path.name, "rows": rows, "bytes": path.stat().st_size})
        for start in range(0, rows, examples_per_shard):
            blocks.append(_Block(len(blocks), str(path), start, min(start + examples_per_shard, rows)))
    return blocks, inputs


def _read_meta(examples_dir: Path, task: Task) -> dict[str, Any]:
    path = examples_dir / "meta.json"
    if not path.is_file():
        raise LabelError(f"{examples_dir} has no meta.json; give an examples folder written by the prepare or "
                         "augment stage (shards/part-*.parquet + meta.json)")
    meta = json.loads(path.read_text(encoding="utf-8"))
    if meta.get("task", task) != task:
        raise LabelError(f"{examples_dir} holds {meta['task']} examples, but the task is {task}")
    return meta


def _check_models(task: Task, teachers: list[ModelRef], tokenizer: ModelRef, features: FeaturesSpec,
                  num_labels: int | None, label_names: list[str] | None) -> None:
    """Fail before any work on a teacher that cannot label these features (or whose classes are not the data's)."""
    loaded: dict[tuple[str, bool], Any] = {}

    def tokenizer_of(ref: ModelRef) -> Any:
        key = (ref.name_or_path, ref.trust_remote_code)
        if key not in loaded:
            loaded[key] = load_tokenizer(ref)
        return loaded[key]

    tokenizers = {f"tokenizer ({tokenizer.name_or_path})": tokenizer_of(tokenizer)}
    tokenizers |= {f"teacher {i} ({ref.name_or_path})": tokenizer_of(ref) for i, ref in enumerate(teachers)}
    check_same_vocabulary(tokenizers)
    label_counts = {}
    for i, ref in enumerate(teachers):
        name = f"teacher {i} ({ref.name_or_path})"
        if ref.init == "random" and ref.seed is None:
            raise ModelCheckError(f"{name}: init='random' without a seed, so each labelling worker would build "
                                  "other weights; give ModelRef.seed (jobs.stages.teacher_refs gives "
                                  "RANDOM_INIT_SEED + the teacher's index)")
        check_max_seq_len(load_config(ref), features.max_seq_len, name)
        # load_model checks the head and the label count; the weights are dropped again at once
        config = load_model(ref, task, num_labels).config
        label_counts[name] = config.num_labels
        if task_traits(task).classes and label_names:
            check_label_order(config, label_names, name)
    if task_traits(task).classes and len(set(label_counts.values())) > 1:
        found = ", ".join(f"{name}: {count}" for name, count in label_counts.items())
        raise ModelCheckError(f"the teachers classify into different numbers of labels ({found}); an ensemble "
                              "needs one label set")


def _settings(task: Task, teachers: list[ModelRef], tokenizer: ModelRef, features: FeaturesSpec, config: LabelSpec,
              temperature: float, num_labels: int | None, examples_per_shard: int, device: str, precision: str,
              inputs: list[dict[str, Any]]) -> dict:
    settings = {"task": task, "teachers": [asdict(t) for t in teachers], "tokenizer": asdict(tokenizer),
                "features": features.model_dump(), "label": config.model_dump(), "num_labels": num_labels,
                "examples_per_shard": examples_per_shard, "device": device, "precision": precision,
                "inputs": inputs}
    # only where the shards depend on it: other label folders stay valid whatever the temperature
    if task_kind(task).labels_depend_on_temperature(config.ensemble, len(teachers)):
        settings["temperature"] = temperature
    return settings


def _run_blocks(pending: list[_Block], task: Task, teachers: list[ModelRef], tokenizer: ModelRef,
                features: FeaturesSpec, config: LabelSpec, temperature: float, resources: ResourcesSpec,
                num_labels: int | None, gpus: float, shards_dir: Path, progress: bool) -> dict[str, float]:
    """Label the pending blocks on a pool of actors; the seconds the actors spent per part of the work, summed
    (parts run at once on one actor: reading and tokenizing one block overlaps the teachers on another)."""
    features_done = 0
    busy: dict[str, float] = {}
    in_flight = _blocks_per_actor(gpus)
    args = (task, teachers, tokenizer, features, config, temperature, num_labels, gpus, resources.precision,
            max(1, math.ceil(resources.cpus_per_worker)), str(shards_dir))
    with Progress("label", total=sum(b.stop - b.start for b in pending), unit="ex", bar=progress) as done:
        for examples, n_features, seconds in run_on_actors(
                _BlockLabeller, args, pending, "label_block", workers=resources.worker_count,
                cpus=resources.cpus_per_worker, gpus=gpus, in_flight=in_flight):
            features_done += n_features
            busy = {part: busy.get(part, 0.0) + value for part, value in seconds.items()}
            done.update(examples, features=features_done)
    return busy


def _shard_stats(paths: list[Path], task: Task) -> tuple[int, int, int]:
    """(features, bytes on disk, compressed bytes of the teacher columns) over `paths`."""
    features = total_bytes = teacher_bytes = 0
    teacher_columns = (*task_traits(task).teacher_columns, *task_traits(task).per_teacher_columns)
    for path in paths:
        metadata = pq.read_metadata(path)
        features += metadata.num_rows
        total_bytes += path.stat().st_size
        for g in range(metadata.num_row_groups):
            group = metadata.row_group(g)
            for c in range(group.num_columns):
                column = group.column(c)
                if column.path_in_schema.split(".")[0] in teacher_columns:
                    teacher_bytes += column.total_compressed_size
    return features, total_bytes, teacher_bytes


def label_examples(examples_dir: Path, task: Task, teachers: list[ModelRef],
                   tokenizer: ModelRef, features: FeaturesSpec, config: LabelSpec, resources: ResourcesSpec,
                   out_dir: Path, num_labels: int | None = None, progress: bool = True, *,
                   examples_per_shard: int = DEFAULT_EXAMPLES_PER_SHARD, temperature: float = 1.0) -> LabelResult:
    """Tokenize the examples of `examples_dir` into features and label them with the teachers' (mixed) logits.

    Args:
        examples_dir: an examples folder, `shards/part-*.parquet` (core.schema) and `meta.json`.
        task: "qa" or "classification".
        teachers: one or more, their weights normalised to sum 1 (without any: `featurize_examples`).
        tokenizer: the model whose tokenizer builds the features (the student's when it has its own); every
            teacher must share its vocabulary.
        features: window sizes; `config`: batch size, ensemble mode, keep_teacher_logits.
        resources: workers (Ray actors), cpus_per_worker (fractions allowed), gpus_per_worker (unset: 1 when the
            Ray cluster has a GPU).
        out_dir: where shards/, label_config.json, stats.json and meta.json go. Shards already there from an
            interrupted run with the same settings are kept and skipped.
        num_labels: classification: the number of classes; unset: the length of meta.json's label_names.
        progress: draw a progress bar (examples) on stderr; progress lines go to the `distillery` log either way.
        examples_per_shard: examples per output shard (unit of work and of resumption).
        temperature: the distillation temperature the labels are for (distill.prediction.temperature); only a
            probs ensemble of several teachers depends on it, and only then is it recorded in label_config.json.

    Raises:
        ModelCheckError: a teacher without the task's head, with another label count, named classes other than
            meta.json's label_names (or in another order), another vocabulary, fewer positions than
            features.max_seq_len, or init="random" without a seed.
        LabelError: no teachers; no meta.json or another task in it.
        OutputClaimError: out_dir labelled with other settings (core.blocks).
        ClusterResourcesError: a worker larger than the Ray cluster (core.resources).
    """
    if not teachers:
        raise LabelError("no teachers to label with; features without teacher logits are made by "
                         "featurize_examples")
    return _write_features(examples_dir, task, teachers, tokenizer, features, config, resources, out_dir, num_labels,
                           progress, examples_per_shard, temperature)


def featurize_examples(examples_dir: Path, task: Task, tokenizer: ModelRef,
                       features: FeaturesSpec, resources: ResourcesSpec, out_dir: Path, num_labels: int | None = None,
                       progress: bool = True, *,
                       examples_per_shard: int = DEFAULT_EXAMPLES_PER_SHARD) -> LabelResult:
    """Tokenize the examples of `examples_dir` into features that carry their gold labels and no teacher logits:
    what fine-tuning a teacher and training the masked LM read. The same blocks, actors, shards and resumption as
    `label_examples` (whose arguments these are), on CPUs, as no teacher runs."""
    # without a teacher the labelling settings (batch size, ensemble) have nothing to act on
    return _write_features(examples_dir, task, [], tokenizer, features, LabelSpec(), resources, out_dir, num_labels,
                           progress, examples_per_shard, 1.0)


def _write_features(examples_dir: Path, task: Task, teachers: list[ModelRef], tokenizer: ModelRef,
                    features: FeaturesSpec, config: LabelSpec, resources: ResourcesSpec, out_dir: Path,
                    num_labels: int | None, progress: bool, examples_per_shard: int,
                    temperature: float) -> LabelResult:
    began = time.perf_counter()
    examples_dir, out_dir = Path(examples_dir), Path(out_dir)
    if examples_per_shard <= 0:
        raise ValueError(f"examples_per_shard must be > 0, got {examples_per_shard}")
    meta = _read_meta(examples_dir, task)
    if task_traits(task).classes and num_labels is None and meta.get("label_names"):
        num_labels = len(meta["label_names"])
    try:
        blocks, inputs = _plan(examples_dir, examples_per_shard)
    except FileNotFoundError as err:
        raise LabelError(str(err)) from None
    _check_models(task, teachers, tokenizer, features, num_labels, meta.get("label_names"))

    resources = resolve_on_cluster(resources, masked_lm=False).for_stage("label")
    gpus = resources.gpus_per_worker if teachers else 0.0
    if gpus == 0:   # a GPU's capability is known only on its node, where the actors check it
        choose_precision("cpu", None, resources.precision)
    settings = _settings(task, teachers, tokenizer, features, config, temperature, num_labels, examples_per_shard,
                         "cuda" if gpus > 0 else "cpu", resources.precision, inputs)
    shards_dir = claim_output(out_dir, "label_config.json", settings)
    expected = {b.name for b in blocks}
    unknown = sorted(p.name for p in shards_dir.glob(SHARD_GLOB) if p.name not in expected)
    if unknown:
        raise LabelError(f"{shards_dir} holds shards this plan does not make ({unknown[0]}, ...); the examples "
                         "changed since they were written: use a fresh out_dir")
    pending = [b for b in blocks if not (shards_dir / b.name).exists()]
    busy: dict[str, float] = {}
    if pending:
        busy = _run_blocks(pending, task, teachers, tokenizer, features, config, temperature, resources, num_labels, gpus,
                    shards_dir, progress)

    paths = [shards_dir / b.name for b in blocks]
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise LabelError(f"{len(missing)} of {len(paths)} shards were not written (e.g. {missing[0]}); rerun to "
                         "label the rest")
    n_features, total_bytes, teacher_bytes = _shard_stats(paths, task)
    total = sum(t.weight for t in teachers)
    seconds = time.perf_counter() - began
    result = LabelResult(
        out_dir=str(out_dir), shards_dir=str(shards_dir), task=task,
        examples=sum(b.stop - b.start for b in blocks), features=n_features, shards=len(blocks),
        shards_reused=len(blocks) - len(pending),
        teachers=tuple(t.name_or_path for t in teachers), weights=tuple(t.weight / total for t in teachers),
        ensemble=config.ensemble, bytes_on_disk=total_bytes,
        bytes_per_feature=total_bytes / max(n_features, 1),
        teacher_logit_bytes_per_feature=teacher_bytes / max(n_features, 1), seconds=seconds,
        busy_seconds={part: round(value, 3) for part, value in busy.items()})
    stats = asdict(result) | {
        "float32_full_bytes_per_feature": task_kind(task).teacher_bytes_per_feature(features.max_seq_len,
                                                                                    num_labels),
        "keep_teacher_logits": config.keep_teacher_logits,
        "workers": resources.worker_count, "device": settings["device"],
    }
    write_json(out_dir / "stats.json", stats)
    shutil.copyfile(examples_dir / "meta.json", out_dir / "meta.json")
    return result
