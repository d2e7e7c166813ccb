"""The example schema every stage reads and writes: one Arrow schema per task, stored as Parquet shards.

QA rows follow the HF `squad_v2` layout (`answers = {text: [...], answer_start: [...]}`), so a folder of shards
loads with `datasets.load_dataset("parquet", data_files=...)` and with any tool written for SQuAD. Each row also
says which original example it came from (`source_id`, `variant` 0 for the original) and which words were
substituted, with offsets into the augmented text, so `inspect` can show a variant next to its original.
"""

from __future__ import annotations

import pyarrow as pa

from core.tasks import Task

SUBSTITUTION = pa.struct([
    ("field", pa.string()),        # "context", "question", "text" or "text_pair"
    ("start", pa.int32()),         # character offsets of the replacement in the augmented field
    ("end", pa.int32()),
    ("original", pa.string()),
    ("replacement", pa.string()),
    ("source", pa.string()),       # "mlm" or "embedding"
])

_PROVENANCE = [
    ("id", pa.string()),           # stable: the original id for variant 0, "<source_id>#aug<k>" for variant k
    ("source_id", pa.string()),
    ("variant", pa.int32()),
]

QA_SCHEMA = pa.schema([
    *_PROVENANCE,
    ("title", pa.string()),
    ("context", pa.string()),
    ("question", pa.string()),
    ("answers", pa.struct([("text", pa.list_(pa.string())), ("answer_start", pa.list_(pa.int32()))])),
    ("is_impossible", pa.bool_()),
    ("substitutions", pa.list_(SUBSTITUTION)),
    # every annotated answer text, found in the context or not (MRQA's `answers`: aliases such as "JFK" beside
    # "John F. Kennedy"), which scoring takes the best over; null: the texts of `answers`. Variants leave it null.
    ("gold_answers", pa.list_(pa.string())),
])

CLASSIFICATION_SCHEMA = pa.schema([
    *_PROVENANCE,
    ("text", pa.string()),
    ("text_pair", pa.string()),    # null for single-text tasks
    ("label", pa.int64()),         # the class id; null for unlabelled examples
    ("substitutions", pa.list_(SUBSTITUTION)),
])

# classification's layout with a score for a label (STS-B's similarity, say)
REGRESSION_SCHEMA = CLASSIFICATION_SCHEMA.set(CLASSIFICATION_SCHEMA.get_field_index("label"),
                                              pa.field("label", pa.float64()))

_SCHEMAS = {"qa": QA_SCHEMA, "classification": CLASSIFICATION_SCHEMA, "regression": REGRESSION_SCHEMA}


def schema_for(task: Task) -> pa.Schema:
    """The example schema of a task's shards."""
    return _SCHEMAS[task]
