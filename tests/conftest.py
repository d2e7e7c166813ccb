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
    """The first `limit` dev questions as augment.schema.QA_SCHEMA rows, read by the project's own reader."""
    from augment.readers import read_examples
    from augment.writers import read_shards
    from jobs.spec import DataSource

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
    """One local Ray instance for the whole run: 2 CPUs, no dashboard, quiet progress output."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_model_factory(tmp_path_factory, bert_tokenizer_dir):
    """Build a tiny BERT (or DistilBERT) with a task head and the real uncased tokenizer, save it, and return its
    folder.

    Models are cached by their arguments for the session, so asking twice costs nothing.
    """
    import torch
    from transformers import (AutoModelForMaskedLM, AutoModelForQuestionAnswering,
                              AutoModelForSequenceClassification, AutoTokenizer, BertConfig, DistilBertConfig,
                              DistilBertTokenizer)

    heads = {"qa": AutoModelForQuestionAnswering, "classification": AutoModelForSequenceClassification,
             "mlm": AutoModelForMaskedLM}
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
            else:
                # DistilBERT's own tokenizer class: same vocabulary, but no token_type_ids among its model inputs
                tokenizer = DistilBertTokenizer.from_pretrained(bert_tokenizer_dir)
                config = DistilBertConfig(vocab_size=tokenizer.vocab_size, dim=hidden, n_layers=layers,
                                          n_heads=heads_count, hidden_dim=hidden * 2,
                                          max_position_embeddings=max_positions, num_labels=num_labels)
            torch.manual_seed(seed)
            model = heads[task].from_config(config)
            folder = tmp_path_factory.mktemp(f"tiny-{family}-{task}-{layers}l-{hidden}h")
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            built[key] = folder
        return built[key]

    return make
