"""benchmarks/gpu_bench.py runs its tiny CPU version through the same code, writes every number, imports no Ray."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.jobutil import REPO

# the bench run as a script, then whether anything imported Ray (the GPU machine has no Ray)
RUN_AND_REPORT_RAY = """
import runpy, sys
sys.argv = ["gpu_bench.py", "--smoke", "--out", sys.argv[1]]
try:
    runpy.run_path("benchmarks/gpu_bench.py", run_name="__main__")
except SystemExit as done:
    assert not done.code, done.code
print("RAY IMPORTED" if any(name == "ray" or name.startswith("ray.") for name in sys.modules) else "NO RAY")
"""


def test_smoke_run_reports_every_stage_and_imports_no_ray(tmp_path):
    out = tmp_path / "gpu_bench.json"
    result = subprocess.run([sys.executable, "-c", RUN_AND_REPORT_RAY, str(out)], cwd=REPO, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip().endswith("NO RAY")
    report = json.loads(out.read_text())
    assert report["smoke"] and report["device"] == "cpu"
    for name in ("label", "label_wide", "intermediate", "prediction"):
        row = report[name]
        assert row["features_per_s"] > 0 and row["model_tflops"] > 0 and row["precision"] == "fp32", name
        assert row["mfu"] is None   # no peak for a CPU
    assert report["intermediate"]["steps"] == report["prediction"]["steps"] == 12
    assert report["label_wide"]["batch_size"] == 4 * report["label"]["batch_size"]
    hours = report["projected_hours"]
    assert hours["total"] == sum(hours[name] for name in ("label", "intermediate", "prediction")) > 0
    # phase 1 runs the teacher beside the student: more model FLOPs per feature than phase 2
    per_feature = {name: report[name]["model_tflops"] / report[name]["features_per_s"]
                   for name in ("intermediate", "prediction")}
    assert per_feature["intermediate"] > per_feature["prediction"]
