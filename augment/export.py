"""Exporting an examples folder (read, augmented or labelled) in a format other tools read.

`python -m augment export EXAMPLES_DIR --format squad --out FILE` writes the SQuAD 2.0 JSON file; the examples
read back from it (`augment.readers.read_examples`) are the examples exported, variants and aliases included.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from core.schema import QA_SCHEMA
from core.shards import atomic_output, iter_shard_batches

#: What `export` writes; one function per format.
EXPORT_FORMATS = ("squad",)


class ExportError(ValueError):
    """Examples that the format asked for cannot hold (classification examples as SQuAD)."""


def export_squad_json(examples_dir: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """Write the QA examples of `examples_dir` as a SQuAD 2.0 JSON file at `path` (atomically).

    Rows are grouped into articles by title and, within an article, into paragraphs by identical context, each
    group in the order it first appears; questions keep their order. Augmented variants (`variant` > 0, id
    `<source_id>#aug<k>`) usually have a context of their own and so a paragraph of their own. They also carry
    `source_id`, `variant` and `substitutions` as extra keys of their question, as MRQA examples carry their
    `gold_answers`, which SQuAD tools ignore and `augment.readers.read_examples` reads back, so examples -> JSON ->
    examples is lossless.
    """
    articles: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for batch in iter_shard_batches(examples_dir):
        missing = [name for name in QA_SCHEMA.names if name not in batch.schema.names]
        if missing:
            raise ExportError(f"{examples_dir} does not hold QA examples: columns {missing} are missing "
                             f"(found {batch.schema.names})")
        for row in batch.to_pylist():
            answers = [{"text": text, "answer_start": start}
                       for text, start in zip(row["answers"]["text"], row["answers"]["answer_start"])]
            qa: dict[str, Any] = {"id": row["id"], "question": row["question"], "answers": answers,
                                  "is_impossible": row["is_impossible"]}
            if row["variant"] != 0 or row["source_id"] != row["id"] or row["substitutions"]:
                qa |= {"source_id": row["source_id"], "variant": row["variant"],
                       "substitutions": row["substitutions"]}
            if row["gold_answers"] is not None:
                qa["gold_answers"] = row["gold_answers"]
            paragraphs = articles.setdefault(row["title"], {})
            paragraphs.setdefault(row["context"], []).append(qa)
    document = {"version": "v2.0", "data": [
        {"title": title, "paragraphs": [{"context": context, "qas": qas} for context, qas in paragraphs.items()]}
        for title, paragraphs in articles.items()
    ]}
    with atomic_output(path) as temp:
        with open(temp, "w", encoding="utf-8") as handle:
            json.dump(document, handle, ensure_ascii=False)
    return Path(path)

