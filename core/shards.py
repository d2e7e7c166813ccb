"""Writing and reading shards: the folders of numbered Parquet files every stage hands to the next.

An examples folder holds numbered Parquet shards (`shards/part-00000.parquet`, ...) in one of the schemas of
`core.schema`; feature and label folders hold theirs in the schemas of `distill.features`. Every file is written
atomically: to a hidden temp name in the same folder, then moved into place with `os.replace`, so a reader never
sees half a file and a killed job leaves no truncated shard behind (only a `.part-*.tmp-*` file that nothing reads).

Example::

    writer = ShardWriter(out_dir / "shards", QA_SCHEMA, rows_per_shard=10_000)
    for row in rows:
        writer.add(row)
    paths = writer.close()
    table = read_shards(out_dir)
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

SHARD_GLOB = "part-*.parquet"
DEFAULT_ROWS_PER_SHARD = 10_000


@contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside `path`; when the block ends without error, move it onto `path`.

    The temp file sits in the same folder so that `os.replace` is a rename on one filesystem (atomic); on an
    error it is removed and `path` is left as it was.
    """
    path = Path(path)
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        yield temp
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def write_json(path: str | os.PathLike[str], value: Any) -> None:
    """Write `value` as indented UTF-8 JSON to `path`, atomically."""
    with atomic_output(path) as temp:
        temp.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_shard(path: str | os.PathLike[str], rows: list[dict[str, Any]], schema: pa.Schema) -> Path:
    """Write `rows` (dicts keyed by the schema's field names) as one Parquet file at `path`, atomically."""
    table = pa.Table.from_pylist(rows, schema=schema)
    with atomic_output(path) as temp:
        pq.write_table(table, temp)
    return Path(path)


class ShardWriter:
    """Buffer rows and write them as numbered Parquet shards `part-00000.parquet`, `part-00001.parquet`, ...

    Args:
        out_dir: the shards folder; created if needed. It must not already hold shards, so that a folder never
            mixes the output of two runs (clear it first to redo a run).
        schema: the Arrow schema of every row, usually `core.schema.schema_for(task)`.
        rows_per_shard: rows per file; the last shard holds the rest. A writer that got no rows writes one
            empty shard, so the folder still records the schema.
    """

    def __init__(self, out_dir: str | os.PathLike[str], schema: pa.Schema,
                 rows_per_shard: int = DEFAULT_ROWS_PER_SHARD):
        if rows_per_shard <= 0:
            raise ValueError(f"rows_per_shard must be > 0, got {rows_per_shard}")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        existing = sorted(p.name for p in self.out_dir.glob(SHARD_GLOB))
        if existing:
            raise FileExistsError(f"{self.out_dir} already holds {len(existing)} shard(s) ({existing[0]}, ...); "
                                  "remove them or write to an empty folder")
        self.schema = schema
        self.rows_per_shard = rows_per_shard
        self._names = set(schema.names)
        self._buffer: list[dict[str, Any]] = []
        self._paths: list[Path] = []
        self._closed = False

    def add(self, row: dict[str, Any]) -> None:
        """Queue one row; a full buffer is written out as the next shard."""
        if self._closed:
            raise ValueError(f"ShardWriter for {self.out_dir} is closed")
        if row.keys() != self._names:
            # from_pylist would fill a missing field with null and drop an unknown one without a word
            missing, extra = sorted(self._names - row.keys()), sorted(row.keys() - self._names)
            raise ValueError(f"row does not match the schema: missing {missing}, unexpected {extra}; "
                             f"expected fields {self.schema.names}")
        self._buffer.append(row)
        if len(self._buffer) >= self.rows_per_shard:
            self._flush()

    def close(self) -> list[Path]:
        """Write the remaining rows and return every shard written, in order."""
        if not self._closed:
            if self._buffer or not self._paths:
                self._flush()
            self._closed = True
        return list(self._paths)

    def _flush(self) -> None:
        path = self.out_dir / f"part-{len(self._paths):05d}.parquet"
        self._paths.append(write_shard(path, self._buffer, self.schema))
        self._buffer = []


def shard_paths(folder: str | os.PathLike[str]) -> list[Path]:
    """The shards of `folder` in order: a shards folder, or an examples folder holding one in `shards/`."""
    folder = Path(folder)
    if (folder / "shards").is_dir():
        folder = folder / "shards"
    paths = sorted(folder.glob(SHARD_GLOB))
    if not paths:
        raise FileNotFoundError(f"no shards ({SHARD_GLOB}) in {folder}")
    return paths


def read_shards(folder: str | os.PathLike[str]) -> pa.Table:
    """All shards of `folder` (see `shard_paths`) as one table, rows in shard order."""
    paths = shard_paths(folder)
    tables = [pq.read_table(p) for p in paths]
    for path, table in zip(paths[1:], tables[1:]):
        if not table.schema.equals(tables[0].schema):
            raise ValueError(f"{path} has a different schema from {paths[0]}:\n{table.schema}\nexpected:\n"
                             f"{tables[0].schema}")
    return pa.concat_tables(tables)


def read_rows(path: str | os.PathLike[str], start: int, stop: int, columns: list[str] | None = None) -> pa.Table:
    """Rows [start, stop) of one shard, reading only the row groups that hold them."""
    parquet = pq.ParquetFile(path)
    groups, first_row, row = [], None, 0
    for group in range(parquet.metadata.num_row_groups):
        count = parquet.metadata.row_group(group).num_rows
        if row < stop and start < row + count:
            groups.append(group)
            first_row = row if first_row is None else first_row
        row += count
    return parquet.read_row_groups(groups, columns=columns).slice(start - first_row, stop - start)


def iter_shard_batches(folder: str | os.PathLike[str], batch_size: int = DEFAULT_ROWS_PER_SHARD,
                       columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """Stream the rows of `folder`'s shards as record batches of at most `batch_size` rows, in order."""
    for path in shard_paths(folder):
        yield from pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=columns)
