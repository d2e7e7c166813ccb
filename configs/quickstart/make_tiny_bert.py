"""Regenerate ``configs/quickstart/tiny-bert/``: a tiny BERT config and a WordPiece tokenizer
trained on the quickstart sample (``sample-train.json`` and ``sample-dev.json`` next to this file).

The quickstart builds its teacher and student from this config with fresh weights, so the folder
holds no weights: only ``config.json`` and the tokenizer files. Nothing is fetched from a model hub.

Run from the repository root:

    python configs/quickstart/make_tiny_bert.py

Re-run it whenever the sample changes. The WordPiece trainer breaks ties between equally frequent
pieces in a run-dependent order, so two runs can differ in a few rare pieces and in token ids; the
shipped folder is the output of one run, and any run is equally valid for the quickstart.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import AutoConfig, AutoTokenizer, BertConfig, BertTokenizerFast

HERE = Path(__file__).resolve().parent
SAMPLES = [HERE / "sample-train.json", HERE / "sample-dev.json"]
OUT = HERE / "tiny-bert"

VOCAB_SIZE = 2000  # an upper bound: the trainer stops early if the corpus supports fewer tokens
MAX_LENGTH = 256
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def sample_texts() -> list[str]:
    """Every context and question in the sample files."""
    texts = []
    for path in SAMPLES:
        for article in json.loads(path.read_text(encoding="utf-8"))["data"]:
            for paragraph in article["paragraphs"]:
                texts.append(paragraph["context"])
                texts.extend(qa["question"] for qa in paragraph["qas"])
    return texts


def train_wordpiece(texts: list[str]) -> Tokenizer:
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
        # every lowercase letter, digit and ASCII punctuation mark, even if the sample lacks it,
        # so that ordinary English text never falls back to [UNK]
        initial_alphabet=list(string.ascii_lowercase + string.digits + string.punctuation),
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def main() -> None:
    texts = sample_texts()
    vocab = train_wordpiece(texts).get_vocab()

    # BertTokenizerFast (an alias of BertTokenizer in transformers 5) rebuilds the standard BERT
    # pipeline around this vocabulary: BERT normaliser (lowercase), BERT pre-tokenizer, WordPiece
    # with "##" continuations, and the [CLS] A [SEP] B [SEP] template.
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True, model_max_length=MAX_LENGTH)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=MAX_LENGTH,
        pad_token_id=tokenizer.pad_token_id,
    )

    OUT.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(OUT)
    config.save_pretrained(OUT)

    # Reload as the quickstart will, and report.
    tokenizer = AutoTokenizer.from_pretrained(OUT)
    config = AutoConfig.from_pretrained(OUT)
    assert tokenizer.is_fast and config.vocab_size == len(tokenizer)
    ids = [i for text in texts for i in tokenizer(text)["input_ids"]]
    unk = sum(i == tokenizer.unk_token_id for i in ids)
    size = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {OUT}: vocab {len(tokenizer)}, {size / 1024:.0f} KB, {unk} [UNK] in {len(ids)} sample tokens")


if __name__ == "__main__":
    main()
