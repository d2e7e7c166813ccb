"""Shared fixtures: paths into ../shared, one Ray session per test run, tiny models saved to temp folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# 2 cores shared by pytest, Ray workers and job subprocesses: one thread each avoids oversubscription, which
# made tiny-model steps ~10x slower
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


def _shared(relative: str) -> Path:
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"{path} is absent: tests on real data need ../shared beside the repo")
    return path


@pytest.fixture(scope="session")
def squad_dev_path() -> Path:
    return _shared("data/squad2/dev-v2.0.json")


@pytest.fixture(scope="session")
def squad_rows(squad_dev_path, tmp_path_factory):
    """The first `limit` dev questions as core.schema.QA_SCHEMA rows, read by the project's own reader."""
    from augment.readers import read_examples
    from augment.spec import DataSource
    from core.shards import read_shards

    def read(limit: int) -> list[dict]:
        folder = tmp_path_factory.mktemp(f"squad-{limit}")
        read_examples(DataSource(path=str(squad_dev_path), limit=limit), "qa", None, folder)
        return read_shards(folder).to_pylist()

    return read


@pytest.fixture(scope="session")
def sst2_dir() -> Path:
    return _shared("data/sst2")


@pytest.fixture(scope="session")
def bert_tokenizer_dir() -> Path:
    return _shared("tokenizers/bert-base-uncased")


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole run: 2 CPUs, no dashboard, Ray's output in its own log files."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_model_factory(tmp_path_factory, bert_tokenizer_dir):
    """Build a tiny BERT (or DistilBERT, ELECTRA, SqueezeBERT, RoBERTa) with a task head and the real uncased
    tokenizer, save it, and return its folder.

    Models are cached by their arguments for the session, so asking twice costs nothing.
    """
    import torch
    from transformers import (AutoModelForMaskedLM, AutoModelForQuestionAnswering,
                              AutoModelForSequenceClassification, AutoTokenizer, BertConfig, DistilBertConfig,
                              DistilBertTokenizer, ElectraConfig, RobertaConfig, SqueezeBertConfig)

    heads = {"qa": AutoModelForQuestionAnswering, "classification": AutoModelForSequenceClassification,
             "regression": AutoModelForSequenceClassification, "mlm": AutoModelForMaskedLM}
    built: dict[tuple, Path] = {}

    def make(task: str = "qa", layers: int = 2, hidden: int = 32, heads_count: int = 2, num_labels: int = 2,
             seed: int = 0, max_positions: int = 512, family: str = "bert") -> Path:
        key = (task, layers, hidden, heads_count, num_labels, seed, max_positions, family)
        if key not in built:
            if family == "bert":
                tokenizer = AutoTokenizer.from_pretrained(bert_tokenizer_dir)
                config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                                    num_attention_heads=heads_count, intermediate_size=hidden * 2,
                                    max_position_embeddings=max_positions, num_labels=num_labels)
            elif family == "distilbert":
                # DistilBERT's own tokenizer class: same vocabulary, but no token_type_ids among its model inputs
                tokenizer = DistilBertTokenizer.from_pretrained(bert_tokenizer_dir)
                config = DistilBertConfig(vocab_size=tokenizer.vocab_size, dim=hidden, n_layers=layers,
                                          n_heads=heads_count, hidden_dim=hidden * 2,
                                          max_position_embeddings=max_positions, num_labels=num_labels)
            else:
                # the other encoders with BERT's vocabulary (ELECTRA, SqueezeBERT) or, for a RoBERTa-family
                # stand-in in a job that needs no shared vocabulary, with it instead of a BPE one
                tokenizer = AutoTokenizer.from_pretrained(bert_tokenizer_dir)
                sizes = dict(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                             num_attention_heads=heads_count, intermediate_size=hidden * 2, num_labels=num_labels)
                if family == "electra":
                    config = ElectraConfig(**sizes, embedding_size=hidden, max_position_embeddings=max_positions)
                elif family == "squeezebert":
                    config = SqueezeBertConfig(**sizes, embedding_size=hidden, max_position_embeddings=max_positions)
                elif family == "roberta":  # positions start after the padding id (0 here)
                    config = RobertaConfig(**sizes, pad_token_id=tokenizer.pad_token_id, type_vocab_size=2,
                                           max_position_embeddings=max_positions + 2)
                else:
                    raise ValueError(f"no tiny {family} model: families are bert, distilbert, electra, "
                                     "squeezebert, roberta")
            if task == "regression":   # one output scored by MSE, as a fine-tuned STS-B model
                config.num_labels, config.problem_type = 1, "regression"
            torch.manual_seed(seed)
            model = heads[task].from_config(config)
            folder = tmp_path_factory.mktemp(f"tiny-{family}-{task}-{layers}l-{hidden}h")
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            built[key] = folder
        return built[key]

    return make


@pytest.fixture(scope="session")
def tiny_bpe_mlm_factory(tmp_path_factory):
    """Build a tiny RoBERTa masked LM with a byte-level BPE tokenizer trained on a few sentences, save it, and return
    its folder (cached by `max_positions`, which counts RoBERTa's 2 reserved positions).

    As with GPT-2 and RoBERTa, a word is one token after a space (" Paris" -> ĠParis) but several at a text's start
    or after "(" (Par, is). The tokenizer has no model_max_length.
    """
    import torch
    from tokenizers import ByteLevelBPETokenizer, processors
    from transformers import RobertaConfig, RobertaForMaskedLM, RobertaTokenizerFast

    built: dict[int, Path] = {}

    def make(max_positions: int = 130) -> Path:
        if max_positions not in built:
            bpe = ByteLevelBPETokenizer()
            bpe.train_from_iterator(["People visit Paris and London every year.",
                                     "The city of Paris is in France, and London is in England."] * 20,
                                    vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
            bpe.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
            tokenizer = RobertaTokenizerFast(tokenizer_object=bpe._tokenizer)
            config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=64, max_position_embeddings=max_positions,
                                   pad_token_id=tokenizer.pad_token_id, bos_token_id=0, eos_token_id=2)
            torch.manual_seed(0)
            folder = tmp_path_factory.mktemp(f"tiny-bpe-mlm-{max_positions}")
            RobertaForMaskedLM(config).save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            built[max_positions] = folder
        return built[max_positions]

    return make


@pytest.fixture(scope="session")
def classifier_with_classes(tiny_model_factory, tmp_path_factory):
    """A tiny BERT classifier whose config names its classes `names` in id order (id2label, label2id)."""
    import json
    import shutil

    def make(names: list[str]) -> Path:
        folder = tmp_path_factory.mktemp("classes") / "model"
        shutil.copytree(tiny_model_factory(task="classification", layers=1, hidden=32, num_labels=len(names)),
                        folder)
        config = json.loads((folder / "config.json").read_text())
        config["id2label"] = {str(i): name for i, name in enumerate(names)}
        config["label2id"] = {name: i for i, name in enumerate(names)}
        (folder / "config.json").write_text(json.dumps(config))
        return folder

    return make
