"""Training data: a features folder as the trainer reads it, memory-mapped, with batches prepared ahead.

At the reference recipe's size (2.8M features, about 500M tokens) the feature shards cannot be read into one
Arrow table per training process: that costs gigabytes per rank, and `Table.take` on chunked list columns
grows with the table. So the first training run on a features folder writes the columns it reads once, flat,
into `features_dir/training_view/`, and every phase and every rank memory-maps them. A batch is then one gather
per column at known offsets (`distill.features.FlatFeatures.batch`), whatever the number of features, and the
pages live in the page cache, shared by every rank on a node instead of copied into each.

    training_view/
      view.json        the shards it was built from (name, bytes, mtime), features, tokens, and per column its
                       file, dtype, shape and null count; written last, so a view it lists is whole
      offsets.bin      (N + 1,) int64: feature i's tokens are [offsets[i], offsets[i + 1]) of every token column
      <column>.bin     token columns flat, (tokens,); per-feature columns (N,) or (N, C); raw little-endian

Columns are added as phases ask for them (phase 1 reads only inputs, phase 2 adds labels and teacher logits);
a file lock makes concurrent builders (two ranks, two jobs) take turns, and a view whose shards changed is
rebuilt. `prefetch` collates the next batches in a background thread while the current one trains.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow.parquet as pq

from augment.writers import file_lock, shard_paths
from distill.features import TOKEN_COLUMNS, FeaturesError, FlatFeatures, flatten_features

VIEW_DIR = "training_view"
MANIFEST = "view.json"
_T = TypeVar("_T")


class TrainingDataError(RuntimeError):
    """A features folder the trainer cannot read: no shards, a missing column, a view that cannot be written."""


def open_training_view(features_dir: Path, columns: Sequence[str]) -> FlatFeatures:
    """The named feature columns of `features_dir`, memory-mapped from its training view (built when missing).

    Columns null on every feature are absent from the result's `columns` (`null_counts` has them); a column
    null on only some features makes the build fail with the counts.
    """
    features_dir = Path(features_dir)
    try:
        shards = shard_paths(features_dir)
    except FileNotFoundError as err:
        raise TrainingDataError(f"{err}; run the label stage (which writes the features) first") from None
    present = pq.read_schema(shards[0]).names
    missing = [c for c in columns if c not in present]
    if missing:
        raise TrainingDataError(f"{shards[0]} lacks column(s) {missing} that this phase reads; were the features "
                                "built for another task?")
    view = features_dir / VIEW_DIR
    try:
        view.mkdir(exist_ok=True)
    except OSError as err:
        raise TrainingDataError(f"cannot create the training view {view} ({err}); the features folder must be "
                                "writable by the training job") from None
    with file_lock(view / ".lock"):
        manifest = _read_manifest(view, shards)
        wanted = ["input_ids", *(c for c in columns if c != "input_ids")]
        todo = [c for c in wanted if c not in manifest["columns"]]
        if todo:
            manifest = _build(view, shards, todo, manifest)
    if manifest["features"] == 0:
        raise TrainingDataError(f"the feature shards under {features_dir} hold no rows")
    offsets = _map(view, manifest["offsets"])
    entries = {name: manifest["columns"][name] for name in wanted}
    for name, entry in entries.items():
        if 0 < entry["nulls"] < manifest["features"] and name.startswith("teacher"):
            raise TrainingDataError(f"{entry['nulls']} of {manifest['features']} features under {features_dir} "
                                    f"have no {name}; relabel the folder so that every feature has one")
    return FlatFeatures(offsets=offsets,
                        columns={n: _map(view, e) for n, e in entries.items() if e["file"] is not None},
                        null_counts={n: e["nulls"] for n, e in entries.items()})


def _fingerprint(shards: list[Path]) -> list[dict[str, Any]]:
    return [{"name": p.name, "bytes": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns} for p in shards]


def _read_manifest(view: Path, shards: list[Path]) -> dict[str, Any]:
    """The view's manifest when it was built from these shards; else an empty one (the view is cleared)."""
    path = view / MANIFEST
    if path.exists():
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if manifest["shards"] == _fingerprint(shards):
            return manifest
    for stale in view.iterdir():
        if stale.name != ".lock":
            stale.unlink() if stale.is_file() else shutil.rmtree(stale)
    return {"shards": _fingerprint(shards), "features": None, "tokens": None, "offsets": None, "columns": {}}


def _build(view: Path, shards: list[Path], names: list[str], manifest: dict[str, Any]) -> dict[str, Any]:
    """Append `names` to the view in one streaming pass over the shards; the manifest is replaced last."""
    for stale in view.glob(".*.tmp"):  # left by a build that was killed; never listed in the manifest
        stale.unlink()
    new_offsets = manifest["offsets"] is None
    known_offsets = None if new_offsets else _map(view, manifest["offsets"])
    outputs = {name: open(view / f".{name}.bin.tmp", "wb") for name in (["offsets"] if new_offsets else []) + names}
    if new_offsets:
        outputs["offsets"].write(np.zeros(1, dtype=np.int64).tobytes())
    kinds: dict[str, tuple[str, tuple[int, ...]]] = {}
    nulls = dict.fromkeys(names, 0)
    features = tokens = 0
    read = sorted({"input_ids", *names})
    try:
        for shard in shards:
            parquet = pq.ParquetFile(shard)
            # a row group at a time (the label stage writes one per shard, ~1k features): bounded memory, and
            # its columns decode on parallel threads
            for group in range(parquet.num_row_groups):
                batch = parquet.read_row_group(group, columns=read, use_threads=True)
                try:
                    flat = flatten_features(batch, names)
                except FeaturesError as err:
                    raise TrainingDataError(f"{shard}: {err}") from None
                ends = tokens + np.cumsum(flat.lengths)  # (n,) where each feature's tokens end
                if new_offsets:
                    outputs["offsets"].write(ends.astype(np.int64).tobytes())
                elif not np.array_equal(known_offsets[features + 1:features + 1 + len(ends)], ends):
                    raise TrainingDataError(f"{shard} no longer matches the training view's offsets; delete "
                                            f"{view} and rerun")
                for name in names:
                    nulls[name] += flat.null_counts[name]
                    if name in flat.values:
                        values = np.ascontiguousarray(flat.values[name])
                        kind = (values.dtype.str, values.shape[1:])
                        if kinds.setdefault(name, kind) != kind:
                            raise TrainingDataError(f"{shard}: column {name} changes type or width between "
                                                    f"batches ({kinds[name]} then {kind})")
                        outputs[name].write(values.tobytes())
                features += len(ends)
                tokens = int(ends[-1]) if len(ends) else tokens
        for output in outputs.values():  # on disk before the manifest can name them
            output.flush()
            os.fsync(output.fileno())
    finally:
        for output in outputs.values():
            output.close()
    if not new_offsets and features != manifest["features"]:
        raise TrainingDataError(f"the shards hold {features} features, the training view {manifest['features']}; "
                                f"delete {view} and rerun")
    if new_offsets:
        os.replace(view / ".offsets.bin.tmp", view / "offsets.bin")
        manifest |= {"features": features, "tokens": tokens,
                     "offsets": {"file": "offsets.bin", "dtype": "<i8", "shape": [features + 1]}}
    for name in names:
        if nulls[name] or name not in kinds:  # collated only where every feature has a value, as pad_batch
            (view / f".{name}.bin.tmp").unlink()
            manifest["columns"][name] = {"file": None, "dtype": None, "shape": None, "nulls": nulls[name]}
            continue
        dtype, width = kinds[name]
        rows = tokens if name in TOKEN_COLUMNS else features
        os.replace(view / f".{name}.bin.tmp", view / f"{name}.bin")
        manifest["columns"][name] = {"file": f"{name}.bin", "dtype": dtype, "shape": [rows, *width], "nulls": 0}
    temp = view / f".{MANIFEST}.tmp"
    temp.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    os.replace(temp, view / MANIFEST)
    return manifest


def _map(view: Path, entry: dict[str, Any]) -> np.ndarray:
    """A read-only memory map of one view file: pages come from the page cache, shared between processes."""
    shape = tuple(entry["shape"])
    if shape[0] == 0:
        return np.zeros(shape, dtype=entry["dtype"])  # mmap cannot map an empty file
    return np.memmap(view / entry["file"], dtype=np.dtype(entry["dtype"]), mode="r", shape=shape)


def prefetch(items: Iterable[_T], prepare: Callable[[_T], Any], depth: int = 4) -> Iterator[Any]:
    """`prepare(item)` for each item, in order, computed up to `depth` items ahead in a background thread.

    The trainer collates (and pins) the next micro-batches while the device computes the current one. An
    exception in `prepare` is raised here, at the item it failed on; closing the generator (or leaving the loop
    early) stops the thread.
    """
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def work() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                ready.put((prepare(item), None))
        except BaseException as err:  # handed to the consumer, which raises it
            ready.put((None, err))
        ready.put((done, None))

    thread = threading.Thread(target=work, name="distill-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            value, error = ready.get()
            if error is not None:
                raise error
            if value is done:
                return
            yield value
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                ready.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()
