"""Distillation step time: the phases' training loop against a bare forward/backward/optimizer step, in one run.

    python benchmarks/distill_bench.py --out distill_bench.json                     # full size (a few minutes)
    python benchmarks/distill_bench.py --out /tmp/small.json --hidden 256 --heads 4 \\
        --intermediate 1024 --teacher-layers 4 --student-layers 2 --repeats 4       # quick look

Models: a bert-base-sized teacher (BertConfig defaults: 12 layers, 768 hidden, 12 heads) and a 6-layer, 768-wide
student built from its config, random weights (timing only), the real uncased vocabulary from ../shared.
Features: random token ids at full length (`--seq`), random gold positions and random float16 teacher logits,
written as one feature shard. On CPU, in this process, with the same torch thread count throughout:

1. phase1_overhead: median step of `distill_intermediate` (embeddings + hidden + attention MSE, teacher online)
   over a bare step of the same computation (student and teacher forward, the same loss modules, backward,
   AdamW step) on one pre-padded batch; target <= 0.15;
2. phase2_overhead: the same for `distill_prediction` with cached teacher logits (KL + hard CE); target <= 0.15;
3. cached_vs_online_speedup: median phase 2 step with the teacher run online over the step with cached logits;
   target >= 1.3;
4. peak_rss_mb of this process after the three phase runs (before the bare loops build their own models).

Trainer step times come from metrics.jsonl (`log_every` 1: the gap between consecutive `elapsed` values, so data
reading, padding, scheduling, clipping and logging are in); the first `--warmup` steps of every loop are left
out and the median of the next `--repeats` is reported. The checkpoint written at the end of a phase falls after
its last step and is not timed. The machine may be shared: numbers are noisy, compare within one run; the
`*_overhead_fastest` figures compare the fastest step of each loop instead of the medians (other processes only
ever add time).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO))  # run as a script from anywhere
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the results")
    parser.add_argument("--teacher-layers", type=int, default=12)
    parser.add_argument("--student-layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=768, help="teacher and student width")
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--intermediate", type=int, default=3072)
    parser.add_argument("--seq", type=int, default=128, help="tokens per feature")
    parser.add_argument("--batch", type=int, default=8, help="features per step")
    parser.add_argument("--warmup", type=int, default=2, help="steps left out of each measurement")
    parser.add_argument("--repeats", type=int, default=6, help="timed steps per measurement (median reported)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for every measurement (0: torch's default); 1 is steadiest on a shared "
                             "machine")
    parser.add_argument("--tokenizer", default=str(SHARED / "tokenizers/bert-base-uncased"))
    return parser.parse_args(argv)


def write_features(folder: Path, rows: int, seq: int, seed: int = 0) -> None:
    """`rows` QA features of `seq` random tokens each, with random gold positions and teacher logits."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from distill.features import QA_FEATURE_SCHEMA

    rng = np.random.default_rng(seed)
    question = seq // 4
    ids = rng.integers(1000, 30000, size=(rows, seq), dtype=np.int32)
    ids[:, 0], ids[:, question], ids[:, -1] = 101, 102, 102  # [CLS] question [SEP] context [SEP]
    types = np.zeros((rows, seq), dtype=np.int8)
    types[:, question + 1:] = 1
    starts = rng.integers(question + 1, seq - 2, size=rows, dtype=np.int32)
    columns = {
        "feature_id": [f"q{i}/0" for i in range(rows)], "example_id": [f"q{i}" for i in range(rows)],
        "window": np.zeros(rows, dtype=np.int32),
        "input_ids": list(ids), "token_type_ids": list(types),
        "offset_start": list(np.full((rows, seq), -1, dtype=np.int32)),
        "offset_end": list(np.full((rows, seq), -1, dtype=np.int32)),
        "start_position": starts, "end_position": starts + 1,
        "teacher_start_logits": list(rng.normal(size=(rows, seq)).astype(np.float16)),
        "teacher_end_logits": list(rng.normal(size=(rows, seq)).astype(np.float16)),
        "teachers_start_logits": [None] * rows, "teachers_end_logits": [None] * rows,
    }
    schema = QA_FEATURE_SCHEMA
    table = pa.Table.from_arrays([pa.array(columns[f.name], f.type) for f in schema], schema=schema)
    (folder / "shards").mkdir(parents=True)
    pq.write_table(table, folder / "shards" / "part-00000.parquet")


def trainer_step_seconds(out_dir: Path, warmup: int) -> list[float]:
    """Per-step wall times of a phase run, from the gaps between its metric lines, warm-up steps left out."""
    elapsed = [json.loads(line)["elapsed"] for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    gaps = [b - a for a, b in zip([0.0, *elapsed[:-1]], elapsed)]
    return gaps[warmup:]


def bare_step_seconds(step, steps: int, warmup: int) -> list[float]:
    times = []
    for _ in range(warmup + steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return times[warmup:]


def bare_loops(args, teacher_ref, student_spec, features: Path):
    """The bare phase 1 and phase 2 steps on one pre-padded batch: (phase1 step fn, phase2 step fn)."""
    import pyarrow.parquet as pq
    import torch

    from distill.features import pad_batch
    from distill.layer_map import resolve_layer_map
    from distill.losses import AttentionMSE, HardLabelCE, HiddenStateMSE, SoftTargetKL
    from distill.models import load_model
    from distill.student import build_student

    table = pq.read_table(features / "shards" / "part-00000.parquet")
    batch = pad_batch(table.slice(0, args.batch), pad_token_id=0)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    mask = batch["attention_mask"]
    teacher = load_model(teacher_ref, "qa", output_attentions=True).requires_grad_(False)
    student = build_student(student_spec, teacher_ref, "qa", None)
    student.set_attn_implementation("eager")
    layer_map = resolve_layer_map("uniform", args.student_layers, args.teacher_layers)
    hidden = HiddenStateMSE(args.hidden, args.hidden)
    attention = AttentionMSE(args.heads, args.heads)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-5)

    def phase1() -> None:
        out = student(**inputs, output_hidden_states=True, output_attentions=True)
        with torch.no_grad():
            ref = teacher(**inputs, output_hidden_states=True, output_attentions=True)
        loss = hidden(out.hidden_states[0], ref.hidden_states[0], mask)
        loss = loss + sum(hidden(out.hidden_states[s], ref.hidden_states[t], mask) for s, t in layer_map.hidden_pairs)
        loss = loss + sum(attention(out.attentions[s], ref.attentions[t], mask) for s, t in layer_map.attention_pairs)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    kl, hard = SoftTargetKL(1.0), HardLabelCE()
    cached = torch.stack([batch["teacher_start_logits"], batch["teacher_end_logits"]], 1)
    gold = torch.stack([batch["start_positions"], batch["end_positions"]], 1)

    def phase2() -> None:
        out = student(**inputs)
        logits = torch.stack([out.start_logits, out.end_logits], 1)
        loss = 0.5 * kl(logits, cached, mask) + 0.5 * hard(logits, gold, mask)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return phase1, phase2


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch
    from transformers import AutoTokenizer, BertConfig

    from core.resources import ResourcesSpec
    from distill.models import ModelRef
    from distill.phases import distill_intermediate, distill_prediction
    from distill.spec import IntermediateSpec, PredictionSpec, StudentArchitecture, StudentSpec

    if args.threads:
        torch.set_num_threads(args.threads)
    steps = args.warmup + args.repeats
    resources = ResourcesSpec(workers=1, gpus_per_worker=0)
    loop = dict(batch_size=args.batch, epochs=1, warmup_ratio=0.0, log_every=1, checkpoint_every=10**9)
    results: dict = {"config": vars(args) | {"out": str(args.out)}, "torch_threads": torch.get_num_threads(),
                     "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                 "torch": torch.__version__}}
    with tempfile.TemporaryDirectory(prefix="distill-bench-") as scratch:
        root = Path(scratch)
        teacher_dir = root / "teacher"
        BertConfig(num_hidden_layers=args.teacher_layers, hidden_size=args.hidden, num_attention_heads=args.heads,
                   intermediate_size=args.intermediate).save_pretrained(teacher_dir)
        AutoTokenizer.from_pretrained(args.tokenizer).save_pretrained(teacher_dir)
        teacher = ModelRef(str(teacher_dir), init="random")
        student = StudentSpec(architecture=StudentArchitecture(
            num_hidden_layers=args.student_layers, hidden_size=args.hidden, num_attention_heads=args.heads,
            intermediate_size=args.intermediate))
        features = root / "features"
        write_features(features, rows=args.batch * (steps + 1), seq=args.seq)

        timings: dict[str, list[float]] = {}
        distill_intermediate(student, teacher, "qa", features, IntermediateSpec(**loop), resources, 0,
                             root / "phase1", progress=False)
        timings["phase1_trainer"] = trainer_step_seconds(root / "phase1", args.warmup)
        for source in ("labelled", "online"):
            config = PredictionSpec(**loop, distill_weight=0.5, teacher_logits=source)
            distill_prediction(student, [teacher], "qa", features, config, "probs", resources, 0,
                               root / f"phase2-{source}", progress=False)
            timings[f"phase2_trainer_{source}"] = trainer_step_seconds(root / f"phase2-{source}", args.warmup)
        # the trainer's high-water mark, before the bare loops' own copies of the models exist
        results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        phase1, phase2 = bare_loops(args, teacher, student, features)
        timings["phase1_bare"] = bare_step_seconds(phase1, args.repeats, args.warmup)
        timings["phase2_bare"] = bare_step_seconds(phase2, args.repeats, args.warmup)

    median = {name: statistics.median(values) for name, values in timings.items()}
    results["step_seconds"] = {name: round(value, 4) for name, value in median.items()}
    results["step_seconds_all"] = {name: [round(v, 4) for v in values] for name, values in timings.items()}
    results["phase1_overhead"] = round(median["phase1_trainer"] / median["phase1_bare"] - 1, 4)
    results["phase2_overhead"] = round(median["phase2_trainer_labelled"] / median["phase2_bare"] - 1, 4)
    results["cached_vs_online_speedup"] = round(median["phase2_trainer_online"] / median["phase2_trainer_labelled"], 3)
    # other processes only ever add time to a step, so the fastest steps are the steadiest comparison on a shared
    # machine; reported beside the medians, not instead of them
    fastest = {name: min(values) for name, values in timings.items()}
    results["phase1_overhead_fastest"] = round(fastest["phase1_trainer"] / fastest["phase1_bare"] - 1, 4)
    results["phase2_overhead_fastest"] = round(fastest["phase2_trainer_labelled"] / fastest["phase2_bare"] - 1, 4)
    results["targets"] = {"phase1_overhead": "<= 0.15", "phase2_overhead": "<= 0.15",
                          "cached_vs_online_speedup": ">= 1.3"}

    print(f"{'measurement':<28}{'median step (s)':>16}")
    for name, value in median.items():
        print(f"{name:<28}{value:>16.4f}")
    for name in ("phase1_overhead", "phase2_overhead", "phase1_overhead_fastest", "phase2_overhead_fastest",
                 "cached_vs_online_speedup", "peak_rss_mb"):
        print(f"{name:<28}{results[name]:>16}   {results['targets'].get(name, '')}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


if __name__ == "__main__":
    main()
