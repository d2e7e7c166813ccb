"""Labelling throughput: the whole label stage against a bare forward pass of the same model on the same features.

    python benchmarks/label_bench.py --out label_bench.json                 # all 11,873 dev questions, ~11 min
    python benchmarks/label_bench.py --out /tmp/small.json --examples 300   # quick look

The stage is `distill.label.label_examples` end to end on SQuAD 2.0 dev questions, as a job runs it: Ray actor
start-up, model and tokenizer loading, reading, tokenization, teacher inference, Parquet writing (Ray itself is
started beforehand, as the job runner does once per job). With a GPU each labelling actor reads and tokenizes the
next block of examples while the teacher runs on the previous one; on CPU (this machine) it does them in turn, as
the teacher's threads already take every core. stage_busy_seconds splits the actor's time into reading and
tokenizing, teachers and writing.
The bare forward pass runs the same model on the same features, tokenized beforehand, in the same batches (longest
first within each block of examples, padded to the batch's longest row), in this process, with no I/O and the same
thread count. overhead_vs_bare_forward = stage seconds / bare seconds - 1; the target is <= 0.15 at full size.
tokenize_seconds is what tokenizing every block takes in this process, outside the stage. The
stage has a fixed cost of about 7 s (the actor's process: torch and transformers imported, model loaded), which a
real labelling run (hours) does not notice; at 300 questions it is most of the stage, at the whole dev set (~3.5 min
of compute on 2 cores) a few percent.

The teacher is a BERT with random weights (4 layers, 256 hidden by default) and the real bert-base-uncased
vocabulary from ../shared; it is built here, nothing is downloaded. Storage is reported as bytes per feature
on disk (every column, and the teacher columns alone) against float32 start + end logits at full max_seq_len.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="JSON file for the results")
    parser.add_argument("--examples", type=int, default=None,
                        help="label only the first N dev questions (default: all 11,873, ~14,600 features)")
    parser.add_argument("--max-seq-len", type=int, default=192)
    parser.add_argument("--doc-stride", type=int, default=64)
    parser.add_argument("--max-query-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32, help="features per forward pass")
    parser.add_argument("--examples-per-shard", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--cpus-per-worker", type=float, default=None,
                        help="default: every CPU of this machine divided among the workers")
    parser.add_argument("--squad", default=str(SHARED / "data/squad2/dev-v2.0.json"))
    parser.add_argument("--tokenizer", default=str(SHARED / "tokenizers/bert-base-uncased"))
    return parser.parse_args()


def squad_examples(path: Path, limit: int | None, out_dir: Path) -> Path:
    """The first `limit` questions (None: all) of a SQuAD file as an examples folder, via the stage's reader."""
    from augment.readers import read_examples
    from augment.spec import DataSource

    read_examples(DataSource(path=str(path), limit=limit), "qa", None, out_dir)
    return out_dir


def bare_forward_seconds(model, tables, batch_size: int, pad_token_id: int, device) -> float:
    """Seconds for the model alone over pre-tokenized features, batched as the label stage batches them."""
    import numpy as np
    import torch

    from core.devices import autocast, device_precision

    batches = []
    for table in tables:   # one table per block of examples, as the stage sees them
        ids = table.column("input_ids").to_pylist()
        types = table.column("token_type_ids").to_pylist()
        lengths = np.array([len(r) for r in ids])
        order = np.argsort(-lengths, kind="stable")
        for begin in range(0, len(order), batch_size):
            rows = order[begin:begin + batch_size]
            width = int(lengths[rows].max())
            input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
            token_types = torch.zeros((len(rows), width), dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for i, r in enumerate(rows):
                input_ids[i, :lengths[r]] = torch.tensor(ids[r])
                token_types[i, :lengths[r]] = torch.tensor(types[r])
                mask[i, :lengths[r]] = 1
            batches.append((input_ids.to(device), token_types.to(device), mask.to(device)))
    with torch.inference_mode(), autocast(device, device_precision(device)):
        model(input_ids=batches[0][0][:2], token_type_ids=batches[0][1][:2], attention_mask=batches[0][2][:2])
        if device.type == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        for input_ids, token_types, mask in batches:
            out = model(input_ids=input_ids, token_type_ids=token_types, attention_mask=mask)
            out.start_logits.float().cpu()   # the stage brings logits back too
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - began


def main() -> int:
    args = parse_args()
    import ray
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer, BertConfig

    from core.resources import ResourcesSpec
    from core.shards import read_shards
    from distill.features import qa_features
    from distill.label import label_examples
    from distill.models import ModelRef
    from distill.spec import FeaturesSpec, LabelSpec

    cpus = os.cpu_count() or 1
    cpus_per_worker = args.cpus_per_worker or cpus / args.workers
    threads = max(1, math.ceil(cpus_per_worker))   # what each labelling actor uses
    gpu = torch.cuda.is_available()
    features = FeaturesSpec(max_seq_len=args.max_seq_len, doc_stride=args.doc_stride,
                            max_query_len=args.max_query_len)
    config = LabelSpec(batch_size=args.batch_size)
    resources = ResourcesSpec(workers=args.workers, cpus_per_worker=cpus_per_worker, gpus_per_worker=1 if gpu else 0)

    with tempfile.TemporaryDirectory(prefix="label-bench-") as tmp:
        tmp = Path(tmp)
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
        bert = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=args.hidden, num_hidden_layers=args.layers,
                          num_attention_heads=args.heads, intermediate_size=4 * args.hidden)
        torch.manual_seed(0)
        model = AutoModelForQuestionAnswering.from_config(bert).eval()
        model.save_pretrained(tmp / "teacher")
        tokenizer.save_pretrained(tmp / "teacher")
        examples = squad_examples(Path(args.squad), args.examples, tmp / "examples")
        rows = read_shards(examples).to_pylist()

        # bare forward: same features, same blocks and batches, this process, the actors' thread count
        device = torch.device("cuda" if gpu else "cpu")
        torch.set_num_threads(threads)
        began = time.perf_counter()
        tables = [qa_features(rows[s:s + args.examples_per_shard], tokenizer, features)
                  for s in range(0, len(rows), args.examples_per_shard)]
        tokenize = time.perf_counter() - began
        n_features = sum(t.num_rows for t in tables)
        bare_before = bare_forward_seconds(model.to(device), tables, args.batch_size, tokenizer.pad_token_id,
                                           device)

        began = time.perf_counter()
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        ray_init = time.perf_counter() - began
        ref = ModelRef(str(tmp / "teacher"))
        result = label_examples(examples, "qa", [ref], ref, features, config, resources, tmp / "label",
                                progress=False, examples_per_shard=args.examples_per_shard)
        ray.shutdown()
        bare_after = bare_forward_seconds(model, tables, args.batch_size, tokenizer.pad_token_id, device)

    if result.features != n_features:
        raise RuntimeError(f"the stage wrote {result.features} features, the bare pass ran {n_features}")
    bare = (bare_before + bare_after) / 2
    report = {
        "device": str(device), "cpus": cpus, "threads_per_worker": threads, "workers": args.workers,
        "model": {"layers": args.layers, "hidden": args.hidden, "heads": args.heads},
        "features_spec": features.model_dump(), "batch_size": args.batch_size,
        "examples": result.examples, "features": result.features,
        "stage_seconds": result.seconds, "ray_init_seconds": ray_init,
        "bare_forward_seconds": bare, "bare_forward_seconds_runs": [bare_before, bare_after],
        "tokenize_seconds": tokenize,
        "stage_busy_seconds": result.busy_seconds,
        "stage_features_per_second": result.features / result.seconds,
        "bare_features_per_second": result.features / bare,
        "overhead_vs_bare_forward": result.seconds / bare - 1,
        "overhead_target": 0.15,
        "bytes_per_feature": result.bytes_per_feature,
        "teacher_logit_bytes_per_feature": result.teacher_logit_bytes_per_feature,
        "float32_full_bytes_per_feature": 2 * 4 * args.max_seq_len,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'':32}{'value':>14}")
    for key in ("examples", "features", "stage_seconds", "bare_forward_seconds", "tokenize_seconds",
                "stage_features_per_second", "bare_features_per_second", "overhead_vs_bare_forward",
                "bytes_per_feature", "teacher_logit_bytes_per_feature", "float32_full_bytes_per_feature",
                "ray_init_seconds"):
        value = report[key]
        print(f"{key:32}{value:>14.3f}" if isinstance(value, float) else f"{key:32}{value:>14}")
    print("inside the stage's actors, seconds per part: " + ", ".join(
        f"{part} {value:.1f}" for part, value in result.busy_seconds.items()))
    print(f"device {device}, {args.workers} worker(s) x {threads} thread(s); results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
