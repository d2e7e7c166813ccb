"""The GPU path at the reference recipe's shapes: labelling, phase 1 and phase 2, and what the full recipe would take.

    python benchmarks/gpu_bench.py --out gpu_bench.json            # on a GPU machine, a few minutes
    python benchmarks/gpu_bench.py --out /tmp/smoke.json --smoke   # tiny shapes on CPU (tests/test_gpu_bench.py)
    python benchmarks/gpu_bench.py --out modes.json --train plain default reduce-overhead   # each way of training

Shapes: a 12-layer 768-wide BERT teacher with a QA head, a 6-layer 768-wide student (TinyBERT General 6L-768D's
shape), batch 26, synthetic features in the label stage's format with SQuAD-like lengths (mean 180 tokens, at most
384: `scale_bench.synthetic_features`), random weights and a generated 30,522-token vocabulary. Nothing is
downloaded and no Ray is imported: besides torch and transformers it needs pyarrow, pydantic, PyYAML and tensorboardX
(wheels small enough to carry to a bare GPU machine).

Every measurement goes through the code a job runs: `distill.label.TeacherEnsemble.label` for labelling (after one
untimed warm-up block; at the default label.batch_size, which the projection uses, and at four times it), and
`distill.phases.distill_intermediate` / `distill_prediction` with one worker for the two phases, whose throughput is
read from their own metrics.jsonl (features/s per log window, the first window, with its warm-up, left out).
Precision is `resources.precision: auto` (bf16 on compute capability 8.0+, fp16 below). `--train` names the ways the
phases run, each measured in turn in this process: `plain`, or a `resources.compile` mode. A compiled run starts
from an empty in-memory compile cache and reports dynamo's graphs and graph breaks and inductor's CUDA-graph skips
(their reasons are logged as they happen); inductor's on-disk cache stays, so a later mode that builds the same
kernels shows a shorter warm-up than a fresh machine would. The JSON file is rewritten after every measurement, so a run cut short keeps
what it measured.

Model FLOP utilisation: model FLOPs per token (forward 2 x non-embedding parameters + 4 x layers x length x
width for attention; training 3x a forward; phase 1 adds the teacher's forward) x tokens/s over the device's dense
peak for the precision used (`PEAK_FLOPS`; none for an unknown device or CPU). Projection: the reference recipe's
2,802,380 features (`python -m jobs plan`), labelled once, then 538,920 optimizer steps in each phase.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import get_args

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from core.resources import CompileMode  # noqa: E402  (after the path is set)

REFERENCE_FEATURES = 2_802_380   # SQuAD 2.0 train x20 + original at max_seq_len 384 (jobs plan)
REFERENCE_STEPS = 538_920        # per phase: 5 epochs at batch 26
BATCH = 26
TRAIN_MODES = ("plain", *get_args(CompileMode))   # plain: not compiled
PHASE_TITLES = {"intermediate": "phase 1", "prediction": "phase 2"}
VOCAB = 30_522
# dense tensor-core peak FLOP/s by device name and precision (vendor data sheets, SXM parts)
PEAK_FLOPS = {"H200": {"bf16": 989e12, "fp16": 989e12}, "H100": {"bf16": 989e12, "fp16": 989e12},
              "A100": {"bf16": 312e12, "fp16": 312e12}, "L4": {"bf16": 121e12, "fp16": 121e12},
              "A10": {"bf16": 125e12, "fp16": 125e12}, "V100": {"fp16": 125e12}, "T4": {"fp16": 65e12}}
SHAPES = {
    "reference": {"teacher": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12,
                                  intermediate_size=3072),
                  "student": dict(num_hidden_layers=6, hidden_size=768, num_attention_heads=12,
                                  intermediate_size=3072),
                  "mean_length": 180, "max_length": 384, "label_features": 4_096, "steps": 120, "log_every": 20},
    "smoke": {"teacher": dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=128),
              "student": dict(num_hidden_layers=1, hidden_size=64, num_attention_heads=2, intermediate_size=128),
              "mean_length": 40, "max_length": 64, "label_features": 128, "steps": 12, "log_every": 3},
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="JSON file for the results")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, for a CPU run of the same code")
    parser.add_argument("--train", nargs="+", choices=TRAIN_MODES, default=["plain"], metavar="MODE",
                        help=f"how the phases run, each measured in turn: {', '.join(TRAIN_MODES)} (plain: not "
                             "compiled; the others: resources.compile's modes; reduce-overhead adds CUDA graphs)")
    return parser.parse_args()


def build_models(folder: Path, shape: dict) -> tuple[Path, Path]:
    """A random teacher and student with a QA head, saved with a generated WordPiece vocabulary."""
    import torch
    from transformers import AutoModelForQuestionAnswering, BertConfig, BertTokenizerFast

    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                               + [f"w{i}" for i in range(VOCAB - 5)]) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab))
    paths = []
    for name in ("teacher", "student"):
        torch.manual_seed(0)
        model = AutoModelForQuestionAnswering.from_config(BertConfig(vocab_size=VOCAB, **shape[name]))
        model.save_pretrained(folder / name)
        tokenizer.save_pretrained(folder / name)
        paths.append(folder / name)
    return paths[0], paths[1]


def write_features(folder: Path, count: int, shape: dict) -> Path:
    import pyarrow.parquet as pq
    from scale_bench import FEATURES_PER_SHARD, synthetic_features

    (folder / "shards").mkdir(parents=True)
    for index, start in enumerate(range(0, count, FEATURES_PER_SHARD)):
        table = synthetic_features(index, min(FEATURES_PER_SHARD, count - start), shape["mean_length"],
                                   shape["max_length"])
        pq.write_table(table, folder / "shards" / f"part-{index:05d}.parquet")
    return folder


def forward_flops_per_token(model, length: float) -> float:
    embeddings = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    params = sum(p.numel() for p in model.parameters()) - embeddings
    return 2 * params + 4 * model.config.num_hidden_layers * length * model.config.hidden_size


def peak_flops(device, precision: str) -> float | None:
    import torch

    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peaks.get(precision) for key, peaks in PEAK_FLOPS.items() if key in name), None)


def mean_tokens_per_feature(features_dir: Path) -> float:
    import pyarrow.parquet as pq

    shards = sorted((features_dir / "shards").glob("*.parquet"))
    tables = [pq.read_table(path, columns=["input_ids"]) for path in shards]
    return sum(len(t.column("input_ids").combine_chunks().values) for t in tables) / sum(t.num_rows for t in tables)


def measure_labelling(teacher: Path, features_dir: Path, device, batch_size: int) -> dict:
    import pyarrow.parquet as pq
    import torch

    from distill.label import TeacherEnsemble
    from distill.models import ModelRef
    from distill.spec import LabelSpec

    table = pq.read_table(sorted((features_dir / "shards").glob("*.parquet"))[0])
    ensemble = TeacherEnsemble([ModelRef(str(teacher))], "qa", None, LabelSpec(batch_size=batch_size), device,
                               pad_token_id=0)
    ensemble.label(table.slice(0, min(256, table.num_rows)))   # kernels chosen, memory pooled
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    began = time.perf_counter()
    ensemble.label(table)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - began
    return {"features": table.num_rows, "batch_size": batch_size, "seconds": seconds,
            "features_per_s": table.num_rows / seconds, "precision": ensemble.precision,
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None}


def measure_phase(phase: str, teacher: Path, student: Path, features_dir: Path, shape: dict, device,
                  out_dir: Path, mode: str) -> dict:
    import torch
    import torch._dynamo
    from torch._dynamo.utils import counters

    from core.resources import ResourcesSpec
    from distill.models import ModelRef
    from distill.phases import distill_intermediate, distill_prediction
    from distill.spec import IntermediateSpec, PredictionSpec, StudentSpec

    compiled = mode != "plain"
    resources = ResourcesSpec(workers=1, gpus_per_worker=1 if device.type == "cuda" else 0,
                              compile=mode if compiled else False)
    loop = dict(epochs=1, batch_size=BATCH, log_every=shape["log_every"], checkpoint_minutes=None)
    if compiled:  # this run's own compilation, in its warm-up, and its own counts
        torch._dynamo.reset()
        counters.clear()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if phase == "intermediate":
        result = distill_intermediate(StudentSpec(model=str(student)), ModelRef(str(teacher)), "qa", features_dir,
                                      IntermediateSpec(**loop), resources, 0, out_dir, progress=False)
    else:
        result = distill_prediction(StudentSpec(model=str(student)), [ModelRef(str(teacher))], "qa", features_dir,
                                    PredictionSpec(**loop), "probs", resources, 0, out_dir, progress=False)
    lines = [json.loads(line) for line in Path(result.metrics).read_text().splitlines()]
    windows = [line["examples_per_s"] for line in lines[1:]] or [lines[-1]["examples_per_s"]]
    features_per_s = statistics.median(windows)
    precision = json.loads(Path(result.train_config).read_text())["precision"]
    # the first window holds the warm-up: kernel choices and, when compiled, the compilation
    return {"steps": result.steps, "features_per_s": features_per_s, "steps_per_s": features_per_s / BATCH,
            "first_window_s": lines[0]["elapsed"], "precision": precision.split()[0],
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
            "compiled": {"graphs": counters["stats"]["unique_graphs"],
                         "graph_breaks": sum(counters["graph_break"].values()),
                         "cudagraph_skips": counters["inductor"]["cudagraph_skips"]} if compiled else None}


def main() -> int:
    args = parse_args()
    import torch
    import transformers
    from transformers import AutoModelForQuestionAnswering

    from distill.spec import LabelSpec

    transformers.utils.logging.disable_progress_bar()

    shape = SHAPES["smoke" if args.smoke else "reference"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "smoke": args.smoke, "train": args.train, "shapes": shape, "batch": BATCH,
        "targets": {"prediction_mfu": 0.40, "intermediate_mfu": 0.30, "total_hours_h100": 2.0,
                    "total_hours_v100": 12.0},
        "training": {}, "projected_hours": {},
    }
    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as tmp:
        tmp = Path(tmp)
        teacher, student = build_models(tmp, shape)
        features = write_features(tmp / "features", max(shape["label_features"], BATCH * shape["steps"]), shape)
        mean_length = report["mean_tokens_per_feature"] = mean_tokens_per_feature(features)
        teacher_flops = forward_flops_per_token(AutoModelForQuestionAnswering.from_pretrained(teacher), mean_length)
        student_flops = forward_flops_per_token(AutoModelForQuestionAnswering.from_pretrained(student), mean_length)

        def rate(row: dict, flops_per_token: float, hours: float) -> dict:
            achieved = row["features_per_s"] * mean_length * flops_per_token
            peak = peak_flops(device, row["precision"])
            return {**row, "model_tflops": achieved / 1e12, "mfu": achieved / peak if peak else None,
                    "hours": hours}

        def save() -> None:  # after every measurement: a run cut short keeps what it measured
            Path(args.out).write_text(json.dumps(report, indent=2) + "\n")

        # the default label.batch_size, and four times it: how much a launch-bound forward gains from more rows
        for key, batch_size in (("label", LabelSpec().batch_size), ("label_wide", 4 * LabelSpec().batch_size)):
            row = measure_labelling(teacher, features, device, batch_size)
            report[key] = rate(row, teacher_flops, REFERENCE_FEATURES / row["features_per_s"] / 3600)
            save()
        flops_per_token = {"intermediate": 3 * student_flops + teacher_flops, "prediction": 3 * student_flops}
        for mode in args.train:
            phases = report["training"][mode] = {}
            for phase in ("intermediate", "prediction"):
                row = measure_phase(phase, teacher, student, features, shape, device, tmp / mode / phase, mode)
                phases[phase] = rate(row, flops_per_token[phase], REFERENCE_STEPS / row["steps_per_s"] / 3600)
                save()
            # the wider labelling batch is shown beside the default, not counted in a total
            hours = {"label": report["label"]["hours"], **{phase: row["hours"] for phase, row in phases.items()}}
            report["projected_hours"][mode] = {**hours, "total": sum(hours.values())}
            save()

    print_table(report, args.out, shape["log_every"])
    return 0


def print_table(report: dict, out: str, log_every: int) -> None:
    rows = {f"label b{report[key]['batch_size']}": report[key] for key in ("label", "label_wide")}
    for mode, phases in report["training"].items():
        rows.update({f"{PHASE_TITLES[phase]} {mode}": row for phase, row in phases.items()})
    print(f"{'':28}{'features/s':>12}{'steps/s':>10}{'TFLOP/s':>10}{'MFU':>8}{'peak GiB':>10}{'precision':>11}"
          f"{'hours*':>9}{'warm-up s**':>13}")
    for title, row in rows.items():
        mfu = "-" if row["mfu"] is None else f"{row['mfu']:.1%}"
        gib = "-" if row["peak_memory_gib"] is None else f"{row['peak_memory_gib']:.1f}"
        steps = f"{row['steps_per_s']:.2f}" if "steps_per_s" in row else "-"
        warmup = f"{row['first_window_s']:.1f}" if "first_window_s" in row else "-"
        print(f"{title:28}{row['features_per_s']:>12.1f}{steps:>10}{row['model_tflops']:>10.2f}{mfu:>8}{gib:>10}"
              f"{row['precision']:>11}{row['hours']:>9.2f}{warmup:>13}")
    shapes = "at the smoke shapes, not the reference's" if report["smoke"] else "at the reference shapes"
    totals = ", ".join(f"{mode} {hours['total']:.2f} h" for mode, hours in report["projected_hours"].items())
    print(f"* the reference recipe's features or steps on this device, {shapes}. The whole recipe (labelling at "
          f"b{report['label']['batch_size']}, both phases): {totals} ({report['device']}); results in {out}")
    print(f"** the phase's first {log_every} steps, left out of its rate: kernel choices and, when compiled, the "
          "compilation")
    for mode, phases in report["training"].items():
        for phase, row in phases.items():
            if row["compiled"] is not None:
                counts = row["compiled"]
                print(f"{PHASE_TITLES[phase]} {mode}: {counts['graphs']} graphs, {counts['graph_breaks']} graph "
                      f"breaks, {counts['cudagraph_skips']} CUDA-graph skips")


if __name__ == "__main__":
    sys.exit(main())
