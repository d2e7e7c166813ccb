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
import mmap
import os
import shutil
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.locks import file_lock
from core.shards import shard_paths
from distill.features import TOKEN_COLUMNS, FeaturesError, FlatBatch, FlatFeatures, flatten_features

VIEW_DIR = "training_view"
MANIFEST = "view.json"
_T = TypeVar("_T")
_R = TypeVar("_R")
_READ_THREADS = min(8, os.cpu_count() or 1)
# Linux 5.14+ maps a file's pages into a process in one call (Python 3.13 names the constant)
_MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)


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
    entries = {name: manifest["columns"][name] for name in wanted}
    for name, entry in entries.items():
        if 0 < entry["nulls"] < manifest["features"] and name.startswith("teacher"):
            raise TrainingDataError(f"{entry['nulls']} of {manifest['features']} features under {features_dir} "
                                    f"have no {name}; relabel the folder so that every feature has one")
    files = [manifest["offsets"], *(e for e in entries.values() if e["file"] is not None)]
    populate = sum((view / e["file"]).stat().st_size for e in files) < _available_memory_bytes() // 2
    return FlatFeatures(offsets=_map(view, manifest["offsets"], populate),
                        columns={n: _map(view, e, populate) for n, e in entries.items() if e["file"] is not None},
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
    known_offsets = None if new_offsets else _map(view, manifest["offsets"], populate=False)
    outputs = {name: open(view / f".{name}.bin.tmp", "wb") for name in (["offsets"] if new_offsets else []) + names}
    if new_offsets:
        outputs["offsets"].write(np.zeros(1, dtype=np.int64).tobytes())
    kinds: dict[str, tuple[str, tuple[int, ...]]] = {}
    nulls = dict.fromkeys(names, 0)
    features = tokens = 0
    read = sorted({"input_ids", *names})
    try:
        # shards decode on every core, in order, a few ahead (3M features in 52 s on 2 cores)
        for shard, flats in prefetch(shards, lambda shard: (shard, _read_flat(shard, read, names)),
                                     depth=2 * _READ_THREADS, workers=_READ_THREADS):
            for flat in flats:
                ends = tokens + np.cumsum(flat.lengths)  # (n,) where each feature's tokens end
                if new_offsets:
                    outputs["offsets"].write(ends.astype(np.int64).data)
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
                        outputs[name].write(values.data)
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
    pa.default_memory_pool().release_unused()  # the decode buffers, so that a rank does not keep them
    return manifest


def _read_flat(shard: Path, columns: list[str], names: list[str]) -> list[FlatBatch]:
    """Each row group of one shard (the label stage writes one, ~1k features), flattened."""
    parquet = pq.ParquetFile(shard)
    try:
        return [flatten_features(parquet.read_row_group(group, columns=columns, use_threads=False), names)
                for group in range(parquet.num_row_groups)]
    except FeaturesError as err:
        raise TrainingDataError(f"{shard}: {err}") from None


def _map(view: Path, entry: dict[str, Any], populate: bool) -> np.ndarray:
    """A read-only memory map of one view file: pages come from the page cache, shared between processes.

    With `populate` every page is mapped into this process at once. Otherwise a batch's first touch of a page
    is a page fault, and at 3M features, where an epoch's first batches nearly all touch fresh pages, batches
    took 2.5 times as long as at 100k. Only the page tables are this process's own (2 MB per GB mapped).
    """
    shape = tuple(entry["shape"])
    if shape[0] == 0:
        return np.zeros(shape, dtype=entry["dtype"])  # mmap cannot map an empty file
    with open(view / entry["file"], "rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    if populate and sys.platform == "linux":
        try:
            mapped.madvise(_MADV_POPULATE_READ)
        except OSError:  # a kernel before 5.14: pages are mapped as batches touch them
            pass
    return np.frombuffer(mapped, dtype=np.dtype(entry["dtype"])).reshape(shape)


def _available_memory_bytes() -> int:
    """Memory the kernel could hand out now (page cache included); 0 where /proc/meminfo does not say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def prefetch(items: Iterable[_T], prepare: Callable[[_T], _R], depth: int = 4, workers: int = 1) -> Iterator[_R]:
    """`prepare(item)` for each item, in order, computed up to `depth` items ahead on `workers` background threads.

    The trainer collates (and pins) the next steps' micro-batches while the device computes the current one; the
    view build decodes shards on every core. `items` is drawn here, as results are taken. An exception in
    `prepare` is raised here, at the item it failed on; closing the generator (or leaving the loop early) cancels
    what was not started and waits for the threads.
    """
    pool = ThreadPoolExecutor(workers, thread_name_prefix="distill-prefetch")
    pending: deque[Future[_R]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(prepare, item))
            if len(pending) > depth:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True)
