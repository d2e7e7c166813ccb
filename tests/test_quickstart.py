"""The README's quickstart, run exactly as the README writes it, in a fresh copy of the repository.

The command is read from README.md, not restated here, so the test runs what a new user types. It runs in a copy
of the tracked files (what a clone holds, nothing built or cached here), with no ../shared beside it (the
quickstart ships its own data and tokenizer), inside a virtual environment that sees this environment's packages:
`pip install -e .` then installs the copy there and leaves this environment's own install alone. The job's run
store is then checked stage by stage.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest
import torch

from core.shards import read_shards
from jobs.spec import JobSpec, load_spec
from jobs.stages import STAGE_NAMES, STAGES
from tests.jobutil import QUICKSTART, REPO, foreground_job_id, jsonl_records, parquet_rows, tensorboard_scalars

QUICKSTART_INTRO = "Install and run the quickstart job"
# the documented shape; the torch pin is captured so it can be checked against the torch installed here
COMMAND_SHAPE = re.compile(r"pip install torch==(?P<torch>\S+) -e \. && python -m jobs submit configs/quickstart\.yaml")
SQUAD_METRICS = ["exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
COMMAND_TIMEOUT_S = 1500


def readme_quickstart_command() -> str:
    """The indented command line that follows the README's "Install and run the quickstart job" line."""
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    intro = [i for i, line in enumerate(lines) if line.startswith(QUICKSTART_INTRO)]
    assert len(intro) == 1, f"README.md should have one line starting {QUICKSTART_INTRO!r}, found {len(intro)}"
    command_line = next(line for line in lines[intro[0] + 1:] if line.strip())
    assert command_line.startswith("    "), f"the quickstart command should be an indented code line: {command_line!r}"
    return command_line.strip()


def questions_in(squad_file: Path) -> int:
    data = json.loads(squad_file.read_text(encoding="utf-8"))["data"]
    return sum(len(paragraph["qas"]) for article in data for paragraph in article["paragraphs"])


def copy_tracked_files(destination: Path) -> int:
    """Copy what `git ls-files` lists, as the working tree has it: a clone plus uncommitted edits."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.skip(f"the quickstart test copies the tracked files, and git cannot list them here: {err}")
    copied = 0
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if not source.is_file():  # deleted in the working tree, not yet in git
            continue
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        copied += 1
    return copied


def make_venv(folder: Path) -> None:
    """A virtual environment that sees this environment's packages (torch and every dependency) but installs
    into its own site-packages, so the README's `pip install -e .` does not re-point this environment."""
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(folder)], check=True,
                   capture_output=True, timeout=300)
    if sys.prefix != sys.base_prefix:
        # this interpreter is itself a venv: --system-site-packages reaches the base interpreter's packages, not
        # this venv's, so point the new one at them too
        purelib = subprocess.run([str(folder / "bin" / "python"), "-c",
                                  "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        Path(purelib, "_outer_environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")


def installed_distillery_files() -> dict[str, bytes]:
    """This environment's own install of the project (metadata and editable finder), to prove it is untouched."""
    purelib = Path(sysconfig.get_paths()["purelib"])
    found = {}
    for path in purelib.glob("*distillery*"):
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        found |= {str(p): p.read_bytes() for p in files}
    return found


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory) -> dict[str, Any]:
    """The README command run once in a fresh copy; what it printed, how long it took, and what it wrote."""
    command = readme_quickstart_command()
    shape = COMMAND_SHAPE.fullmatch(command)
    assert shape, f"README's quickstart command changed shape: {command!r}"
    installed_torch = torch.__version__.split("+")[0]
    assert shape["torch"] == installed_torch, (
        f"README pins torch=={shape['torch']} but torch {installed_torch} is installed: pip would download torch")

    base = tmp_path_factory.mktemp("quickstart")
    copy = base / "distillery"
    assert copy_tracked_files(copy) > 0
    venv = base / "venv"
    make_venv(venv)
    env = {key: value for key, value in os.environ.items()
           # where the runs go, which cluster, which code: none may leak in from the test environment; the thread
           # cap is a test-suite setting a user does not have, and the timing should be the user's
           if key not in ("DISTILLERY_ROOT", "RAY_ADDRESS", "PYTHONPATH", "PYTHONHOME", "OMP_NUM_THREADS")}
    env |= {"VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1",
            # an empty hub cache: a model or dataset the quickstart took from a hub would fail to load, even one
            # some other run has cached on this machine
            "HF_HOME": str(base / "hf-home")}

    environment_before = installed_distillery_files()
    started = time.monotonic()
    # its own process group, so that a run past the time limit is stopped whole (bash, pip or the job, Ray)
    process = subprocess.Popen(command, shell=True, executable="/bin/bash", cwd=copy, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"the README quickstart did not finish in {COMMAND_TIMEOUT_S} s\nstderr:\n{stderr[-6000:]}")
    seconds = time.monotonic() - started
    result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    assert result.returncode == 0, (f"`{command}` exited {result.returncode}\nstdout:\n{result.stdout[-6000:]}\n"
                                    f"stderr:\n{result.stderr[-6000:]}")

    root = copy / "runs"  # the default run store: output.root "runs" from the folder the command ran in
    job_id = foreground_job_id(result.stdout)
    run_dir = root / job_id
    state = json.loads((run_dir / "state.json").read_text())
    return {"command": command, "copy": copy, "venv": venv, "env": env, "result": result, "seconds": seconds,
            "root": root, "job_id": job_id, "run_dir": run_dir, "state": state,
            "spec": load_spec(run_dir / "spec.yaml"), "environment_before": environment_before,
            "environment_after": installed_distillery_files()}


def stage_output(quickstart: dict[str, Any], stage: str) -> Path:
    return Path(quickstart["state"]["stages"][stage]["output"])


def expected_stages(spec: JobSpec) -> list[str]:
    # from the stage table itself, so a stage added later (train_mlm, say) is covered when the quickstart uses it
    return [stage.name for stage in STAGES if stage.enabled(spec)]


def assert_finite_losses(metrics_path: Path, terms: list[str]) -> list[dict[str, Any]]:
    records = jsonl_records(metrics_path)
    assert records, f"{metrics_path} logged nothing"
    for record in records:
        for key in ["loss", *(f"loss/{term}" for term in terms)]:
            assert key in record and math.isfinite(record[key]), (metrics_path, key, record)
    return records


def assert_saved_model(folder: Path, head: str) -> dict[str, Any]:
    """A folder `from_pretrained` loads: config with the task head, safetensors weights, a tokenizer."""
    config = json.loads((folder / "config.json").read_text())
    assert any(name.endswith(head) for name in config["architectures"]), (folder, config["architectures"])
    assert (folder / "model.safetensors").stat().st_size > 0
    assert (folder / "tokenizer.json").is_file() or (folder / "vocab.txt").is_file()
    return config


def markdown_table_after(text: str, heading: str) -> tuple[list[str], dict[str, list[str]]]:
    """The first Markdown table after `heading`: its header cells and its rows by first cell (backticks off)."""
    lines = text.split(heading, 1)[1].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = []
    for line in lines[first:]:
        if not line.startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    header, rows = table[0], table[2:]  # table[1] is the |---| rule
    return header, {row[0].strip("`"): row[1:] for row in rows}


# ---------------------------------------------------------------------------------------------------------------


def test_readme_quickstart_command_has_the_documented_shape():
    command = readme_quickstart_command()
    assert COMMAND_SHAPE.fullmatch(command), command
    assert command == "pip install torch==2.13.0 -e . && python -m jobs submit configs/quickstart.yaml"


def test_readme_quickstart_succeeds_in_a_fresh_copy(quickstart, capsys, record_property):
    state = quickstart["state"]
    job_seconds = (dt.datetime.fromisoformat(state["ended_at"])
                   - dt.datetime.fromisoformat(state["created_at"])).total_seconds()
    stage_seconds = {name: (s.get("summary") or {}).get("seconds") for name, s in state["stages"].items()}
    record_property("quickstart_seconds", round(quickstart["seconds"], 1))
    record_property("quickstart_job_seconds", job_seconds)
    with capsys.disabled():
        print(f"\nREADME quickstart `{quickstart['command']}`: {quickstart['seconds']:.0f} s wall "
              f"({job_seconds:.0f} s of it the job, the rest pip install -e); stage seconds: "
              + ", ".join(f"{name} {sec}" for name, sec in stage_seconds.items() if sec is not None))

    assert state["status"] == "succeeded", state.get("error")
    assert f"job {quickstart['job_id']}: succeeded" in quickstart["result"].stdout
    # pip installed the copy, in the venv, as an editable project: its code is what ran
    assert "Successfully installed distillery" in quickstart["result"].stdout
    located = subprocess.run([str(quickstart["venv"] / "bin" / "python"), "-c", "import jobs; print(jobs.__file__)"],
                             cwd=quickstart["venv"], capture_output=True, text=True, env=quickstart["env"], check=True)
    assert Path(located.stdout.strip()).resolve().is_relative_to(quickstart["copy"].resolve())
    # ... and this environment's own install of the project is exactly as before
    assert quickstart["environment_after"] == quickstart["environment_before"]
    # the quickstart needs nothing beside the repository: no ../shared data or tokenizer
    assert not (quickstart["copy"].parent / "shared").exists()


def test_quickstart_runs_every_enabled_stage_and_skips_the_rest(quickstart):
    state, spec = quickstart["state"], quickstart["spec"]
    assert list(state["stages"]) == STAGE_NAMES
    enabled = expected_stages(spec)
    assert {"prepare", "finetune_teachers", "augment", "label", "distill_intermediate", "distill_prediction",
            "evaluate", "report"} <= set(enabled)
    for name, stage in state["stages"].items():
        if name in enabled:
            assert stage["status"] in ("completed", "cached"), (name, stage)
            output = Path(stage["output"])
            assert output.is_dir() and output.is_relative_to(quickstart["root"]), (name, output)
            if name != "report":  # cached stages are linked into the run folder
                assert (quickstart["run_dir"] / "artifacts" / name).resolve() == output.resolve()
        else:
            assert stage["status"] == "skipped", (name, stage)
    log = (quickstart["run_dir"] / "logs" / "job.log").read_text()
    for name in enabled:
        if state["stages"][name]["status"] == "completed":
            assert f"stage {name}: completed" in log, name


def test_quickstart_prepare_writes_every_question_as_a_shard_row_or_a_reject(quickstart):
    prepare = stage_output(quickstart, "prepare")
    for split, sample in (("train", "sample-train.json"), ("eval", "sample-dev.json")):
        folder = prepare / split
        counts = json.loads((folder / "meta.json").read_text())["counts"]
        assert counts["read"] == questions_in(QUICKSTART / sample)
        assert counts["read"] == counts["written"] + counts["rejected"]
        assert counts["written"] > 0
        assert parquet_rows(folder) == counts["written"]
        assert len(jsonl_records(folder / "rejects.jsonl")) == counts["rejected"]


def test_quickstart_finetunes_its_teacher(quickstart):
    teacher = stage_output(quickstart, "finetune_teachers") / "teacher_0"
    assert_saved_model(teacher / "model", "ForQuestionAnswering")
    epochs = quickstart["spec"].teachers[0].finetune.epochs
    records = assert_finite_losses(teacher / "metrics.jsonl", ["hard"])
    assert records[-1]["epoch"] == pytest.approx(epochs)


def test_quickstart_augments_beyond_the_originals(quickstart):
    spec = quickstart["spec"]
    augment = stage_output(quickstart, "augment")
    stats = json.loads((augment / "stats.json").read_text())
    train_written = json.loads((stage_output(quickstart, "prepare") / "train" / "meta.json").read_text())["counts"]
    assert stats["examples_in"] == train_written["written"]
    assert stats["examples_in"] < stats["examples_out"] <= stats["examples_in"] * (1 + spec.augment.factor)
    assert stats["substitution_rate"] > 0
    rows = read_shards(augment)
    assert rows.num_rows == stats["examples_out"]
    # keep_original: every original is there, as variant 0
    assert rows.filter(pc.equal(rows["variant"], 0)).num_rows == stats["examples_in"]


def test_quickstart_labels_every_feature_with_teacher_logits(quickstart):
    label = stage_output(quickstart, "label")
    stats = json.loads((label / "stats.json").read_text())
    features = read_shards(label)
    assert features.num_rows == stats["features"] > 0
    assert stats["examples"] == json.loads((stage_output(quickstart, "augment") / "stats.json").read_text())[
        "examples_out"]
    lengths = pc.list_value_length(features["input_ids"])
    for column in ("teacher_start_logits", "teacher_end_logits"):
        assert features[column].null_count == 0, column
        assert pc.all(pc.equal(pc.list_value_length(features[column]), lengths)).as_py(), column


@pytest.mark.parametrize("stage", ["distill_intermediate", "distill_prediction"])
def test_quickstart_distills_a_student_in_each_phase(quickstart, stage):
    spec = quickstart["spec"]
    output = stage_output(quickstart, stage)
    config = assert_saved_model(output / "student", "ForQuestionAnswering")
    architecture = spec.student.architecture
    assert (config["num_hidden_layers"], config["hidden_size"]) == (architecture.num_hidden_layers,
                                                                   architecture.hidden_size)
    if stage == "distill_intermediate":
        terms = list(spec.distill.intermediate.losses)
    else:
        weight = spec.distill.prediction.distill_weight
        terms = [term for term, used in (("kl", weight > 0), ("hard", weight < 1)) if used]
    assert_finite_losses(output / "metrics.jsonl", terms)
    assert (output / "train_config.json").is_file()


LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR) .*")


def test_quickstart_log_shows_progress_and_its_stderr_only_the_jobs_own_lines(quickstart):
    """Without a terminal the log is how a job is followed: a line per logged step of each training phase, lines
    for the labelling and evaluation; the job's stderr holds its own log lines and nothing Ray or transformers
    printed (those are kept in job.log at debug level)."""
    log = (quickstart["run_dir"] / "logs" / "job.log").read_text()
    for phase, stage in (("finetune", "finetune_teachers"), ("intermediate", "distill_intermediate"),
                         ("prediction", "distill_prediction")):
        steps = [(int(done), int(total)) for done, total in re.findall(rf" INFO {phase}: (\d+)/(\d+) step", log)]
        metrics = next(stage_output(quickstart, stage).rglob("metrics.jsonl"))   # finetune: teacher_0/
        logged = [record["step"] for record in jsonl_records(metrics)]
        assert [done for done, _ in steps] == logged, (phase, steps, logged)
        assert steps[-1][0] == steps[-1][1], phase
        # the same lines as TensorBoard scalars, found from the run folder as `tensorboard --logdir` finds them
        scalars = tensorboard_scalars(quickstart["run_dir"] / "artifacts" / stage)
        assert {"loss", "lr", "examples_per_s"} <= set(scalars), (phase, sorted(scalars))
        assert sorted(scalars["loss"]) == logged, phase
    assert re.search(r" INFO label: (\d+)/\1 ex \(100\.0%\), features \d+, ", log)
    assert re.search(r" INFO evaluate student: (\d+)/\1 ex \(100\.0%\)", log)

    stderr = quickstart["result"].stderr.splitlines()
    # pip's own warnings come first; the job's lines start with its first log line
    first = next(i for i, line in enumerate(stderr) if LOG_LINE.fullmatch(line))
    job_lines = [line for line in stderr[first:] if line.strip()]
    strays = [line for line in job_lines if not LOG_LINE.fullmatch(line) or " DEBUG " in line]
    assert not strays, "\n".join(strays[:20])
    assert not [line for line in job_lines if re.search(r"\bray\b|core_worker|Loading weights", line, re.I)]


def test_quickstart_evaluates_student_and_teacher_with_squad2_metrics(quickstart):
    metrics = json.loads((stage_output(quickstart, "evaluate") / "metrics.json").read_text())
    assert set(metrics) == {"student", "teacher_0"}
    dev_questions = questions_in(QUICKSTART / "sample-dev.json")
    for name, entry in metrics.items():
        for key in SQUAD_METRICS:
            assert 0 <= entry[key] <= 100, (name, key, entry[key])
        assert entry["HasAns_total"] + entry["NoAns_total"] == entry["total"] == dev_questions
        assert "cpu" in entry["speed"] or "cuda" in entry["speed"], name
    assert metrics["student"]["vs_teachers"]["teacher_0"]


def test_quickstart_report_shows_student_and_teacher_scores_and_its_plots(quickstart):
    run_dir = quickstart["run_dir"]
    report = (run_dir / "report" / "report.md").read_text(encoding="utf-8")
    assert report.startswith(f"# Distillery report: {quickstart['job_id']}")
    metrics = json.loads((stage_output(quickstart, "evaluate") / "metrics.json").read_text())
    header, rows = markdown_table_after(report, "## Results")
    assert header[1:] == ["student", "teacher_0"]
    for key in ("exact", "f1", "HasAns_f1", "NoAns_f1"):
        shown = [float(cell.replace(",", "")) for cell in rows[key]]
        assert shown == pytest.approx([metrics["student"][key], metrics["teacher_0"][key]], abs=0.006), key
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert "scores.png" in images
    for stage in ("finetune_teacher_0", "distill_intermediate", "distill_prediction"):
        assert f"loss_{stage}.png" in images, stage
    for image in images:
        assert (run_dir / "report" / image).read_bytes().startswith(PNG_MAGIC), image


def test_quickstart_exports_the_student_with_a_model_card(quickstart):
    export = quickstart["run_dir"] / "export"
    assert_saved_model(export, "ForQuestionAnswering")
    assert (export / "distillery_qa.py").is_file()  # the QA pipeline the folder brings with it
    card = (export / "README.md").read_text(encoding="utf-8")
    assert "pipeline_tag: question-answering" in card
    metrics = json.loads((stage_output(quickstart, "evaluate") / "metrics.json").read_text())
    _, rows = markdown_table_after(card, "## Results")
    assert [float(cell) for cell in rows["f1"]] == pytest.approx(
        [metrics["student"]["f1"], metrics["teacher_0"]["f1"]], abs=0.006)


def test_distill_answer_on_the_export_gives_the_evaluated_answers(quickstart, tmp_path):
    """The serving path (`python -m distill answer`) and the evaluate stage answer every dev question alike."""
    evaluated = stage_output(quickstart, "evaluate") / "student"
    predictions = json.loads((evaluated / "predictions.json").read_text())
    null_odds = json.loads((evaluated / "null_odds.json").read_text())
    dataset = json.loads((QUICKSTART / "sample-dev.json").read_text(encoding="utf-8"))["data"]
    questions = [{"id": qa["id"], "question": qa["question"], "context": paragraph["context"]}
                 for article in dataset for paragraph in article["paragraphs"] for qa in paragraph["qas"]
                 if qa["id"] in predictions]  # those the prepare stage did not reject
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps(question) + "\n" for question in questions), encoding="utf-8")
    result = subprocess.run([str(quickstart["venv"] / "bin" / "python"), "-m", "distill", "answer",
                             str(quickstart["run_dir"] / "export"), "--file", str(path), "--json"],
                            cwd=quickstart["copy"], env=quickstart["env"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    answers = {row["id"]: row for row in map(json.loads, result.stdout.splitlines())}
    assert set(answers) == set(predictions) and len(answers) == len(questions)
    for qid, answer in answers.items():
        assert answer["answer"] == predictions[qid], qid
        assert answer["null_odds"] == pytest.approx(null_odds[qid], abs=1e-3), qid


def quickstart_plan(quickstart: dict[str, Any], root: Path) -> dict[str, Any]:
    """`python -m jobs plan configs/quickstart.yaml --json` in the copy, as its user would run it."""
    result = subprocess.run([str(quickstart["venv"] / "bin" / "python"), "-m", "jobs", "plan", "configs/quickstart.yaml",
                             "--root", str(root), "--json"], cwd=quickstart["copy"], env=quickstart["env"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout)


def files_under(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.lstat().st_mtime_ns for p in folder.rglob("*")}


def test_quickstart_plan_estimates_what_the_run_did_and_then_finds_it_cached(quickstart, tmp_path):
    empty = tmp_path / "runs"
    fresh = {stage["name"]: stage for stage in quickstart_plan(quickstart, empty)["stages"]}
    assert not empty.exists()   # creates nothing
    enabled = expected_stages(quickstart["spec"])
    assert [name for name, stage in fresh.items() if stage["cache"] != "skipped"] == enabled
    assert all(fresh[name]["cache"] in ("run", "always") for name in enabled)

    # the estimates against what the run recorded: steps as the trainer counted them, examples, features
    def total_steps(folder: Path) -> int:
        return json.loads((folder / "train_config.json").read_text())["schedule"]["total_steps"]

    for phase in ("distill_intermediate", "distill_prediction"):
        assert fresh[phase]["steps"] == total_steps(stage_output(quickstart, phase)), phase
    assert fresh["finetune_teachers"]["steps"] == total_steps(stage_output(quickstart, "finetune_teachers")
                                                              / "teacher_0")
    augmented = json.loads((stage_output(quickstart, "augment") / "stats.json").read_text())
    labelled = json.loads((stage_output(quickstart, "label") / "stats.json").read_text())
    assert fresh["augment"]["examples"] == augmented["examples_out"]
    assert fresh["label"]["features"] == labelled["features"]
    for name in enabled:
        assert fresh[name]["seconds"] is not None and fresh[name]["disk_bytes"] is not None, name

    before = files_under(quickstart["root"])
    again = {stage["name"]: stage for stage in quickstart_plan(quickstart, quickstart["root"])["stages"]}
    assert files_under(quickstart["root"]) == before
    assert {name: again[name]["cache"] for name in enabled} == {
        name: "always" if name == "report" else "cached" for name in enabled}
    assert again["distill_prediction"]["output"] == str(stage_output(quickstart, "distill_prediction"))
