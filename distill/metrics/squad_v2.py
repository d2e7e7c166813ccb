"""The official SQuAD 2.0 metric as a Hugging Face `evaluate` module that loads offline, from this package:

    import evaluate
    from distill.metrics import SQUAD_V2
    squad_v2 = evaluate.load(SQUAD_V2)
    squad_v2.compute(predictions=[{"id": "q1", "prediction_text": "Denver", "no_answer_probability": 0.1}],
                     references=[{"id": "q1", "answers": {"text": ["Denver"], "answer_start": [17]}}])

It takes the inputs and gives the keys of the hub's `squad_v2` metric (which needs the network), computed by
`distill.squad_metric.squad_v2_scores`, the exact port of the official script that the evaluate stage uses.
"""

import datasets
import evaluate

from distill.squad_metric import DEFAULT_NA_PROB_THRESH, squad_v2_scores

_DESCRIPTION = "SQuAD 2.0 exact match and F1, overall and for answerable (HasAns) and unanswerable (NoAns) questions."
_KWARGS = """
Args:
    predictions: one dict per question: `id`, `prediction_text` ("" for no answer), `no_answer_probability`.
    references: one dict per question: `id`, `answers` ({"text": [...], "answer_start": [...]}; empty when the
        question has no answer).
    no_answer_threshold: a prediction whose no_answer_probability exceeds this counts as "no answer".
Returns:
    exact, f1, total; HasAns_* and NoAns_* where such questions exist; best_exact, best_f1 and their thresholds.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class SquadV2(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
            features=datasets.Features({
                "predictions": {"id": datasets.Value("string"), "prediction_text": datasets.Value("string"),
                                "no_answer_probability": datasets.Value("float64")},
                "references": {"id": datasets.Value("string"),
                               "answers": datasets.features.Sequence({"text": datasets.Value("string"),
                                                                      "answer_start": datasets.Value("int32")})},
            }),
            reference_urls=["https://rajpurkar.github.io/SQuAD-explorer/"])

    def _compute(self, predictions, references, no_answer_threshold: float = DEFAULT_NA_PROB_THRESH):
        gold = {r["id"]: list(r["answers"]["text"]) for r in references}
        texts = {p["id"]: p["prediction_text"] for p in predictions}
        odds = {p["id"]: float(p["no_answer_probability"]) for p in predictions}
        return squad_v2_scores(gold, texts, odds, no_answer_threshold)
