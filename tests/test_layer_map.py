"""Layer maps: the uniform map for common depths, explicit maps checked against both models, and the indices
into transformers' outputs checked against the layers that really produced them."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForQuestionAnswering, BertConfig

from distill.layer_map import LayerMapError, resolve_layer_map, uniform_layer_map


@pytest.mark.parametrize(("student", "teacher", "expected_1_based"), [
    (6, 12, [2, 4, 6, 8, 10, 12]),
    (4, 12, [3, 6, 9, 12]),
    (2, 4, [2, 4]),
])
def test_uniform_map_takes_every_kth_teacher_layer(student, teacher, expected_1_based):
    layer_map = resolve_layer_map("uniform", student, teacher)
    assert list(uniform_layer_map(student, teacher)) == [t - 1 for t in expected_1_based]
    # hidden_states[0] is the embedding output, hidden_states[k] the output of layer k (1-based)
    assert layer_map.hidden_pairs == [(s + 1, t) for s, t in enumerate(expected_1_based)]
    # attentions[k] belongs to layer k (0-based)
    assert layer_map.attention_pairs == [(s, t - 1) for s, t in enumerate(expected_1_based)]


def test_explicit_map_is_checked_against_both_models():
    assert resolve_layer_map([0, 5, 11], 3, 12).teacher_layers == (0, 5, 11)
    with pytest.raises(LayerMapError, match="3 entries but the student has 4 layers"):
        resolve_layer_map([0, 5, 11], 4, 12)
    with pytest.raises(LayerMapError, match=r"teacher layers \[12\].*0\.\.11"):
        resolve_layer_map([0, 12], 2, 12)
    with pytest.raises(LayerMapError, match="valid: uniform"):
        resolve_layer_map("skip", 2, 12)
    with pytest.raises(LayerMapError, match="no deeper than its teacher"):
        resolve_layer_map("uniform", 6, 4)


def test_pairs_index_the_outputs_of_the_mapped_layers():
    """Hook each encoder layer of a real 12-layer model: the pair indices must pick that layer's outputs."""
    config = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=12, num_attention_heads=2,
                        intermediate_size=16)
    torch.manual_seed(0)
    teacher = AutoModelForQuestionAnswering.from_config(config, attn_implementation="eager").eval()
    seen_hidden, seen_attention = {}, {}
    for index, layer in enumerate(teacher.bert.encoder.layer):
        layer.register_forward_hook(lambda m, i, out, index=index: seen_hidden.__setitem__(
            index, out if isinstance(out, torch.Tensor) else out[0]))  # a tensor in transformers 5, once a tuple
        layer.attention.self.register_forward_hook(
            lambda m, i, out, index=index: seen_attention.__setitem__(index, out[1]))
    with torch.no_grad():
        outputs = teacher(input_ids=torch.randint(0, 50, (2, 5)), output_hidden_states=True, output_attentions=True)
    layer_map = resolve_layer_map("uniform", 4, 12)
    for (_, t_hidden), (_, t_attention), t in zip(layer_map.hidden_pairs, layer_map.attention_pairs,
                                                  layer_map.teacher_layers):
        assert torch.equal(outputs.hidden_states[t_hidden], seen_hidden[t])
        assert torch.equal(outputs.attentions[t_attention], seen_attention[t])
