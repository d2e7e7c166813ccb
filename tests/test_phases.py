"""The training phases on tiny models and real SQuAD 2.0 dev features: what each trains, reads and writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification, AutoTokenizer

from augment.readers import read_examples
from augment.spec import DataSource, MaskedLMTrainingSpec
from core.resources import ResourcesSpec
from core.shards import read_shards
from distill.attention_maps import attention_maps, keep_attention_maps
from distill.evaluate import ValidationSet, Validator
from distill.features import classification_features, pad_batch, qa_features
from distill.label import TeacherEnsemble
from distill.losses import HeadCountMismatch
from distill.models import ModelCheckError, ModelRef
from distill.objectives.intermediate import IntermediateOptions
from distill.objectives.prediction import PredictionOptions
from distill.phases import distill_intermediate, distill_prediction, finetune_teacher, pretrain_masked_lm
from distill.spec import (EvaluateSpec, FeaturesSpec, FinetuneSpec, IntermediateSpec, LabelSpec, PredictionSpec,
                          StudentArchitecture, StudentSpec)
from distill.student import build_student
from distill.trainer import COMPLETE_MARKER, Recipe, TrainingError, TrainPlan, Worker
from tests.jobutil import tensorboard_scalars

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
ONE_WORKER = ResourcesSpec(workers=1, gpus_per_worker=0)
NARROW = StudentArchitecture(num_hidden_layers=2, hidden_size=16, num_attention_heads=2, intermediate_size=32)
TEMPERATURE = 2.0  # phase 2's, in the labelled and the online objective alike


@pytest.fixture(scope="module")
def squad_table(tmp_path_factory, squad_dev_path, bert_tokenizer_dir):
    """64 features (max_seq_len 128) of the first real SQuAD 2.0 dev questions, without teacher logits."""
    root = tmp_path_factory.mktemp("squad")
    read_examples(DataSource(path=str(squad_dev_path), limit=60), "qa", None, root / "examples")
    tokenizer = AutoTokenizer.from_pretrained(bert_tokenizer_dir)
    table = qa_features(read_shards(root / "examples"), tokenizer,
                        FeaturesSpec(max_seq_len=128, doc_stride=48, max_query_len=32))
    assert table.num_rows >= 64
    return table.slice(0, 64)


def _write_features(table, folder: Path) -> Path:
    (folder / "shards").mkdir(parents=True)
    pq.write_table(table, folder / "shards" / "part-00000.parquet")
    return folder


@pytest.fixture(scope="module")
def teachers(tiny_model_factory):
    """Two 4-layer teachers (hidden 32, 2 heads) with different weights."""
    return [ModelRef(str(tiny_model_factory("qa", layers=4, hidden=32, heads_count=2, seed=seed)), weight=w)
            for seed, w in ((0, 1.0), (1, 3.0))]


@pytest.fixture(scope="module")
def plain_features(squad_table, tmp_path_factory):
    return _write_features(squad_table, tmp_path_factory.mktemp("plain"))


@pytest.fixture(scope="module")
def labelled(squad_table, teachers, tmp_path_factory):
    """The same features labelled by the label stage with both teachers (probs ensemble, weights 1 and 3), for
    the temperature of `_prediction_objective`."""
    ensemble = TeacherEnsemble(teachers, "qa", None, LabelSpec(ensemble="probs"), CPU, pad_token_id=0,
                               temperature=TEMPERATURE)
    table = ensemble.label(squad_table)
    return table, _write_features(table, tmp_path_factory.mktemp("labelled"))


def _metrics(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


# -- phase 1 ------------------------------------------------------------------------------------------------------


def test_phase1_teacher_stays_frozen_and_projections_train(teachers, plain_features, tmp_path):
    config = IntermediateSpec(batch_size=8, epochs=1)
    plan = TrainPlan("intermediate", IntermediateOptions(StudentSpec(architecture=NARROW), teachers[0], None), "qa",
                     plain_features, config, ONE_WORKER, 0, tmp_path, progress=False)
    recipe = Recipe(plan, Worker())
    recipe.setup()
    try:
        objective = recipe.objective
        terms = objective(recipe.data.batch(np.arange(8), objective.pad_token_id))
        assert set(terms) == {"embeddings", "hidden", "attention"}
        sum(terms.values()).backward()

        teacher = objective.teacher
        assert not teacher.training and objective.student.training
        assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
        projections = [objective.embeddings_loss.projection, objective.hidden_loss.projection]
        in_optimizer = {id(p) for group in recipe.optimizer.param_groups for p in group["params"]}
        for projection in projections:
            assert projection.weight.shape == (32, 16)
            assert projection.weight.grad.abs().sum() > 0
            assert id(projection.weight) in in_optimizer and id(projection.bias) in in_optimizer
        assert not any(id(p) in in_optimizer for p in teacher.parameters())

        recipe.save_checkpoint(elapsed=0.0)
        saved = (tmp_path / "checkpoints" / "step-00000000")
        assert (saved / COMPLETE_MARKER).exists()
        with safe_open(saved / "trainable.safetensors", "pt") as handle:
            keys = set(handle.keys())
        assert {"embeddings_loss.projection.weight", "hidden_loss.projection.weight"} <= keys
        assert not any(key.startswith(("teacher", "_teacher")) for key in keys)
    finally:
        recipe.cleanup()


def test_phase1_loss_goes_down_and_outputs_are_self_describing(teachers, plain_features, tmp_path):
    config = IntermediateSpec(batch_size=8, epochs=3, learning_rate=2e-3, warmup_ratio=0.0, log_every=4,
                              checkpoint_every=10)
    result = distill_intermediate(StudentSpec(architecture=NARROW), teachers[0], "qa", plain_features, config,
                                  ONE_WORKER, 0, tmp_path, progress=False)
    lines = _metrics(tmp_path)
    assert [line["step"] for line in lines] == list(range(4, 25, 4))
    assert lines[-1]["loss"] < 0.8 * lines[0]["loss"]
    for key in ("step", "epoch", "lr", "loss", "loss/embeddings", "loss/hidden", "loss/attention",
                "examples_per_s", "elapsed"):
        assert key in lines[0]
    assert result.steps == 24 and result.epochs == 3.0 and result.loss == lines[-1]["loss"]
    json.dumps(asdict(result))

    student = AutoModelForQuestionAnswering.from_pretrained(result.model_dir)
    assert student.config.hidden_size == 16 and student.config.num_hidden_layers == 2
    AutoTokenizer.from_pretrained(result.model_dir)
    projections = load_file(result.projections)
    assert projections["hidden.weight"].shape == (32, 16)

    recorded = json.loads(Path(result.train_config).read_text())
    assert recorded["config"]["learning_rate"] == 2e-3 and recorded["schedule"]["total_steps"] == 24
    assert recorded["objective"]["layer_map"]["teacher_layer_per_student_layer"] == [1, 3]
    assert set(recorded["objective"]["losses"]) == {"embeddings", "hidden", "attention"}
    assert len(list((tmp_path / "checkpoints").glob("step-*"))) == 2  # KEEP_CHECKPOINTS


def test_phase1_refuses_attention_with_different_head_counts(teachers, plain_features, tmp_path):
    four_heads = StudentArchitecture(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64)
    with pytest.raises(HeadCountMismatch, match="4 heads and the teacher 2"):
        distill_intermediate(StudentSpec(architecture=four_heads), teachers[0], "qa", plain_features,
                             IntermediateSpec(), ONE_WORKER, 0, tmp_path, progress=False)
    assert not (tmp_path / "metrics.jsonl").exists()
    # without the attention term the same student is fine
    result = distill_intermediate(StudentSpec(architecture=four_heads), teachers[0], "qa", plain_features,
                                  IntermediateSpec(losses=["hidden"], epochs=0.25, batch_size=16), ONE_WORKER, 0,
                                  tmp_path / "hidden-only", progress=False)
    assert result.steps == 1 and result.projections is None


def _only_attention_dropout(tiny_model_factory, bert_tokenizer_dir, folder: Path) -> ModelRef:
    """A one-layer QA model whose only dropout is on attention probabilities (p 0.5), saved with its tokenizer.

    One layer, since attention dropout in a layer changes the input, and so the maps, of the layers above it."""
    model = AutoModelForQuestionAnswering.from_pretrained(tiny_model_factory("qa", layers=1),
                                                          attention_probs_dropout_prob=0.5, hidden_dropout_prob=0.0)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(bert_tokenizer_dir).save_pretrained(folder)
    return ModelRef(str(folder))


def test_phase1_student_identical_to_its_teacher_has_no_attention_loss_despite_dropout(
        tiny_model_factory, bert_tokenizer_dir, tmp_path):
    teacher = _only_attention_dropout(tiny_model_factory, bert_tokenizer_dir, tmp_path / "teacher")
    plan = TrainPlan("intermediate", IntermediateOptions(StudentSpec(model=teacher.name_or_path), teacher, None),
                     "qa", tmp_path, IntermediateSpec(losses=["attention"]), ONE_WORKER, 0, tmp_path, progress=False)
    objective = plan.options.build(plan, CPU)
    assert objective.student.training and objective.student.config.attention_probs_dropout_prob == 0.5
    tokenizer = AutoTokenizer.from_pretrained(teacher.name_or_path)
    batch = dict(tokenizer(["Where is the Eiffel Tower?", "In Paris."], padding=True, return_tensors="pt"))
    torch.manual_seed(0)
    assert objective(batch)["attention"].item() < 1e-12  # dropped-out student maps gave 0.025


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_kept_attention_maps_are_the_asked_layers_only_and_mask_padding(tiny_model_factory, family):
    folder = tiny_model_factory("qa", layers=3, family=family)
    eager = AutoModelForQuestionAnswering.from_pretrained(folder, attn_implementation="eager").eval()
    model = AutoModelForQuestionAnswering.from_pretrained(folder).eval()
    batch = AutoTokenizer.from_pretrained(folder)(["Where is the Eiffel Tower?", "In Paris."], padding=True,
                                                  return_tensors="pt")
    with pytest.raises(ModelCheckError, match="keep_attention_maps"):
        attention_maps(model, model(**batch, output_attentions=True), [0])  # still on its default kernel

    keep_attention_maps(model, [2, 0])
    with torch.no_grad():
        outputs = model(**batch, output_attentions=True)
    maps = attention_maps(model, outputs, [2, 0])
    expected = eager(**batch, output_attentions=True).attentions
    assert len(outputs.attentions) == 2 and sorted(maps) == [0, 2]  # layer 1's map is never handed out
    for layer in (0, 2):
        torch.testing.assert_close(maps[layer], expected[layer])
    assert maps[0][1, :, :, -1].max() == 0  # the shorter text's padding gets no attention
    with pytest.raises(ModelCheckError, match="handed out 2 attention maps"):
        attention_maps(model, outputs, [0, 1, 2])


def test_phase1_compiles_to_one_graph_for_every_length(teachers, tiny_model_factory, tmp_path):
    """resources.compile: phase 1's forward (student, teacher, the maps of the mapped layers, all three terms) is one
    graph that batches of other lengths reuse, and it computes the plain forward's terms."""
    student = StudentSpec(model=str(tiny_model_factory("qa", layers=2, hidden=32, heads_count=2, seed=3)))
    plan = TrainPlan("intermediate", IntermediateOptions(student, teachers[0], None), "qa", tmp_path,
                     IntermediateSpec(), ONE_WORKER, 0, tmp_path, progress=False)
    plain, compiled = plan.options.build(plan, CPU), plan.options.build(plan, CPU)
    graphs = []

    def counting_backend(graph, example_inputs):  # runs the captured graph as it is, counting captures
        graphs.append(graph)
        return graph.forward

    compiled.compile(backend=counting_backend, dynamic=True, fullgraph=True)  # fullgraph: a graph break raises
    try:
        tokenizer = AutoTokenizer.from_pretrained(student.model)
        for words in (3, 7, 12):
            batch = dict(tokenizer(["where is it?", " ".join(["paris"] * words)], padding=True, return_tensors="pt"))
            terms = {}
            for name, objective in (("plain", plain), ("compiled", compiled)):
                torch.manual_seed(0)  # the same dropout draws
                terms[name] = objective.train()(batch)
            assert terms["compiled"].keys() == {"embeddings", "hidden", "attention"}
            for name, value in terms["plain"].items():
                torch.testing.assert_close(terms["compiled"][name], value, msg=name)
        assert len(graphs) == 1
    finally:
        torch._dynamo.reset()

# -- phase 2 ------------------------------------------------------------------------------------------------------


def _prediction_objective(source: str, teachers, features_dir: Path, student_dir: Path, tmp_path: Path):
    config = PredictionSpec(temperature=TEMPERATURE, distill_weight=0.7, teacher_logits=source)
    options = PredictionOptions(StudentSpec(model=str(student_dir)), None, tuple(teachers), "probs", None)
    torch.manual_seed(0)  # the student's fresh QA head
    return options.build(TrainPlan("prediction", options, "qa", features_dir, config, ONE_WORKER, 0, tmp_path), CPU)


def test_phase2_cached_logits_equal_an_online_teacher(teachers, labelled, tiny_model_factory, tmp_path):
    table, features_dir = labelled
    student_dir = tiny_model_factory("qa", layers=2, hidden=32, heads_count=2, seed=5)
    batch = pad_batch(table.slice(0, 8), pad_token_id=0)
    results = {}
    for source in ("labelled", "online"):
        objective = _prediction_objective(source, teachers, features_dir, student_dir, tmp_path)
        assert objective.columns == (("input_ids", "token_type_ids", "start_position", "end_position")
                                     + (("teacher_start_logits", "teacher_end_logits") if source == "labelled" else ()))
        assert len(objective.teachers) == (2 if source == "online" else 0)
        terms = objective(batch)
        (0.7 * terms["kl"] + 0.3 * terms["hard"]).backward()
        grads = torch.cat([p.grad.flatten() for p in objective.student.parameters()])
        results[source] = (terms["kl"].item(), terms["hard"].item(), grads)
    (kl_cached, hard_cached, grads_cached), (kl_online, hard_online, grads_online) = results.values()
    assert hard_cached == hard_online
    # the only difference: the label stage stores logits as float16
    assert kl_cached == pytest.approx(kl_online, rel=2e-3)
    assert ((grads_cached - grads_online).norm() / grads_online.norm()).item() < 2e-3


def test_phase2_ensemble_target_is_the_mix_of_softened_teachers(teachers, labelled, tiny_model_factory, tmp_path):
    table, features_dir = labelled
    student_dir = tiny_model_factory("qa", layers=2, hidden=32, heads_count=2, seed=5)
    batch = pad_batch(table.slice(0, 4), pad_token_id=0)
    real = batch["attention_mask"].bool()[:, None, :]  # (B, 1, L)

    def softened(logits: torch.Tensor) -> torch.Tensor:  # (B, G, L) -> the distribution SoftTargetKL compares
        return torch.softmax(logits.float().masked_fill(~real, float("-inf")) / TEMPERATURE, -1)

    models = [AutoModelForQuestionAnswering.from_pretrained(t.name_or_path).eval() for t in teachers]
    with torch.no_grad():
        outputs = [m(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                     attention_mask=batch["attention_mask"]) for m in models]
    expected = sum(w * softened(torch.stack([o.start_logits, o.end_logits], 1))
                   for w, o in zip((0.25, 0.75), outputs))  # weights 1 and 3, normalised
    for source, tolerance in (("online", 1e-5), ("labelled", 2e-3)):  # labelled: stored as float16
        objective = _prediction_objective(source, teachers, features_dir, student_dir, tmp_path)
        assert torch.allclose(softened(objective.teacher_logits(batch)), expected, atol=tolerance), source


def test_phase2_labelled_without_teacher_logits_is_refused(plain_features, tiny_model_factory, tmp_path):
    student = StudentSpec(model=str(tiny_model_factory("qa", layers=2, hidden=32)))
    with pytest.raises(TrainingError, match="64 of 64 features have no teacher_start_logits.*label stage"):
        distill_prediction(student, [], "qa", plain_features, PredictionSpec(), "probs", ONE_WORKER, 0, tmp_path,
                           progress=False)


def test_phase2_with_weight_zero_needs_no_teacher(plain_features, tiny_model_factory, tmp_path):
    student = StudentSpec(model=str(tiny_model_factory("qa", layers=2, hidden=32)))
    result = distill_prediction(student, [], "qa", plain_features,
                                PredictionSpec(distill_weight=0.0, epochs=0.25, batch_size=16, log_every=1),
                                "probs", ONE_WORKER, 0, tmp_path, progress=False)
    assert result.steps == 1
    assert set(_metrics(tmp_path)[0]) >= {"loss", "loss/hard"} and "loss/kl" not in _metrics(tmp_path)[0]
    assert json.loads(Path(result.train_config).read_text())["objective"]["losses"]["kl"]["weight"] == 0.0


def test_phase2_loss_goes_down_from_a_phase1_student(teachers, labelled, tmp_path):
    _, features_dir = labelled
    phase1 = distill_intermediate(StudentSpec(architecture=NARROW), teachers[0], "qa", features_dir,
                                  IntermediateSpec(epochs=0.5, batch_size=16), ONE_WORKER, 0, tmp_path / "p1",
                                  progress=False)
    config = PredictionSpec(batch_size=8, epochs=4, learning_rate=3e-3, warmup_ratio=0.0, log_every=8,
                            temperature=2.0, distill_weight=0.5)
    result = distill_prediction(Path(phase1.model_dir), teachers, "qa", features_dir, config, "probs", ONE_WORKER,
                                0, tmp_path / "p2", progress=False)
    lines = _metrics(tmp_path / "p2")
    assert result.steps == 32 and len(lines) == 4
    assert lines[-1]["loss/hard"] < 0.8 * lines[0]["loss/hard"]
    assert lines[-1]["loss"] < lines[0]["loss"]
    recorded = json.loads(Path(result.train_config).read_text())["objective"]["losses"]["kl"]
    assert recorded["temperature"] == 2.0 and recorded["weight"] == 0.5 and recorded["teacher_logits"] == "labelled"
    AutoModelForQuestionAnswering.from_pretrained(result.model_dir)
    AutoTokenizer.from_pretrained(result.model_dir)


def test_classification_runs_both_phases_on_sst2(sst2_dir, bert_tokenizer_dir, tiny_model_factory, tmp_path):
    lines = (sst2_dir / "train.tsv").read_text(encoding="utf-8").splitlines()[1:49]
    examples = [{"id": str(i), "text": text, "label": int(label)}
                for i, (text, label) in enumerate(line.rsplit("\t", 1) for line in lines)]
    table = classification_features(examples, AutoTokenizer.from_pretrained(bert_tokenizer_dir),
                                     FeaturesSpec(max_seq_len=64, max_query_len=16, doc_stride=16))
    teacher = ModelRef(str(tiny_model_factory("classification", layers=4, hidden=32, num_labels=2)))
    table = TeacherEnsemble([teacher], "classification", 2, LabelSpec(), CPU, pad_token_id=0).label(table)
    features = _write_features(table, tmp_path / "features")
    phase1 = distill_intermediate(StudentSpec(architecture=NARROW), teacher, "classification", features,
                                  IntermediateSpec(epochs=1, batch_size=16), ONE_WORKER, 0, tmp_path / "p1", 2,
                                  progress=False)
    config = PredictionSpec(epochs=3, batch_size=8, learning_rate=3e-3, log_every=6, distill_weight=0.5)
    phase2 = distill_prediction(Path(phase1.model_dir), [teacher], "classification", features, config, "probs",
                                ONE_WORKER, 0, tmp_path / "p2", 2, progress=False)
    metrics = _metrics(tmp_path / "p2")
    assert phase2.steps == 18 and {"loss/kl", "loss/hard"} <= set(metrics[0])
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    assert AutoModelForSequenceClassification.from_pretrained(phase2.model_dir).config.num_labels == 2


# -- kill and resume ---------------------------------------------------------------------------------------------

RUNNER = """
import json, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from distill.models import ModelRef
from distill.phases import distill_intermediate
from core.resources import ResourcesSpec
from distill.spec import IntermediateSpec, StudentArchitecture, StudentSpec
args = json.loads(sys.argv[1])
distill_intermediate(StudentSpec(architecture=StudentArchitecture(**args["architecture"])), ModelRef(args["teacher"]),
                     "qa", Path(args["features"]), IntermediateSpec(**args["config"]),
                     ResourcesSpec(workers=1, gpus_per_worker=0), 0, Path(args["out"]), progress=False)
"""


def _sigkill_after_first_checkpoint(script: str, args: dict, out: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([sys.executable, "-c", script, json.dumps(args)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not list((out / "checkpoints").glob("step-*/COMPLETE")):
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint within 60 s"
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (out / "student").exists(), "the run finished before it was killed"


def test_sigkilled_phase_resumes_to_the_same_weights(plain_features, tiny_model_factory, tmp_path):
    """Phase 1 (projections, dropout on) killed after its first checkpoint, resumed, equals an unbroken run."""
    architecture = dict(num_hidden_layers=2, hidden_size=16, num_attention_heads=2, intermediate_size=32)
    config = dict(batch_size=4, epochs=4, learning_rate=1e-3, log_every=2, checkpoint_every=4)
    teacher = str(tiny_model_factory("qa", layers=4, hidden=32, heads_count=2))
    args = {"architecture": architecture, "config": config, "teacher": teacher, "features": str(plain_features),
            "out": str(tmp_path / "killed")}
    _sigkill_after_first_checkpoint(RUNNER, args, tmp_path / "killed")

    spec = StudentSpec(architecture=StudentArchitecture(**architecture))
    resumed = distill_intermediate(spec, ModelRef(teacher), "qa", plain_features, IntermediateSpec(**config),
                                   ONE_WORKER, 0, tmp_path / "killed", progress=False)
    unbroken = distill_intermediate(spec, ModelRef(teacher), "qa", plain_features, IntermediateSpec(**config),
                                    ONE_WORKER, 0, tmp_path / "unbroken", progress=False)
    assert resumed.steps == unbroken.steps == 64
    for name in ("student/model.safetensors", "projections.safetensors"):
        a, b = load_file(tmp_path / "killed" / name), load_file(tmp_path / "unbroken" / name)
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=f"{name}: {key}")
    # the metric lines the killed run wrote past its checkpoint were dropped and written again, once
    assert [line["step"] for line in _metrics(tmp_path / "killed")] == list(range(2, 65, 2))
    losses = {run: [line["loss"] for line in _metrics(tmp_path / run)] for run in ("killed", "unbroken")}
    assert losses["killed"] == pytest.approx(losses["unbroken"], abs=1e-6)



VALIDATING_RUNNER = """
import json, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from distill.evaluate import ValidationSet
from distill.models import ModelRef
from distill.phases import distill_prediction
from core.resources import ResourcesSpec
from distill.spec import EvaluateSpec, FeaturesSpec, PredictionSpec, StudentArchitecture, StudentSpec
args = json.loads(sys.argv[1])
validation = ValidationSet(Path(args["eval"]), args["eval_examples"], FeaturesSpec(**args["features_spec"]),
                           EvaluateSpec())
distill_prediction(StudentSpec(architecture=StudentArchitecture(**args["architecture"])),
                   [ModelRef(path, weight) for path, weight in args["teachers"]], "qa", Path(args["features"]),
                   PredictionSpec(**args["config"]), "probs", ResourcesSpec(workers=1, gpus_per_worker=0), 0,
                   Path(args["out"]), progress=False, validation=validation)
"""


def test_sigkilled_validating_phase_resumes_to_the_same_scores_and_best(teachers, labelled, squad_dev_path,
                                                                        tmp_path):
    _, features_dir = labelled
    read_examples(DataSource(path=str(squad_dev_path), limit=30), "qa", None, tmp_path / "eval")
    features = FeaturesSpec(max_seq_len=128, doc_stride=48, max_query_len=32)
    config = dict(batch_size=4, epochs=2, learning_rate=3e-3, warmup_ratio=0.0, log_every=4, checkpoint_every=4,
                  distill_weight=0.5, eval_every=3, eval_examples=24)
    architecture = NARROW.model_dump()
    args = {"architecture": architecture, "teachers": [[t.name_or_path, t.weight] for t in teachers],
            "features": str(features_dir), "config": config, "eval": str(tmp_path / "eval"), "eval_examples": 24,
            "features_spec": features.model_dump(), "out": str(tmp_path / "killed")}
    _sigkill_after_first_checkpoint(VALIDATING_RUNNER, args, tmp_path / "killed")

    validation = ValidationSet(tmp_path / "eval", 24, features, EvaluateSpec())
    runs = {}
    for name in ("killed", "unbroken"):
        runs[name] = distill_prediction(StudentSpec(architecture=NARROW), teachers, "qa", features_dir,
                                        PredictionSpec(**config), "probs", ONE_WORKER, 0, tmp_path / name,
                                        progress=False, validation=validation)
    lines = {name: [json.loads(line) for line in (tmp_path / name / "validation.jsonl").read_text().splitlines()]
             for name in runs}
    assert [line["step"] for line in lines["killed"]] == list(range(3, 32, 3)) + [32]
    assert lines["killed"] == pytest.approx(lines["unbroken"], abs=1e-9)
    assert runs["killed"].best["step"] == runs["unbroken"].best["step"]
    assert runs["killed"].best["value"] == pytest.approx(runs["unbroken"].best["value"], abs=1e-9)
    a, b = (load_file(tmp_path / name / "best" / "student" / "model.safetensors") for name in runs)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


# -- teacher fine-tuning and students ---------------------------------------------------------------------------


def test_finetune_teacher_adds_a_task_head_to_a_base_model(plain_features, tiny_model_factory, tmp_path):
    base = ModelRef(str(tiny_model_factory("mlm", layers=2, hidden=32)))
    result = finetune_teacher(base, "qa", plain_features, FinetuneSpec(epochs=0.25, batch_size=16), ONE_WORKER, 0,
                              tmp_path, progress=False)
    assert result.model_dir == str(tmp_path / "model") and result.steps == 1
    assert AutoModelForQuestionAnswering.from_pretrained(result.model_dir).config.architectures == [
        "BertForQuestionAnswering"]
    AutoTokenizer.from_pretrained(result.model_dir)


def test_masked_lm_training_learns_and_feeds_the_augmentation(plain_features, tiny_model_factory, tmp_path):
    from transformers import AutoModelForMaskedLM

    from augment.candidates import MaskedLMProposer
    from augment.words import eligible_words

    base = ModelRef(str(tiny_model_factory("mlm", layers=2, hidden=32)), init="random")
    config = MaskedLMTrainingSpec(epochs=10, batch_size=16, learning_rate=3e-3, seed=5)
    result = pretrain_masked_lm(base, "qa", plain_features, config, ONE_WORKER, tmp_path, progress=False)
    assert result.model_dir == str(tmp_path / "model") and result.steps == 40
    trained = AutoModelForMaskedLM.from_pretrained(result.model_dir).eval()
    assert trained.config.architectures == ["BertForMaskedLM"]
    torch.manual_seed(5)  # the weights it started from
    untrained = AutoModelForMaskedLM.from_config(trained.config).eval()
    # every 5th wordpiece of the training features masked: the untrained model is at about ln(vocabulary)
    batch = pad_batch(pq.read_table(plain_features / "shards").slice(0, 16), 0)
    chosen = (torch.arange(batch["input_ids"].shape[1]) % 5 == 3) & batch["attention_mask"].bool()
    inputs = batch["input_ids"].masked_fill(chosen, 103)  # [MASK]

    def masked_loss(model):
        with torch.no_grad():
            logits = model(input_ids=inputs, attention_mask=batch["attention_mask"]).logits
        return torch.nn.functional.cross_entropy(logits[chosen], batch["input_ids"][chosen]).item()

    assert masked_loss(untrained) > np.log(30522) - 0.5
    assert masked_loss(trained) < masked_loss(untrained) - 1.5
    settings = json.loads((tmp_path / "train_config.json").read_text())
    assert settings["seed"] == 5 and settings["objective"]["losses"]["mlm"]["mask_prob"] == 0.15
    # the augmentation loads it like any masked LM from the hub
    proposer = MaskedLMProposer(result.model_dir)
    text = "The Normans were the people who gave their name to Normandy, a region in France."
    encoded = proposer.encode(text, eligible_words(text))
    candidates = proposer.exact(encoded, top_k=5)
    assert candidates and all(len(words) == 5 for words in candidates.values())


def test_masked_lm_batch_of_special_tokens_only_gives_a_zero_loss_that_reaches_every_parameter(tiny_model_factory):
    """A worker's slice of empty texts ([CLS] [SEP] only) has nothing to mask: a zero loss, not an IndexError, still
    connected to every parameter as DDP (find_unused_parameters off) needs."""
    from transformers import AutoModelForMaskedLM

    from distill.objectives.masked_lm import MaskedLMObjective

    folder = tiny_model_factory("mlm", layers=1, hidden=32)
    objective = MaskedLMObjective(AutoModelForMaskedLM.from_pretrained(folder).train(),
                                  AutoTokenizer.from_pretrained(folder), 0.15, {"model": str(folder)})
    batch = {"input_ids": torch.tensor([[101, 102, 0], [101, 102, 0]]),
             "attention_mask": torch.tensor([[1, 1, 0], [1, 1, 0]]),
             "token_type_ids": torch.zeros(2, 3, dtype=torch.long)}
    loss = objective(batch)["mlm"]
    loss.backward()
    assert loss.item() == 0.0
    assert all(p.grad is not None for p in objective.parameters() if p.requires_grad)


def test_build_student_from_each_source(teachers):
    teacher = AutoModelForQuestionAnswering.from_pretrained(teachers[0].name_or_path)
    fresh = build_student(StudentSpec(architecture=NARROW), teachers[0], "qa", None)
    assert (fresh.config.hidden_size, fresh.config.num_hidden_layers, fresh.config.vocab_size) == (
        16, 2, teacher.config.vocab_size)

    copied = build_student(StudentSpec(init_from_teacher_layers=[1, 3]), teachers[0], "qa", None)
    assert copied.config.num_hidden_layers == 2 and copied.training
    teacher_state, student_state = teacher.state_dict(), copied.state_dict()
    assert torch.equal(student_state["bert.embeddings.word_embeddings.weight"],
                       teacher_state["bert.embeddings.word_embeddings.weight"])
    for student_layer, teacher_layer in ((0, 1), (1, 3)):
        key = "bert.encoder.layer.{}.attention.self.query.weight"
        assert torch.equal(student_state[key.format(student_layer)], teacher_state[key.format(teacher_layer)])

    with pytest.raises(ModelCheckError, match=r"layers \[4\].*0\.\.3"):
        build_student(StudentSpec(init_from_teacher_layers=[0, 4]), teachers[0], "qa", None)
    with pytest.raises(ModelCheckError, match="built from a teacher"):
        build_student(StudentSpec(architecture=NARROW), None, "qa", None)

    by_path = build_student(StudentSpec(model=teachers[0].name_or_path), None, "qa", None)
    assert torch.equal(by_path.state_dict()["qa_outputs.weight"], teacher_state["qa_outputs.weight"])


def test_phase2_validates_every_n_steps_and_keeps_the_best_student(teachers, labelled, squad_dev_path,
                                                                   bert_tokenizer_dir, tmp_path):
    _, features_dir = labelled
    read_examples(DataSource(path=str(squad_dev_path), limit=30), "qa", None, tmp_path / "eval")
    features = FeaturesSpec(max_seq_len=128, doc_stride=48, max_query_len=32)
    validation = ValidationSet(tmp_path / "eval", 24, features, EvaluateSpec())
    config = PredictionSpec(batch_size=8, epochs=2, learning_rate=3e-3, warmup_ratio=0.0, log_every=4,
                            distill_weight=0.5, eval_every=3, eval_examples=24)
    student = StudentSpec(architecture=NARROW)
    result = distill_prediction(student, teachers, "qa", features_dir, config, "probs", ONE_WORKER, 0,
                                tmp_path / "p2", progress=False, validation=validation)
    assert result.steps == 16
    lines = [json.loads(line) for line in (tmp_path / "p2" / "validation.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [3, 6, 9, 12, 15, 16]   # every 3 steps, and the last
    assert all({"exact", "f1", "HasAns_f1", "NoAns_f1"} <= set(line) for line in lines)
    best = max(lines, key=lambda line: (line["f1"], -line["step"]))
    assert result.best == {"step": best["step"], "metric": "f1", "value": best["f1"],
                           "model_dir": str(tmp_path / "p2" / "best" / "student")}
    assert json.loads((tmp_path / "p2" / "best" / "best.json").read_text())["step"] == best["step"]
    # best/ holds the student of that step: scored again from disk, it gets the recorded score
    tokenizer = AutoTokenizer.from_pretrained(bert_tokenizer_dir)
    rescored = Validator(validation, "qa", tokenizer, CPU).score(
        AutoModelForQuestionAnswering.from_pretrained(result.best["model_dir"]))
    assert rescored["f1"] == pytest.approx(best["f1"], abs=1e-9)
    # the last student is still the phase's output; the scores are TensorBoard scalars too
    assert Path(result.model_dir) == tmp_path / "p2" / "student"
    scalars = tensorboard_scalars(tmp_path / "p2" / "tensorboard")["validation/f1"]
    assert scalars == pytest.approx({line["step"]: line["f1"] for line in lines}, rel=1e-6)


def test_phase2_eval_every_without_validation_examples_is_refused(labelled, tmp_path):
    _, features_dir = labelled
    with pytest.raises(TrainingError, match="eval_every is set but no validation examples"):
        distill_prediction(StudentSpec(architecture=NARROW), [], "qa", features_dir, PredictionSpec(eval_every=5),
                           "probs", ONE_WORKER, 0, tmp_path, progress=False)
