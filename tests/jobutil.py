"""Helpers for tests that run real jobs: a tiny spec over the quickstart sample, and the CLI as a subprocess."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import yaml

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart"


def tiny_qa_spec(**overrides: Any) -> dict[str, Any]:
    """The quickstart job cut down to seconds: fewer questions, fewer variants, one short epoch per phase."""
    spec = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
    spec["name"] = "tiny"
    spec["data"] = {"train": {"path": str(QUICKSTART / "sample-train.json"), "limit": 40},
                    "eval": {"path": str(QUICKSTART / "sample-dev.json"), "limit": 16}}
    spec["teachers"][0]["model"] = str(QUICKSTART / "tiny-bert")
    spec["teachers"][0]["finetune"] = {"epochs": 1, "batch_size": 16, "learning_rate": 1e-3}
    spec["augment"].update(factor=2, mlm_model=str(QUICKSTART / "tiny-bert"), examples_per_shard=10)
    spec["label"] = {"batch_size": 16, "examples_per_shard": 20}
    spec["distill"]["intermediate"].update(epochs=1, checkpoint_every=2, log_every=1)
    spec["distill"]["prediction"].update(epochs=1, checkpoint_every=2, log_every=1)
    spec["evaluate"].update(speed_repeats=2)
    for path, value in overrides.items():
        node = spec
        *parents, leaf = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return spec


def write_spec(folder: Path, spec: dict[str, Any], name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def jobs_cli(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "jobs", *args], cwd=REPO, capture_output=True, text=True,
                            timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if check and result.returncode != 0:
        raise AssertionError(f"python -m jobs {' '.join(args)} exited {result.returncode}\n"
                             f"stdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}")
    return result


def job_state(root: Path, job_id: str) -> dict[str, Any]:
    """The job's state as `status --json` prints it (the CLI works out whether a local job is still alive)."""
    return json.loads(jobs_cli("status", job_id, "--json", "--root", str(root)).stdout)


def stored_state(root: Path, job_id: str) -> dict[str, Any]:
    """The state file itself: cheap enough to poll many times a second."""
    return json.loads((root / job_id / "state.json").read_text())


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def folder_bytes(folder: Path, pattern: str = "**/*.parquet") -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.glob(pattern))}


def foreground_job_id(stdout: str) -> str:
    """The job id from a foreground `submit`, whose last line is `job ID: STATUS (FOLDER)`."""
    return stdout.strip().splitlines()[-1].split()[1].rstrip(":")


def parquet_rows(folder: Path) -> int:
    """Rows in every Parquet shard under `folder` (its shards/ folder), read from the footers only."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(path).metadata.num_rows for path in sorted(folder.glob("shards/*.parquet")))


def jsonl_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def tensorboard_scalars(folder: Path) -> dict[str, dict[int, float]]:
    """The scalars of every TensorBoard event file under `folder`, by tag then step (a later file wins).

    Event files are TFRecord files of `Event` protos: per record a little-endian uint64 length, its CRC, the
    bytes, their CRC. Read here with tensorboardX's protos, so nothing beyond what the project installs is needed.
    """
    import struct

    from tensorboardX.proto.event_pb2 import Event

    scalars: dict[str, dict[int, float]] = {}
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack_from("<Q", data, offset)
            event = Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


def mrqa_lines(articles: list[dict], dataset: str) -> list[str]:
    """SQuAD articles as MRQA shared-task lines: a header, then a line per paragraph with its answerable questions,
    each answer text once with all its spans (end inclusive) and the texts as the gold `answers`."""
    lines = [json.dumps({"header": {"dataset": dataset, "split": "dev"}})]
    for article in articles:
        for p, paragraph in enumerate(article["paragraphs"]):
            qas = []
            for qa in paragraph["qas"]:
                if qa.get("is_impossible"):
                    continue
                spans: dict[str, list[list[int]]] = {}
                for answer in qa["answers"]:
                    span = [answer["answer_start"], answer["answer_start"] + len(answer["text"]) - 1]
                    if span not in spans.setdefault(answer["text"], []):
                        spans[answer["text"]].append(span)
                qas.append({"qid": qa["id"], "question": qa["question"], "answers": list(spans),
                            "detected_answers": [{"text": text, "char_spans": text_spans, "token_spans": [[0, 0]]}
                                                 for text, text_spans in spans.items()]})
            lines.append(json.dumps({"id": f"{article['title']}-{p}", "context": paragraph["context"], "qas": qas}))
    return lines


def write_mrqa(path: Path, articles: list[dict], dataset: str) -> Path:
    """`mrqa_lines` of `articles`, gzipped at `path` (name it <dataset>.jsonl.gz, as the shared task does)."""
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(mrqa_lines(articles, dataset)) + "\n")
    return path
