"""`file_lock`: an exclusive `flock` held for a block (with `wait=False`, only if it is free). Apart from
`core.shards`, so that the run store (and with it `python -m jobs list`) takes its locks without importing
pyarrow."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def file_lock(path: str | os.PathLike[str], wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock on `path` (created if needed) for the block: other processes wait for it. With
    `wait=False` the block gets False, holding nothing, when another process holds the lock."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
