"""Replacement candidates for words: nearest neighbours in word-vector space, or a masked LM's predictions.

TinyBERT's rule decides the source: a word that is exactly one token of the masked LM's tokenizer where it stands
(`encode_words`) gets the LM's top-k predictions with the word masked; every other word (or every word, with no
LM) gets its top-k nearest neighbours by cosine similarity of word vectors.

* Vectors: `load_vectors` reads GloVe, word2vec (text or binary), fastText (`.vec`, `.bin`) or gensim `.kv`
  files; `train_vectors` trains word2vec on the corpus itself. `nearest_neighbours` computes the top-k list of
  every distinct corpus word once, in one batched pass over the vocabulary, so workers receive small per-block
  lookup tables and never a copy of the vectors.
* Masked LM: `MaskedLMProposer` wraps any HF masked LM. `exact` is TinyBERT's semantics (one masked word per
  pass over the full context), batched over the masked copies of a text; `fast` masks several words at least
  `FAST_MASK_GAP` tokens apart in one pass over a bounded window, batched across texts; `reference` is the
  naive loop the popular tools run (one forward per word, LM head on every position), kept for tests and the
  benchmark. All three apply the same candidate rules (`candidate_words`), so they differ only in context.

Which words share a pass is decided per text, never by the batch; and the pipeline always hands the same
texts (one block) in the same order, so batch shapes and hence candidates are the same bit for bit on every run,
whichever worker computes them.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from augment.words import MIN_WORD_LENGTH, Word, eligible_words
from core.positions import usable_positions

log = logging.getLogger(__name__)

VECTOR_FORMATS = ("glove", "word2vec", "word2vec_binary", "fasttext", "keyedvectors")  # VectorsSpec.format
_SUFFIX_FORMATS = {".kv": "keyedvectors", ".vec": "fasttext", ".bin": "word2vec_binary", ".txt": None}

# Fast mode masks words at least this many tokens apart in one pass: 2 = never two neighbouring words at once.
# About 2 in 5 wordpieces of prose are maskable words, so a SQuAD paragraph (~55 such words) takes 2-3 passes
# instead of one per word. benchmarks/augment_bench.py measures the trade-off (recall: share of exact mode's
# top-20 that fast mode keeps, with a small masked LM trained for 2 minutes): gap 2 was 22-26x faster than
# exact mode with recall 0.96-0.98; gap 3 about 17x with 0.975-0.99; gap 4 0.98-0.99.
FAST_MASK_GAP = 2
# A batch of masked-LM rows holds rows at least this share as long as its longest: at most 1/0.8 - 1 = 25% of
# its tokens are padding (fast mode's rows range from a few words to a whole paragraph).
MIN_FILL = 0.8
# Candidates a vector or LM ranking must yield beyond top_k so that top_k survive removing the word itself,
# its case variants and duplicates.
_SPARE = 8


class CandidateError(ValueError):
    """Vectors or a masked LM that cannot propose candidates; the message says what was found and the fix."""


@dataclass(frozen=True)
class WordOptions:
    """The replacements proposed for one word, best first, and where they came from ("mlm" or "embedding")."""

    candidates: tuple[str, ...]
    source: str


# (start, end) of a word in its text -> its options; a word absent from the map has no candidates.
TextOptions = dict[tuple[int, int], WordOptions]


# ---------------------------------------------------------------------------------------------------------------
# Word vectors


def vectors_format(path: str | Path, declared: str | None = None) -> str:
    """The format of the vectors file at `path`: `declared` when given, else inferred from its suffix.

    A `.txt` file is word2vec text when its first line is a "<count> <dim>" header, else GloVe (no header).
    A `.bin` file is taken as word2vec binary; fastText `.bin` models need `format: fasttext`.
    """
    if declared is not None:
        if declared not in VECTOR_FORMATS:
            raise CandidateError(f"unknown vectors format {declared!r}; valid formats: {', '.join(VECTOR_FORMATS)}")
        return declared
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _SUFFIX_FORMATS:
        raise CandidateError(f"cannot infer the format of {path} from its suffix {suffix!r}; set vectors.format "
                             f"(valid formats: {', '.join(VECTOR_FORMATS)})")
    if _SUFFIX_FORMATS[suffix] is not None:
        return _SUFFIX_FORMATS[suffix]
    with open(path, encoding="utf-8", errors="replace") as handle:
        header = handle.readline().split()
    return "word2vec" if len(header) == 2 and all(p.isdigit() for p in header) else "glove"


def load_vectors(path: str | Path, declared_format: str | None = None):
    """Load word vectors as gensim `KeyedVectors`; a `.kv` file is memory-mapped read-only, not copied."""
    from gensim.models import KeyedVectors
    from gensim.models.fasttext import load_facebook_vectors

    path = Path(path)
    if not path.exists():
        raise CandidateError(f"vectors file {path} does not exist; fix vectors.path or unset it to train vectors "
                             "on the corpus")
    fmt = vectors_format(path, declared_format)
    if fmt == "keyedvectors":
        return KeyedVectors.load(str(path), mmap="r")
    if fmt == "glove":
        return KeyedVectors.load_word2vec_format(str(path), binary=False, no_header=True)
    if fmt == "word2vec":
        return KeyedVectors.load_word2vec_format(str(path), binary=False)
    if fmt == "word2vec_binary":
        return KeyedVectors.load_word2vec_format(str(path), binary=True)
    if path.suffix.lower() == ".bin":  # fastText: the full model, so out-of-vocabulary words get vectors too
        return load_facebook_vectors(str(path))
    return KeyedVectors.load_word2vec_format(str(path), binary=False)  # fastText .vec is word2vec text


def _stable_hash(text: str) -> int:
    # gensim seeds each word's initial vector with hashfxn(word + seed); Python's hash() changes per process
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=4).digest(), "little")


def train_vectors(sentences: Sequence[Sequence[str]], dim: int, epochs: int, min_count: int, seed: int):
    """Train word2vec (CBOW) on lower-cased tokenised `sentences`, deterministically (one worker, fixed seed,
    stable hashing), and return its KeyedVectors. With no word reaching `min_count`, the vectors are empty
    and a warning says so (every word then lacks embedding candidates)."""
    from gensim.models import KeyedVectors, Word2Vec

    counts: dict[str, int] = {}
    for sentence in sentences:
        for word in sentence:
            counts[word] = counts.get(word, 0) + 1
    if not any(c >= min_count for c in counts.values()):
        log.warning("no word occurs %d times in %d sentences: no vectors trained, no embedding candidates; lower "
                    "vectors.min_count or give vectors.path", min_count, len(sentences))
        return KeyedVectors(vector_size=dim)
    model = Word2Vec(sentences=[list(s) for s in sentences], vector_size=dim, epochs=epochs, min_count=min_count,
                     workers=1, seed=seed, hashfxn=_stable_hash)
    return model.wv


def save_vectors(vectors, path: str | Path) -> Path:
    """Save as gensim `.kv` with the matrix in its own `.npy` beside it, so `load_vectors` can memory-map it.

    Written under temporary names and moved into place, the `.npy` first: a `.kv` file that exists is whole.
    """
    path = Path(path)
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    vectors.save(str(temp), separately=["vectors"])
    array = Path(f"{temp}.vectors.npy")
    if array.exists():
        os.replace(array, f"{path}.vectors.npy")
    os.replace(temp, path)
    return path


def _vector_index(vectors, word: str) -> int | None:
    # lower-case first (GloVe and trained vectors are lower-case), then the usual cased forms
    for form in (word, word.capitalize(), word.upper()):
        index = vectors.key_to_index.get(form)
        if index is not None:
            return index
    return None


def nearest_neighbours(vectors, words: Iterable[str], top_k: int, query_chunk: int = 512,
                       vocab_chunk: int = 32768) -> dict[str, tuple[str, ...]]:
    """The `top_k` nearest vocabulary words (cosine similarity) of each of `words`, in one batched pass.

    Args:
        vectors: gensim KeyedVectors (or FastTextKeyedVectors, whose out-of-vocabulary words get n-gram vectors).
        words: lower-case words to look up; a word without a vector is absent from the result.
        top_k: neighbours kept per word. Candidates are all-letter vocabulary words other than the word itself
            and its case variants, lower-cased, without duplicates; ties go to the more frequent (earlier) word.
        query_chunk, vocab_chunk: rows per matrix product, bounding memory at about
            query_chunk * vocab_chunk * 4 bytes; the vocabulary matrix is read chunk by chunk, never normalised
            as a whole, so a memory-mapped `.kv` is never copied into memory.

    Returns:
        word -> neighbours, best first.
    """
    from gensim.models.fasttext import FastTextKeyedVectors

    queries, query_vectors = [], []
    for word in sorted(set(words)):
        index = _vector_index(vectors, word)
        if index is not None:
            queries.append(word)
            query_vectors.append(vectors.vectors[index])
        elif isinstance(vectors, FastTextKeyedVectors):  # builds vectors for unseen words from n-grams
            queries.append(word)
            query_vectors.append(vectors.get_vector(word))
    keys = vectors.index_to_key
    if not queries or not keys:
        return {}
    valid = np.fromiter((len(k) >= MIN_WORD_LENGTH and k.isalpha() for k in keys), dtype=bool, count=len(keys))
    keep = min(top_k + _SPARE, len(keys))
    table: dict[str, tuple[str, ...]] = {}
    for q0 in range(0, len(queries), query_chunk):
        q = np.asarray(query_vectors[q0:q0 + query_chunk], dtype=np.float32)  # (Q, D)
        q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        best_scores = np.full((len(q), 0), -np.inf, dtype=np.float32)
        best_index = np.zeros((len(q), 0), dtype=np.int64)
        for v0 in range(0, len(keys), vocab_chunk):
            block = np.asarray(vectors.vectors[v0:v0 + vocab_chunk], dtype=np.float32)  # (V, D)
            norms = np.linalg.norm(block, axis=1)
            scores = (q @ block.T) / np.maximum(norms, 1e-12)  # (Q, V) cosine similarities
            scores[:, ~valid[v0:v0 + len(block)]] = -np.inf
            scores = np.concatenate([best_scores, scores], axis=1)
            index = np.concatenate([best_index, np.broadcast_to(np.arange(v0, v0 + len(block)), (len(q), len(block)))],
                                   axis=1)
            if scores.shape[1] > keep:
                part = np.argpartition(-scores, keep - 1, axis=1)[:, :keep]
                scores, index = np.take_along_axis(scores, part, 1), np.take_along_axis(index, part, 1)
            best_scores, best_index = scores, index
        for row, word in enumerate(queries[q0:q0 + query_chunk]):
            order = np.lexsort((best_index[row], -best_scores[row]))  # best first; ties: lower index first
            chosen, seen = [], {word}
            for i in order:
                if not np.isfinite(best_scores[row, i]):
                    break
                candidate = keys[best_index[row, i]].lower()
                if candidate not in seen:
                    seen.add(candidate)
                    chosen.append(candidate)
                if len(chosen) == top_k:
                    break
            table[word] = tuple(chosen)
    return table


# ---------------------------------------------------------------------------------------------------------------
# Masked LM


@dataclass(frozen=True)
class Encoded:
    """A text's wordpieces (without special tokens) and the single-wordpiece words among the ones asked for."""

    ids: list[int]
    maskable: dict[tuple[int, int], int]  # word (start, end) -> index of its one token in `ids`


def encode_words(tokenizer, text: str, words: Sequence[Word]) -> Encoded:
    """Tokenise `text` and find which of `words` the masked LM can replace: those that are exactly one token where
    they stand (by character offsets). The one rule both the workers' proposer and the driver (which finds vector
    neighbours for every other word) apply: with a BPE tokenizer a word can be one token after a space (" Paris")
    but several at a text's start or after "(", so only its occurrences in context decide.
    """
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    by_span = {(s, e): i for i, (s, e) in enumerate(encoding["offset_mapping"])}
    maskable = {(w.start, w.end): by_span[(w.start, w.end)] for w in words if (w.start, w.end) in by_span}
    return Encoded(list(encoding["input_ids"]), maskable)


@contextmanager
def lm_head_only_at(model, rows, cols):
    """Within the block, a HF masked LM's head sees only the hidden states at (rows, cols).

    A forward hook on the base model replaces its (B, T, H) output by the (1, M, H) rows picked, so the head
    (transform + vocabulary projection, whatever the architecture) runs on M rows instead of B * T and the
    model's logits come out (1, M, V): at T = 384 the head is about a fifth of BERT-base's compute.
    """
    def gather(module, args, output):
        output.last_hidden_state = output.last_hidden_state[rows, cols].unsqueeze(0)
        return output

    handle = model.base_model.register_forward_hook(gather)
    try:
        yield
    finally:
        handle.remove()


class MaskedLMProposer:
    """Top-k replacement candidates from a HF masked LM, for words that are exactly one wordpiece.

    Args:
        model: hub name or local folder of a masked LM with a fast tokenizer (offsets are needed).
        init: "pretrained" loads the weights; "random" builds the model from its config with fresh weights,
            seeded by `seed` so every worker builds the same model.
        seed: seed for "random" init.
        device: "cpu" or "cuda".
        batch_size: sequences per forward pass.
        precision: "fp32", "fp16" or "bf16" (`core.devices.choose_precision` for the device); the scores are
            ranked in fp32 either way.
    """

    def __init__(self, model: str, init: Literal["pretrained", "random"] = "pretrained", seed: int = 0,
                 device: str = "cpu", batch_size: int = 32, precision: str = "fp32"):
        import torch
        from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model)
        if not getattr(self.tokenizer, "is_fast", False):
            raise CandidateError(f"the tokenizer of {model} is not a fast tokenizer; word offsets need one (give a "
                                 "model folder with tokenizer.json)")
        if self.tokenizer.mask_token_id is None:
            raise CandidateError(f"the tokenizer of {model} has no mask token; give a masked language model")
        if init == "random":
            torch.manual_seed(seed)
            self.model = AutoModelForMaskedLM.from_config(AutoConfig.from_pretrained(model))
        else:
            self.model = AutoModelForMaskedLM.from_pretrained(model)
        self.model.eval().to(device)
        self.device = device
        self.batch_size = batch_size
        self.precision = precision

        probe = self.tokenizer("word")["input_ids"]
        inner = self.tokenizer("word", add_special_tokens=False)["input_ids"]
        at = probe.index(inner[0])
        self._prefix, self._suffix = probe[:at], probe[at + len(inner):]  # e.g. [CLS] and [SEP]
        positions = usable_positions(self.model.config) or 512
        limit = self.tokenizer.model_max_length if self.tokenizer.model_max_length < 100_000 else positions
        self.max_length = min(limit, positions, 512)
        self.max_content = self.max_length - len(self._prefix) - len(self._suffix)  # wordpieces of text per row
        self._words, self._banned = self._candidate_vocabulary()

    def _candidate_vocabulary(self):
        """Each token id's candidate word, and a mask of ids that are never candidates: special tokens,
        continuation pieces (##x, or BPE pieces without the word-start marker), and anything not all letters
        (punctuation, digits, [unused] slots) since a word must stay a word."""
        import torch

        size = self.model.get_output_embeddings().weight.shape[0]  # may exceed the tokenizer's vocabulary
        tokens = self.tokenizer.convert_ids_to_tokens(list(range(min(size, len(self.tokenizer)))))
        markers = ("Ġ", "▁")
        uses_markers = sum(t.startswith(markers) for t in tokens) > len(tokens) // 10
        special = set(self.tokenizer.all_special_ids)
        words = [""] * size
        banned = torch.ones(size, dtype=torch.bool)
        for i, token in enumerate(tokens):
            if i in special or token.startswith("##"):
                continue
            if uses_markers:
                if not token.startswith(markers):
                    continue
                token = token[1:]
            if len(token) >= MIN_WORD_LENGTH and token.isalpha():
                words[i], banned[i] = token, False
        return words, banned.to(self.device)

    def encode(self, text: str, words: Sequence[Word]) -> Encoded:
        """`encode_words` with this model's tokenizer."""
        return encode_words(self.tokenizer, text, words)

    def candidate_words(self, logits, original_ids: Sequence[int], top_k: int) -> list[tuple[str, ...]]:
        """Turn LM scores at masked positions into candidate words.

        Args:
            logits: (M, V) scores at M masked positions.
            original_ids: (M,) the token that was masked at each position.
            top_k: candidates kept per position: the best-scoring allowed tokens, other than the masked word
                (in any case).
        """
        import torch

        logits = logits.float().masked_fill(self._banned, float("-inf"))
        top = torch.topk(logits, min(top_k + _SPARE, logits.shape[1]), dim=1)
        result = []
        for row, original in zip(top.indices.tolist(), original_ids):
            own = self._words[original].lower() or self.tokenizer.convert_ids_to_tokens(original).lower()
            chosen, seen = [], {own}
            for i in row:
                word = self._words[i]
                if word and word.lower() not in seen:
                    seen.add(word.lower())
                    chosen.append(word)
                    if len(chosen) == top_k:
                        break
            result.append(tuple(chosen))
        return result

    def _batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Consecutive runs of at most `batch_size` sequences; a run also ends before a sequence shorter than
        MIN_FILL of the run's first, so that callers passing sequences longest first pad little."""
        batches: list[list[int]] = []
        for i, length in enumerate(lengths):
            if batches and len(batches[-1]) < self.batch_size and length >= MIN_FILL * lengths[batches[-1][0]]:
                batches[-1].append(i)
            else:
                batches.append([i])
        return batches

    def _predict(self, sequences: Sequence[Sequence[int]], masks: Sequence[Sequence[int]], top_k: int):
        """Candidates at every masked position of every sequence, in batches (see `_batches`).

        Args:
            sequences: wordpiece ids without special tokens, each at most `max_content` long.
            masks: for each sequence, the indices to mask (into the sequence).
        Returns:
            for each sequence, one candidate tuple per masked index, in the order given.
        """
        import torch

        from core.devices import padded_length

        results: list[list[tuple[str, ...]]] = [[] for _ in sequences]
        for batch in self._batches([len(s) for s in sequences]):
            width = padded_length(max(len(sequences[i]) for i in batch) + len(self._prefix) + len(self._suffix),
                                  torch.device(self.device), self.max_length)
            ids = torch.full((len(batch), width), self.tokenizer.pad_token_id or 0, dtype=torch.long)  # (B, T)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            rows, cols, originals = [], [], []
            for r, i in enumerate(batch):
                row = self._prefix + list(sequences[i]) + self._suffix
                ids[r, :len(row)] = torch.tensor(row)
                attention[r, :len(row)] = 1
                for m in masks[i]:
                    rows.append(r)
                    cols.append(len(self._prefix) + m)
                    originals.append(sequences[i][m])
            ids[rows, cols] = self.tokenizer.mask_token_id
            rows_t, cols_t = torch.tensor(rows, device=self.device), torch.tensor(cols, device=self.device)
            with torch.inference_mode(), self._autocast(), lm_head_only_at(self.model, rows_t, cols_t):
                logits = self.model(input_ids=ids.to(self.device), attention_mask=attention.to(self.device)).logits[0]
            found = iter(self.candidate_words(logits, originals, top_k))  # (M, V) -> M tuples
            for r, i in enumerate(batch):
                results[i] = [next(found) for _ in masks[i]]
        return results

    def _autocast(self) -> AbstractContextManager:
        import torch

        from core.devices import autocast

        return autocast(torch.device(self.device), self.precision)

    def _window(self, length: int, position: int) -> tuple[int, int]:
        """The longest span of a text of `length` wordpieces that fits one row, around `position`."""
        if length <= self.max_content:
            return 0, length
        start = min(max(0, position - self.max_content // 2), length - self.max_content)
        return start, start + self.max_content

    def exact(self, encoded: Encoded, top_k: int) -> dict[tuple[int, int], tuple[str, ...]]:
        """TinyBERT's candidates: one masked word per row over the whole text (up to the model's length), the
        rows of one text batched together (equal length, so no padding)."""
        spans = list(encoded.maskable)
        sequences, masks = [], []
        for span in spans:
            position = encoded.maskable[span]
            start, end = self._window(len(encoded.ids), position)
            sequences.append(encoded.ids[start:end])
            masks.append([position - start])
        found = self._predict(sequences, masks, top_k)
        return {span: f[0] for span, f in zip(spans, found)}

    def plan_fast(self, encoded: Encoded, window: int, gap: int = FAST_MASK_GAP):
        """Fast-mode rows of one text: (start, end, masked positions), decided by this text alone.

        Words go into passes first-fit so that the masks of one pass are at least `gap` tokens apart. A pass
        over a text that fits the model is one row; a longer text's pass is cut into rows whose masks span at
        most max_content - 1 - 2w tokens, each row adding w = min(window, what fits) tokens of context either
        side. So every masked word sees at least `window` tokens either side (or up to the text's edge), and
        rows are as long as the model allows: the more masks a row carries, the less each word costs.
        """
        w = min(window, (self.max_content - 1) // 2)
        span = self.max_content - 1 - 2 * w
        passes: list[list[int]] = []
        for position in sorted(encoded.maskable.values()):
            for members in passes:
                if position - members[-1] >= gap:
                    members.append(position)
                    break
            else:
                passes.append([position])
        rows = []
        for members in passes:
            group = [members[0]]
            for position in members[1:] + [None]:
                if position is not None and position - group[0] <= span:
                    group.append(position)
                    continue
                start, end = max(0, group[0] - w), min(len(encoded.ids), group[-1] + w + 1)
                rows.append((start, end, group))
                if position is not None:
                    group = [position]
        return rows

    def fast(self, texts: Sequence[Encoded], top_k: int, window: int,
             gap: int = FAST_MASK_GAP) -> list[dict[tuple[int, int], tuple[str, ...]]]:
        """Fast-mode candidates for several texts: rows planned per text, then batched across texts, longest
        first (less padding); the LM head runs only at masked positions."""
        planned = []  # (text index, start, end, positions)
        for t, encoded in enumerate(texts):
            planned += [(t, start, end, group) for start, end, group in self.plan_fast(encoded, window, gap)]
        planned.sort(key=lambda p: (-(p[2] - p[1]), p[0], p[1]))
        found = self._predict([texts[t].ids[s:e] for t, s, e, _ in planned],
                              [[p - s for p in group] for _, s, _, group in planned], top_k)
        by_position: list[dict[int, tuple[str, ...]]] = [{} for _ in texts]
        for (t, _, _, group), candidates in zip(planned, found):
            by_position[t].update(zip(group, candidates))
        return [{span: by_position[t][position] for span, position in encoded.maskable.items()}
                for t, encoded in enumerate(texts)]

    def reference(self, encoded: Encoded, top_k: int) -> dict[tuple[int, int], tuple[str, ...]]:
        """The naive loop of the popular tools: per word, one unbatched forward over the whole text with the LM
        head on every position. Same candidates as `exact` (up to float rounding); for tests and benchmarks."""
        import torch

        result = {}
        for span, position in encoded.maskable.items():
            start, end = self._window(len(encoded.ids), position)
            row = self._prefix + encoded.ids[start:end] + self._suffix
            col = len(self._prefix) + position - start
            row[col] = self.tokenizer.mask_token_id
            with torch.inference_mode(), self._autocast():
                logits = self.model(input_ids=torch.tensor([row], device=self.device)).logits  # (1, T, V)
            result[span] = self.candidate_words(logits[0, col:col + 1], [encoded.ids[position]], top_k)[0]
        return result


# ---------------------------------------------------------------------------------------------------------------
# Both sources together


def propose(texts: Sequence[str], neighbours: Mapping[str, Sequence[str]], mlm: MaskedLMProposer | None,
            mode: Literal["fast", "exact"], top_k: int, window: int) -> list[TextOptions]:
    """Options for every eligible word (answers not excluded) of each text.

    Single-wordpiece words get the masked LM's candidates (source "mlm"); other words, or all words without an
    LM, get `neighbours[word.lower()]` (source "embedding"). Repeated texts are computed once.
    """
    distinct = list(dict.fromkeys(texts))
    words = [eligible_words(text) for text in distinct]
    encoded = [mlm.encode(text, ws) for text, ws in zip(distinct, words)] if mlm is not None else None
    if mlm is None:
        from_lm: list[dict[tuple[int, int], tuple[str, ...]]] = [{} for _ in distinct]
    elif mode == "exact":
        from_lm = [mlm.exact(e, top_k) for e in encoded]
    else:
        from_lm = mlm.fast(encoded, top_k, window)
    options: dict[str, TextOptions] = {}
    for text, ws, lm in zip(distinct, words, from_lm):
        found: TextOptions = {}
        for w in ws:
            span = (w.start, w.end)
            if span in lm:  # a single wordpiece: the LM decides, even when it has nothing to offer
                if lm[span]:
                    found[span] = WordOptions(lm[span], "mlm")
            elif neighbours.get(w.word.lower()):
                found[span] = WordOptions(tuple(neighbours[w.word.lower()]), "embedding")
        options[text] = found
    return [options[text] for text in texts]
