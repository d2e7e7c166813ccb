"""Scale benchmark: the data path at the reference recipe's full size (SQuAD 2.0 train x20), measured on this machine.

    python benchmarks/scale_bench.py --out scale_bench.json                # both sections at full size, ~50 min
    python benchmarks/scale_bench.py --out t.json --sections training      # the training data path only
    python benchmarks/scale_bench.py --out /tmp/small.json --repeat 1 --max-features 100000   # quick look

Training data at 100k, 1M and 3M features (the reference recipe has ~2.8M): synthetic QA features in the label
stage's schema, columns and Parquet options (teacher start/end logits filled, lengths drawn like SQuAD's at
max_seq_len 384: mean ~180, clipped to [24, 384]; about 1,050 features per shard as the label stage writes),
written once at 3M, the smaller sizes being the first shards of it (links). For each size, in a fresh process,
the trainer's data path (`distill.training_data.open_training_view` with phase 2's columns, `epoch_order`,
`FlatFeatures.batch`):
- `first_batch_s_*`: from opening the features folder to the first collated micro-batch, the one-time build of
  the training view included; `reopen_first_batch_s_*` the same in a later process, the view already built;
- `batch_ms_*`: the median time to fetch and collate one 26-feature micro-batch, over 300 micro-batches spread
  over an epoch's order;
- `data_rss_mb_*`: the private (anonymous) memory the data path adds to the process at its peak, build included,
  sampled every 20 ms; `mapped_file_mb_*` the resident pages of the memory-mapped view (page cache, shared by
  every process mapping it), reported apart; `uss_mb_*` psutil's unique set size at the end, for reference
  (it counts mapped pages that no other process has touched yet);
- at 3M, two ranks at once on a fresh view (one builds it under the lock while the other waits, then each takes
  its half of every micro-batch): `two_rank_rss_mb_3m` is the two processes' private memory together;
- at 100k, the data path this replaced (every shard in one Arrow table, `Table.take` and per-row padding) for
  comparison: `table_path_*`.

Augmentation at SQuAD-train size: the SQuAD 2.0 dev set's 1,204 paragraphs repeated `--repeat` times (16: about
19,300 paragraphs, as train's 19,035), each copy of a paragraph made distinct (its context gets a " [k]" suffix,
which is not a word the stage substitutes, so copies are separate paragraphs to the block planner and the masked
LM, as train's paragraphs are) and its questions given fresh ids; each paragraph keeps the share of its
questions that brings the count to train's 6.85 questions per paragraph (dev has 9.86), about 132,000 questions
at 16 copies. That input is read through the project's reader into an examples folder and augmented x20
(`augment.pipeline.augment_examples`, the reference recipe's other settings) with a tiny masked LM (2 layers,
32 hidden, random weights, the real bert-base-uncased vocabulary from ../shared: the workers' masked-LM compute is
small, the driver's work and the rows written are full size) and word2vec vectors trained on the input, by
`--workers` Ray actors of `--cpus-per-worker` CPUs each.

The stage runs in a child process of its own, so that `augment_driver_rss_mb` is that process's peak resident
set (ru_maxrss) over its whole life: imports, reading, planning, vectors, the Ray driver; target <= 2000 MB.
`driver_baseline_rss_mb` is the same figure for a process that only imports what the stage imports (Ray, torch,
transformers, gensim, pyarrow) and so is the floor under it. Ray's own daemons (raylet, GCS) are separate
processes and are not counted; `augment_worker_peak_rss_mb` is the largest peak of the stage's actors, as the stage
reports it. The machine may be shared with other work: seconds are wall time, noisy; memory is not.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from queue import Empty

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO))  # run as a script from anywhere
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SQUAD_DEV = SHARED / "data" / "squad2" / "dev-v2.0.json"
TOKENIZER = SHARED / "tokenizers" / "bert-base-uncased"
# SQuAD 2.0 train, the size the reference recipe augments
TRAIN_PARAGRAPHS, TRAIN_QUESTIONS = 19_035, 130_319
DRIVER_RSS_TARGET_MB = 2000


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the results")
    parser.add_argument("--repeat", type=int, default=16,
                        help="copies of the dev set's paragraphs (default %(default)s: SQuAD-train size)")
    parser.add_argument("--factor", type=int, default=20, help="variants per question (default %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="augmentation actors (default %(default)s)")
    parser.add_argument("--cpus-per-worker", type=float, default=0.9,
                        help="CPUs reserved per actor, fractions allowed (default %(default)s)")
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a temp folder, removed after)")
    parser.add_argument("--sections", default="training,augment",
                        help="comma-separated: training (the data path at 100k/1M/3M features, ~15 min), augment "
                             "(SQuAD-train size, ~35 min on 2 cores); default %(default)s")
    parser.add_argument("--max-features", type=int, default=None,
                        help="training: only the sizes up to this many features (quick look: 100000)")
    return parser.parse_args(argv)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ---------------------------------------------------------------------------------------------------------------
# Augmentation at SQuAD-train size


def squad_at_train_size(repeat: int, path: Path) -> dict[str, int]:
    """Write `repeat` distinct copies of the dev set, thinned to train's questions per paragraph, as SQuAD JSON."""
    data = json.loads(SQUAD_DEV.read_text(encoding="utf-8"))["data"]
    dev_paragraphs = sum(len(a["paragraphs"]) for a in data)
    dev_questions = sum(len(p["qas"]) for a in data for p in a["paragraphs"])
    keep = (TRAIN_QUESTIONS / TRAIN_PARAGRAPHS) / (dev_questions / dev_paragraphs)
    articles, paragraphs, questions = [], 0, 0
    for copy in range(repeat):
        for article in data:
            copied = []
            for paragraph in article["paragraphs"]:
                # answers keep their offsets: the suffix comes after every answer
                qas = paragraph["qas"][:max(1, round(len(paragraph["qas"]) * keep))]
                copied.append({"context": f"{paragraph['context']} [{copy}]",
                               "qas": [qa | {"id": f"{qa['id']}.{copy}"} for qa in qas]})
                paragraphs += 1
                questions += len(qas)
            articles.append({"title": f"{article['title']} [{copy}]", "paragraphs": copied})
    path.write_text(json.dumps({"version": "v2.0", "data": articles}), encoding="utf-8")
    return {"paragraphs": paragraphs, "questions": questions}


def tiny_masked_lm(folder: Path) -> Path:
    """A 2-layer, 32-wide BERT masked LM with random weights and the real uncased tokenizer, saved to `folder`."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer, BertConfig

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64)
    torch.manual_seed(0)
    AutoModelForMaskedLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _import_stage_dependencies() -> None:
    """Import what the augmentation stage imports, so that a process doing only this is the stage's floor."""
    import gensim.models  # noqa: F401
    import ray  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import augment.pipeline  # noqa: F401


def _baseline_child(queue) -> None:
    _import_stage_dependencies()
    queue.put(_peak_rss_mb())


def _augment_child(queue, examples: str, mlm: str, factor: int, workers: int, cpus_per_worker: float,
                   out_dir: str) -> None:
    import dataclasses

    from augment.pipeline import augment_examples
    from augment.spec import AugmentSpec
    from core.resources import ResourcesSpec

    config = AugmentSpec(factor=factor, mlm_model=mlm)
    resources = ResourcesSpec(workers=workers, cpus_per_worker=cpus_per_worker)
    started = time.perf_counter()
    result = augment_examples(Path(examples), "qa", config, resources, 42, Path(out_dir), progress=False)
    queue.put({"result": dataclasses.asdict(result), "seconds": time.perf_counter() - started,
               "peak_rss_mb": _peak_rss_mb()})


def _in_children(target, argument_lists: list[tuple]) -> list:
    """Run `target(queue, *args)` for each argument tuple, each in a fresh (spawned) Python process, all at once;
    return what each put on its queue, in order."""
    context = multiprocessing.get_context("spawn")
    queues = [context.Queue() for _ in argument_lists]
    processes = [context.Process(target=target, args=(q, *a)) for q, a in zip(queues, argument_lists)]
    for process in processes:
        process.start()
    results = []
    for queue, process in zip(queues, processes):  # before join: a large item would block the child's exit
        while True:
            try:
                results.append(queue.get(timeout=5))
                break
            except Empty:
                if not process.is_alive():
                    raise RuntimeError(f"{target.__name__} died with status {process.exitcode} before reporting")
    for process in processes:
        process.join()
        if process.exitcode != 0:
            raise RuntimeError(f"{target.__name__} exited with status {process.exitcode}")
    return results


def _in_child(target, *args):
    """`target(queue, *args)` in one fresh process: what it put on the queue."""
    return _in_children(target, [args])[0]


def augment_at_squad_size(work_dir: Path, repeat: int = 16, factor: int = 20, workers: int = 2,
                          cpus_per_worker: float = 0.9) -> dict:
    """Augment a SQuAD-train-sized input (see the module doc) in `work_dir` and return the measurements.

    Args:
        work_dir: an empty scratch folder; the input, model and output are written here, and the output is
            removed after it is measured.
        repeat: copies of the dev set's paragraphs (16: SQuAD-train size).
        factor: variants per question.
        workers, cpus_per_worker: the stage's Ray actors and the CPUs each reserves.
    """
    import shutil

    from augment.readers import read_examples
    from augment.spec import DataSource

    sizes = squad_at_train_size(repeat, work_dir / "squad.json")
    read = read_examples(DataSource(path=str(work_dir / "squad.json")), "qa", None, work_dir / "examples")
    (work_dir / "squad.json").unlink()
    input_bytes = sum(p.stat().st_size for p in (work_dir / "examples" / "shards").iterdir())
    print(f"augment: {sizes['paragraphs']:,} paragraphs, {sizes['questions']:,} questions ({read.written:,} read, "
          f"{read.rejected} rejected), factor {factor}, {workers} worker(s) x {cpus_per_worker} CPU", flush=True)
    mlm = tiny_masked_lm(work_dir / "mlm")

    baseline = _in_child(_baseline_child)
    run = _in_child(_augment_child, str(work_dir / "examples"), str(mlm), factor, workers, cpus_per_worker,
                    str(work_dir / "augmented"))
    result = run["result"]
    output_bytes = sum(p.stat().st_size for p in (work_dir / "augmented" / "shards").iterdir())
    shutil.rmtree(work_dir / "augmented")
    return {
        "augment_paragraphs": sizes["paragraphs"],
        "augment_questions": sizes["questions"],
        "augment_rows_in": result["examples_in"],
        "augment_input_mb": round(input_bytes / 2**20, 1),
        "augment_factor": factor,
        "augment_workers": workers,
        "augment_cpus_per_worker": cpus_per_worker,
        "augment_blocks": result["blocks"],
        "augment_rows_out": result["examples_out"],
        "augment_output_mb": round(output_bytes / 2**20, 1),
        "augment_seconds": round(run["seconds"], 1),
        "augment_worker_busy_seconds": result["stats"]["worker_busy_seconds"],
        "augment_driver_rss_mb": round(run["peak_rss_mb"], 1),
        "driver_baseline_rss_mb": round(baseline, 1),
        "augment_driver_rss_target_mb": DRIVER_RSS_TARGET_MB,
        "augment_worker_peak_rss_mb": result["stats"]["peak_rss_mb_per_worker"],
    }


# ---------------------------------------------------------------------------------------------------------------
# The training data path at 100k, 1M and 3M features

# SQuAD 2.0's features as the label stage writes them at max_seq_len 384: about 180 tokens each on the dev set,
# a long tail up to full windows. A gamma of mean 180 clipped to [24, 384] has that shape.
LENGTH_MEAN, LENGTH_SHAPE, MIN_LENGTH, MAX_LENGTH = 180, 5.0, 24, 384
FEATURES_PER_SHARD = 1_050       # the label stage's 1,024 examples per shard at 1.02 features per question
PHASE2_COLUMNS = ("input_ids", "token_type_ids", "start_position", "end_position", "teacher_start_logits",
                  "teacher_end_logits")
BATCH, SEED = 26, 0
SAMPLED_BATCHES = 300
SIZES = {"100k": 100_000, "1m": 1_000_000, "3m": 3_000_000}


def _synthetic_shard(args: tuple[Path, int, int]) -> int:
    """Write shard `index` of `count` synthetic QA features in the label stage's schema and Parquet options."""
    import pyarrow.parquet as pq

    from distill.label import _PARQUET_OPTIONS

    path, index, count = args
    table = synthetic_features(index, count)
    pq.write_table(table, path / f"part-{index:05d}.parquet", **_PARQUET_OPTIONS)
    return len(table.column("input_ids").combine_chunks().values)


def synthetic_features(index: int, count: int, mean: float = LENGTH_MEAN, max_length: int = MAX_LENGTH):
    """`count` synthetic labelled QA features (a pyarrow Table in the label stage's schema), lengths drawn like
    SQuAD's (mean `mean`, at most `max_length`), seeded by `index`."""
    import numpy as np
    import pyarrow as pa

    from distill.features import QA_FEATURE_SCHEMA

    rng = np.random.default_rng([SEED, index])
    lengths = np.clip(rng.gamma(LENGTH_SHAPE, mean / LENGTH_SHAPE, count).round(), MIN_LENGTH, max_length)
    lengths = lengths.astype(np.int64)
    tokens = int(lengths.sum())
    offsets = np.zeros(count + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    position = np.arange(tokens) - np.repeat(offsets[:-1], lengths)
    question = position < 16                                      # [CLS] + question + [SEP]
    ids = rng.integers(1_000, 30_000, tokens, dtype=np.int32)
    ids[position == 0] = 101
    char = np.where(question, -1, (position - 16) * 5).astype(np.int32)

    def listed(values: np.ndarray, value_type: pa.DataType) -> pa.Array:
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, value_type))

    start = rng.integers(16, lengths).astype(np.int32)
    feature_ids = [f"f{index}-{i}" for i in range(count)]
    half = pa.list_(pa.float16())
    return pa.Table.from_arrays([
        pa.array([f"{f}/0" for f in feature_ids]), pa.array(feature_ids), pa.array(np.zeros(count, np.int32)),
        listed(ids, pa.int32()), listed((~question).astype(np.int8), pa.int8()),
        listed(char, pa.int32()), listed(np.where(question, -1, char + 4).astype(np.int32), pa.int32()),
        pa.array(start), pa.array(np.minimum(start + 3, lengths - 1).astype(np.int32)),
        listed(rng.normal(size=tokens).astype(np.float16), pa.float16()),
        listed(rng.normal(size=tokens).astype(np.float16), pa.float16()),
        pa.nulls(count, pa.list_(half)), pa.nulls(count, pa.list_(half)),
    ], schema=QA_FEATURE_SCHEMA)


def write_synthetic_features(folder: Path, features: int) -> dict:
    """`features` synthetic labelled QA features in shards of FEATURES_PER_SHARD, written by 2 processes."""
    shards = folder / "shards"
    shards.mkdir(parents=True)
    jobs = [(shards, i, min(FEATURES_PER_SHARD, features - start))
            for i, start in enumerate(range(0, features, FEATURES_PER_SHARD))]
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        tokens = sum(pool.imap(_synthetic_shard, jobs, chunksize=8))
    return {"shards": len(jobs), "tokens": tokens, "seconds": time.perf_counter() - started,
            "bytes": sum(p.stat().st_size for p in shards.iterdir())}


def _linked_prefix(source: Path, folder: Path, features: int) -> None:
    """A features folder holding the first shards of `source` (links, not copies) up to `features` rows."""
    (folder / "shards").mkdir(parents=True)
    for index in range(-(-features // FEATURES_PER_SHARD)):
        name = f"part-{index:05d}.parquet"
        (folder / "shards" / name).symlink_to(source / "shards" / name)


def _memory_mb() -> dict[str, float]:
    """This process's anonymous (private) and file-backed resident memory, from /proc."""
    fields = {}
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                fields[key] = int(value.split()[0]) / 1024
    return fields


def _data_path_child(queue, folder: str, rank: int, world: int) -> None:
    """Time the trainer's data path on `folder` as rank `rank` of `world`: open (or build) the training view, the
    epoch's order, the first batch, then SAMPLED_BATCHES micro-batches spread over the epoch."""
    import threading

    import numpy as np

    from distill.trainer import epoch_order, epoch_steps, worker_slice
    from distill.training_data import open_training_view

    baseline = _memory_mb()
    peak = dict(baseline)
    sampling = True

    def sample() -> None:  # the build streams; its peak must be seen, not just the end state
        while sampling:
            now = _memory_mb()
            for key in peak:
                peak[key] = max(peak[key], now[key])
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    view = open_training_view(Path(folder), PHASE2_COLUMNS)
    opened = time.perf_counter() - started
    steps = epoch_steps(epoch_order(view.offsets, SEED, 0, BATCH), BATCH, 1)  # one micro-batch per step
    view.batch(worker_slice(steps[0][0], rank, world), pad_token_id=0)
    first_batch = time.perf_counter() - started
    times = []
    for index in np.linspace(0, len(steps) - 1, SAMPLED_BATCHES).astype(int):
        began = time.perf_counter()
        view.batch(worker_slice(steps[index][0], rank, world), pad_token_id=0)
        times.append(time.perf_counter() - began)
    sampling = False
    sampler.join()
    end = _memory_mb()
    for key in peak:
        peak[key] = max(peak[key], end[key])
    import psutil

    queue.put({"open_s": opened, "first_batch_s": first_batch, "batch_ms": 1000 * float(np.median(times)),
               "batch_ms_p90": 1000 * float(np.percentile(times, 90)),
               "private_mb": peak["RssAnon"] - baseline["RssAnon"],
               "mapped_file_mb": end["RssFile"] - baseline["RssFile"],
               "uss_mb": psutil.Process().memory_full_info().uss / 2**20, "features": view.num_rows})


def _table_path_child(queue, folder: str) -> None:
    """The data path the trainer had before the training view, for comparison: every shard in one Arrow table,
    each micro-batch fetched with Table.take and padded row by row."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import torch

    from core.shards import shard_paths
    from distill.trainer import epoch_order, epoch_steps

    baseline = _memory_mb()
    started = time.perf_counter()
    table = pq.read_table(shard_paths(Path(folder)), columns=list(PHASE2_COLUMNS))
    offsets = np.concatenate([[0], np.cumsum(pc.list_value_length(table.column("input_ids")).to_numpy())])
    steps = epoch_steps(epoch_order(offsets, SEED, 0, BATCH), BATCH, 1)

    def batch(rows: np.ndarray) -> dict:
        records = table.take(pa.array(rows, pa.int64())).to_pylist()
        width = max(len(r["input_ids"]) for r in records)
        out = {}
        for key in ("input_ids", "token_type_ids", "teacher_start_logits", "teacher_end_logits"):
            padded = torch.zeros((len(records), width))
            for i, record in enumerate(records):
                padded[i, :len(record[key])] = torch.as_tensor(record[key])
            out[key] = padded
        return out

    batch(steps[0][0])
    first_batch = time.perf_counter() - started
    times = []
    for index in np.linspace(0, len(steps) - 1, 50).astype(int):
        began = time.perf_counter()
        batch(steps[index][0])
        times.append(time.perf_counter() - began)
    queue.put({"first_batch_s": first_batch, "batch_ms": 1000 * float(np.median(times)),
               "private_mb": _memory_mb()["RssAnon"] - baseline["RssAnon"]})


def training_data_at_scale(work_dir: Path, sizes: dict[str, int] = SIZES) -> dict:
    """Synthetic features at each size, and the trainer's data path on each (see the module doc)."""
    import shutil

    largest = max(sizes.values())
    written = write_synthetic_features(work_dir / "all", largest)
    print(f"training data: {largest:,} synthetic features, {written['tokens']:,} tokens, {written['shards']:,} "
          f"shards, {written['bytes'] / 2**30:.2f} GiB of Parquet written in {written['seconds']:.0f} s", flush=True)
    results: dict = {"synthetic_features_gib": round(written["bytes"] / 2**30, 3),
                     "synthetic_tokens_per_feature": round(written["tokens"] / largest, 1)}
    for name, count in sizes.items():
        folder = work_dir / name
        _linked_prefix(work_dir / "all", folder, count)
        one = _in_child(_data_path_child, str(folder), 0, 1)
        view_bytes = sum(p.stat().st_size for p in (folder / "training_view").glob("*.bin"))
        results |= {f"features_{name}": one["features"], f"batch_ms_{name}": round(one["batch_ms"], 3),
                    f"batch_ms_p90_{name}": round(one["batch_ms_p90"], 3),
                    f"first_batch_s_{name}": round(one["first_batch_s"], 2),
                    f"data_rss_mb_{name}": round(one["private_mb"], 1),
                    f"mapped_file_mb_{name}": round(one["mapped_file_mb"], 1),
                    f"uss_mb_{name}": round(one["uss_mb"], 1),
                    f"view_gib_{name}": round(view_bytes / 2**30, 3)}
        reopened = _in_child(_data_path_child, str(folder), 0, 1)
        results[f"reopen_first_batch_s_{name}"] = round(reopened["first_batch_s"], 2)
        print(f"  {name}: {one['batch_ms']:.2f} ms per batch, first batch {one['first_batch_s']:.1f} s (view "
              f"built), {reopened['first_batch_s']:.2f} s reopened, {one['private_mb']:.0f} MB private", flush=True)
        if name == min(sizes, key=sizes.get):
            before = _in_child(_table_path_child, str(folder))
            results |= {f"table_path_batch_ms_{name}": round(before["batch_ms"], 3),
                        f"table_path_data_rss_mb_{name}": round(before["private_mb"], 1),
                        f"table_path_first_batch_s_{name}": round(before["first_batch_s"], 2)}
        if count == largest:
            # two ranks of one node on a fresh view: one builds it under the lock while the other waits, then
            # both map the same files
            shutil.rmtree(folder / "training_view")
            ranks = _in_children(_data_path_child, [(str(folder), rank, 2) for rank in range(2)])
            results |= {f"two_rank_rss_mb_{name}": round(sum(r["private_mb"] for r in ranks), 1),
                        f"two_rank_batch_ms_{name}": round(max(r["batch_ms"] for r in ranks), 3),
                        f"two_rank_first_batch_s_{name}": round(max(r["first_batch_s"] for r in ranks), 2)}
        shutil.rmtree(folder)
    shutil.rmtree(work_dir / "all")
    return results


# ---------------------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    sections = set(args.sections.split(","))
    unknown = sections - {"training", "augment"}
    if unknown:
        raise SystemExit(f"unknown section(s) {sorted(unknown)}; choose from training, augment")
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="scale-bench-", dir=args.workdir) as scratch:
        scratch = Path(scratch)
        if "training" in sections:
            (scratch / "training").mkdir()
            sizes = {name: n for name, n in SIZES.items() if args.max_features is None or n <= args.max_features}
            results |= training_data_at_scale(scratch / "training", sizes)
        if "augment" in sections:
            (scratch / "augment").mkdir()
            results |= augment_at_squad_size(scratch / "augment", args.repeat, args.factor, args.workers,
                                             args.cpus_per_worker)
    results |= {"cpus": os.cpu_count(), "python": platform.python_version(),
                "total_seconds": round(time.perf_counter() - started, 1)}

    targets = {"augment_driver_rss_mb": f"<= {DRIVER_RSS_TARGET_MB}", "batch_ms_3m": "<= 5, <= 1.3 x 100k",
               "first_batch_s_3m": "<= 60", "data_rss_mb_3m": "<= 1500", "two_rank_rss_mb_3m": "<= 1.3 x 1 rank"}
    if "batch_ms_3m" in results:
        results["batch_ms_3m_over_100k"] = round(results["batch_ms_3m"] / results["batch_ms_100k"], 3)
        results["two_rank_over_one_rank_rss_3m"] = round(results["two_rank_rss_mb_3m"] / results["data_rss_mb_3m"], 3)
        targets |= {"batch_ms_3m_over_100k": "<= 1.3", "two_rank_over_one_rank_rss_3m": "<= 1.3"}
    print(f"\n{'measure':<36}{'value':>14}  target")
    for key, value in results.items():
        shown = f"{value:,}" if isinstance(value, int) else str(value)
        print(f"{key:<36}{shown:>14}  {targets.get(key, '')}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
