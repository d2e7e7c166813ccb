"""The augmentation stage: expand an examples folder by word substitution, in parallel on Ray, resumably.

`augment_examples` is the one entry point::

    result = augment_examples(Path("runs/x/examples"), "qa", AugmentSpec(), ResourcesSpec(workers=2), 42,
                              Path("runs/x/augmented"))

It writes::

    out_dir/
      augment.json                    what made this folder: task, seed, resolved AugmentSpec, block layout and the
                                      input files' checksums; a rerun with other settings is refused
      shards/part-00000.parquet ...   one shard per block, same schema as the input: each original (when
                                      keep_original) followed by its variants
      blocks/part-00000.json ...      the counts of each finished block (its shard is complete when this exists)
      vectors.kv (+ .vectors.npy)     word2vec vectors trained on the input's texts (and `corpus`'s), when
                                      vectors.path is unset
      neighbours.arrow                every input word needing embedding candidates and its candidates, best
                                      first (Arrow IPC: word, neighbours), as the workers read them
      stats.json                      examples_in, examples_out, variants_per_example, eligible_words,
                                      substituted_words, substitution_rate, substitutions_by_source, seconds, ...
      meta.json                       the input's meta.json (task, label_names, source, ...) with our shard list

How it runs:

1. The driver cuts the input into blocks of about `examples_per_shard` examples, in input order, never splitting a
   paragraph (QA rows sharing a context): candidates are computed once per paragraph. At the default 256 a block
   is ~5k rows out at factor 20 and tens of seconds of work with a bert-base masked LM. The driver streams the
   input's Parquet shards column by column and never holds its rows: the block plan is row numbers, and a block
   reaches a worker as a few (shard, first row, end row) runs that the worker reads itself.
2. The driver loads (or trains, once, into vectors.kv) the word vectors and computes the nearest neighbours of
   every distinct word needing them in one batched pass, into neighbours.arrow. Each worker memory-maps that
   file and takes only its block's words from it, so no worker ever holds the vectors (nothing to share or copy).
3. A pool of Ray actors (`core.blocks.run_on_actors`: `resources.workers` actors, `cpus_per_worker` CPUs each,
   fractions allowed, GPUs for the masked LM when the cluster has them) augments the blocks. Each actor loads the
   masked LM once, runs torch on max(1, int(cpus_per_worker)) threads, and writes each block's shard atomically,
   then its counts. Ray is used as the caller started it, or started once (`core.ray_runtime.ensure_ray`). On a
   cluster, the input and output folders must be on storage every node sees.

Determinism: a block's output depends only on its rows, the seed, the settings and the models: blocks are fixed
by the input, each variant's random draws are seeded by (seed, example id, draw), masked-LM batches are formed
within a block in a fixed order, and word passes are planned per text. So the shards are byte-identical for any
number of workers and across reruns, and a rerun after an interruption (or after deleting shards) redoes only
the blocks whose shard or counts are missing.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import itertools
import json
import logging
import os
import resource
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from augment.candidates import (MaskedLMProposer, encode_words, load_vectors, nearest_neighbours, propose,
                                save_vectors, train_vectors)
from augment.sampling import Tally, augment_classification, augment_qa
from augment.spec import AugmentSpec
from augment.words import eligible_words, segment
from core.blocks import claim_output, run_on_actors
from core.progress import Progress
from core.ray_runtime import resolve_on_cluster
from core.resources import ResourcesSpec
from core.schema import schema_for
from core.shards import SHARD_GLOB, atomic_output, iter_shard_batches, read_rows, shard_paths, write_json, write_shard
from core.tasks import Task, task_traits

log = logging.getLogger(__name__)

VECTORS_FILE = "vectors.kv"
NEIGHBOURS_FILE = "neighbours.arrow"
NEIGHBOURS_SCHEMA = pa.schema([("word", pa.string()), ("neighbours", pa.list_(pa.string()))])


class AugmentInputError(ValueError):
    """An input folder or output folder this stage cannot use; the message says what was found and the fix."""


@dataclasses.dataclass(frozen=True)
class AugmentResult:
    """What `augment_examples` wrote; `dataclasses.asdict` of it is JSON-serialisable.

    Attributes:
        task: "qa" or "classification".
        out_dir: the output folder (layout in the module doc).
        examples_in: original examples read.
        examples_out: rows written (originals kept plus variants).
        blocks: shards in the output, one per block.
        blocks_reused: blocks found finished from an earlier, interrupted run and not redone.
        shards: the shard files, in order.
        stats_path, meta_path: stats.json and meta.json.
        vectors_path: vectors.kv when vectors were trained on the corpus, else None.
        stats: the content of stats.json.
    """

    task: str
    out_dir: str
    examples_in: int
    examples_out: int
    blocks: int
    blocks_reused: int
    shards: tuple[str, ...]
    stats_path: str
    meta_path: str
    vectors_path: str | None
    stats: dict[str, Any]


def augment_examples(examples_dir: Path, task: Task, config: AugmentSpec,
                     resources: ResourcesSpec, seed: int, out_dir: Path, progress: bool = True, *,
                     block_rows: int | None = None, corpus_dir: Path | None = None) -> AugmentResult:
    """Augment the examples of `examples_dir` into `out_dir` (see the module doc), resuming an interrupted run.

    Args:
        examples_dir: an examples folder (`shards/part-*.parquet` in the task's schema, `meta.json`).
        task: "qa" or "classification"; must match the input's meta.json.
        config: the augmentation settings (factor, candidates, masked LM, vectors, what to augment).
        resources: workers, CPUs and GPUs per worker.
        seed: the job seed; with the same seed, settings and input the output is byte-identical.
        out_dir: the output folder; created, or resumed when it holds an unfinished run of the same settings.
        progress: draw a progress bar of finished blocks; progress lines go to the `distillery` log either way.
        block_rows: examples per block (one shard each); default `config.examples_per_shard`. Part of the
            run's identity: keep it when resuming.
        corpus_dir: `config.corpus` as an examples folder (read by the prepare stage, or `read_examples`);
            needed when the corpus is set, and read only when word vectors are trained here.

    Raises:
        AugmentInputError: the input is missing or of the wrong task.
        OutputClaimError: `out_dir` holds another run's output (core.blocks).
    """
    started = time.perf_counter()
    examples_dir, out_dir = Path(examples_dir), Path(out_dir)
    if not config.enabled:
        raise AugmentInputError("augment.enabled is false: this stage has nothing to do; skip it, or set "
                                "enabled: true")
    if config.corpus is not None and corpus_dir is None:
        raise AugmentInputError("augment.corpus is set but no corpus_dir was given: read the corpus into an examples "
                                "folder first (augment.readers.read_examples) and pass it")
    block_rows = config.examples_per_shard if block_rows is None else block_rows
    if block_rows <= 0:
        raise AugmentInputError(f"block_rows must be > 0, got {block_rows}")
    shard_rows, meta, fingerprint = _read_input(examples_dir, task)
    blocks = plan_blocks(examples_dir, task, block_rows)
    claim_output(out_dir, "augment.json", {"task": task, "seed": seed, "block_rows": block_rows, "blocks": len(blocks),
                                           "input": fingerprint, "augment": config.model_dump(mode="json")})

    todo = [i for i in range(len(blocks)) if not _block_done(out_dir, i)]
    vectors_path = None
    run_info = {"workers": 0, "peak_rss_mb_per_worker": None, "vectors_loaded_by_workers": False,
                "worker_busy_seconds": 0.0}
    if todo:
        log.info("augmenting %d of %d block(s) (%d finished earlier)", len(todo), len(blocks),
                 len(blocks) - len(todo))
        # the words of the whole input, finished blocks too: the neighbour search then sees the same queries on
        # a resumed run as on an uninterrupted one, so even its floating-point ties break the same way
        wanted = _words_needing_neighbours(examples_dir, _fields(task, config), config.mlm_model)
        neighbours, vectors_path = _neighbours_for(wanted, examples_dir, corpus_dir, task, config, seed, out_dir)
        _write_neighbours(neighbours, out_dir / NEIGHBOURS_FILE)
        del neighbours  # the workers read the file: nothing per word stays in the driver while they run
        items = [{"block": i, "runs": _runs(blocks[i], shard_rows)} for i in todo]
        run_info = _run_blocks(items, task, config, resources, seed, examples_dir, out_dir, progress)
    elif config.vectors.path is None and (out_dir / VECTORS_FILE).exists():
        vectors_path = out_dir / VECTORS_FILE
    if not blocks:  # keep the folder readable: one empty shard records the schema
        write_shard(out_dir / "shards" / "part-00000.parquet", [], schema_for(task))

    tally = Tally()
    for i in range(len(blocks)):
        counts = json.loads((out_dir / "blocks" / f"part-{i:05d}.json").read_text(encoding="utf-8"))
        tally.add(Tally(counts["examples_in"], counts["examples_out"], counts["variants"], counts["eligible_words"],
                        counts["substituted_words"], Counter(counts["substitutions_by_source"])))
    stats = {
        "examples_in": tally.examples_in,
        "examples_out": tally.examples_out,
        "variants_per_example": tally.variants / tally.examples_in if tally.examples_in else 0.0,
        "eligible_words": tally.eligible_words,
        "substituted_words": tally.substituted_words,
        "substitution_rate": tally.substituted_words / tally.eligible_words if tally.eligible_words else 0.0,
        "substitutions_by_source": {"mlm": tally.by_source["mlm"], "embedding": tally.by_source["embedding"]},
        "seconds": round(time.perf_counter() - started, 3),
        "blocks": len(blocks),
        "blocks_reused": len(blocks) - len(todo),
        "mlm_mode": config.mlm_mode if config.mlm_model is not None else None,
        **run_info,
    }
    shards = sorted((out_dir / "shards").glob(SHARD_GLOB))
    write_json(out_dir / "stats.json", stats)
    meta = {k: v for k, v in meta.items() if k != "shards"} | {
        "shards": [p.name for p in shards], "augmented_from": str(examples_dir.resolve())}
    write_json(out_dir / "meta.json", meta)
    return AugmentResult(
        task=task, out_dir=str(out_dir), examples_in=tally.examples_in, examples_out=tally.examples_out,
        blocks=len(blocks), blocks_reused=len(blocks) - len(todo), shards=tuple(str(p) for p in shards),
        stats_path=str(out_dir / "stats.json"), meta_path=str(out_dir / "meta.json"),
        vectors_path=str(vectors_path) if vectors_path is not None else None, stats=stats)


def augment_block(rows: list[dict[str, Any]], task: str, config: AugmentSpec, seed: int,
                  neighbours: dict[str, list[str]], mlm: MaskedLMProposer | None) -> tuple[list[dict], Tally]:
    """The output rows of one block and their counts: candidates once per distinct text, then sampling.

    Args:
        rows: original examples in the task's schema.
        neighbours: lower-case word -> embedding candidates, for every word of these rows that needs them.
        mlm: the masked LM, or None for embedding candidates only.
    """
    def options_for(texts: list[str]):
        return propose(texts, neighbours, mlm, config.mlm_mode, config.top_k, config.mlm_window)

    out, tally = [], Tally()
    if task_traits(task).windows:
        contexts = options_for([r["context"] for r in rows])
        questions = options_for([r["question"] for r in rows]) if config.augment_questions else [None] * len(rows)
        for row, context_options, question_options in zip(rows, contexts, questions):
            written, counts = augment_qa(row, context_options, question_options, config, seed)
            out += written
            tally.add(counts)
    else:
        texts = options_for([r["text"] for r in rows])
        pair_texts = [r["text_pair"] for r in rows if r["text_pair"] is not None]
        pairs = iter(options_for(pair_texts))
        for row, text_options in zip(rows, texts):
            pair_options = next(pairs) if row["text_pair"] is not None else None
            written, counts = augment_classification(row, text_options, pair_options, config, seed)
            out += written
            tally.add(counts)
    return out, tally


def plan_blocks(examples_dir: Path, task: str, block_rows: int) -> list[list[int]]:
    """Row numbers (across the input's shards, in order) of each block: consecutive units of about `block_rows`
    rows, in input order.

    A unit is one example, or for QA every row sharing a context (in the order the context first appears), so
    that a paragraph's candidates are computed once. Only the context column is read, a batch at a time.
    """
    if task_traits(task).windows:
        units: dict[bytes, list[int]] = {}
        row = 0
        for batch in iter_shard_batches(examples_dir, columns=["context"]):
            for context in batch.column(0).to_pylist():
                # a digest stands for the context, so the driver never holds the texts; a collision would only
                # put two paragraphs in one block
                units.setdefault(_digest(context), []).append(row)
                row += 1
        groups: Iterable[list[int]] = units.values()
    else:
        groups = ([i] for i in range(sum(pq.read_metadata(p).num_rows for p in shard_paths(examples_dir))))
    blocks, current = [], []
    for group in groups:
        current += group
        if len(current) >= block_rows:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


# ---------------------------------------------------------------------------------------------------------------
# Input, output folder and resume


def _read_input(examples_dir: Path, task: str) -> tuple[list[tuple[str, int]], dict[str, Any], list[dict[str, Any]]]:
    """The input's shards (file name, rows), its meta.json, and a fingerprint of the shards (name, size, SHA-256).

    Only the schemas and the variant column are read: the rows stay on disk.
    """
    shards_dir, meta_path = examples_dir / "shards", examples_dir / "meta.json"
    paths = sorted(shards_dir.glob(SHARD_GLOB))
    if not paths:
        raise AugmentInputError(f"no example shards ({SHARD_GLOB}) in {shards_dir}; run the read stage first "
                                "(augment.readers.read_examples) or give the examples folder that holds shards/")
    if not meta_path.exists():
        raise AugmentInputError(f"{meta_path} is missing; an examples folder written by augment.readers has one")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("task") != task:
        raise AugmentInputError(f"{examples_dir} holds {meta.get('task')!r} examples (meta.json) but the task is "
                                f"{task!r}; give the matching task or folder")
    expected = schema_for(task)
    shards, augmented, fingerprint = [], 0, []
    for path in paths:
        schema = pq.read_schema(path)
        if not schema.equals(expected):
            raise AugmentInputError(f"{path} does not have the {task} schema of core.schema:\n{schema}\n"
                                    f"expected:\n{expected}")
        variant = pq.read_table(path, columns=["variant"]).column("variant")
        augmented += pc.sum(pc.not_equal(variant, 0)).as_py() or 0
        shards.append((path.name, len(variant)))
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        fingerprint.append({"name": path.name, "bytes": path.stat().st_size, "sha256": digest.hexdigest()})
    if augmented:
        raise AugmentInputError(f"{examples_dir} already holds {augmented} augmented variant(s) (variant > 0); "
                                "augment the original examples folder instead")
    return shards, meta, fingerprint


def _runs(members: list[int], shard_rows: list[tuple[str, int]]) -> list[tuple[str, int, int]]:
    """A block's row numbers as runs (shard file name, first row, end row) of consecutive rows of one shard."""
    starts = list(itertools.accumulate((rows for _, rows in shard_rows), initial=0))
    runs: list[tuple[str, int, int]] = []
    for row in members:
        shard = bisect.bisect_right(starts, row) - 1
        name, local = shard_rows[shard][0], row - starts[shard]
        if runs and runs[-1][0] == name and runs[-1][2] == local:
            runs[-1] = (name, runs[-1][1], local + 1)
        else:
            runs.append((name, local, local + 1))
    return runs


def _read_runs(shards_dir: Path, runs: list[tuple[str, int, int]]) -> pa.Table:
    """The rows of `runs` (see `_runs`), in order, reading once per shard only the row groups that hold them."""
    spans: dict[str, tuple[int, int]] = {}
    for name, start, stop in runs:
        low, high = spans.get(name, (start, stop))
        spans[name] = (min(low, start), max(high, stop))
    tables = {name: read_rows(shards_dir / name, low, high) for name, (low, high) in spans.items()}
    return pa.concat_tables([tables[name].slice(start - spans[name][0], stop - start) for name, start, stop in runs])


def _block_done(out_dir: Path, index: int) -> bool:
    # the counts are written after the shard, so both existing means the block is complete
    name = f"part-{index:05d}"
    return (out_dir / "shards" / f"{name}.parquet").exists() and (out_dir / "blocks" / f"{name}.json").exists()


# ---------------------------------------------------------------------------------------------------------------
# Words, word vectors and neighbours (driver side)


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def _fields(task: str, config: AugmentSpec) -> list[str]:
    """The text columns whose words are substituted."""
    if task_traits(task).windows:
        return ["context", "question"] if config.augment_questions else ["context"]
    return ["text", "text_pair"]


def _distinct_texts(folder: Path, columns: list[str], seen: set[bytes]) -> Iterator[str]:
    """The texts of `columns` in `folder`'s shards, row by row, each once (`seen` holds the digests of those
    already given, across calls), read a batch at a time."""
    for batch in iter_shard_batches(folder, columns=columns):
        for texts in zip(*(column.to_pylist() for column in batch.columns)):
            for text in texts:
                if text is not None:
                    digest = _digest(text)
                    if digest not in seen:
                        seen.add(digest)
                        yield text


def _words_of(texts: Iterable[str]) -> set[str]:
    """The eligible words of `texts`, lower-cased."""
    return {w.word.lower() for text in texts for w in eligible_words(text)}


def _words_needing_neighbours(examples_dir: Path, fields: list[str], mlm_model: str | None) -> set[str]:
    """The lower-cased eligible words of every distinct text of the input's `fields` that need embedding
    candidates: all of them without a masked LM; with one, those it cannot replace somewhere in the input, by the
    rule the workers apply to each text (`encode_words`: one token where the word stands)."""
    texts = _distinct_texts(examples_dir, fields, set())
    if mlm_model is None:
        return _words_of(texts)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(mlm_model)
    wanted = set()
    for text in texts:
        words = eligible_words(text)
        maskable = encode_words(tokenizer, text, words).maskable
        wanted.update(w.word.lower() for w in words if (w.start, w.end) not in maskable)
    return wanted


def _neighbours_for(wanted: set[str], examples_dir: Path, corpus_dir: Path | None, task: str, config: AugmentSpec,
                    seed: int, out_dir: Path) -> tuple[dict[str, tuple[str, ...]], Path | None]:
    """Embedding candidates of the `wanted` words, looked up in one batched pass (`nearest_neighbours`), and the
    trained vectors' path."""
    if not wanted:
        return {}, None

    vectors_path = None
    if config.vectors.path is not None:
        vectors = load_vectors(config.vectors.path, config.vectors.format)
    else:
        vectors_path = out_dir / VECTORS_FILE
        if vectors_path.exists():  # trained by an earlier, interrupted run: training is deterministic
            vectors = load_vectors(vectors_path)
        else:
            corpus = _corpus(examples_dir, corpus_dir, task)
            log.info("training word2vec (dim %d, %d epochs) on %d texts", config.vectors.dim,
                     config.vectors.epochs, len(corpus))
            trained = train_vectors(corpus, config.vectors.dim, config.vectors.epochs, config.vectors.min_count,
                                    seed)
            del corpus  # the largest thing the driver holds, and no longer needed
            save_vectors(trained, vectors_path)
            vectors = load_vectors(vectors_path)
    log.info("nearest neighbours of %d words among %d vectors", len(wanted), len(vectors.index_to_key))
    return nearest_neighbours(vectors, wanted, config.top_k), vectors_path


def _corpus(examples_dir: Path, corpus_dir: Path | None, task: str) -> list[list[str]]:
    """Every distinct text of the input (all text columns), then of the corpus, lower-cased and split into words,
    in input order. Equal words are one (interned) string, so a word costs a pointer per occurrence."""
    columns = ["context", "question"] if task_traits(task).windows else ["text", "text_pair"]
    seen: set[bytes] = set()
    texts = _distinct_texts(examples_dir, columns, seen)
    if corpus_dir is not None:
        texts = itertools.chain(texts, _distinct_texts(corpus_dir, columns, seen))
    return [[sys.intern(w.word.lower()) for w in segment(text)] for text in texts]


def _write_neighbours(neighbours: dict[str, tuple[str, ...]], path: Path) -> None:
    """Write the neighbour table as an Arrow IPC file (word, neighbours), sorted by word, atomically."""
    words = sorted(neighbours)
    table = pa.table([pa.array(words, pa.string()), pa.array([neighbours[w] for w in words], pa.list_(pa.string()))],
                     schema=NEIGHBOURS_SCHEMA)
    with atomic_output(path) as temp:
        with pa.ipc.new_file(str(temp), NEIGHBOURS_SCHEMA) as writer:
            writer.write_table(table)


# ---------------------------------------------------------------------------------------------------------------
# The Ray stage


class _BlockAugmenter:
    """A Ray actor: loads the masked LM once, then reads blocks, augments them and writes their shards and
    counts."""

    def __init__(self, task: str, config: AugmentSpec, seed: int, shards_dir: str, out_dir: str, device: str,
                 precision: str, threads: int):
        import torch

        from core.devices import device_precision

        torch.set_num_threads(threads)  # actors share the machine's cores; one each unless given more
        self.task, self.config, self.seed = task, config, seed
        self.shards_dir, self.out_dir = Path(shards_dir), Path(out_dir)
        # memory-mapped: the actors on a machine share its pages
        self.neighbours = pa.ipc.open_file(pa.memory_map(str(self.out_dir / NEIGHBOURS_FILE))).read_all()
        self.mlm = None
        if config.mlm_model is not None:
            # resolved here, on the worker's own device
            self.mlm = MaskedLMProposer(config.mlm_model, config.mlm_init, seed, device, config.mlm_batch_size,
                                        device_precision(torch.device(device), precision))

    def _neighbours_of(self, rows: list[dict[str, Any]]) -> dict[str, list[str]]:
        """The neighbour table's entries for the words of `rows`."""
        texts = dict.fromkeys(r[f] for r in rows for f in _fields(self.task, self.config) if r[f] is not None)
        words = pa.array(sorted(_words_of(texts)), pa.string())
        own = self.neighbours.filter(pc.is_in(self.neighbours.column("word"), value_set=words))
        return dict(zip(own.column("word").to_pylist(), own.column("neighbours").to_pylist()))

    def run(self, item: dict[str, Any]) -> dict[str, Any]:
        """Augment block `item["block"]` (its rows are `item["runs"]`); its shard and counts are written here."""
        started = time.perf_counter()
        rows = _read_runs(self.shards_dir, item["runs"]).to_pylist()
        out, tally = augment_block(rows, self.task, self.config, self.seed, self._neighbours_of(rows), self.mlm)
        name = f"part-{item['block']:05d}"
        write_shard(self.out_dir / "shards" / f"{name}.parquet", out, schema_for(self.task))
        (self.out_dir / "blocks").mkdir(exist_ok=True)
        write_json(self.out_dir / "blocks" / f"{name}.json", {
            "examples_in": tally.examples_in, "examples_out": tally.examples_out, "variants": tally.variants,
            "eligible_words": tally.eligible_words, "substituted_words": tally.substituted_words,
            "substitutions_by_source": dict(sorted(tally.by_source.items()))})
        return {"examples_out": tally.examples_out, "pid": os.getpid(),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "vectors_loaded": "gensim" in sys.modules,  # evidence that workers never load vectors
                "seconds": time.perf_counter() - started}


def _run_blocks(items: list[dict[str, Any]], task: str, config: AugmentSpec, resources: ResourcesSpec, seed: int,
                examples_dir: Path, out_dir: Path, progress: bool) -> dict[str, Any]:
    """Augment the blocks in `items` (index and row runs) on a pool of Ray actors; return the pool size and each
    worker's peak RSS."""
    resources = resolve_on_cluster(resources, masked_lm=config.mlm_model is not None).for_stage("augment")
    gpus = resources.gpus_per_worker
    if gpus == 0 and config.mlm_model is not None:   # refused here, not in every worker (a GPU's is checked there)
        from core.devices import choose_precision

        choose_precision("cpu", None, resources.precision)
    workers = min(resources.worker_count, len(items))
    args = (task, config, seed, str(examples_dir / "shards"), str(out_dir),
            "cuda" if gpus > 0 else "cpu", resources.precision, max(1, int(resources.cpus_per_worker)))
    peak: dict[int, float] = {}
    busy, rows_out = 0.0, 0
    vectors_loaded = False
    with Progress("augment", total=len(items), unit="block", bar=progress) as done:
        for row in run_on_actors(_BlockAugmenter, args, items, "run", workers=workers,
                                 cpus=resources.cpus_per_worker, gpus=gpus):
            peak[row["pid"]] = max(peak.get(row["pid"], 0.0), row["peak_rss_mb"])
            vectors_loaded |= bool(row["vectors_loaded"])
            busy += row["seconds"]
            rows_out += row["examples_out"]
            done.update(1, rows_out=rows_out)
    return {"workers": workers, "peak_rss_mb_per_worker": round(max(peak.values()), 1) if peak else None,
            "vectors_loaded_by_workers": vectors_loaded, "worker_busy_seconds": round(busy, 2)}
