"""Does distillation help? SST-2 accuracy of a teacher and four students, each a job run by `python -m jobs`.

    python benchmarks/quality_sst2.py --out benchmarks/results/quality_sst2.json    # 3 seeds, ~40 min on 2 cores

The jobs are the specs in benchmarks/specs/, submitted exactly as a user would (`python -m jobs submit SPEC
--set seed=S --root WORKDIR/runs`), one after another, for each seed:

    (a) alone                   BERT-tiny shape (2 layers, 128 hidden, fresh weights) on hard labels of a
                                2,000-sentence transfer set (the first 2,000 lines of SST-2 train)
    (b) kd_prediction           the same student, prediction-layer distillation from the teacher
    (c) kd_two_phase            phase 1 (embeddings, hidden states) then phase 2, on the transfer set
    (d) kd_two_phase_augmented  (c) on the transfer set augmented x20 by our engine, with a masked LM and word
                                vectors trained on the SST-2 train sentences (labels unused)

The teacher (BERT 4 layers, 256 hidden, fresh weights) is fine-tuned on all 67k SST-2 train sentences inside
job (b); (c) and (d) share its spec and get it from the stage cache, and so does every seed's augmentation
model: the masked LM is trained once (its own fixed seed), the augmentation sampling follows the job seed.
Accuracy is on SST-2 dev (872 sentences). Models use the real bert-base-uncased vocabulary from ../shared and
are built from configs written into benchmarks/specs/models/ (nothing is downloaded).

The JSON has `teacher`, `alone`, `kd_prediction`, `kd_two_phase`, `kd_two_phase_augmented`, each
{"mean", "std", "runs"} (accuracy; std is the sample standard deviation over seeds), `seconds` (wall time of
the whole benchmark, of each job, and of each stage of each job: a cached stage takes about 0 s), the ordering
checks the issue asks for, and the machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPECS = REPO / "benchmarks" / "specs"
MODELS = SPECS / "models"
TOKENIZER = REPO.parent / "shared" / "tokenizers" / "bert-base-uncased"
SST2 = REPO.parent / "shared" / "data" / "sst2"

VARIANTS = {  # JSON key -> spec, in the order they run (b first: it trains the teacher the others reuse)
    "kd_prediction": "sst2_kd_prediction.yaml",
    "kd_two_phase": "sst2_kd_two_phase.yaml",
    "kd_two_phase_augmented": "sst2_kd_two_phase_augmented.yaml",
    "alone": "sst2_alone.yaml",
}
SHAPES = {  # BERT-mini and BERT-tiny shapes
    "bert-4l-256": {"num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4, "intermediate_size": 1024},
    "bert-2l-128": {"num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 2, "intermediate_size": 512},
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="write the results as JSON here")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--workdir", type=Path, help="run store and logs (default: a temp folder, kept)")
    return parser.parse_args()


def build_models() -> None:
    """Config-only model folders the specs name: fresh weights are drawn by each job from its seed."""
    from transformers import AutoTokenizer, BertConfig

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    for name, shape in SHAPES.items():
        folder = MODELS / name
        BertConfig(vocab_size=tokenizer.vocab_size, max_position_embeddings=512, **shape).save_pretrained(folder)
        tokenizer.save_pretrained(folder)


def submit(spec: Path, seed: int, root: Path, log_dir: Path) -> str:
    """Run one job in the foreground through the CLI; return its id."""
    log = log_dir / f"{spec.stem}-seed{seed}.log"
    command = [sys.executable, "-m", "jobs", "submit", str(spec), "--set", f"seed={seed}", "--root", str(root)]
    with open(log, "w") as handle:
        done = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, stderr=handle, text=True,
                              env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if done.returncode != 0 or not last.startswith("job "):
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {last}; see {log}")
    return last.split()[1].rstrip(":")


def stage_seconds(state: dict) -> dict[str, float]:
    seconds = {}
    for name, stage in state["stages"].items():
        if stage.get("started_at") and stage.get("ended_at"):
            began, ended = (dt.datetime.fromisoformat(stage[k]) for k in ("started_at", "ended_at"))
            seconds[name] = (ended - began).total_seconds()
        elif stage["status"] == "cached":
            seconds[name] = 0.0
    return seconds


def summary(runs: list[float]) -> dict:
    return {"mean": statistics.fmean(runs), "std": statistics.stdev(runs) if len(runs) > 1 else 0.0, "runs": runs}


def main() -> int:
    args = parse_args()
    began = time.perf_counter()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="quality-sst2-"))
    root, logs = workdir / "runs", workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    build_models()

    accuracy: dict[str, list[float]] = {"teacher": [], **{key: [] for key in VARIANTS}}
    jobs: dict[str, dict] = {}
    for seed in args.seeds:
        for key, spec in VARIANTS.items():
            job_began = time.perf_counter()
            job_id = submit(SPECS / spec, seed, root, logs)
            job_seconds = time.perf_counter() - job_began
            run = root / job_id
            metrics = json.loads((run / "artifacts" / "evaluate" / "metrics.json").read_text())
            accuracy[key].append(metrics["student"]["accuracy"])
            if "teacher_0" in metrics:
                accuracy["teacher"].append(metrics["teacher_0"]["accuracy"])
            jobs[f"{key}/seed{seed}"] = {"job_id": job_id, "seconds": round(job_seconds, 1),
                                         "stages": stage_seconds(json.loads((run / "state.json").read_text()))}
            print(f"seed {seed} {key:24} accuracy {metrics['student']['accuracy']:.4f}  ({job_seconds:.0f} s)",
                  flush=True)

    results = {key: summary(runs) for key, runs in accuracy.items()}
    means = {key: value["mean"] for key, value in results.items()}
    gap = means["teacher"] - means["alone"]
    results["ordering"] = {
        "teacher > d": means["teacher"] > means["kd_two_phase_augmented"],
        "d > c": means["kd_two_phase_augmented"] > means["kd_two_phase"],
        "c >= b": means["kd_two_phase"] >= means["kd_prediction"],
        "b > a": means["kd_prediction"] > means["alone"],
        "share_of_gap_closed_by_d": (means["kd_two_phase_augmented"] - means["alone"]) / gap if gap else None,
    }
    stage_means = {key: {stage: round(statistics.fmean(jobs[f"{key}/seed{seed}"]["stages"].get(stage, 0.0)
                                                       for seed in args.seeds), 1)
                         for stage in jobs[f"{key}/seed{args.seeds[0]}"]["stages"]}
                   for key in VARIANTS}
    results["seconds"] = {"total": round(time.perf_counter() - began, 1), "mean_per_stage": stage_means,
                          "jobs": jobs}
    results["settings"] = {"seeds": args.seeds, "transfer_set": 2000, "eval": "SST-2 dev (872)",
                           "workdir": str(workdir), "specs": {key: f"benchmarks/specs/{spec}"
                                                              for key, spec in VARIANTS.items()}}
    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")

    print(f"\n{'model':26}{'accuracy (mean ± std)':>24}   runs")
    for key in ("teacher", "kd_two_phase_augmented", "kd_two_phase", "kd_prediction", "alone"):
        value = results[key]
        runs = ", ".join(f"{r:.4f}" for r in value["runs"])
        print(f"{key:26}{value['mean']:>15.4f} ± {value['std']:.4f}   {runs}")
    print("\nmean seconds per stage over seeds (0: reused from the stage cache)")
    for key, stages in stage_means.items():
        print(f"  {key:24} " + ", ".join(f"{stage} {value:.0f}" for stage, value in stages.items()))
    print(f"\n(d) closes {results['ordering']['share_of_gap_closed_by_d']:.2f} of the gap between (a) and the "
          f"teacher; ordering: {results['ordering']}")
    print(f"{results['seconds']['total'] / 60:.1f} min in all; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
