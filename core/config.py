"""The ground rules of every spec section: strict, frozen pydantic models, and references to files or models that
may be written relative to the spec file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo

#: A data file's format by its suffix (a folder or a hub name is an HF dataset).
DATA_FILE_FORMATS = {".json": "squad", ".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".gz": "mrqa"}
#: The job's seed when none is given; the command lines that run one stage alone use it too.
DEFAULT_SEED = 42


def _looks_like_path(value: str) -> bool:
    return value.startswith((".", "/", "~")) or Path(value).suffix.lower() in DATA_FILE_FORMATS


def _resolve_local(value: str, info: ValidationInfo) -> str:
    """Turn a path written relative to the spec file into an absolute one; leave hub names alone.

    A string is a local path when it starts with `.`, `/` or `~`, has a data-file suffix, or names something
    that exists next to the spec; anything else is a hub id, which cannot be checked offline.
    """
    base = Path((info.context or {}).get("base_dir", "."))
    candidate = base / os.path.expanduser(value)
    if _looks_like_path(value) or candidate.exists():
        return str(candidate.resolve())
    return value


Ref = Annotated[str, AfterValidator(_resolve_local)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
