"""Features: examples tokenized the one way that labelling, training and evaluation share.

A *feature* is one model input: a classification example gives one, a QA example one per window of its context.
Teachers are labelled, students trained and both evaluated on features built here, so teacher logits line up
token for token with what the student sees.

QA windows follow the transformers question-answering example: the question first (cut to
`features.max_query_len` tokens beforehand), then as much context as fits in `features.max_seq_len`; a long
context overflows into further windows that overlap by `features.doc_stride` tokens. No padding is stored, only
real tokens; `pad_batch` (or `FlatFeatures.batch`) pads a batch to its longest row when it is collated.

The Parquet layout of a feature shard is QA_FEATURE_SCHEMA or CLASSIFICATION_FEATURE_SCHEMA (a task's
`feature_schema`, `distill.tasks`); the label stage fills the teacher columns, a feature built here without a
teacher has them null. Offsets are two flat lists rather than a list of pairs: the
same information with half the nesting, and `np.stack([start, end], 1)` gives the (T, 2) array that
`distill.postprocess` takes.

Example::

    table = qa_features(examples, tokenizer, spec.features)       # pa.Table, QA_FEATURE_SCHEMA
    batch = pad_batch(table.slice(0, 32), tokenizer.pad_token_id)
    model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
          token_type_ids=batch["token_type_ids"])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from transformers import PreTrainedTokenizerBase

from core.devices import padded_length
from distill.qa_windows import NOT_CONTEXT, encode_windows
from distill.spec import FeaturesSpec

# The [CLS] position: the "no answer" target and the gold position of answers a window does not hold.
CLS_INDEX = 0
# Fills teacher logits past a row's end in `pad_batch`: softmax gives those positions 0 exactly in float32 and the
# value stays finite, so `p * log p` terms are 0, not NaN. The attention mask says which positions are real.
LOGIT_PAD = -1.0e4

_HALF_LIST = pa.list_(pa.float16())
_COMMON_FIELDS = [
    pa.field("feature_id", pa.string(), nullable=False),    # "<example_id>/<window>"
    pa.field("example_id", pa.string(), nullable=False),
    pa.field("window", pa.int32(), nullable=False),         # 0, 1, ... within the example
    pa.field("input_ids", pa.list_(pa.int32()), nullable=False),
    pa.field("token_type_ids", pa.list_(pa.int8()), nullable=False),
]

QA_FEATURE_SCHEMA = pa.schema([
    *_COMMON_FIELDS,
    # characters [offset_start, offset_end) of the context that each token covers; -1 for question and special
    # tokens. Same length as input_ids.
    pa.field("offset_start", pa.list_(pa.int32()), nullable=False),
    pa.field("offset_end", pa.list_(pa.int32()), nullable=False),
    # gold answer tokens (inclusive) when the window holds the whole first answer, else CLS_INDEX
    pa.field("start_position", pa.int32(), nullable=False),
    pa.field("end_position", pa.int32(), nullable=False),
    # the ensemble's start/end logits per token, same length as input_ids; null when labelled without a teacher
    pa.field("teacher_start_logits", _HALF_LIST),
    pa.field("teacher_end_logits", _HALF_LIST),
    # each teacher's own raw logits, (n_teachers, len(input_ids)); null unless label.keep_teacher_logits
    pa.field("teachers_start_logits", pa.list_(_HALF_LIST)),
    pa.field("teachers_end_logits", pa.list_(_HALF_LIST)),
])

CLASSIFICATION_FEATURE_SCHEMA = pa.schema([
    *_COMMON_FIELDS,
    pa.field("label", pa.int64()),                          # null for unlabelled examples
    pa.field("teacher_logits", _HALF_LIST),                 # (num_labels,); null without a teacher
    pa.field("teachers_logits", pa.list_(_HALF_LIST)),      # (n_teachers, num_labels); keep_teacher_logits only
])

# classification's layout with a score for a label; the teacher columns hold one value, the teachers' score
REGRESSION_FEATURE_SCHEMA = CLASSIFICATION_FEATURE_SCHEMA.set(CLASSIFICATION_FEATURE_SCHEMA.get_field_index("label"),
                                                              pa.field("label", pa.float32()))


class FeaturesError(ValueError):
    """Examples that cannot be turned into features: missing columns, an empty context, a mixed text_pair column."""


def _columns(examples: Sequence[Mapping[str, Any]] | pa.Table, names: Sequence[str],
             optional: Sequence[str] = ()) -> dict[str, list[Any]]:
    """The named columns of `examples` as Python lists; an optional column that is absent comes back as Nones."""
    if isinstance(examples, pa.Table):
        present = set(examples.column_names)
        missing = [n for n in names if n not in present]
        if missing:
            raise FeaturesError(f"examples lack column(s) {missing}; found {examples.column_names}")
        return {n: examples.column(n).to_pylist() if n in present else [None] * examples.num_rows
                for n in [*names, *optional]}
    rows = list(examples)
    for index, row in enumerate(rows):
        missing = [n for n in names if n not in row]
        if missing:
            raise FeaturesError(f"example {index} lacks key(s) {missing}; it has {sorted(row)}")
    return {n: [row.get(n) for row in rows] for n in [*names, *optional]}


def _feature_ids(example_ids: list[str], sample_of: np.ndarray) -> tuple[list[str], np.ndarray]:
    """("<example_id>/<window>" per feature, window index per feature) for features in example order."""
    windows = np.zeros(len(sample_of), dtype=np.int32)
    if len(sample_of):
        # a window's index is its distance from the first feature of the same example
        first = np.flatnonzero(np.r_[True, sample_of[1:] != sample_of[:-1]])
        windows = (np.arange(len(sample_of)) - np.repeat(first, np.diff(np.r_[first, len(sample_of)])))
        windows = windows.astype(np.int32)
    ids = [f"{example_ids[s]}/{w}" for s, w in zip(sample_of.tolist(), windows.tolist())]
    return ids, windows


def _list_array(flat: np.ndarray, lengths: np.ndarray, value_type: pa.DataType) -> pa.ListArray:
    """A list<value_type> array of len(lengths) rows cut from `flat`."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(flat, type=value_type))


def _flat(nested: list[list[int]], dtype: type) -> np.ndarray:
    return np.fromiter(chain.from_iterable(nested), dtype=dtype)


def qa_features(examples: Sequence[Mapping[str, Any]] | pa.Table, tokenizer: PreTrainedTokenizerBase,
                features: FeaturesSpec) -> pa.Table:
    """QA examples (core.schema.QA_SCHEMA rows, or squad_v2-style dicts) as windows, in QA_FEATURE_SCHEMA.

    Args:
        examples: rows with id, question, context, answers {text, answer_start} and optionally is_impossible (an
            example without answers is unanswerable either way).
        tokenizer: a fast tokenizer (offsets are needed).
        features: max_seq_len, doc_stride and max_query_len.

    Returns:
        One row per window, windows of an example consecutive and in context order. The gold positions are the
        first answer's first and last token when the window holds the whole answer, else CLS_INDEX (0) for
        both, as for unanswerable questions. Teacher columns are null.
    """
    cols = _columns(examples, ["id", "question", "context", "answers"], optional=["is_impossible"])
    n_examples = len(cols["id"])
    if n_examples == 0:
        return QA_FEATURE_SCHEMA.empty_table()
    encoded = encode_windows(tokenizer, cols["question"], cols["context"], features.max_seq_len, features.doc_stride,
                             features.max_query_len, return_attention_mask=False, padding=False)
    input_ids = encoded["input_ids"]
    n = len(input_ids)
    sample_of = np.asarray(encoded["overflow_to_sample_mapping"], dtype=np.int64)
    lengths = np.fromiter((len(row) for row in input_ids), dtype=np.int64, count=n)
    starts_flat = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts_flat[1:])

    # the context is the tokens of sequence 1, one contiguous run between the separators
    ctx_first = np.empty(n, dtype=np.int64)
    ctx_last = np.empty(n, dtype=np.int64)
    for i in range(n):
        sequence_ids = encoded.sequence_ids(i)
        try:
            ctx_first[i] = sequence_ids.index(1)
        except ValueError:
            example_id = cols["id"][sample_of[i]]
            raise FeaturesError(f"example {example_id!r}: no context token fits in a window (empty context?); "
                                "fix the example or drop it") from None
        ctx_last[i] = len(sequence_ids) - 1 - sequence_ids[::-1].index(1)

    offsets = np.fromiter(chain.from_iterable(chain.from_iterable(encoded["offset_mapping"])),
                          dtype=np.int32, count=2 * int(lengths.sum())).reshape(-1, 2)
    position = np.arange(len(offsets)) - np.repeat(starts_flat[:-1], lengths)
    in_context = (position >= np.repeat(ctx_first, lengths)) & (position <= np.repeat(ctx_last, lengths))
    offsets[~in_context] = NOT_CONTEXT

    start_positions = np.full(n, CLS_INDEX, dtype=np.int32)
    end_positions = np.full(n, CLS_INDEX, dtype=np.int32)
    for i in range(n):
        example = int(sample_of[i])
        answers = cols["answers"][example] or {}
        texts, answer_starts = answers.get("text") or [], answers.get("answer_start") or []
        if cols["is_impossible"][example] or not texts:
            continue
        start_char = int(answer_starts[0])
        end_char = start_char + len(texts[0])
        base = starts_flat[i]
        context_offsets = offsets[base + ctx_first[i]: base + ctx_last[i] + 1]
        # the whole answer must lie in this window, or the window's target is "no answer"
        if not (context_offsets[0, 0] <= start_char and context_offsets[-1, 1] >= end_char):
            continue
        # first token starting after start_char, minus one; first token ending at or after end_char
        start_positions[i] = ctx_first[i] + np.searchsorted(context_offsets[:, 0], start_char, side="right") - 1
        end_positions[i] = ctx_first[i] + np.searchsorted(context_offsets[:, 1], end_char, side="left")

    feature_ids, windows = _feature_ids(cols["id"], sample_of)
    n_rows = pa.nulls(n, _HALF_LIST)
    return pa.Table.from_arrays([
        pa.array(feature_ids, pa.string()),
        pa.array([cols["id"][s] for s in sample_of.tolist()], pa.string()),
        pa.array(windows, pa.int32()),
        _list_array(_flat(input_ids, np.int32), lengths, pa.int32()),
        _list_array(_flat(encoded["token_type_ids"], np.int8), lengths, pa.int8()),
        _list_array(offsets[:, 0], lengths, pa.int32()),
        _list_array(offsets[:, 1], lengths, pa.int32()),
        pa.array(start_positions, pa.int32()),
        pa.array(end_positions, pa.int32()),
        n_rows, n_rows,
        pa.nulls(n, pa.list_(_HALF_LIST)), pa.nulls(n, pa.list_(_HALF_LIST)),
    ], schema=QA_FEATURE_SCHEMA)


def classification_features(examples: Sequence[Mapping[str, Any]] | pa.Table, tokenizer: PreTrainedTokenizerBase,
                            features: FeaturesSpec, schema: pa.Schema = CLASSIFICATION_FEATURE_SCHEMA) -> pa.Table:
    """Classification examples (id, text, optional text_pair, label) as one feature each, in `schema`
    (CLASSIFICATION_FEATURE_SCHEMA; REGRESSION_FEATURE_SCHEMA for examples scored rather than classed).

    A pair is truncated longest-first to `features.max_seq_len` tokens. Within one call either every example
    has a text_pair or none has: a model is fine-tuned on one layout.
    """
    cols = _columns(examples, ["id", "text"], optional=["text_pair", "label"])
    n = len(cols["id"])
    if n == 0:
        return schema.empty_table()
    with_pair = sum(p is not None for p in cols["text_pair"])
    if 0 < with_pair < n:
        raise FeaturesError(f"{with_pair} of {n} examples have a text_pair and the others none; a task is either "
                            "single-text or pairs throughout")
    pairs = cols["text_pair"] if with_pair else None
    encoded = tokenizer(cols["text"], pairs, truncation=True, max_length=features.max_seq_len,
                        return_token_type_ids=True, return_attention_mask=False, padding=False)
    lengths = np.fromiter((len(row) for row in encoded["input_ids"]), dtype=np.int64, count=n)
    return pa.Table.from_arrays([
        pa.array([f"{i}/0" for i in cols["id"]], pa.string()),
        pa.array(cols["id"], pa.string()),
        pa.array(np.zeros(n, dtype=np.int32), pa.int32()),
        _list_array(_flat(encoded["input_ids"], np.int32), lengths, pa.int32()),
        _list_array(_flat(encoded["token_type_ids"], np.int8), lengths, pa.int8()),
        pa.array(cols["label"], schema.field("label").type),
        pa.nulls(n, _HALF_LIST),
        pa.nulls(n, pa.list_(_HALF_LIST)),
    ], schema=schema)


# Columns with one value per token, laid end to end like input_ids (they share its offsets).
TOKEN_COLUMNS = ("input_ids", "token_type_ids", "offset_start", "offset_end", "teacher_start_logits",
                 "teacher_end_logits")
# Batch key of a per-feature column, where the model's argument name differs from the column's.
_BATCH_KEYS = {"start_position": "start_positions", "end_position": "end_positions", "label": "labels"}
# What a padded position holds, per token column; input_ids take the tokenizer's pad id.
_TOKEN_FILL = {"token_type_ids": 0, "offset_start": NOT_CONTEXT, "offset_end": NOT_CONTEXT,
               "teacher_start_logits": LOGIT_PAD, "teacher_end_logits": LOGIT_PAD}


@dataclass(frozen=True)
class FlatFeatures:
    """Feature columns as flat NumPy arrays, in memory or memory-mapped: what every batch is cut from.

    Token columns (`TOKEN_COLUMNS`) hold all rows' values end to end, row i at [offsets[i], offsets[i + 1]);
    row columns hold one value per feature, (N,), or one fixed-size vector, (N, C) (classification
    teacher_logits). A column that is null on some rows stays out of `columns` (it is never collated) and
    `null_counts` says how many; a column null on every row is simply unlabelled.
    """

    offsets: np.ndarray                  # (N + 1,) int64
    columns: dict[str, np.ndarray]       # token columns (total tokens,), row columns (N,) or (N, C)
    null_counts: dict[str, int]          # every column asked for -> features without a value

    @property
    def num_rows(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        """(N,) int32 tokens per feature (computed straight into int32: it is held per training process)."""
        out = np.empty(self.num_rows, dtype=np.int32)
        return np.subtract(self.offsets[1:], self.offsets[:-1], out=out, casting="unsafe")

    @classmethod
    def from_table(cls, table: pa.Table | pa.RecordBatch, columns: Sequence[str] | None = None) -> FlatFeatures:
        """The named columns (default: every column `pad_batch` collates) of a feature table, flattened."""
        names = list(columns) if columns is not None else [n for n in COLLATED_COLUMNS if n in table.schema.names]
        flat = flatten_features(table, names)
        offsets = np.zeros(table.num_rows + 1, dtype=np.int64)
        np.cumsum(flat.lengths, out=offsets[1:])
        return cls(offsets, flat.values, flat.null_counts)

    def batch(self, rows: np.ndarray, pad_token_id: int, pin_memory: bool = False,
              device: torch.device | None = None, limit: int | None = None) -> dict[str, torch.Tensor]:
        """Features `rows` (indices, in batch order) padded to the longest of them, or for a `device` to
        `core.devices.padded_length` within `limit` tokens; see `pad_batch` for the keys.

        One gather per column, no per-row Python: the cost depends on the batch, not on N.
        """
        if len(rows) == 0:
            raise FeaturesError("a batch needs at least one feature; got no rows")
        starts = self.offsets[rows]                                   # (B,)
        lengths = self.offsets[rows + 1] - starts                     # (B,)
        width = int(lengths.max())
        if device is not None:
            width = padded_length(width, device, width if limit is None else limit)
        real = np.arange(width)[None, :] < lengths[:, None]           # (B, T)
        # padded slots read the row's first token and are overwritten by the fill value
        positions = np.where(real, starts[:, None] + np.arange(width)[None, :], starts[:, None])
        arrays = {"attention_mask": real.astype(np.int64)}
        for name, values in self.columns.items():
            if name in TOKEN_COLUMNS:
                fill = pad_token_id if name == "input_ids" else _TOKEN_FILL[name]
                arrays[name] = np.where(real, values[positions], fill)
            else:
                arrays[_BATCH_KEYS.get(name, name)] = values[rows]
        batch = {key: _as_tensor(value) for key, value in arrays.items()}
        return {key: value.pin_memory() for key, value in batch.items()} if pin_memory else batch


# The columns a batch carries; offsets and the per-teacher columns are not model or loss inputs.
COLLATED_COLUMNS = ("input_ids", "token_type_ids", "start_position", "end_position", "label",
                    "teacher_start_logits", "teacher_end_logits", "teacher_logits")


def _as_tensor(value: np.ndarray) -> torch.Tensor:
    """int64 for ids, labels and masks, float32 for logits (stored as float16)."""
    dtype = torch.float32 if np.issubdtype(value.dtype, np.floating) else torch.long
    return torch.from_numpy(np.ascontiguousarray(value)).to(dtype)


@dataclass(frozen=True)
class FlatBatch:
    """One record batch's columns flattened by `flatten_features`."""

    lengths: np.ndarray                  # (n,) tokens per feature
    values: dict[str, np.ndarray]        # columns with a value on every row
    null_counts: dict[str, int]


def flatten_features(batch: pa.Table | pa.RecordBatch, columns: Sequence[str]) -> FlatBatch:
    """The named columns of feature rows as flat arrays (see `FlatFeatures`), checked against input_ids.

    Raises FeaturesError for a token column whose rows are not as long as their input_ids, a row vector column
    of uneven length, or a column `FlatFeatures` cannot hold (the per-teacher list-of-lists columns).
    """
    ids = batch.column("input_ids")
    lengths = pc.list_value_length(ids).to_numpy(zero_copy_only=False).astype(np.int64)
    values: dict[str, np.ndarray] = {}
    nulls: dict[str, int] = {}
    for name in columns:
        column = batch.column(name)
        nulls[name] = column.null_count
        if column.null_count and name.startswith("teacher") and column.null_count < len(column):
            raise FeaturesError(f"{column.null_count} of {len(column)} features have no {name} and the others "
                                "have; features must come from one labelled feature set")
        if column.null_count:
            continue  # collated only where every feature has a value; callers check null_counts
        if pa.types.is_list(column.type) and pa.types.is_list(column.type.value_type):
            raise FeaturesError(f"column {name} holds a list per teacher and is not collated; read it with pyarrow")
        if not pa.types.is_list(column.type):
            values[name] = column.to_numpy(zero_copy_only=False)
            continue
        flat = pc.list_flatten(column).to_numpy(zero_copy_only=False)
        sizes = pc.list_value_length(column).to_numpy(zero_copy_only=False)
        if name in TOKEN_COLUMNS:
            if not np.array_equal(sizes, lengths):
                bad = int(np.flatnonzero(sizes != lengths)[0])
                raise FeaturesError(f"feature {bad}: {name} has {sizes[bad]} values for {lengths[bad]} tokens")
            values[name] = flat
        else:
            if len(sizes) and not np.all(sizes == sizes[0]):
                raise FeaturesError(f"column {name} has rows of {sorted(set(sizes.tolist()))[:5]} values; a "
                                    "per-feature vector must have one size")
            values[name] = flat.reshape(len(sizes), -1)
    return FlatBatch(lengths, values, nulls)


def pad_batch(table: pa.Table | pa.RecordBatch, pad_token_id: int) -> dict[str, torch.Tensor]:
    """Collate feature rows (a table in either feature schema) into padded tensors, rows in table order.

    Rows are padded to the longest row of the batch, B rows of at most T tokens:

        input_ids, token_type_ids, attention_mask   (B, T) int64; pad_token_id / 0 / 0 past a row's end
        QA:
        start_positions, end_positions              (B,) int64
        teacher_start_logits, teacher_end_logits    (B, T) float32, LOGIT_PAD past a row's end
        classification:
        labels                                      (B,) int64
        teacher_logits                              (B, C) float32

    A column appears only when every row has a value (teacher columns are null when labelled without a
    teacher; labels for unlabelled examples). Use `attention_mask` as the mask over teacher positions; pad
    positions get (numerically) zero teacher probability anyway. The trainer cuts batches the same way from
    its memory-mapped `distill.training_data` view.
    """
    if table.num_rows == 0:
        raise FeaturesError("pad_batch got no rows; a batch needs at least one feature")
    return FlatFeatures.from_table(table).batch(np.arange(table.num_rows), pad_token_id)
