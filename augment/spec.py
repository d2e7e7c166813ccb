"""The spec sections the data stages read: where the data comes from (`data`) and how it is augmented
(`augment`), with the masked LM and word vectors that propose substitutes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from core.config import DATA_FILE_FORMATS, Ref, StrictModel
from core.loop import LoopSpec

DEFAULT_MLM = "bert-base-uncased"
QA_FORMATS = ("squad", "mrqa", "hf", "jsonl")


class DataSource(StrictModel):
    path: Ref = Field(description="SQuAD JSON, MRQA .jsonl.gz, TSV/CSV/JSONL file, local HF dataset folder, or hub "
                                  "dataset name")
    format: Literal["squad", "mrqa", "tsv", "csv", "jsonl", "hf"] | None = Field(
        None, description="input format; inferred from the file suffix (.gz is mrqa; a folder or hub name is 'hf') "
                          "when unset")
    split: str | None = Field(None, description="split to read from an HF dataset (e.g. train, validation)")
    text_column: str = Field("sentence", description="classification: column holding the text")
    text_pair_column: str | None = Field(None, description="classification: column holding the second text")
    label_column: str = Field("label", description="classification: column holding the label")
    limit: int | None = Field(None, gt=0, description="read only the first N examples (quick experiments)")

    @model_validator(mode="after")
    def _infer_format(self) -> DataSource:
        if self.format is None:
            object.__setattr__(self, "format", DATA_FILE_FORMATS.get(Path(self.path).suffix.lower(), "hf"))
        return self


SetName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]


class TrainSource(DataSource):
    name: SetName | None = Field(None, description="the source's name in the report; needed when there are several")
    weight: float = Field(
        1.0, gt=0, description="times each of its examples is used: 2 repeats every example twice, 0.5 keeps a "
                               "seeded random half, 1.5 every example once and a seeded random half twice")


class EvalSource(DataSource):
    name: SetName | None = Field(None, description="the set's name in the report; needed when there are several")
    group: SetName | None = Field(
        None, description="sets of one group (say in_domain, out_of_domain) are macro-averaged together")
    scoring: Literal["squad_v2", "mrqa"] | None = Field(
        None, description="QA: squad_v2 (the official SQuAD 2.0 script: null answers, HasAns/NoAns) or mrqa (the "
                          "shared task's: SQuAD 1.1 normalisation, best over the gold answers, never a null answer); "
                          "unset: mrqa for format mrqa, else squad_v2")

    @property
    def metric(self) -> Literal["squad_v2", "mrqa"]:
        return self.scoring or ("mrqa" if self.format == "mrqa" else "squad_v2")


def _named(sources: list[Any], field: str, default_name: str) -> list[Any]:
    """`sources` with the name of a lone unnamed source filled in; several must each have a distinct name."""
    if len(sources) == 1 and sources[0].name is None:
        return [sources[0].model_copy(update={"name": default_name})]
    unnamed = [str(i) for i, source in enumerate(sources) if source.name is None]
    if unnamed:
        raise ValueError(f"{field}: several sources need a name each; {', '.join(unnamed)} have none")
    names = [source.name for source in sources]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"{field}: names must differ; {', '.join(repeated)} is used more than once")
    return sources


class DataSpec(StrictModel):
    """The data as lists of named sources: a single source may be given as a mapping, and is named train or eval."""

    train: list[TrainSource] = Field(
        [TrainSource(path="rajpurkar/squad_v2", format="hf", split="train")], min_length=1,
        description="training examples: one source, or a list of named sources (each with a sampling weight) read "
                    "into one training set")
    eval: list[EvalSource] = Field(
        [EvalSource(path="rajpurkar/squad_v2", format="hf", split="validation")], min_length=1,
        description="evaluation examples: one source, or a list of named sets, each scored on its own and "
                    "macro-averaged, overall and per group")
    label_names: list[str] | None = Field(
        None, description="classification: label names in id order; labels in the data may be names or ids")

    @model_validator(mode="before")
    @classmethod
    def _one_source_as_a_list(cls, value: Any) -> Any:
        if isinstance(value, dict):
            value = {key: [item] if key in ("train", "eval") and isinstance(item, (dict, DataSource)) else item
                     for key, item in value.items()}
        return value

    @model_validator(mode="after")
    def _names(self) -> DataSpec:
        object.__setattr__(self, "train", _named(self.train, "data.train", "train"))
        object.__setattr__(self, "eval", _named(self.eval, "data.eval", "eval"))
        return self


class VectorsSpec(StrictModel):
    path: Ref | None = Field(
        None, description="word vectors file; unset: word2vec vectors are trained on the input corpus")
    format: Literal["glove", "word2vec", "word2vec_binary", "fasttext", "keyedvectors"] | None = Field(
        None, description="file format; inferred from the suffix when unset")
    dim: int = Field(100, gt=0, description="dimension of vectors trained on the corpus")
    epochs: int = Field(5, gt=0, description="epochs of training vectors on the corpus")
    min_count: int = Field(2, gt=0, description="ignore words rarer than this when training vectors")


class MaskedLMTrainingSpec(LoopSpec):
    epochs: float = Field(1.0, gt=0, description="passes over the texts")
    batch_size: int = Field(64, gt=0)
    learning_rate: float = Field(5e-4, gt=0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    mask_prob: float = Field(0.15, gt=0, lt=1, description="share of wordpieces masked (BERT's 80/10/10 rule)")
    seed: int = Field(0, description="fixed, not the job seed: jobs that differ only in `seed` share one trained "
                                     "masked LM")


class AugmentSpec(StrictModel):
    enabled: bool = True
    factor: int = Field(20, ge=1, description="augmented variants generated per example")
    keep_original: bool = Field(True, description="keep each original example first, next to its variants")
    replace_prob: float = Field(0.4, gt=0, le=1, description="probability that an eligible word is replaced")
    top_k: int = Field(15, ge=1, description="candidates considered per word")
    mlm_model: Ref | None = Field(
        DEFAULT_MLM, description="masked LM proposing candidates for single-wordpiece words; null: vectors only")
    mlm_init: Literal["pretrained", "random"] = Field(
        "pretrained", description="random: build the masked LM from its config with fresh weights (to train with "
                                  "mlm_training, or for demos)")
    mlm_training: MaskedLMTrainingSpec | None = Field(
        None, description="train the masked LM (mlm_model, from mlm_init weights) first, on `corpus` or else the "
                          "training texts, in windows of features.max_seq_len: no hub needed")
    corpus: DataSource | None = Field(
        None, description="texts (labels unused) that a trained masked LM learns from instead of the training "
                          "data, and trained word vectors learn from besides it; refused when neither is trained")
    mlm_mode: Literal["fast", "exact"] = Field(
        "fast", description="fast: several separated words masked per pass in a bounded window; "
                            "exact: TinyBERT semantics, one masked word per pass over the full context")
    mlm_window: int = Field(64, ge=8, description="fast mode: tokens of context either side of a masked word")
    mlm_batch_size: int = Field(32, gt=0)
    vectors: VectorsSpec = VectorsSpec()
    examples_per_shard: int = Field(
        256, gt=0, description="input examples per output shard; a crash loses at most one shard's work")
    augment_questions: bool = Field(False, description="QA: also substitute words in questions")
    augment_answers: bool = Field(False, description="QA: also substitute words inside answer spans")

    @model_validator(mode="after")
    def _training_needs_a_model(self) -> AugmentSpec:
        if self.mlm_training is not None and self.mlm_model is None:
            raise ValueError("mlm_training: trains mlm_model, which is null; name a masked LM (its config and "
                             "tokenizer are enough with mlm_init: random)")
        return self

    @model_validator(mode="after")
    def _corpus_needs_a_reader(self) -> AugmentSpec:
        # read by the prepare stage for the masked LM's training and the word vectors' training only
        if self.corpus is not None and self.mlm_training is None and self.vectors.path is not None:
            raise ValueError("corpus: nothing would read it: the masked LM is not trained (mlm_training is unset) and "
                             "the word vectors come from vectors.path; drop corpus, or set mlm_training to train "
                             "the masked LM on it")
        return self
