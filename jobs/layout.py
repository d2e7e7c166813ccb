"""Where a stage's outputs lie inside its folder, for the stages and the report that read them."""

from __future__ import annotations

from pathlib import Path

from augment.spec import EvalSource
from jobs.spec import JobSpec


def eval_sets(spec: JobSpec, prepare_dir: Path) -> list[tuple[EvalSource, Path]]:
    """Each eval set and its examples folder: prepare/eval, or prepare/eval/<name> when there are several."""
    if len(spec.data.eval) == 1:
        return [(spec.data.eval[0], prepare_dir / "eval")]
    return [(source, prepare_dir / "eval" / source.name) for source in spec.data.eval]


def finetune_examples(prepare_dir: Path, teacher: int) -> Path:
    """The examples folder of a teacher's own fine-tuning data (teachers[i].finetune.train)."""
    return prepare_dir / "finetune" / f"teacher_{teacher}"
