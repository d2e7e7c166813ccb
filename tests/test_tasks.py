"""The task registry: every task named once (core.tasks), with a model side (distill.tasks) whose pieces fit
together on a real model forward."""

from __future__ import annotations

import json
import math
from typing import get_args

import numpy as np
import pyarrow as pa
import pytest
import torch
from transformers import AutoTokenizer, BertConfig

from core.schema import schema_for
from core.tasks import TRAITS, Task, task_traits
from distill.features import pad_batch
from distill.models import task_of
from distill.spec import EvaluateSpec, FeaturesSpec
from distill.tasks import TASKS, task_kind

EXAMPLES = {
    "qa": [{"id": "q1", "question": "Where is the tower?", "context": "The tower is in Paris, by the river.",
            "answers": {"text": ["Paris"], "answer_start": [16]}, "is_impossible": False},
           {"id": "q2", "question": "Who built it?", "context": "The tower is old.",
            "answers": {"text": [], "answer_start": []}, "is_impossible": True}],
    "classification": [{"id": "c1", "text": "a fine film", "text_pair": None, "label": 1},
                       {"id": "c2", "text": "a dull and long film", "text_pair": None, "label": 0}],
    "regression": [{"id": "r1", "text": "A man plays a guitar.", "text_pair": "A man is playing music.", "label": 3.8},
                   {"id": "r2", "text": "A cat sleeps.", "text_pair": "The stock market fell.", "label": 0.2}],
}


def test_every_task_is_registered_once_on_both_sides():
    assert set(TRAITS) == set(get_args(Task)) == set(TASKS) == set(EXAMPLES)
    for name, kind in TASKS.items():
        assert kind.name == name and kind.traits is TRAITS[name] and task_kind(name) is kind
        feature_fields = set(kind.feature_schema.names)
        traits = kind.traits
        assert {*traits.label_columns, *traits.teacher_columns, *traits.per_teacher_columns} <= feature_fields
        assert set(traits.example_columns) <= set(schema_for(name).names)
        assert len(kind.output_names) == len(traits.teacher_columns) == len(traits.per_teacher_columns)
    with pytest.raises(ValueError, match="unknown task 'regresion'; the tasks are qa, classification, regression"):
        task_traits("regresion")


@pytest.mark.parametrize("name", sorted(TASKS))
def test_a_tasks_features_logits_targets_and_teacher_logits_line_up_on_a_real_forward(name, bert_tokenizer_dir):
    kind = task_kind(name)
    tokenizer = AutoTokenizer.from_pretrained(bert_tokenizer_dir)
    table = kind.build_features(EXAMPLES[name], tokenizer, FeaturesSpec(max_seq_len=64, doc_stride=16,
                                                                         max_query_len=16))
    assert table.schema == kind.feature_schema
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, **kind.head_config(2))
    model = kind.head.from_config(config).eval()
    model.config.architectures = [type(model).__name__]   # as save_pretrained records it
    assert kind.recognizes(model.config) and task_of(model.config, name) == name
    batch = pad_batch(table, tokenizer.pad_token_id)
    with torch.no_grad():
        outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        token_type_ids=batch["token_type_ids"])
    logits = kind.logits(outputs)                                   # (B, G, N)
    gold = kind.gold(batch)                                         # (B, G)
    assert logits.shape[:2] == gold.shape and logits.shape[0] == table.num_rows
    mask = kind.distribution_mask(batch)
    assert mask is None or mask.shape == (logits.shape[0], logits.shape[2])
    assert torch.isfinite(kind.hard_loss()(logits, gold, mask)) and kind.hard_loss()(logits, gold, mask) > 0
    # the model's own logits stored as teacher columns come back, through a batch, as the same (B, G, N)
    for column, output in zip(kind.traits.teacher_columns, kind.output_names):
        values = getattr(outputs, output)
        rows = ([row[: int(n)].tolist() for row, n in zip(values, batch["attention_mask"].sum(1))]
                if kind.traits.windows else values.tolist())
        table = table.set_column(table.schema.get_field_index(column), table.schema.field(column),
                                 pa.array(rows, table.schema.field(column).type))
    teacher = kind.teacher_logits(pad_batch(table, tokenizer.pad_token_id))
    real = torch.ones_like(logits, dtype=torch.bool) if mask is None else mask.bool()[:, None, :].expand_as(logits)
    assert teacher.shape == logits.shape
    torch.testing.assert_close(teacher[real], logits[real], atol=2e-3, rtol=2e-3)   # stored as float16
    # a student that matches its teacher has nothing left to learn from it
    assert kind.soft_loss(2.0)(logits, teacher, mask).item() == pytest.approx(0.0, abs=1e-5)
    # one teacher mixed is itself, as a target
    mixed = kind.mix_teachers([logits[:, 0]], torch.ones(1), "probs", None if mask is None else mask.bool(), 2.0)
    assert kind.soft_loss(2.0)(logits[:, :1], mixed[:, None], mask).item() == pytest.approx(0.0, abs=1e-5)


def test_regression_is_scored_by_pearson_and_spearman_with_tied_ranks_averaged(tmp_path):
    gold = [1.0, 2.0, 2.0, 4.0, 5.0]
    predicted = np.array([[0.5], [0.7], [0.9], [0.8], [3.0]])
    answers = task_kind("regression").answers(EvaluateSpec(), "squad_v2", None)
    examples = pa.table({"id": [f"r{i}" for i in range(5)], "label": gold})
    answers.add(examples.slice(0, 2), None, predicted[:2])   # two chunks, as evaluation feeds them
    answers.add(examples.slice(2), None, predicted[2:])
    scores = answers.score(tmp_path / "predictions.json")
    assert scores["pearson"] == pytest.approx(np.corrcoef(predicted[:, 0], gold)[0, 1])
    # ranks: gold 1, 2.5, 2.5, 4, 5 (the tie shares 2 and 3); predictions 1, 2, 4, 3, 5
    assert scores["spearman"] == pytest.approx(np.corrcoef([1, 2.5, 2.5, 4, 5], [1, 2, 4, 3, 5])[0, 1])
    assert scores["mse"] == pytest.approx(np.mean((predicted[:, 0] - gold) ** 2))
    assert scores["total"] == 5 and scores["degenerate"] is None
    assert json.loads((tmp_path / "predictions.json").read_text())["r4"] == pytest.approx(3.0)

    constant = task_kind("regression").answers(EvaluateSpec(), "squad_v2", None)
    constant.add(examples, None, np.full((5, 1), 0.25))
    scores = constant.score()
    assert math.isnan(scores["pearson"]) and scores["degenerate"] == "predicts 0.25 for all 5 examples"
