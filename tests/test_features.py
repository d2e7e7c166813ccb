"""Features: QA windows against real SQuAD 2.0 dev examples, classification encodings, and pad_batch."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch
from transformers import AutoTokenizer

from core.devices import padded_length
from distill.features import (CLASSIFICATION_FEATURE_SCHEMA, LOGIT_PAD, NOT_CONTEXT, QA_FEATURE_SCHEMA, FeaturesError,
                              FlatFeatures, classification_features, pad_batch, qa_features)
from distill.spec import FeaturesSpec
from distill.tasks import task_kind


@pytest.fixture(scope="module")
def tokenizer(bert_tokenizer_dir):
    return AutoTokenizer.from_pretrained(bert_tokenizer_dir)


@pytest.fixture(scope="module")
def dev_rows(squad_rows):
    return squad_rows(600)


def _normal(text: str) -> str:
    return " ".join(text.split())


def test_schema_and_table_input(tokenizer, dev_rows):
    spec = FeaturesSpec(max_seq_len=128, doc_stride=32, max_query_len=24)
    from_dicts = qa_features(dev_rows[:40], tokenizer, spec)
    from_table = qa_features(pa.Table.from_pylist(dev_rows[:40]), tokenizer, spec)
    assert from_dicts.schema.equals(QA_FEATURE_SCHEMA)
    assert from_dicts.equals(from_table)
    rows = from_dicts.to_pylist()
    assert all(len(r["input_ids"]) <= 128 for r in rows)
    assert all(len(r["input_ids"]) == len(r["token_type_ids"]) == len(r["offset_start"]) == len(r["offset_end"])
               for r in rows)
    assert all(r["feature_id"] == f"{r['example_id']}/{r['window']}" for r in rows)
    assert all(r["teacher_start_logits"] is None and r["teachers_end_logits"] is None for r in rows)
    assert all(r["input_ids"][0] == tokenizer.cls_token_id and r["offset_start"][0] == NOT_CONTEXT for r in rows)


def test_windows_cover_every_context_token(tokenizer, dev_rows):
    """Every character that a token of the whole context covers is covered by some window; windows overlap."""
    spec = FeaturesSpec(max_seq_len=64, doc_stride=16, max_query_len=16)
    rows = qa_features(dev_rows, tokenizer, spec).to_pylist()
    by_example: dict[str, list[dict]] = {}
    for row in rows:
        by_example.setdefault(row["example_id"], []).append(row)
    assert len(by_example) == len(dev_rows)
    multi_window = 0
    for example in dev_rows:
        windows = by_example[example["id"]]
        assert [w["window"] for w in windows] == list(range(len(windows)))
        multi_window += len(windows) > 1
        covered = set()
        for w in windows:
            for start, end in zip(w["offset_start"], w["offset_end"]):
                covered.update(range(start, end))
        whole = tokenizer(example["context"], add_special_tokens=False, return_offsets_mapping=True)
        expected = {c for start, end in whole["offset_mapping"] for c in range(start, end)}
        assert covered == expected, example["id"]
        assert not any(c for c in expected if example["context"][c].isspace())
        # consecutive windows share exactly doc_stride context tokens
        contexts = [[(s, e) for s, e in zip(w["offset_start"], w["offset_end"]) if s != NOT_CONTEXT]
                    for w in windows]
        for previous, current in itertools.pairwise(contexts):
            assert previous[-spec.doc_stride:] == current[:spec.doc_stride]
    assert multi_window > 100  # the test really exercises overflow


def test_questions_truncated(tokenizer, dev_rows):
    spec = FeaturesSpec(max_seq_len=64, doc_stride=16, max_query_len=5)
    rows = qa_features(dev_rows[:50], tokenizer, spec).to_pylist()
    for row in rows:
        question_tokens = row["token_type_ids"].index(1) - 2   # [CLS] question [SEP]
        assert 1 <= question_tokens <= 5


def _holds_answer(row: dict, example: dict) -> tuple[bool, bool]:
    """(the window's context holds the whole first answer, it holds part of it)."""
    answer_start = example["answers"]["answer_start"][0]
    answer_end = answer_start + len(example["answers"]["text"][0])
    spans = [(s, e) for s, e in zip(row["offset_start"], row["offset_end"]) if s != NOT_CONTEXT]
    return (spans[0][0] <= answer_start and spans[-1][1] >= answer_end,
            spans[0][0] < answer_end and spans[-1][1] > answer_start)


def test_gold_positions_on_squad_dev(tokenizer, dev_rows):
    spec = FeaturesSpec(max_seq_len=384, doc_stride=128, max_query_len=64)
    examples = {r["id"]: r for r in dev_rows}
    rows = qa_features(dev_rows, tokenizer, spec).to_pylist()
    equal = answered = 0
    for row in rows:
        example = examples[row["example_id"]]
        start, end = row["start_position"], row["end_position"]
        if example["is_impossible"] or not _holds_answer(row, example)[0]:
            assert (start, end) == (0, 0)
            continue
        assert 0 < start <= end
        answered += 1
        span = example["context"][row["offset_start"][start]:row["offset_end"][end]]
        answer = example["answers"]["text"][0]
        # an answer that starts or ends inside a word gets the whole wordpiece: the span holds the answer
        assert _normal(answer) in _normal(span)
        equal += _normal(span) == _normal(answer)
    assert answered > 250
    assert equal >= 0.99 * answered


def test_answer_cut_by_window_edge_is_cls(tokenizer, dev_rows):
    spec = FeaturesSpec(max_seq_len=48, doc_stride=8, max_query_len=16)
    examples = {r["id"]: r for r in dev_rows}
    rows = qa_features(dev_rows, tokenizer, spec).to_pylist()
    inside = cut = 0
    for row in rows:
        example = examples[row["example_id"]]
        if example["is_impossible"]:
            assert (row["start_position"], row["end_position"]) == (0, 0)
            continue
        holds_all, overlaps = _holds_answer(row, example)
        if holds_all:
            inside += 1
            assert row["start_position"] > 0
        elif overlaps:
            cut += 1
            assert (row["start_position"], row["end_position"]) == (0, 0), row["feature_id"]
    assert inside > 100 and cut > 20


def test_constructed_answer_across_window_edge(tokenizer):
    context = " ".join(f"w{i}" for i in range(40))
    words = context.split()
    answer = " ".join(words[10:14])
    example = {"id": "q1", "question": "which?", "context": context,
               "answers": {"text": [answer], "answer_start": [context.index(answer)]}, "is_impossible": False}
    spec = FeaturesSpec(max_seq_len=24, doc_stride=4, max_query_len=8)
    rows = qa_features([example], tokenizer, spec).to_pylist()
    assert len(rows) > 3
    found = 0
    for row in rows:
        start, end = row["start_position"], row["end_position"]
        if start:
            found += 1
            assert context[row["offset_start"][start]:row["offset_end"][end]] == answer
        else:
            # the window lacks some of the answer's characters
            spans = [(s, e) for s, e in zip(row["offset_start"], row["offset_end"]) if s != NOT_CONTEXT]
            assert not (spans[0][0] <= context.index(answer) and spans[-1][1] >= context.index(answer) + len(answer))
    assert found >= 1


def test_classification_features(tokenizer):
    spec = FeaturesSpec(max_seq_len=16, doc_stride=4, max_query_len=8)
    single = classification_features(
        [{"id": "a", "text": "a fine movie", "label": 1}, {"id": "b", "text": "word " * 40, "label": 0}],
        tokenizer, spec)
    assert single.schema.equals(CLASSIFICATION_FEATURE_SCHEMA)
    rows = single.to_pylist()
    assert [r["feature_id"] for r in rows] == ["a/0", "b/0"]
    assert rows[0]["input_ids"] == tokenizer("a fine movie")["input_ids"]
    assert len(rows[1]["input_ids"]) == 16 and rows[1]["input_ids"][-1] == tokenizer.sep_token_id
    assert [r["label"] for r in rows] == [1, 0] and rows[0]["teacher_logits"] is None
    pairs = classification_features(pa.Table.from_pylist(
        [{"id": "p", "text": "a man sleeps", "text_pair": "someone rests", "label": 2}]), tokenizer, spec)
    row = pairs.to_pylist()[0]
    assert row["token_type_ids"] == tokenizer("a man sleeps", "someone rests")["token_type_ids"]
    with pytest.raises(FeaturesError, match="1 of 2 examples have a text_pair"):
        classification_features([{"id": "x", "text": "a", "text_pair": "b"}, {"id": "y", "text": "c"}],
                                tokenizer, spec)


def _feature_table(rows: list[dict], task: str) -> pa.Table:
    schema = task_kind(task).feature_schema
    return pa.Table.from_pylist(rows, schema=pa.schema([schema.field(name) for name in rows[0]]))


def test_pad_batch_qa():
    rows = [
        {"input_ids": [101, 5, 6, 102], "token_type_ids": [0, 0, 1, 1], "start_position": 2, "end_position": 2,
         "teacher_start_logits": [0.0, 1.0, 2.0, 3.0], "teacher_end_logits": [1.0, 1.0, 1.0, 1.0],
         "teachers_start_logits": [[0.0] * 4, [1.0] * 4]},
        {"input_ids": [101, 7, 102], "token_type_ids": [0, 1, 1], "start_position": 0, "end_position": 0,
         "teacher_start_logits": [4.0, 5.0, 6.0], "teacher_end_logits": [1.0, 2.0, 3.0],
         "teachers_start_logits": [[0.5] * 3, [1.5] * 3]},
    ]
    batch = pad_batch(_feature_table(rows, "qa"), pad_token_id=0)
    assert batch["input_ids"].tolist() == [[101, 5, 6, 102], [101, 7, 102, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 1, 1], [0, 1, 1, 0]]
    assert batch["start_positions"].tolist() == [2, 0] and batch["end_positions"].dtype == torch.long
    assert batch["teacher_start_logits"].tolist() == [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, LOGIT_PAD]]
    assert batch["input_ids"].dtype == batch["attention_mask"].dtype == torch.long
    assert batch["teacher_end_logits"].dtype == torch.float32
    # the per-teacher columns are for inspection, not model or loss inputs
    assert not any(key.startswith("teachers_") for key in batch)
    # padded positions get no probability
    assert torch.softmax(batch["teacher_start_logits"], -1)[1, 3] == 0
    unlabelled = pad_batch(_feature_table([{k: v for k, v in rows[0].items() if "teacher" not in k}], "qa"), 0)
    assert set(unlabelled) == {"input_ids", "token_type_ids", "attention_mask", "start_positions", "end_positions"}
    with pytest.raises(FeaturesError, match="1 of 2 features have no teacher_start_logits"):
        pad_batch(_feature_table([rows[0], {**rows[1], "teacher_start_logits": None}], "qa"), pad_token_id=0)
    with pytest.raises(FeaturesError, match="feature 1: teacher_end_logits has 2 values for 3 tokens"):
        pad_batch(_feature_table([rows[0], {**rows[1], "teacher_end_logits": [1.0, 2.0]}], "qa"), 0)


def test_pad_batch_classification():
    rows = [{"input_ids": [101, 9, 102], "token_type_ids": [0, 0, 0], "label": 1, "teacher_logits": [0.1, 0.9],
             "teachers_logits": None},
            {"input_ids": [101, 102], "token_type_ids": [0, 0], "label": 0, "teacher_logits": [2.0, -1.0],
             "teachers_logits": None}]
    batch = pad_batch(_feature_table(rows, "classification"), pad_token_id=0)
    assert batch["labels"].tolist() == [1, 0]
    assert batch["teacher_logits"].shape == (2, 2) and "teachers_logits" not in batch
    assert batch["teacher_logits"][0].tolist() == pytest.approx([0.1, 0.9], abs=1e-3)  # stored as float16
    assert batch["input_ids"].tolist() == [[101, 9, 102], [101, 102, 0]]
    # labels only when every feature has one
    assert "labels" not in pad_batch(_feature_table([rows[0], {**rows[1], "label": None}], "classification"), 0)


def reference_pad(rows: list[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Row-by-row padding in plain Python: the collation the vectorised one replaced, kept as its reference."""
    width = max(len(row["input_ids"]) for row in rows)

    def pad(key: str, fill: float, dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor([list(row[key]) + [fill] * (width - len(row[key])) for row in rows], dtype=dtype)

    batch = {"input_ids": pad("input_ids", pad_token_id, torch.long),
             "token_type_ids": pad("token_type_ids", 0, torch.long),
             "attention_mask": torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"]))
                                             for r in rows], dtype=torch.long)}
    for column, key in (("start_position", "start_positions"), ("end_position", "end_positions"), ("label", "labels")):
        if column in rows[0] and all(row[column] is not None for row in rows):
            batch[key] = torch.tensor([row[column] for row in rows], dtype=torch.long)
    for key in ("teacher_start_logits", "teacher_end_logits"):
        if rows[0].get(key) is not None:
            batch[key] = pad(key, LOGIT_PAD, torch.float32)
    if rows[0].get("teacher_logits") is not None:
        batch["teacher_logits"] = torch.tensor([row["teacher_logits"] for row in rows], dtype=torch.float32)
    return batch


def test_flat_features_cut_any_rows_as_the_row_by_row_reference(squad_rows, tokenizer):
    """Batches cut by index from the flat columns equal plain per-row padding of the same rows, in that order."""
    table = qa_features(squad_rows(40), tokenizer, FeaturesSpec(max_seq_len=96, doc_stride=32, max_query_len=24))
    rng = np.random.default_rng(0)
    lengths = pc.list_value_length(table["input_ids"]).to_pylist()
    logits = [rng.normal(size=n).astype(np.float16).tolist() for n in lengths]
    column = pa.array(logits, pa.list_(pa.float16()))
    table = table.set_column(table.schema.get_field_index("teacher_start_logits"), "teacher_start_logits", column)
    table = table.set_column(table.schema.get_field_index("teacher_end_logits"), "teacher_end_logits", column)
    flat = FlatFeatures.from_table(table)
    assert flat.num_rows == table.num_rows and flat.lengths.sum() == len(flat.columns["input_ids"])
    for rows in (np.array([5, 0, table.num_rows - 1, 17, 5]), rng.permutation(table.num_rows)[:26]):
        expected = reference_pad(table.take(rows).to_pylist(), tokenizer.pad_token_id)
        got = flat.batch(rows, tokenizer.pad_token_id)
        assert got.keys() == expected.keys()
        for key in got:
            assert got[key].dtype == expected[key].dtype and torch.equal(got[key], expected[key]), key


def test_batches_for_a_gpu_are_padded_to_a_few_lengths_and_stay_the_same_batch(squad_rows, tokenizer):
    """On a GPU every batch is padded to a multiple of 64 tokens, never past the limit (cuDNN's attention plans
    one kernel per length); the real positions are the CPU batch's, the extra ones padding. On CPU: the longest."""
    cpu, gpu = torch.device("cpu"), torch.device("cuda")   # a device object only: no GPU is touched
    assert [padded_length(n, gpu, 384) for n in (1, 64, 65, 300, 384)] == [64, 64, 128, 320, 384]
    assert padded_length(370, gpu, 380) == 380 and padded_length(300, cpu, 384) == 300
    assert padded_length(90, gpu, 80) == 90   # a limit below the longest row never cuts it
    table = qa_features(squad_rows(40), tokenizer, FeaturesSpec(max_seq_len=96, doc_stride=32, max_query_len=24))
    flat = FlatFeatures.from_table(table)
    rows = np.random.default_rng(1).permutation(table.num_rows)[:26]
    plain = flat.batch(rows, tokenizer.pad_token_id, device=cpu, limit=200)
    padded = flat.batch(rows, tokenizer.pad_token_id, device=gpu, limit=200)
    width = plain["input_ids"].shape[1]
    assert padded["input_ids"].shape[1] == padded_length(width, gpu, 200) == 128 > width
    for key in plain:
        if plain[key].dim() == 2:
            assert torch.equal(padded[key][:, :width], plain[key]), key
    assert (padded["input_ids"][:, width:] == tokenizer.pad_token_id).all()
    assert not padded["attention_mask"][:, width:].any() and not padded["token_type_ids"][:, width:].any()
