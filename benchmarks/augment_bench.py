"""Benchmark of the augmentation engine on SQuAD 2.0 dev paragraphs, all measurements in one run.

    python benchmarks/augment_bench.py --out benchmarks/results/augment.json   # full: ~10 min on 2 idle cores
    python benchmarks/augment_bench.py --slow-paragraphs 1 --paragraphs 12 --recall-paragraphs 40 \\
        --train-seconds 120 --pipeline-paragraphs 40                           # reduced: ~5 min

Measures, with a bert-base-sized masked LM (BertConfig defaults, random weights: timing only) and the real
uncased vocabulary, top_k 20:

1. naive: per paragraph, one full-length forward per maskable word with the LM head on every position (what
   Haystack's augment_squad, TinyBERT's script and nlpaug do), on `--slow-paragraphs` paragraphs;
2. exact mode (same candidates, masked copies of a paragraph batched, head only at the masked position), on
   the same paragraphs;
3. fast mode on `--paragraphs` paragraphs;
   paragraphs/second of each, hence fast_vs_exact_speedup (target >= 20) and exact_vs_naive_speedup (>= 1.2);
4. candidate_recall: share of exact mode's top-k that fast mode also proposes (target >= 0.8), with a small
   masked LM (ConvBERT 2x128) trained here for `--train-seconds` on the dev contexts (random weights would say
   nothing), also for other mask gaps; `exact_topk_overlap_between_words` checks that the model uses context
   at all (1.0: every word gets the same candidates, and recall would be meaningless);
5. two_worker_speedup: wall time of the full Ray pipeline (factor 20) with 1 worker over 2 workers, one CPU
   and one torch thread each (target >= 1.7 on 2 cores), and whether both outputs are byte-identical;
   worker_busy_seconds (time spent on blocks, summed over workers) should be about equal in both runs: when
   the 2-worker figure is much larger, the two cores were not free (another process was running);
6. peak_rss_mb_per_worker, and whether any worker loaded word vectors (they should not: neighbours are computed
   once in the driver and shipped per block).

The slow paragraphs are those of the fast set whose maskable-word counts are closest to the set's mean, so the
per-paragraph rates compare like with like; words/second speedups are reported too as a cross-check.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere

SHARED = REPO.parent / "shared"
SQUAD_DEV = SHARED / "data" / "squad2" / "dev-v2.0.json"
TOKENIZER = SHARED / "tokenizers" / "bert-base-uncased"
TOP_K = 20
FACTOR = 20


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paragraphs", type=int, default=24, help="fast mode paragraphs (default %(default)s)")
    parser.add_argument("--slow-paragraphs", type=int, default=2,
                        help="naive and exact paragraphs; the naive loop is ~1-2 min each (default %(default)s)")
    parser.add_argument("--recall-paragraphs", type=int, default=120, help="paragraphs for candidate_recall")
    parser.add_argument("--train-seconds", type=float, default=180,
                        help="training budget of the small masked LM (default %(default)s)")
    parser.add_argument("--pipeline-paragraphs", type=int, default=200,
                        help="paragraphs for each Ray pipeline run: enough work (~2 min for one worker) that the "
                             "fixed ~10 s of reading, vectors and actor start-up matter little (default %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for measurements 1-4")
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a temp folder, removed after)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    return parser.parse_args(argv)


def dev_paragraphs() -> list[dict]:
    """Every dev paragraph with its article title, in file order."""
    data = json.loads(SQUAD_DEV.read_text(encoding="utf-8"))["data"]
    return [{"title": a["title"], **p} for a in data for p in a["paragraphs"]]


def spread(items: list, n: int) -> list:
    """n items evenly spaced over `items` (all kinds of articles, not only the first)."""
    step = max(1, len(items) // max(n, 1))
    return items[::step][:n]


def bert_base_folder(workdir: Path) -> Path:
    """A bert-base-sized masked LM folder: config (defaults) and the real tokenizer, no weights (init random)."""
    from transformers import AutoTokenizer, BertConfig

    folder = workdir / "bert-base-random"
    BertConfig().save_pretrained(folder)
    AutoTokenizer.from_pretrained(TOKENIZER).save_pretrained(folder)
    return folder


def timed(fn):
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


# ---------------------------------------------------------------------------------------------------------------
# 1-3: naive, exact, fast


def speed(args, workdir: Path, paragraphs: list[dict]) -> dict:
    import torch

    from augment.candidates import FAST_MASK_GAP, MaskedLMProposer
    from augment.words import eligible_words

    mlm = MaskedLMProposer(str(bert_base_folder(workdir)), "random", seed=0, batch_size=32)
    texts = [p["context"] for p in spread(paragraphs, args.paragraphs)]
    encoded = [mlm.encode(t, eligible_words(t)) for t in texts]
    words = [len(e.maskable) for e in encoded]
    mean = sum(words) / len(words)
    slow = sorted(range(len(encoded)), key=lambda i: (abs(words[i] - mean), i))[:args.slow_paragraphs]
    slow_words = sum(words[i] for i in slow)
    print(f"speed: {len(encoded)} paragraphs ({sum(words)} maskable words, mean {mean:.1f}); naive and exact on "
          f"{len(slow)} paragraphs ({slow_words} words); torch threads {torch.get_num_threads()}", flush=True)

    naive, naive_s = timed(lambda: [mlm.reference(encoded[i], TOP_K) for i in slow])
    print(f"  naive  {naive_s:8.1f} s", flush=True)
    exact, exact_s = timed(lambda: [mlm.exact(encoded[i], TOP_K) for i in slow])
    print(f"  exact  {exact_s:8.1f} s", flush=True)
    chunk = 16  # paragraphs per call, as in a pipeline block
    _, fast_s = timed(lambda: [mlm.fast(encoded[i:i + chunk], TOP_K, 64) for i in range(0, len(encoded), chunk)])
    print(f"  fast   {fast_s:8.1f} s", flush=True)

    agree = [n[span] == e[span] for n, e in zip(naive, exact) for span in n]
    rates = {"naive": len(slow) / naive_s, "exact": len(slow) / exact_s, "fast": len(encoded) / fast_s}
    word_rates = {"naive": slow_words / naive_s, "exact": slow_words / exact_s, "fast": sum(words) / fast_s}
    return {
        "paragraphs_per_second": {k: round(v, 4) for k, v in rates.items()},
        "maskable_words_per_second": {k: round(v, 2) for k, v in word_rates.items()},
        "seconds": {"naive": round(naive_s, 2), "exact": round(exact_s, 2), "fast": round(fast_s, 2)},
        "fast_vs_exact_speedup": round(rates["fast"] / rates["exact"], 2),
        "exact_vs_naive_speedup": round(rates["exact"] / rates["naive"], 3),
        "fast_vs_exact_speedup_per_word": round(word_rates["fast"] / word_rates["exact"], 2),
        "exact_vs_naive_speedup_per_word": round(word_rates["exact"] / word_rates["naive"], 3),
        "exact_equals_naive_share": round(sum(agree) / max(len(agree), 1), 4),
        "fast_mask_gap": FAST_MASK_GAP, "mlm_window": 64,
        "counts": {"fast": len(encoded), "slow": len(slow), "mean_maskable_words": round(mean, 1)},
    }


# ---------------------------------------------------------------------------------------------------------------
# 4: recall of fast against exact with a small trained masked LM


POSITIONS = 256  # recall is measured on paragraphs of at most this many wordpieces: every position is trained
TRAIN_LENGTH = 64  # wordpieces per training row, placed at a random offset among the POSITIONS


def train_small_mlm(contexts: list[str], folder: Path, seconds: float, seed: int = 0) -> dict:
    """Train a small masked LM on `contexts` for about `seconds`, and save it with the tokenizer to `folder`.

    ConvBERT (2 layers, 128 wide): its convolutions mix neighbouring words from the first step, where a BERT of
    this size sits on the unigram plateau (loss ~7.1 on these contexts) for far longer than a few CPU minutes;
    and it depends on nearby words at least as much as BERT does, so recall measured with it is not flattering.
    Rows are TRAIN_LENGTH-wordpiece windows of all contexts joined, at random position offsets; 15% of tokens
    are scored (80% [MASK], 10% a random corpus token, 10% kept); the softmax runs over the corpus's own
    wordpieces only (a third of the vocabulary, so 3x cheaper) and every other token gets a -1e4 output bias,
    since this model knows nothing else.
    """
    import torch
    from transformers import AutoTokenizer, ConvBertConfig, ConvBertForMaskedLM

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    torch.manual_seed(seed)
    model = ConvBertForMaskedLM(ConvBertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=128, embedding_size=128, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=512, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        max_position_embeddings=512))
    stream = torch.tensor([t for ids in tokenizer(contexts, add_special_tokens=False, verbose=False)["input_ids"]
                           for t in [*ids, tokenizer.sep_token_id]])
    vocab = torch.unique(stream)  # (V',) the corpus's wordpieces
    index = torch.full((tokenizer.vocab_size,), -1)
    index[vocab] = torch.arange(len(vocab))
    head = model.get_output_embeddings()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01, fused=True)
    generator = torch.Generator().manual_seed(seed)
    special = torch.tensor(sorted(tokenizer.all_special_ids))
    batch = 64
    model.train()
    started, steps, losses = time.perf_counter(), 0, []
    while time.perf_counter() - started < seconds:
        starts = torch.randint(len(stream) - TRAIN_LENGTH, (batch,), generator=generator).tolist()
        ids = torch.stack([stream[s:s + TRAIN_LENGTH] for s in starts])  # (B, T)
        positions = torch.randint(POSITIONS - TRAIN_LENGTH + 1, (batch, 1), generator=generator) + \
            torch.arange(TRAIN_LENGTH)  # (B, T)
        chosen = (torch.rand(ids.shape, generator=generator) < 0.15) & ~torch.isin(ids, special)
        labels = ids[chosen]
        roll = torch.rand(labels.shape, generator=generator)
        noise = vocab[torch.randint(len(vocab), labels.shape, generator=generator)]
        inputs = ids.clone()
        inputs[chosen] = torch.where(roll < 0.8, tokenizer.mask_token_id, torch.where(roll < 0.9, noise, labels))
        for group in optimizer.param_groups:
            group["lr"] = 1e-3 * min(1.0, (steps + 1) / 50)  # warm-up
        hidden = model.convbert(input_ids=inputs, position_ids=positions).last_hidden_state  # (B, T, H)
        scored = model.generator_predictions(hidden[chosen])  # (M, E): the head only where scored
        logits = torch.nn.functional.linear(scored, head.weight[vocab], head.bias[vocab])  # (M, V')
        loss = torch.nn.functional.cross_entropy(logits, index[labels])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        steps += 1
    with torch.no_grad():
        outside = torch.ones(head.bias.shape[0], dtype=torch.bool)
        outside[vocab] = False
        head.bias[outside] = -1e4
    model.eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    tail = losses[-50:]
    return {"model": "ConvBERT 2x128", "steps": steps, "seconds": round(time.perf_counter() - started, 1),
            "first_loss": round(losses[0], 3), "final_loss": round(sum(tail) / max(len(tail), 1), 3),
            "corpus_unigram_entropy": round(_unigram_entropy(stream), 3)}


def _unigram_entropy(stream) -> float:
    """Entropy (nats) of the corpus's wordpiece frequencies: the loss of a model that ignores context."""
    import torch

    counts = torch.bincount(stream).float()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())


def recall(args, workdir: Path, paragraphs: list[dict]) -> dict:
    import torch

    from augment.candidates import FAST_MASK_GAP, MaskedLMProposer
    from augment.words import eligible_words

    folder = workdir / "small-mlm"
    print(f"recall: training a small masked LM for {args.train_seconds:.0f} s on {len(paragraphs)} dev contexts",
          flush=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)  # training is not a timed measurement: use every core
    training = train_small_mlm([p["context"] for p in paragraphs], folder, args.train_seconds)
    torch.set_num_threads(threads)
    print(f"  {training['steps']} steps, loss {training['first_loss']} -> {training['final_loss']} (ignoring context: "
          f"{training['corpus_unigram_entropy']})", flush=True)
    mlm = MaskedLMProposer(str(folder), batch_size=32)
    lengths = [len(ids) for ids in mlm.tokenizer([p["context"] for p in paragraphs], add_special_tokens=False,
                                                 verbose=False)["input_ids"]]
    fits = [p for p, n in zip(paragraphs, lengths) if n <= POSITIONS - 2]
    texts = [p["context"] for p in spread(fits, args.recall_paragraphs)]
    encoded = [mlm.encode(t, eligible_words(t)) for t in texts]
    exact = [mlm.exact(e, TOP_K) for e in encoded]
    by_gap = {}
    for gap in sorted({2, 3, 4, FAST_MASK_GAP}):
        fast = [f for i in range(0, len(encoded), 16) for f in mlm.fast(encoded[i:i + 16], TOP_K, 64, gap=gap)]
        shares = [len(set(f[span]) & set(e[span])) / len(e[span]) for f, e in zip(fast, exact) for span in e
                  if e[span]]
        by_gap[gap] = round(sum(shares) / len(shares), 4)
        print(f"  gap {gap}: recall {by_gap[gap]:.3f}", flush=True)
    # Recall means something only if the model's candidates depend on the context: the top-k of two different
    # words of a paragraph should differ (an untrained model proposes the same frequent words everywhere).
    lists = [e[span] for e in exact for span in e if e[span]]
    overlap = [len(set(a) & set(b)) / max(len(a), 1) for a, b in zip(lists, lists[1:])]
    training["exact_topk_overlap_between_words"] = round(sum(overlap) / max(len(overlap), 1), 4)
    print(f"  top-k overlap between neighbouring words (context sensitivity; 1 = none): "
          f"{training['exact_topk_overlap_between_words']:.3f}", flush=True)
    return {"candidate_recall": by_gap[FAST_MASK_GAP], "candidate_recall_by_gap": by_gap,
            "recall_paragraphs": len(texts), "small_mlm": training}


# ---------------------------------------------------------------------------------------------------------------
# 5-6: the Ray pipeline with 1 and 2 workers


def pipeline(args, workdir: Path, paragraphs: list[dict]) -> dict:
    import ray

    from augment.pipeline import augment_examples
    from augment.readers import read_examples
    from augment.spec import AugmentSpec, DataSource
    from core.resources import ResourcesSpec

    chosen = spread(paragraphs, args.pipeline_paragraphs)
    squad = workdir / "subset.json"
    squad.write_text(json.dumps({"version": "v2.0", "data": [
        {"title": p["title"], "paragraphs": [{"context": p["context"], "qas": p["qas"]}]} for p in chosen]}),
        encoding="utf-8")
    examples = workdir / "examples"
    read_examples(DataSource(path=str(squad)), "qa", None, examples)
    config = AugmentSpec(factor=FACTOR, top_k=TOP_K, mlm_model=str(bert_base_folder(workdir)), mlm_init="random",
                         mlm_mode="fast", examples_per_shard=40)  # ~4 paragraphs a block: many blocks to share
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 configure_logging=False)  # "local": never join a cluster someone else started
    runs = {}
    for workers in (1, 2):
        print(f"pipeline: {len(chosen)} paragraphs, factor {FACTOR}, {workers} worker(s)", flush=True)
        result, seconds = timed(lambda: augment_examples(
            examples, "qa", config, ResourcesSpec(workers=workers, cpus_per_worker=1.0), seed=0,
            out_dir=workdir / f"augmented-{workers}", progress=False))
        runs[workers] = (result, seconds)
        print(f"  {seconds:.1f} s ({result.stats['worker_busy_seconds']:.1f} s busy in workers), "
              f"{result.examples_out} rows, peak RSS/worker {result.stats['peak_rss_mb_per_worker']} MB", flush=True)
    ray.shutdown()
    (one, one_s), (two, two_s) = runs[1], runs[2]
    same = all(Path(a).read_bytes() == Path(b).read_bytes() for a, b in zip(one.shards, two.shards)) and \
        len(one.shards) == len(two.shards)
    vectors = Path(two.vectors_path) if two.vectors_path else None
    return {
        "two_worker_speedup": round(one_s / two_s, 3),
        "pipeline_seconds": {"1": round(one_s, 1), "2": round(two_s, 1)},
        # the time the workers spent on blocks: equal in both runs when two cores were really free
        "worker_busy_seconds": {"1": one.stats["worker_busy_seconds"], "2": two.stats["worker_busy_seconds"]},
        "pipeline_paragraphs": len(chosen), "pipeline_examples_in": one.examples_in,
        "pipeline_examples_out": one.examples_out, "two_worker_output_identical": same,
        "peak_rss_mb_per_worker": two.stats["peak_rss_mb_per_worker"],
        "vectors_loaded_by_workers": two.stats["vectors_loaded_by_workers"],
        "vectors_file_mb": round(Path(f"{vectors}.vectors.npy").stat().st_size / 2**20, 2) if vectors else None,
        "substitutions_by_source": one.stats["substitutions_by_source"],
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="augment-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    paragraphs = dev_paragraphs()
    started = time.perf_counter()
    results: dict = {"machine": {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg(),
                                 "python": platform.python_version(), "torch": torch.__version__}}
    try:
        results |= speed(args, workdir, paragraphs)
        results |= recall(args, workdir, paragraphs)
        results |= pipeline(args, workdir, paragraphs)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    results["paragraphs"] = {"naive": results["counts"]["slow"], "exact": results["counts"]["slow"],
                             "fast": results["counts"]["fast"], "recall": results["recall_paragraphs"],
                             "pipeline": results["pipeline_paragraphs"]}
    results["total_seconds"] = round(time.perf_counter() - started, 1)

    targets = [("fast_vs_exact_speedup", ">= 20"), ("exact_vs_naive_speedup", ">= 1.2"),
               ("candidate_recall", ">= 0.8"), ("two_worker_speedup", ">= 1.7"),
               ("peak_rss_mb_per_worker", ""), ("vectors_loaded_by_workers", "false")]
    print(f"\n{'measure':<28}{'value':>12}  target")
    for key, target in targets:
        print(f"{key:<28}{results[key]!s:>12}  {target}")
    rates = results["paragraphs_per_second"]
    print(f"paragraphs/s naive | exact | fast: {rates['naive']:.4f} | {rates['exact']:.4f} | {rates['fast']:.3f}")
    print(f"paragraphs measured: {results['paragraphs']}; total {results['total_seconds']} s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
