"""The shared loop: data order, checkpoints that are never half-read, 2 Ray Train workers against 1, and a killed
worker replaced by Ray Train.

Kill-and-resume of a whole job's processes is in test_phases.py and test_jobs.py."""

from __future__ import annotations

import json
import shutil
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForQuestionAnswering, AutoTokenizer

from augment.readers import read_examples
from augment.spec import DataSource
from core.resources import ResourcesSpec
from core.shards import read_shards
from distill.features import qa_features
from distill.models import ModelRef
from distill.phases import distill_intermediate, distill_prediction
from distill.spec import FeaturesSpec, IntermediateSpec, PredictionSpec, StudentSpec
from distill.trainer import (COMPLETE_MARKER, LENGTH_GROUP_BATCHES, TrainingError, epoch_order, epoch_steps,
                             thin_worker_batch, worker_slice)
from tests.jobutil import wait_for

ONE_WORKER = ResourcesSpec(workers=1, gpus_per_worker=0)
# A softmax over positions ignores a shift of all logits, so the QA bias and the last LayerNorm bias (which only
# feeds the QA head) of the 2-layer students have exactly zero gradient in theory; Adam turns their float noise
# into +-lr steps, so two runs that differ by rounding differ there by whole steps.
SHIFT_INVARIANT = {"qa_outputs.bias", "bert.encoder.layer.1.output.LayerNorm.bias"}


@pytest.fixture(scope="module")
def features_dir(tmp_path_factory, squad_dev_path, bert_tokenizer_dir) -> Path:
    """64 features (max_seq_len 128) of the first real SQuAD 2.0 dev questions, without teacher logits."""
    root = tmp_path_factory.mktemp("squad")
    read_examples(DataSource(path=str(squad_dev_path), limit=60), "qa", None, root / "examples")
    table = qa_features(read_shards(root / "examples"), AutoTokenizer.from_pretrained(bert_tokenizer_dir),
                        FeaturesSpec(max_seq_len=128, doc_stride=48, max_query_len=32))
    (root / "features" / "shards").mkdir(parents=True)
    pq.write_table(table.slice(0, 64), root / "features" / "shards" / "part-00000.parquet")
    return root / "features"


def _without_dropout(folder: Path, dest: Path) -> Path:
    """A copy of a tiny model with dropout off, so that workers' dropout streams cannot make runs differ."""
    model = AutoModelForQuestionAnswering.from_pretrained(folder)
    model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = 0.0
    model.save_pretrained(dest)
    AutoTokenizer.from_pretrained(folder).save_pretrained(dest)
    return dest


def _losses(out_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


# -- data order ---------------------------------------------------------------------------------------------------


def test_epoch_order_is_a_seeded_shuffle_grouped_by_length():
    lengths = np.random.default_rng(0).integers(3, 60, size=1000)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    order = epoch_order(offsets, seed=7, epoch=2, batch_size=4)
    assert np.array_equal(order, epoch_order(offsets, 7, 2, 4))
    assert not np.array_equal(order, epoch_order(offsets, 7, 3, 4))
    assert not np.array_equal(order, epoch_order(offsets, 8, 2, 4))
    assert sorted(order) == list(range(1000))
    # within each group of LENGTH_GROUP_BATCHES batches, longest first; so batches pad far less than a plain
    # shuffle's would
    group = 4 * LENGTH_GROUP_BATCHES
    for start in range(0, 1000, group):
        assert np.all(np.diff(lengths[order[start:start + group]]) <= 0)

    def padded_tokens(o):
        return sum(lengths[o[i:i + 4]].max() * len(o[i:i + 4]) for i in range(0, len(o), 4))

    plain = np.random.default_rng([7, 2]).permutation(1000)
    assert padded_tokens(order) < 0.7 * padded_tokens(plain)
    # a different batch size groups differently, the same seed still draws the same shuffle
    assert set(epoch_order(offsets, 7, 2, 8)[:8 * LENGTH_GROUP_BATCHES]) == set(plain[:8 * LENGTH_GROUP_BATCHES])


def test_steps_and_worker_slices_cover_each_feature_once():
    steps = epoch_steps(np.arange(23), batch_size=5, accum=2)
    assert [[len(m) for m in step] for step in steps] == [[5, 5], [5, 5], [3]]
    micro = np.arange(7)
    slices = [worker_slice(micro, rank, 3) for rank in range(3)]
    assert [len(s) for s in slices] == [3, 2, 2]
    assert np.array_equal(np.concatenate(slices), micro)


# -- checkpoints --------------------------------------------------------------------------------------------------


def test_incomplete_checkpoints_are_never_read_and_other_runs_are_refused(features_dir, tiny_model_factory,
                                                                          tmp_path):
    student = StudentSpec(model=str(tiny_model_factory("qa", layers=2, hidden=32)))
    config = PredictionSpec(distill_weight=0.0, batch_size=16, epochs=1, checkpoint_every=2)
    first = distill_prediction(student, [], "qa", features_dir, config, "probs", ONE_WORKER, 0, tmp_path,
                               progress=False)
    assert first.steps == 4
    # a later checkpoint without its completion marker (a writer killed mid-way) holds garbage
    torn = tmp_path / "checkpoints" / "step-00000099"
    torn.mkdir()
    (torn / "state.json").write_text("{not json")
    again = distill_prediction(student, [], "qa", features_dir, config, "probs", ONE_WORKER, 0, tmp_path,
                               progress=False)
    assert again.steps == 4 and again.loss == first.loss
    with pytest.raises(TrainingError, match="different run.*config"):
        distill_prediction(student, [], "qa", features_dir, config.model_copy(update={"learning_rate": 1e-3}),
                           "probs", ONE_WORKER, 0, tmp_path, progress=False)


def test_a_checkpoint_of_another_precision_resumes_with_a_warning(features_dir, tiny_model_factory, tmp_path,
                                                                   monkeypatch, caplog):
    """precision auto resolves per device: a run restarted on another kind of GPU resumes a bf16 (or fp32)
    checkpoint in fp16, whose loss scaler the checkpoint has no state for, and says so."""
    student = StudentSpec(model=str(tiny_model_factory("qa", layers=1, hidden=32)))
    config = PredictionSpec(distill_weight=0.0, batch_size=16, epochs=1, checkpoint_every=2)
    run = tmp_path / "run"
    distill_prediction(student, [], "qa", features_dir, config, "probs", ONE_WORKER, 0, run, progress=False)
    shutil.rmtree(run / "checkpoints" / "step-00000004")
    assert json.loads((run / "checkpoints" / "step-00000002" / "state.json").read_text())["precision"] == "fp32"

    monkeypatch.setattr("distill.trainer.device_precision", lambda device, asked: "fp16")
    with caplog.at_level("WARNING", logger="distillery.train"):
        resumed = distill_prediction(student, [], "qa", features_dir, config, "probs", ONE_WORKER, 0, run,
                                     progress=False)
    assert resumed.resumed_from == 2 and resumed.steps == 4 and np.isfinite(resumed.loss)
    assert ("the checkpoint at step 2 was trained in fp32, this device computes in fp16; continuing in fp16 with a "
            "fresh loss scale") in caplog.text
    assert json.loads((run / "train_config.json").read_text())["precision"] == "fp16 autocast + GradScaler"


def test_checkpoints_by_wall_time_at_log_steps_and_at_the_end(features_dir, tiny_model_factory, tmp_path):
    student = StudentSpec(model=str(tiny_model_factory("qa", layers=2, hidden=32)))
    config = PredictionSpec(distill_weight=0.0, batch_size=8, epochs=1, log_every=3, checkpoint_minutes=None)

    def kept(out_dir: Path, config: PredictionSpec) -> list[str]:
        distill_prediction(student, [], "qa", features_dir, config, "probs", ONE_WORKER, 0, out_dir, progress=False)
        return sorted(p.name for p in (out_dir / "checkpoints").glob("step-*"))

    # 8 steps; no cadence by time or steps: only the epoch's (and the run's) end
    assert kept(tmp_path / "untimed", config) == ["step-00000008"]
    # a cadence shorter than a step: a checkpoint at each log step (3, 6) and the end, the last two kept
    timed = config.model_copy(update={"checkpoint_minutes": 1e-6})
    assert kept(tmp_path / "timed", timed) == ["step-00000006", "step-00000008"]
    assert PredictionSpec().checkpoint_minutes == 30 and PredictionSpec().checkpoint_every is None


# -- Ray Train ----------------------------------------------------------------------------------------------------


def test_two_ray_workers_follow_the_one_worker_loss_curve(ray_session, features_dir, tiny_model_factory, tmp_path):
    teacher = _without_dropout(tiny_model_factory("qa", layers=4, hidden=32), tmp_path / "teacher")
    student = StudentSpec(model=str(_without_dropout(tiny_model_factory("qa", layers=2, hidden=32, seed=3),
                                                     tmp_path / "student")))
    # 7 features per micro-batch: workers get 4 and 3, so unequal slices must be weighted right
    config = PredictionSpec(batch_size=7, grad_accum_steps=2, epochs=1, learning_rate=1e-3, log_every=1,
                            temperature=2.0, distill_weight=0.5, teacher_logits="online")
    runs = {}
    for workers in (1, 2):
        resources = ResourcesSpec(workers=workers, cpus_per_worker=0.5, gpus_per_worker=0)
        runs[workers] = distill_prediction(student, [ModelRef(str(teacher))], "qa", features_dir, config, "probs",
                                           resources, 0, tmp_path / f"workers-{workers}", progress=False)
    assert runs[1].steps == runs[2].steps == 5
    one, two = _losses(tmp_path / "workers-1"), _losses(tmp_path / "workers-2")
    assert len(one) == 5 and two == pytest.approx(one, rel=1e-3)
    schedules = {n: json.loads((tmp_path / f"workers-{n}" / "train_config.json").read_text())["schedule"]
                 for n in (1, 2)}
    assert schedules[1]["warning"] is None and "batch_size 7 over 2 workers" in schedules[2]["warning"]
    a = load_file(tmp_path / "workers-1" / "student" / "model.safetensors")
    b = load_file(tmp_path / "workers-2" / "student" / "model.safetensors")
    for key in a.keys() - SHIFT_INVARIANT:
        torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-5, msg=key)


@pytest.mark.parametrize("batch_size,workers,warned", [(4, 1, False), (26, 3, False), (26, 4, True), (64, 8, False),
                                                       (64, 9, True)])
def test_a_global_batch_thinner_than_8_features_per_worker_is_warned_about(batch_size, workers, warned):
    warning = thin_worker_batch(batch_size, workers)
    assert (warning is not None) == warned
    if warned:
        assert f"batch_size {batch_size} over {workers} workers" in warning
        assert f"at most {batch_size // 8} training workers" in warning


def test_a_killed_ray_train_worker_is_replaced_and_the_phase_ends_as_if_uninterrupted(ray_session, features_dir,
                                                                                      tiny_model_factory, tmp_path):
    teacher = _without_dropout(tiny_model_factory("qa", layers=2, hidden=32), tmp_path / "teacher")
    student = StudentSpec(model=str(_without_dropout(tiny_model_factory("qa", layers=1, hidden=32, seed=3),
                                                     tmp_path / "student")))
    # 64 features, 8 per step: 48 steps, a checkpoint every 3 and at each epoch's end, a metrics line every 4: most
    # checkpoints hold the loss sums of steps not logged yet, each worker its own slices'
    config = PredictionSpec(batch_size=8, epochs=6, learning_rate=1e-3, log_every=4, checkpoint_every=3,
                            teacher_logits="online", distill_weight=0.5)
    resources = ResourcesSpec(workers=2, cpus_per_worker=0.5, gpus_per_worker=0, worker_restarts=1)

    def run(out_dir: Path):
        return distill_prediction(student, [ModelRef(str(teacher))], "qa", features_dir, config, "probs", resources,
                                  0, out_dir, progress=False)

    def train_workers() -> list[psutil.Process]:
        return [p for p in psutil.process_iter(["cmdline"]) if "RayTrainWorker" in " ".join(p.info["cmdline"] or [])]

    with ThreadPoolExecutor(1) as pool:
        killed = pool.submit(run, tmp_path / "killed")
        # mid-phase, with a complete checkpoint to go back to
        wait_for(lambda: killed.done() or list((tmp_path / "killed" / "checkpoints").glob(f"step-*/{COMPLETE_MARKER}")),
                 timeout=300, what="the first checkpoint", interval=0.05)
        victims = train_workers()
        assert not killed.done() and len(victims) == 2
        victims[1].send_signal(signal.SIGKILL)
        restarted = killed.result(timeout=600)
    uninterrupted = run(tmp_path / "uninterrupted")
    assert restarted.steps == uninterrupted.steps == 48
    assert uninterrupted.resumed_from is None and restarted.resumed_from is not None and restarted.resumed_from >= 3
    assert _losses(tmp_path / "killed") == pytest.approx(_losses(tmp_path / "uninterrupted"), rel=1e-6)
    a = load_file(tmp_path / "uninterrupted" / "student" / "model.safetensors")
    b = load_file(tmp_path / "killed" / "student" / "model.safetensors")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-5, msg=key)


# -- torch.compile ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("phase", ["prediction", "intermediate"])
def test_a_compiled_phase_trains_as_the_plain_one_and_saves_the_same_parameter_names(phase, features_dir,
                                                                                     tiny_model_factory, tmp_path):
    student = StudentSpec(model=str(_without_dropout(tiny_model_factory("qa", layers=2, hidden=32),
                                                     tmp_path / "student")))
    teacher = ModelRef(str(_without_dropout(tiny_model_factory("qa", layers=4, hidden=32), tmp_path / "teacher")))
    loop = dict(batch_size=16, epochs=1, log_every=1, learning_rate=1e-3)
    runs = {}
    # a named mode; on CPU reduce-overhead compiles as the default mode does (its CUDA graphs are for CUDA devices)
    for compiled in (False, "reduce-overhead"):
        resources = ONE_WORKER.model_copy(update={"compile": compiled})
        out = tmp_path / f"compile-{compiled}"
        if phase == "prediction":
            runs[compiled] = distill_prediction(student, [], "qa", features_dir,
                                                PredictionSpec(distill_weight=0.0, **loop), "probs", resources, 0,
                                                out, progress=False)
        else:  # the teacher, hidden states and attention maps inside the compiled forward
            runs[compiled] = distill_intermediate(student, teacher, "qa", features_dir, IntermediateSpec(**loop),
                                                  resources, 0, out, progress=False)
    assert runs["reduce-overhead"].steps == runs[False].steps == 4
    assert (_losses(tmp_path / "compile-reduce-overhead")
            == pytest.approx(_losses(tmp_path / "compile-False"), rel=1e-4))
    recorded = json.loads((tmp_path / "compile-reduce-overhead" / "train_config.json").read_text())["resources"]
    assert recorded["compile"] == "reduce-overhead"
    plain = load_file(tmp_path / "compile-False" / "student" / "model.safetensors")
    compiled = load_file(tmp_path / "compile-reduce-overhead" / "student" / "model.safetensors")
    assert compiled.keys() == plain.keys()
    for key in plain.keys() - SHIFT_INVARIANT:
        torch.testing.assert_close(compiled[key], plain[key], rtol=1e-4, atol=1e-5, msg=key)
