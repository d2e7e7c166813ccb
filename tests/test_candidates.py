"""Candidates: vector files in every format, batched nearest neighbours, and the masked LM in its three modes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from augment.candidates import (CandidateError, MaskedLMProposer, load_vectors, nearest_neighbours, propose,
                                save_vectors, train_vectors, vectors_format)
from augment.words import eligible_words

WORDS = ["king", "queen", "man", "woman", "paris", "France", "london", "1999", "the", "city"]


@pytest.fixture(scope="module")
def small_vectors():
    from gensim.models import KeyedVectors

    rng = np.random.default_rng(0)
    vectors = KeyedVectors(vector_size=8)
    vectors.add_vectors(WORDS, rng.normal(size=(len(WORDS), 8)).astype(np.float32))
    return vectors


def brute_force(vectors, word, top_k):
    """Neighbours by gensim's own most_similar, with our filters applied after."""
    found = []
    for key, _ in vectors.most_similar(word, topn=len(vectors.index_to_key)):
        if key.isalpha() and len(key) >= 2 and key.lower() != word and key.lower() not in found:
            found.append(key.lower())
    return tuple(found[:top_k])


def test_neighbours_match_gensim_and_ignore_chunking(small_vectors):
    words = ["king", "paris", "city", "unknownword"]
    table = nearest_neighbours(small_vectors, words, top_k=4)
    assert set(table) == {"king", "paris", "city"}  # no vector, no entry
    for word in table:
        assert table[word] == brute_force(small_vectors, word, 4)
        assert "1999" not in table[word] and word not in table[word]
    assert nearest_neighbours(small_vectors, words, top_k=4, query_chunk=1, vocab_chunk=3) == table


def test_every_vector_format_loads_to_the_same_neighbours(small_vectors, tmp_path):
    from gensim.models import FastText
    from gensim.models.fasttext import save_facebook_model

    expected = nearest_neighbours(small_vectors, ["king", "city"], top_k=3)
    small_vectors.save_word2vec_format(str(tmp_path / "w2v.txt"))
    small_vectors.save_word2vec_format(str(tmp_path / "w2v.bin"), binary=True)
    small_vectors.save_word2vec_format(str(tmp_path / "ft.vec"))
    lines = (tmp_path / "w2v.txt").read_text(encoding="utf-8").splitlines()[1:]  # GloVe: no header line
    (tmp_path / "glove.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    save_vectors(small_vectors, tmp_path / "vectors.kv")
    for name, fmt in [("w2v.txt", "word2vec"), ("glove.txt", "glove"), ("w2v.bin", "word2vec_binary"),
                      ("ft.vec", "fasttext"), ("vectors.kv", "keyedvectors")]:
        assert vectors_format(tmp_path / name) == fmt
        assert nearest_neighbours(load_vectors(tmp_path / name), ["king", "city"], top_k=3) == expected, name
    assert isinstance(load_vectors(tmp_path / "vectors.kv").vectors, np.memmap)  # mapped, not copied

    model = FastText(sentences=[["king", "queen", "city"]] * 5, vector_size=8, min_count=1, epochs=1, workers=1)
    save_facebook_model(model, str(tmp_path / "model.bin"))
    fasttext = load_vectors(tmp_path / "model.bin", "fasttext")
    assert set(nearest_neighbours(fasttext, ["kingdom"], top_k=2)["kingdom"]) <= {"king", "queen", "city"}

    with pytest.raises(CandidateError, match="valid formats"):
        vectors_format(tmp_path / "vectors.xyz")


def test_trained_vectors_are_the_same_in_another_process(tmp_path):
    sentences = [["the", "king", "rules", "the", "city"], ["the", "queen", "rules", "the", "land"]] * 20
    here = train_vectors(sentences, dim=8, epochs=2, min_count=1, seed=3)
    code = ("import json, sys; from augment.candidates import train_vectors; "
            "v = train_vectors(json.loads(sys.argv[1]), 8, 2, 1, 3); print(json.dumps(v.vectors.tolist()))")
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(sentences)], capture_output=True, text=True,
                         env=env, check=True, cwd=os.getcwd())
    assert np.array_equal(np.asarray(json.loads(out.stdout), dtype=np.float32), here.vectors)
    assert len(train_vectors([["rare"]], dim=8, epochs=1, min_count=2, seed=0).index_to_key) == 0


@pytest.fixture(scope="module")
def proposer(tiny_model_factory):
    return MaskedLMProposer(str(tiny_model_factory(task="mlm")), batch_size=4)


PARAGRAPH = ("The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, a region "
             "in France. They were descended from Norse raiders and pirates from Denmark, Iceland and Norway.")


def test_only_single_wordpieces_are_masked_and_candidates_are_words(proposer):
    words = eligible_words(PARAGRAPH)
    encoded = proposer.encode(PARAGRAPH, words)
    pieces = {PARAGRAPH[s:e]: len(proposer.tokenizer.tokenize(PARAGRAPH[s:e])) for s, e in
              [(w.start, w.end) for w in words]}
    assert {PARAGRAPH[s:e] for s, e in encoded.maskable} == {w for w, n in pieces.items() if n == 1}
    found = proposer.exact(encoded, top_k=5)
    for (start, end), candidates in found.items():
        assert len(candidates) == 5
        assert all(c.isalpha() and not c.startswith("##") for c in candidates)
        assert PARAGRAPH[start:end].lower() not in candidates


def test_exact_equals_the_naive_loop(proposer):
    encoded = proposer.encode(PARAGRAPH, eligible_words(PARAGRAPH))
    assert proposer.exact(encoded, top_k=6) == proposer.reference(encoded, top_k=6)


def test_exact_windows_a_text_longer_than_the_model(tiny_model_factory):
    short = MaskedLMProposer(str(tiny_model_factory(task="mlm", max_positions=32)))
    encoded = short.encode(PARAGRAPH * 2, eligible_words(PARAGRAPH * 2))
    assert len(encoded.ids) > short.max_content
    assert short.exact(encoded, top_k=3) == short.reference(encoded, top_k=3)


@pytest.mark.parametrize("max_positions", [512, 32])
def test_fast_plan_separates_masks_and_keeps_context(tiny_model_factory, max_positions):
    mlm = MaskedLMProposer(str(tiny_model_factory(task="mlm", max_positions=max_positions)))
    text = PARAGRAPH * 3
    encoded = mlm.encode(text, eligible_words(text))
    rows = mlm.plan_fast(encoded, window=8, gap=3)
    masked = sorted(p for _, _, group in rows for p in group)
    assert masked == sorted(encoded.maskable.values())  # every word exactly once
    for start, end, group in rows:
        assert all(b - a >= 3 for a, b in zip(group, group[1:]))
        assert all(p - start >= min(8, p) and end - p - 1 >= min(8, len(encoded.ids) - p - 1) for p in group)
        assert end - start <= mlm.max_content
    if len(encoded.ids) <= mlm.max_content:
        assert len(rows) <= 4  # one row per pass: about `gap` passes
    else:
        assert len(rows) < len(masked) / 2  # several words per row all the same


def test_fast_candidates_do_not_depend_on_the_other_texts(proposer):
    other = "Denmark and Norway sent raiders and traders to every coast of Europe for centuries."
    alone = proposer.fast([proposer.encode(PARAGRAPH, eligible_words(PARAGRAPH))], top_k=5, window=16)
    together = proposer.fast([proposer.encode(other, eligible_words(other)),
                              proposer.encode(PARAGRAPH, eligible_words(PARAGRAPH))], top_k=5, window=16)
    assert alone[0] == together[1]
    assert set(alone[0]) == set(proposer.encode(PARAGRAPH, eligible_words(PARAGRAPH)).maskable)


def test_a_bpe_word_is_masked_only_where_it_is_one_token(tiny_bpe_mlm_factory):
    mlm = MaskedLMProposer(str(tiny_bpe_mlm_factory()))
    text = "Paris is in France (Paris) and people visit Paris."
    maskable = {start for start, _ in mlm.encode(text, eligible_words(text)).maskable}
    assert [start in maskable for start in (0, 20, 44)] == [False, False, True]  # Par|is, (|Par|is, ĠParis


def test_roberta_positions_reserved_for_padding_are_not_used(tiny_bpe_mlm_factory):
    mlm = MaskedLMProposer(str(tiny_bpe_mlm_factory(max_positions=34)))
    assert mlm.tokenizer.model_max_length > 10**6  # unset: the model's positions are the only limit
    assert mlm.max_length == 32  # RoBERTa numbers positions from padding_idx + 1 = 2
    text = "People visit Paris and London every year. " * 6
    encoded = mlm.encode(text, eligible_words(text))
    assert len(encoded.ids) > mlm.max_content
    assert mlm.exact(encoded, top_k=3) == mlm.reference(encoded, top_k=3)  # 34-token rows overran the positions


def test_batches_hold_rows_of_similar_length(proposer):
    assert proposer._batches([10, 10, 9, 7, 3]) == [[0, 1, 2], [3], [4]]  # 7 < 0.8 * 10: a new batch
    assert proposer._batches([5] * 9) == [[0, 1, 2, 3], [4, 5, 6, 7], [8]]  # batch_size 4


def test_random_init_is_the_same_model_in_every_worker(tiny_model_factory):
    import torch

    folder = str(tiny_model_factory(task="mlm"))
    a, b = MaskedLMProposer(folder, "random", seed=7), MaskedLMProposer(folder, "random", seed=7)
    pretrained = MaskedLMProposer(folder)
    for (name, x), (_, y), (_, z) in zip(a.model.named_parameters(), b.model.named_parameters(),
                                         pretrained.model.named_parameters()):
        assert torch.equal(x, y), name
    assert not all(torch.equal(x, z) for x, z in zip(a.model.parameters(), pretrained.model.parameters()))


def test_propose_routes_words_to_their_source(proposer):
    text = "Normandy welcomed the raiders from Scandinavia."
    neighbours = {"normandy": ("brittany",), "scandinavia": ("nordic", "baltic"), "raiders": ("unused",)}
    (with_lm,) = propose([text], neighbours, proposer, "exact", top_k=3, window=16)
    sources = {text[s:e]: o.source for (s, e), o in with_lm.items()}
    single = {text[s:e] for s, e in proposer.encode(text, eligible_words(text)).maskable}
    assert {w for w, src in sources.items() if src == "mlm"} == single
    assert {w for w, src in sources.items() if src == "embedding"} <= {"Normandy", "Scandinavia"}
    (without_lm,) = propose([text], neighbours, None, "fast", top_k=3, window=16)
    assert {text[s:e]: o.candidates for (s, e), o in without_lm.items()} == {
        "Normandy": ("brittany",), "raiders": ("unused",), "Scandinavia": ("nordic", "baltic")}
