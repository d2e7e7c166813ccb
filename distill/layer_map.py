"""Which teacher layer each student layer learns from in intermediate-layer distillation.

Layers are counted from 0 here, as in `IntermediateSpec.layer_map`. In TinyBERT's 1-based words, the uniform map
sends student layer m to teacher layer m * T / S (12 -> 6: 2, 4, ..., 12), and embeddings to embeddings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


class LayerMapError(ValueError):
    """A layer map that does not fit the student and teacher it is used with."""


def uniform_layer_map(student_layers: int, teacher_layers: int) -> tuple[int, ...]:
    """Teacher layer (0-based) for each student layer: (i + 1) * T // S - 1, so the last layers always meet.

    >>> uniform_layer_map(6, 12)
    (1, 3, 5, 7, 9, 11)
    """
    if student_layers <= 0 or teacher_layers <= 0:
        raise LayerMapError(f"layer counts must be positive, got student {student_layers}, teacher {teacher_layers}")
    if student_layers > teacher_layers:
        raise LayerMapError(f"the uniform map needs a student no deeper than its teacher, got a {student_layers}-layer "
                            f"student and a {teacher_layers}-layer teacher; give an explicit layer_map")
    return tuple((i + 1) * teacher_layers // student_layers - 1 for i in range(student_layers))


# Named maps a spec may ask for; an explicit list of teacher layers is the other choice.
LAYER_MAPS: dict[str, Callable[[int, int], tuple[int, ...]]] = {"uniform": uniform_layer_map}


@dataclass(frozen=True)
class LayerMap:
    """Student layer s (0-based) learns from teacher layer `teacher_layers[s]`; embeddings from embeddings."""

    teacher_layers: tuple[int, ...]
    teacher_count: int

    @property
    def hidden_pairs(self) -> list[tuple[int, int]]:
        """(student, teacher) indices into `outputs.hidden_states`, where index 0 is the embedding output and
        index k the output of layer k (1-based); the embedding pair (0, 0) is not included."""
        return [(s + 1, t + 1) for s, t in enumerate(self.teacher_layers)]

    @property
    def attention_pairs(self) -> list[tuple[int, int]]:
        """(student, teacher) indices into `outputs.attentions`, one per layer (0-based)."""
        return list(enumerate(self.teacher_layers))


def resolve_layer_map(layer_map: str | list[int], student_layers: int, teacher_layers: int) -> LayerMap:
    """A named map ("uniform") or an explicit list of 0-based teacher layers, checked against both models."""
    if isinstance(layer_map, str):
        if layer_map not in LAYER_MAPS:
            raise LayerMapError(f"layer_map {layer_map!r} is unknown; valid: {', '.join(LAYER_MAPS)} or a list of "
                                "teacher layers")
        return LayerMap(LAYER_MAPS[layer_map](student_layers, teacher_layers), teacher_layers)
    chosen = tuple(int(t) for t in layer_map)
    if len(chosen) != student_layers:
        raise LayerMapError(f"layer_map has {len(chosen)} entries but the student has {student_layers} layers; give "
                            "one teacher layer per student layer")
    bad = [t for t in chosen if not 0 <= t < teacher_layers]
    if bad:
        raise LayerMapError(f"layer_map names teacher layers {bad}, but the teacher has layers 0..{teacher_layers - 1}")
    return LayerMap(chosen, teacher_layers)
