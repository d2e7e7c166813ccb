"""Extractive question answering as a transformers pipeline that answers exactly as the evaluation does.

transformers 5 removed its "question-answering" pipeline. Importing `distill` registers this one under
`TASK` ("extractive-question-answering"), so a student folder serves without remote code::

    import distill  # registers the task
    from transformers import pipeline

    qa = pipeline("extractive-question-answering", model="runs/<job>/export")
    qa(question="Where is the Eiffel Tower?", context="The Eiffel Tower is in Paris.")
    # {"answer": "Paris", "score": 0.71, "start": 22, "end": 27, "null_odds": -3.2}

Every exported QA folder carries a byte-for-byte copy of this file as `distillery_qa.py`, with `qa_windows.py` and
`postprocess.py` beside it, registered in its config under "question-answering", for users without Distillery::

    qa = pipeline("question-answering", model="path/to/export", trust_remote_code=True)

so this module imports only numpy, torch, transformers and those two siblings.

A context is tokenized into overlapping windows by `qa_windows.encode_windows`, the windowing that training,
labelling and evaluation use (`distill.features.qa_features`); answers come from
`postprocess.postprocess_qa_predictions`, the evaluation's post-processing, so a served answer is the evaluated
answer. Like transformers 4's pipeline, it always returns a span unless `handle_impossible_answer=True`; then the
answer is "" where the null odds exceed `null_threshold`, as in evaluation. `score` is the answer's share of the
softmax over the n-best span scores and the null score (the official BERT code's n-best probability).
"""

from __future__ import annotations

import inspect

import torch
from transformers import Pipeline

from .postprocess import answer_probabilities, examples_from_windows, postprocess_qa_predictions
from .qa_windows import DEFAULT_SETTINGS, SETTINGS_KEY, context_offsets, encode_windows

#: The pipeline's task name: transformers 5 blocks "question-answering" itself.
TASK = "extractive-question-answering"


class ExtractiveQuestionAnsweringPipeline(Pipeline):
    """question + context -> {"answer", "score", "start", "end", "null_odds"}.

    Settings default to the ones the model was evaluated with (`config.task_specific_params["question-answering"]`)
    and can be passed per call: max_seq_len, doc_stride, max_question_len, max_answer_len, n_best, null_threshold,
    handle_impossible_answer (default False: always a span) and top_k.
    """

    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_video_processor = False

    def _settings(self) -> dict:
        params = getattr(self.model.config, "task_specific_params", None) or {}
        return {**DEFAULT_SETTINGS, **params.get(SETTINGS_KEY, {})}

    def __call__(self, inputs=None, question=None, context=None, **kwargs):
        if inputs is None:
            if question is None or context is None:
                raise ValueError("give question= and context=, or a dict {'question': ..., 'context': ...}")
            if isinstance(question, list):
                inputs = [{"question": q, "context": c} for q, c in zip(question, context, strict=True)]
            else:
                inputs = {"question": question, "context": context}
        return super().__call__(inputs, **kwargs)

    def _sanitize_parameters(self, max_seq_len=None, doc_stride=None, max_question_len=None, max_answer_len=None,
                             n_best=None, null_threshold=None, handle_impossible_answer=None, top_k=None):
        settings = self._settings()
        given = {"max_seq_len": max_seq_len, "doc_stride": doc_stride, "max_question_len": max_question_len,
                 "max_answer_len": max_answer_len, "n_best": n_best, "null_threshold": null_threshold}
        settings.update({key: value for key, value in given.items() if value is not None})
        preprocess = {key: settings[key] for key in ("max_seq_len", "doc_stride", "max_question_len")}
        postprocess = {key: settings[key] for key in ("max_answer_len", "n_best", "null_threshold")}
        if handle_impossible_answer is not None:
            postprocess["handle_impossible_answer"] = handle_impossible_answer
        if top_k is not None:
            postprocess["top_k"] = top_k
        return preprocess, {}, postprocess

    def preprocess(self, inputs, max_seq_len, doc_stride, max_question_len):
        question, context = inputs["question"], inputs["context"]
        if not question.strip() or not context.strip():
            raise ValueError("question and context must both be non-empty text")
        encoded = encode_windows(self.tokenizer, [question], [context], max_seq_len, doc_stride, max_question_len,
                                 padding=True)
        windows = len(encoded["input_ids"])
        takes = set(inspect.signature(self.model.forward).parameters)
        model_inputs = {key: torch.tensor(encoded[key]) for key in ("input_ids", "attention_mask", "token_type_ids")
                        if key in takes}
        return {"model_inputs": model_inputs, "context": context,
                "offsets": [context_offsets(encoded, window) for window in range(windows)]}

    def _forward(self, inputs):
        outputs = self.model(**inputs["model_inputs"])
        return {"start": outputs.start_logits, "end": outputs.end_logits, "offsets": inputs["offsets"],
                "context": inputs["context"]}

    def postprocess(self, outputs, max_answer_len, n_best, null_threshold, handle_impossible_answer=False,
                    top_k=1):
        starts, ends = outputs["start"].float().numpy(), outputs["end"].float().numpy()  # (W, T)
        [example] = examples_from_windows(["0"], [outputs["context"]], starts, ends, outputs["offsets"],
                                          [0] * len(starts))
        prediction = postprocess_qa_predictions([example], n_best_size=n_best, max_answer_length=max_answer_len,
                                                null_threshold=null_threshold)["0"]
        span_probabilities, null_probability = answer_probabilities(prediction)
        answers, seen = [], set()
        for span, probability in zip(prediction.n_best, span_probabilities):
            if (span.char_start, span.char_end) not in seen:  # overlapping windows propose the same span
                seen.add((span.char_start, span.char_end))
                answers.append({"answer": span.text, "score": float(probability), "start": span.char_start,
                                "end": span.char_end, "null_odds": prediction.null_odds})
        no_answer = {"answer": "", "score": null_probability, "start": 0, "end": 0, "null_odds": prediction.null_odds}
        if not answers or (handle_impossible_answer and prediction.text == ""):
            answers.insert(0, no_answer)
        return answers[0] if top_k == 1 else answers[:top_k]
