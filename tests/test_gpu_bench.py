"""benchmarks/gpu_bench.py runs its tiny CPU version through the same code, writes every number, imports no Ray."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.jobutil import REPO

# the bench run as a script, then whether anything imported Ray (the GPU machine has no Ray)
RUN_AND_REPORT_RAY = """
import runpy, sys
sys.argv = ["gpu_bench.py", "--smoke", "--out", sys.argv[1], "--train", "plain", "default"]
try:
    runpy.run_path("benchmarks/gpu_bench.py", run_name="__main__")
except SystemExit as done:
    assert not done.code, done.code
print("RAY IMPORTED" if any(name == "ray" or name.startswith("ray.") for name in sys.modules) else "NO RAY")
"""


def test_smoke_run_reports_every_stage_and_mode_compiles_without_graph_breaks_and_imports_no_ray(tmp_path):
    out = tmp_path / "gpu_bench.json"
    result = subprocess.run([sys.executable, "-c", RUN_AND_REPORT_RAY, str(out)], cwd=REPO, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip().endswith("NO RAY")
    report = json.loads(out.read_text())
    assert report["smoke"] and report["device"] == "cpu" and report["train"] == ["plain", "default"]
    rows = {"label": report["label"], "label_wide": report["label_wide"],
            **{f"{phase} {mode}": row for mode, phases in report["training"].items() for phase, row in phases.items()}}
    assert len(rows) == 6
    for name, row in rows.items():
        assert row["features_per_s"] > 0 and row["model_tflops"] > 0 and row["precision"] == "fp32", name
        assert row["mfu"] is None and row["peak_memory_gib"] is None   # no peak or GPU memory on a CPU
        assert row["hours"] > 0
    assert report["label_wide"]["batch_size"] == 4 * report["label"]["batch_size"]
    for mode, phases in report["training"].items():
        assert phases["intermediate"]["steps"] == phases["prediction"]["steps"] == 12
        hours = report["projected_hours"][mode]
        assert hours["total"] == sum(hours[name] for name in ("label", "intermediate", "prediction"))
        assert hours["label"] == report["label"]["hours"]
        # phase 1 runs the teacher beside the student: more model FLOPs per feature than phase 2
        per_feature = {phase: row["model_tflops"] / row["features_per_s"] for phase, row in phases.items()}
        assert per_feature["intermediate"] > per_feature["prediction"]
    assert all(row["compiled"] is None for row in report["training"]["plain"].values())
    # each phase compiled from an empty cache into whole graphs: no graph breaks to cost launches on a GPU
    for phase, row in report["training"]["default"].items():
        assert row["compiled"]["graphs"] >= 1 and row["compiled"]["graph_breaks"] == 0, (phase, row["compiled"])
