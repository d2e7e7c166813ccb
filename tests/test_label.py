"""Teacher labelling: stored logits against direct forward passes, ensemble arithmetic, checks before work,
identical shards with 1 and 2 workers, and kill -9 then resume with real processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from transformers import (
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
)

from core.blocks import OutputClaimError
from core.resources import ResourcesSpec
from core.schema import CLASSIFICATION_SCHEMA, QA_SCHEMA
from distill import label
from distill.features import QA_FEATURE_SCHEMA, classification_features, qa_features
from distill.label import LabelError, TeacherEnsemble, _BlockLabeller, _plan, featurize_examples, label_examples
from distill.models import ModelCheckError, ModelRef, check_same_vocabulary
from distill.spec import FeaturesSpec, LabelSpec

REPO = Path(__file__).resolve().parents[1]
FEATURES = FeaturesSpec(max_seq_len=96, doc_stride=24, max_query_len=24)
ONE_WORKER = ResourcesSpec(workers=1, cpus_per_worker=0.5, gpus_per_worker=0)
TWO_WORKERS = ResourcesSpec(workers=2, cpus_per_worker=0.5, gpus_per_worker=0)


def write_examples(folder: Path, rows: list[dict], schema: pa.Schema, task: str, per_shard: int,
                   label_names: list[str] | None = None) -> Path:
    """An examples folder as the prepare/augment stages write it: shards/part-*.parquet + meta.json."""
    (folder / "shards").mkdir(parents=True)
    for i, start in enumerate(range(0, len(rows), per_shard)):
        table = pa.Table.from_pylist(rows[start:start + per_shard], schema=schema)
        pq.write_table(table, folder / "shards" / f"part-{i:05d}.parquet")
    (folder / "meta.json").write_text(json.dumps({"task": task, "label_names": label_names}))
    return folder


N_EXAMPLES, PER_SHARD = 300, 10   # 31 output shards: a run is far from done when its first shard appears


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a shared CPU spinning threads only slow each other down."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def qa_examples(tmp_path_factory, squad_rows) -> Path:
    # two input shards of unequal length, so blocks restart at an input boundary (the last block of each is short)
    return write_examples(tmp_path_factory.mktemp("qa-examples"), squad_rows(N_EXAMPLES),
                          QA_SCHEMA, "qa", per_shard=195)


@pytest.fixture(scope="module")
def cls_examples(tmp_path_factory) -> Path:
    words = ["good", "bad", "film", "plot", "actors", "boring", "great", "slow"]
    rows = [{"id": f"s{i}", "source_id": f"s{i}", "variant": 0,
             "text": " ".join(words[(i * k) % len(words)] for k in range(1, 4 + i % 5)), "text_pair": None,
             "label": i % 2, "substitutions": []} for i in range(40)]
    return write_examples(tmp_path_factory.mktemp("cls-examples"), rows, CLASSIFICATION_SCHEMA, "classification",
                          per_shard=40, label_names=["negative", "positive"])


@pytest.fixture(scope="module")
def qa_teachers(tiny_model_factory) -> list[Path]:
    return [tiny_model_factory(task="qa", seed=0), tiny_model_factory(task="qa", seed=1, hidden=48)]


@pytest.fixture(scope="module")
def tokenizer(bert_tokenizer_dir):
    return AutoTokenizer.from_pretrained(bert_tokenizer_dir)


def read_rows(out_dir: Path) -> list[dict]:
    return pa.concat_tables(pq.read_table(p) for p in sorted((out_dir / "shards").glob("part-*.parquet"))).to_pylist()


def shard_bytes(out_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out_dir / "shards").glob("part-*.parquet"))}


def direct_logits(model_dir: Path, task: str, input_ids: list[int], token_type_ids: list[int]) -> list[np.ndarray]:
    """One feature through the model alone, unpadded: [start, end] (QA) or [logits] (classification)."""
    head = AutoModelForQuestionAnswering if task == "qa" else AutoModelForSequenceClassification
    if (model_dir, task) not in _MODELS:
        _MODELS[model_dir, task] = head.from_pretrained(model_dir).eval()
    model = _MODELS[model_dir, task]
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([input_ids]), token_type_ids=torch.tensor([token_type_ids]))
    names = ["start_logits", "end_logits"] if task == "qa" else ["logits"]
    return [getattr(out, n)[0].float().numpy() for n in names]


_MODELS: dict = {}


def assert_half_close(stored, expected) -> None:
    """`stored` (float16 values) equals `expected` (float32) to float16 precision: within one float16 step."""
    stored, expected = np.asarray(stored, dtype=np.float32), np.asarray(expected, dtype=np.float32)
    step = np.spacing(np.abs(expected).astype(np.float16)).astype(np.float32)
    assert stored.shape == expected.shape
    assert np.all(np.abs(stored - expected) <= step + 1e-5), np.abs(stored - expected).max()


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x - (x.max() + np.log(np.exp(x - x.max()).sum()))


# ---------------------------------------------------------------------------------------------------------------
# Arithmetic, without Ray

@pytest.mark.parametrize("mode", ["probs", "logits"])
def test_qa_ensemble_matches_hand_computation(mode, qa_teachers, tokenizer, squad_rows):
    features = qa_features(squad_rows(3), tokenizer, FEATURES)
    refs = [ModelRef(str(qa_teachers[0]), weight=1.0), ModelRef(str(qa_teachers[1]), weight=3.0)]
    ensemble = TeacherEnsemble(refs, "qa", None, LabelSpec(batch_size=5, ensemble=mode, keep_teacher_logits=True),
                               torch.device("cpu"), tokenizer.pad_token_id)
    labelled = ensemble.label(features)
    assert labelled.schema.equals(QA_FEATURE_SCHEMA)
    for row in labelled.to_pylist():
        per_teacher = [direct_logits(t, "qa", row["input_ids"], row["token_type_ids"]) for t in qa_teachers]
        for h, name in enumerate(["start", "end"]):
            z1, z2 = per_teacher[0][h], per_teacher[1][h]
            assert_half_close(row[f"teachers_{name}_logits"][0], z1)
            assert_half_close(row[f"teachers_{name}_logits"][1], z2)
            if mode == "probs":
                expected = np.log(0.25 * np.exp(log_softmax(z1)) + 0.75 * np.exp(log_softmax(z2)))
            else:
                expected = 0.25 * z1 + 0.75 * z2
            assert_half_close(row[f"teacher_{name}_logits"], expected)
            if mode == "probs":   # softmax of the stored values is the mixture
                mixture = np.exp(np.asarray(row[f"teacher_{name}_logits"], dtype=np.float64))
                assert abs(mixture.sum() - 1) < 1e-2


def test_single_teacher_stores_log_probabilities(qa_teachers, tokenizer, squad_rows):
    features = qa_features(squad_rows(4), tokenizer, FEATURES)
    ensemble = TeacherEnsemble([ModelRef(str(qa_teachers[0]))], "qa", None, LabelSpec(batch_size=3),
                               torch.device("cpu"), tokenizer.pad_token_id)
    for row in ensemble.label(features).to_pylist():
        start, end = direct_logits(qa_teachers[0], "qa", row["input_ids"], row["token_type_ids"])
        assert_half_close(row["teacher_start_logits"], log_softmax(start))
        assert_half_close(row["teacher_end_logits"], log_softmax(end))
        assert row["teachers_start_logits"] is None


@pytest.mark.parametrize("mode", ["probs", "logits"])
def test_classification_ensemble_matches_hand_computation(mode, tiny_model_factory, tokenizer):
    teachers = [tiny_model_factory(task="classification", num_labels=3, seed=s) for s in (0, 1)]
    examples = [{"id": f"e{i}", "text": "a rather good film " * (i + 1), "label": i % 3} for i in range(7)]
    features = classification_features(examples, tokenizer, FEATURES)
    refs = [ModelRef(str(teachers[0]), weight=2.0), ModelRef(str(teachers[1]), weight=0.5)]
    ensemble = TeacherEnsemble(refs, "classification", 3, LabelSpec(batch_size=4, ensemble=mode,
                                                                      keep_teacher_logits=True),
                               torch.device("cpu"), tokenizer.pad_token_id)
    for row in ensemble.label(features).to_pylist():
        z1, z2 = (direct_logits(t, "classification", row["input_ids"], row["token_type_ids"])[0] for t in teachers)
        if mode == "probs":
            expected = np.log(0.8 * np.exp(log_softmax(z1)) + 0.2 * np.exp(log_softmax(z2)))
        else:
            expected = 0.8 * z1 + 0.2 * z2
        assert_half_close(row["teacher_logits"], expected)
        assert_half_close(row["teachers_logits"][1], z2)


def test_probs_ensemble_is_stored_as_the_mix_of_softened_teachers(tiny_model_factory, tokenizer):
    teachers = [tiny_model_factory(task="classification", num_labels=3, seed=s) for s in (0, 1)]
    examples = [{"id": f"e{i}", "text": "a rather good film " * (i + 1), "label": i % 3} for i in range(5)]
    features = classification_features(examples, tokenizer, FEATURES)
    refs = [ModelRef(str(teachers[0]), weight=2.0), ModelRef(str(teachers[1]), weight=0.5)]
    t = 2.0
    ensemble = TeacherEnsemble(refs, "classification", 3, LabelSpec(batch_size=4), torch.device("cpu"),
                               tokenizer.pad_token_id, temperature=t)
    for row in ensemble.label(features).to_pylist():
        z1, z2 = (direct_logits(m, "classification", row["input_ids"], row["token_type_ids"])[0] for m in teachers)
        softened_mix = 0.8 * np.exp(log_softmax(z1 / t)) + 0.2 * np.exp(log_softmax(z2 / t))
        # SoftTargetKL softens the stored values by T: softmax(stored / T) must be the mix
        stored = np.asarray(row["teacher_logits"], dtype=np.float64)
        assert np.allclose(np.exp(log_softmax(stored / t)), softened_mix, atol=2e-3)


def test_one_teacher_labels_do_not_depend_on_temperature(qa_teachers, tokenizer, squad_rows):
    features = qa_features(squad_rows(3), tokenizer, FEATURES)
    tables = [TeacherEnsemble([ModelRef(str(qa_teachers[0]))], "qa", None, LabelSpec(batch_size=3),
                              torch.device("cpu"), tokenizer.pad_token_id, temperature=t).label(features)
              for t in (1.0, 2.0)]
    assert tables[0].equals(tables[1])


@pytest.mark.parametrize(("teachers", "ensemble", "keyed"), [(2, "probs", True), (2, "logits", False),
                                                             (1, "probs", False)])
def test_label_cache_key_holds_the_temperature_where_the_labels_depend_on_it(teachers, ensemble, keyed):
    from distill.spec import TeacherSpec
    from jobs.runner import stage_key
    from jobs.spec import JobSpec
    from jobs.stages import STAGES

    label_stage = next(stage for stage in STAGES if stage.name == "label")
    keys = {stage_key(label_stage, JobSpec(teachers=[TeacherSpec()] * teachers, label={"ensemble": ensemble},
                                           distill={"prediction": {"temperature": t}}), {})
            for t in (1.0, 2.0)}
    assert len(keys) == (2 if keyed else 1)


# ---------------------------------------------------------------------------------------------------------------
# Checks before any work

def _tiny_other_vocabulary(folder: Path) -> Path:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertTokenizerFast

    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.train_from_iterator(["the cat sat on the mat", "a dog ran in the park"] * 5, trainers.WordPieceTrainer(
        vocab_size=100, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    tokenizer = BertTokenizerFast(tokenizer_object=backend)
    config = BertConfig(vocab_size=len(tokenizer.get_vocab()), hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32)
    AutoModelForQuestionAnswering.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_checks_before_work(tmp_path, qa_examples, cls_examples, qa_teachers, tiny_model_factory):
    spec = {"config": LabelSpec(), "resources": ONE_WORKER, "progress": False}
    qa_ref = ModelRef(str(qa_teachers[0]))
    classifier = ModelRef(str(tiny_model_factory(task="classification", num_labels=2)))
    with pytest.raises(ModelCheckError, match="ForQuestionAnswering head"):
        label_examples(qa_examples, "qa", [classifier], qa_ref, FEATURES, out_dir=tmp_path / "a", **spec)
    with pytest.raises(ModelCheckError, match="classifies into 2 labels, the data has 3"):
        label_examples(cls_examples, "classification", [classifier], classifier, FEATURES, num_labels=3,
                       out_dir=tmp_path / "b", **spec)
    other = ModelRef(str(_tiny_other_vocabulary(tmp_path / "other-vocab")))
    with pytest.raises(ModelCheckError, match="different vocabulary"):
        label_examples(qa_examples, "qa", [qa_ref, other], qa_ref, FEATURES, out_dir=tmp_path / "c", **spec)
    short = ModelRef(str(tiny_model_factory(task="qa", max_positions=64)))
    with pytest.raises(ModelCheckError, match="max_seq_len 96 exceeds the model's 64 positions"):
        label_examples(qa_examples, "qa", [short], qa_ref, FEATURES, out_dir=tmp_path / "d", **spec)
    with pytest.raises(LabelError, match="holds qa examples, but the task is classification"):
        label_examples(qa_examples, "classification", [classifier], classifier, FEATURES, out_dir=tmp_path / "e",
                       **spec)
    assert not any((tmp_path / d).exists() for d in "abcde")   # nothing written before the checks passed


def test_teacher_with_the_classes_in_another_order_is_refused_before_work(tmp_path, cls_examples, monkeypatch,
                                                                        classifier_with_classes):
    monkeypatch.setattr(label, "resolve_on_cluster", lambda *args, **kwargs: pytest.fail("labelling started"))
    swapped = ModelRef(str(classifier_with_classes(["positive", "negative"])))  # the data's: [negative, positive]
    with pytest.raises(ModelCheckError, match=r"\['positive', 'negative'\].*\['negative', 'positive'\]"):
        label_examples(cls_examples, "classification", [swapped], swapped, FEATURES, LabelSpec(), ONE_WORKER,
                       tmp_path / "out", progress=False)


def test_random_init_teacher_without_a_seed_is_refused(tmp_path, cls_examples, tiny_model_factory, monkeypatch):
    monkeypatch.setattr(label, "resolve_on_cluster", lambda *args, **kwargs: pytest.fail("labelling started"))
    unseeded = ModelRef(str(tiny_model_factory(task="classification")), init="random")
    with pytest.raises(ModelCheckError, match="init='random'.*seed"):
        label_examples(cls_examples, "classification", [unseeded], unseeded, FEATURES, LabelSpec(), ONE_WORKER,
                       tmp_path / "out", progress=False)


def test_same_vocabulary_with_different_casing_is_refused_naming_the_probe(bert_tokenizer_dir):
    uncased = AutoTokenizer.from_pretrained(bert_tokenizer_dir)
    cased = AutoTokenizer.from_pretrained(bert_tokenizer_dir, do_lower_case=False)
    assert cased.get_vocab() == uncased.get_vocab()
    check_same_vocabulary({"student": uncased, "teacher 0": AutoTokenizer.from_pretrained(bert_tokenizer_dir)})
    with pytest.raises(ModelCheckError, match=r"teacher 0 tokenizes the probe 'Where is the Eiffel Tower in "
                                              r"Paris\?' as \['\[CLS\]', '\[UNK\]'.*student as \['\[CLS\]', 'where'"):
        check_same_vocabulary({"student": uncased, "teacher 0": cased})


# ---------------------------------------------------------------------------------------------------------------
# End to end through Ray

def ensemble_refs(qa_teachers) -> list[ModelRef]:
    return [ModelRef(str(qa_teachers[0]), 1.0), ModelRef(str(qa_teachers[1]), 3.0)]


ENSEMBLE_LABEL = LabelSpec(batch_size=8, keep_teacher_logits=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, ray_session, qa_examples, qa_teachers) -> tuple[Path, object]:
    """Two teachers (weights 1 and 3), per-teacher logits kept, one worker, an uninterrupted run."""
    out = tmp_path_factory.mktemp("reference")
    refs = ensemble_refs(qa_teachers)
    result = label_examples(qa_examples, "qa", refs, refs[0], FEATURES, ENSEMBLE_LABEL, ONE_WORKER, out,
                            progress=False, examples_per_shard=PER_SHARD)
    return out, result


def test_reference_run(reference, qa_examples, qa_teachers, tmp_path):
    out, result = reference
    # input shards of 195 + 105 examples -> 20 + 11 blocks
    assert result.shards == 31 and result.examples == N_EXAMPLES and result.shards_reused == 0
    assert sorted(p.name for p in out.iterdir()) == ["label_config.json", "meta.json", "shards", "stats.json"]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["features"] == result.features and stats["weights"] == [0.25, 0.75]
    assert stats["float32_full_bytes_per_feature"] == 2 * 4 * 96 and stats["bytes_per_feature"] > 0
    json.dumps(asdict(result))
    rows = read_rows(out)
    assert len(rows) == result.features
    examples = pa.concat_tables(pq.read_table(p) for p in sorted((qa_examples / "shards").glob("*.parquet")))
    assert [r["example_id"] for r in rows if r["window"] == 0] == examples.column("id").to_pylist()
    for row in rows[::41]:
        start, _ = direct_logits(qa_teachers[1], "qa", row["input_ids"], row["token_type_ids"])
        assert_half_close(row["teachers_start_logits"][1], start)
        assert len(row["teacher_end_logits"]) == len(row["input_ids"])
    # the trainer reads shards with plain pyarrow (above) or with datasets
    from datasets import load_dataset

    loaded = load_dataset("parquet", data_files=str(out / "shards" / "part-*.parquet"), split="train",
                          cache_dir=str(tmp_path / "hf-cache"))
    assert loaded.num_rows == len(rows)
    assert loaded[3]["teacher_start_logits"] == pytest.approx(rows[3]["teacher_start_logits"])
    assert loaded[3]["teachers_end_logits"][1] == pytest.approx(rows[3]["teachers_end_logits"][1])


def test_other_settings_in_out_dir_are_refused(reference, qa_examples, qa_teachers):
    out, _ = reference
    refs = [ModelRef(str(qa_teachers[0]))]
    with pytest.raises(OutputClaimError, match="other settings .*teachers"):
        label_examples(qa_examples, "qa", refs, refs[0], FEATURES, ENSEMBLE_LABEL, ONE_WORKER, out, progress=False,
                       examples_per_shard=PER_SHARD)


def test_concurrent_calls_on_one_actor_write_the_reference_bytes(reference, tmp_path, qa_examples, qa_teachers):
    """With a GPU, Ray runs two calls at once on each labelling actor, one tokenizing while the other is in the
    teachers; calls racing on one actor's tokenizer and teachers still write every block's bytes as the reference
    run did."""
    out, _ = reference
    refs = ensemble_refs(qa_teachers)
    blocks, _ = _plan(qa_examples, PER_SHARD)
    (tmp_path / "shards").mkdir()
    labeller = _BlockLabeller("qa", refs, refs[0], FEATURES, ENSEMBLE_LABEL, 1.0, None, gpus=0, precision="auto",
                              threads=1, shards_dir=str(tmp_path / "shards"))
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)   # threads take turns every few bytecodes: unguarded shared state would collide
    try:
        with ThreadPoolExecutor(4) as pool:   # as Ray calls a threaded actor: one block per call
            list(pool.map(labeller.label_block, blocks))
    finally:
        sys.setswitchinterval(interval)
    assert shard_bytes(tmp_path) == shard_bytes(out)


_LABEL_SCRIPT = """
import json, sys
from pathlib import Path
from distill.label import label_examples
from distill.models import ModelRef
from core.resources import ResourcesSpec
from distill.spec import FeaturesSpec, LabelSpec

args = json.loads(sys.argv[1])
teachers = [ModelRef(path, weight) for path, weight in args["teachers"]]
label_examples(Path(args["examples"]), "qa", teachers, teachers[0], FeaturesSpec(**args["features"]),
               LabelSpec(**args["label"]), ResourcesSpec(**args["resources"]), Path(args["out"]), progress=False,
               examples_per_shard=args["per_shard"])
"""


def test_kill_then_resume_with_two_workers_matches_uninterrupted_run(reference, tmp_path, ray_session, qa_examples,
                                                                      qa_teachers):
    """A labelling process killed by SIGKILL after its first shard, resumed with 2 workers instead of 1, ends with
    the same bytes as the uninterrupted one-worker run: shards kept from before the kill and shards computed by
    the two-worker pool alike."""
    out, _ = reference
    killed, resumed = tmp_path / "killed", tmp_path / "resumed"
    refs = ensemble_refs(qa_teachers)
    args = {"examples": str(qa_examples), "teachers": [[r.name_or_path, r.weight] for r in refs],
            "features": FEATURES.model_dump(), "label": ENSEMBLE_LABEL.model_dump(),
            "resources": ONE_WORKER.model_dump(), "out": str(killed), "per_shard": PER_SHARD}
    script = tmp_path / "label_job.py"
    script.write_text(_LABEL_SCRIPT)
    # the job joins this session's Ray cluster (label_examples calls ray.init, which finds RAY_ADDRESS), as a
    # driver of a cluster does; when the driver dies, the cluster ends its actors
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    log = tmp_path / "label_job.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen([sys.executable, str(script), json.dumps(args)], cwd=REPO, env=env,
                                   stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while not list((killed / "shards").glob("part-*.parquet")):
            assert process.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "no shard appeared within 240 s"
            time.sleep(0.01)
    finally:
        process.kill()   # SIGKILL
        process.wait()
    # the actor may still finish a shard before the cluster ends it: resume from a snapshot (writes are atomic,
    # so a snapshot holds whole shards and perhaps a temp file)
    shutil.copytree(killed, resumed)
    before = shard_bytes(resumed)
    assert 0 < len(before) < 31, f"{len(before)} shards at the kill: not an interrupted run"
    result = label_examples(qa_examples, "qa", refs, refs[0], FEATURES, ENSEMBLE_LABEL, TWO_WORKERS, resumed,
                            progress=False, examples_per_shard=PER_SHARD)
    assert result.shards == 31 and result.shards_reused == len(before)
    assert not list((resumed / "shards").glob(".part-*"))   # temp files of the killed writer are gone
    assert shard_bytes(resumed) == shard_bytes(out)


def test_classification_and_no_teacher(tmp_path, ray_session, cls_examples, tiny_model_factory):
    teachers = [ModelRef(str(tiny_model_factory(task="classification", num_labels=2, seed=s)), w)
                for s, w in ((0, 1.0), (1, 1.0))]
    result = label_examples(cls_examples, "classification", teachers, teachers[0], FEATURES,
                            LabelSpec(ensemble="logits"), ONE_WORKER, tmp_path / "cls", progress=False)
    rows = read_rows(tmp_path / "cls")
    assert result.features == 40 and len(rows[0]["teacher_logits"]) == 2 and rows[0]["teachers_logits"] is None
    assert [r["label"] for r in rows] == [i % 2 for i in range(40)]
    alone = featurize_examples(cls_examples, "classification", teachers[0], FEATURES, ONE_WORKER, tmp_path / "alone",
                               progress=False)
    rows = read_rows(tmp_path / "alone")
    assert alone.teachers == () and all(r["teacher_logits"] is None for r in rows) and len(rows) == 40
    assert [r["label"] for r in rows] == [i % 2 for i in range(40)]
    with pytest.raises(LabelError, match="no teachers to label with"):
        label_examples(cls_examples, "classification", [], teachers[0], FEATURES, LabelSpec(), ONE_WORKER,
                       tmp_path / "refused", progress=False)
