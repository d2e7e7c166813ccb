"""Phase 1: the student learns the teacher's embeddings, hidden states and attention maps (TinyBERT)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from distill.attention_maps import attention_maps, keep_attention_maps
from distill.features import FlatFeatures
from distill.layer_map import LayerMap, resolve_layer_map
from distill.losses import AttentionMSE, HiddenStateMSE
from distill.models import ModelRef, load_tokenizer
from distill.objectives.common import (INPUT_COLUMNS, Frozen, check_vocabularies, load_teacher, model_inputs,
                                       save_model, takes_token_types)
from distill.spec import IntermediateSpec, StudentSpec
from distill.student import build_student, tokenizer_source
from distill.trainer import TrainPlan


@dataclass(frozen=True)
class IntermediateOptions:
    student: StudentSpec
    teacher: ModelRef
    num_labels: int | None

    def build(self, plan: TrainPlan, device: torch.device) -> IntermediateObjective:
        """The objective on `device`, for a worker of `plan`."""
        config: IntermediateSpec = plan.config  # type: ignore[assignment]
        teacher = load_teacher(self.teacher, plan.task, self.num_labels, device)
        student = build_student(self.student, self.teacher, plan.task, self.num_labels)
        token_source = tokenizer_source(self.student, self.teacher)
        check_vocabularies(token_source, [self.teacher])
        layer_map = resolve_layer_map(config.layer_map, student.config.num_hidden_layers,
                                      teacher.config.num_hidden_layers)
        spec = {"student": self.student.model_dump(mode="json"), "teacher": asdict(self.teacher),
                "teacher_index": config.teacher, "tokenizer": token_source.name_or_path}
        objective = IntermediateObjective(student, teacher, load_tokenizer(token_source), list(config.losses),
                                          layer_map, spec)
        return objective.to(device)


def _install_output_collection(model: PreTrainedModel, attentions: bool) -> None:
    """One tiny forward asking for what phase 1 reads, hidden states and (`attentions`) attention maps, in eval mode
    (no dropout, no random draws).

    transformers installs the hooks that collect them on the first forward that asks, in code torch.compile cannot
    trace (a lock, hook handles); installed before, a compiled phase-1 forward is one graph for every length."""
    was_training = model.training
    tokens = torch.zeros(1, 2, dtype=torch.long, device=model.device)
    with torch.no_grad():
        model.eval()(input_ids=tokens, output_hidden_states=True, output_attentions=attentions)
    model.train(was_training)


class IntermediateObjective(nn.Module):
    """Phase 1: the student and its projections; forward returns the MSE terms named in `losses`.

    `embeddings`: MSE between embedding outputs; `hidden`: the sum over mapped layers of the hidden-state MSE;
    `attention`: the sum over mapped layers of the attention MSE, on probabilities before dropout. Each is
    averaged over real tokens (see distill.losses). Loss = embeddings + hidden + attention, as TinyBERT.
    """

    find_unused_parameters = True  # the task head (and any layer no term reaches) gets no gradient in phase 1

    def __init__(self, student: PreTrainedModel, teacher: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                 losses: list[str], layer_map: LayerMap, spec: dict[str, Any]):
        super().__init__()
        self.student = student
        self._teacher = Frozen(teacher)
        self.tokenizer = tokenizer
        self.pad_token_id = tokenizer.pad_token_id
        self.layer_map = layer_map
        self.columns = INPUT_COLUMNS
        self.term_weights = {name: 1.0 for name in losses}
        self._spec = spec
        s_config, t_config = student.config, teacher.config
        # TinyBERT: one map W_e for the embeddings, one W_h shared by every hidden layer
        self.embeddings_loss = (HiddenStateMSE(s_config.hidden_size, t_config.hidden_size)
                                if "embeddings" in losses else None)
        self.hidden_loss = HiddenStateMSE(s_config.hidden_size, t_config.hidden_size) if "hidden" in losses else None
        self.attention_loss = (AttentionMSE(s_config.num_attention_heads, t_config.num_attention_heads)
                               if "attention" in losses else None)
        # what forward reads is fixed here, so that under torch.compile (resources.compile) it builds no Python
        # structures and inspects no signatures
        self.token_types = (takes_token_types(student), takes_token_types(teacher))
        self.hidden_pairs = tuple(layer_map.hidden_pairs)
        self.attention_pairs = tuple(layer_map.attention_pairs) if self.attention_loss is not None else ()
        self.kept_maps = (tuple(s for s, _ in self.attention_pairs), tuple(t for _, t in self.attention_pairs))
        if self.attention_loss is not None:
            keep_attention_maps(student, self.kept_maps[0])
            keep_attention_maps(teacher, self.kept_maps[1])
        for model in (student, teacher):
            _install_output_collection(model, attentions=self.attention_loss is not None)

    @property
    def teacher(self) -> PreTrainedModel:
        return self._teacher.models[0]

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        mask = batch["attention_mask"]  # (B, L)
        # attention maps before dropout, of the mapped layers only (distill.attention_maps); none without the term
        maps = self.attention_loss is not None
        student = self.student(**model_inputs(batch, self.token_types[0]), output_hidden_states=True,
                               output_attentions=maps)
        with torch.no_grad():
            teacher = self.teacher(**model_inputs(batch, self.token_types[1]), output_hidden_states=True,
                                   output_attentions=maps)
        terms = {}
        if self.embeddings_loss is not None:
            terms["embeddings"] = self.embeddings_loss(student.hidden_states[0], teacher.hidden_states[0], mask)
        if self.hidden_loss is not None:
            terms["hidden"] = sum(self.hidden_loss(student.hidden_states[s], teacher.hidden_states[t], mask)
                                  for s, t in self.hidden_pairs)
        if self.attention_loss is not None:
            student_maps = attention_maps(self.student, student, self.kept_maps[0])
            teacher_maps = attention_maps(self.teacher, teacher, self.kept_maps[1])
            terms["attention"] = sum(self.attention_loss(student_maps[s], teacher_maps[t], mask)
                                     for s, t in self.attention_pairs)
        return terms

    def check_features(self, data: FlatFeatures) -> None:
        pass  # inputs only: the schema has them on every row

    def projections(self) -> dict[str, torch.Tensor]:
        """The learned student -> teacher maps, by term: {"hidden.weight": (teacher, student), ...}."""
        found = {}
        for name in ("embeddings", "hidden"):
            loss = getattr(self, f"{name}_loss")
            if loss is not None and loss.projection is not None:
                for key, value in loss.projection.state_dict().items():
                    found[f"{name}.{key}"] = value.detach().cpu().contiguous()
        return found

    def settings(self) -> dict[str, Any]:
        return {**self._spec,
                "losses": {name: {"weight": w, "reduction": "per-example mean over real tokens"}
                           for name, w in self.term_weights.items()},
                "layer_map": {"student_layers": len(self.layer_map.teacher_layers),
                              "teacher_layers": self.layer_map.teacher_count,
                              "teacher_layer_per_student_layer": list(self.layer_map.teacher_layers)},
                "projections": {name: list(value.shape) for name, value in self.projections().items()},
                "attention_compared": ("post-softmax probabilities before dropout"
                                       if self.attention_loss is not None else None)}

    def save_outputs(self, out_dir: Path) -> dict[str, str | None]:
        model_dir = save_model(self.student, self.tokenizer, out_dir / "student")
        projections = self.projections()
        path = None
        if projections:
            path = str(out_dir / "projections.safetensors")
            safetensors.torch.save_file(projections, path, metadata={"maps": "student hidden -> teacher hidden"})
        return {"model_dir": model_dir, "projections": path}
