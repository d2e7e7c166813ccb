"""QA windows: a question and its context tokenized into overlapping model inputs, the one way Distillery does it.

Training, labelling and evaluation (`distill.features.qa_features`) and the served pipeline
(`distill.qa_pipeline`) all window through `encode_windows`, so a served model sees its inputs exactly as it saw
them when it was trained and scored. Like `postprocess`, this module needs only numpy and a fast tokenizer object:
exported QA folders carry a copy of it for the standalone pipeline.

Example::

    encoded = encode_windows(tokenizer, ["Who built it?"], [context], max_seq_len=384, doc_stride=128,
                             max_question_len=64)
    offsets = context_offsets(encoded, 0)   # (T, 2); NOT_CONTEXT for question, special and padding tokens
"""

from __future__ import annotations

import numpy as np

# Where a token outside the context points in the offsets of a window.
NOT_CONTEXT = -1
#: Where a model folder keeps the settings it was evaluated with: `config.task_specific_params[SETTINGS_KEY]`.
SETTINGS_KEY = "question-answering"
#: Settings when the folder gives none: the reference recipe's features and evaluation settings.
DEFAULT_SETTINGS = {"max_seq_len": 384, "doc_stride": 128, "max_question_len": 64, "max_answer_len": 30,
                    "n_best": 20, "null_threshold": 0.0}


def truncate_questions(tokenizer, questions: list[str], max_question_len: int) -> list[str]:
    """Questions without leading whitespace, each cut after its `max_question_len`-th token.

    Cutting the string at the end of the last kept token (rather than truncating ids) keeps the question text and
    its tokens in step, so the pair can go through the tokenizer's own overflow handling as text.
    """
    # some SQuAD questions start with runs of spaces, which would only waste window room
    questions = [question.lstrip() for question in questions]
    encoded = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True,
                        return_attention_mask=False, return_token_type_ids=False)
    return [question if len(offsets) <= max_question_len else question[:offsets[max_question_len - 1][1]]
            for question, offsets in zip(questions, encoded["offset_mapping"])]


def encode_windows(tokenizer, questions: list[str], contexts: list[str], max_seq_len: int, doc_stride: int,
                   max_question_len: int, **tokenizer_options):
    """(question, context) pairs as windows: the question (cut to `max_question_len` tokens), then as much context
    as fits in `max_seq_len` tokens; a long context overflows into further windows overlapping by `doc_stride`.

    Returns the tokenizer's BatchEncoding with input_ids, token_type_ids, offset_mapping and
    overflow_to_sample_mapping (window -> pair); `tokenizer_options` add padding, tensors and so on.
    """
    return tokenizer(truncate_questions(tokenizer, questions, max_question_len), contexts,
                     truncation="only_second", max_length=max_seq_len, stride=doc_stride,
                     return_overflowing_tokens=True, return_offsets_mapping=True, return_token_type_ids=True,
                     **tokenizer_options)


def context_offsets(encoded, window: int) -> np.ndarray:
    """(T, 2) character offsets of window `window`'s tokens in its context; NOT_CONTEXT for every other token."""
    offsets = np.array(encoded["offset_mapping"][window], dtype=np.int64).reshape(-1, 2)
    outside = np.array([sequence != 1 for sequence in encoded.sequence_ids(window)])
    offsets[outside] = NOT_CONTEXT
    return offsets
