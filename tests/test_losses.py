"""Each distillation loss against a hand computation, a second implementation, and its edge cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from distill.ensemble import mix_teacher_logits
from distill.losses import AttentionMSE, HardLabelCE, HeadCountMismatch, HiddenStateMSE, SoftTargetKL
from distill.losses.hard_label import IGNORE_INDEX

GARBAGE = 1e6  # written into padded positions: a loss that reads them is far off


# -- HiddenStateMSE -----------------------------------------------------------------------------------------------


def test_hidden_mse_matches_hand_computation_and_ignores_padding():
    student = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [GARBAGE, GARBAGE]],
                            [[0.0, 1.0], [GARBAGE, 0.0], [0.0, GARBAGE]]])
    teacher = torch.tensor([[[1.0, 0.0], [0.0, 4.0], [0.0, 0.0]],
                            [[2.0, 1.0], [0.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    # example 0: (0 + 4) + (9 + 0) over 2 tokens x 2 dims = 13 / 4; example 1: (4 + 0) / (1 x 2) = 2
    expected = (13 / 4 + 2) / 2
    assert HiddenStateMSE(2, 2)(student, teacher, mask).item() == pytest.approx(expected)


def test_hidden_mse_without_padding_is_plain_mse():
    student, teacher = torch.randn(3, 5, 4), torch.randn(3, 5, 4)
    loss = HiddenStateMSE(4, 4)(student, teacher, torch.ones(3, 5))
    assert loss.item() == pytest.approx(F.mse_loss(student, teacher).item(), rel=1e-6)


def test_hidden_mse_all_padding_gives_zero_and_finite_gradients():
    student = torch.randn(2, 3, 4, requires_grad=True)
    loss = HiddenStateMSE(4, 8)(student, torch.randn(2, 3, 8), torch.zeros(2, 3))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(student.grad, torch.zeros_like(student))


def test_hidden_mse_all_padding_row_is_left_out_of_the_mean():
    student, teacher = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    mask = torch.tensor([[1, 1, 1], [0, 0, 0]])
    loss = HiddenStateMSE(4, 4)(student, teacher, mask)
    assert loss.item() == pytest.approx(F.mse_loss(student[0], teacher[0]).item(), rel=1e-6)


def test_hidden_mse_projects_narrow_students_and_trains_the_projection():
    loss_fn = HiddenStateMSE(student_size=3, teacher_size=5)
    assert [name for name, _ in loss_fn.named_parameters()] == ["projection.weight", "projection.bias"]
    student = torch.randn(2, 4, 3)
    teacher = torch.randn(2, 4, 5)
    loss = loss_fn(student, teacher, torch.ones(2, 4))
    expected = F.mse_loss(loss_fn.projection(student), teacher)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert loss_fn.projection.weight.grad.abs().sum() > 0
    assert list(HiddenStateMSE(4, 4).parameters()) == []


def test_hidden_mse_rejects_bad_arguments_and_shapes():
    with pytest.raises(ValueError, match="positive"):
        HiddenStateMSE(0, 4)
    with pytest.raises(ValueError, match=r"expected \(B, L, 4\)"):
        HiddenStateMSE(4, 4)(torch.randn(2, 3, 5), torch.randn(2, 3, 4), torch.ones(2, 3))
    with pytest.raises(ValueError, match="teacher vectors"):
        HiddenStateMSE(4, 4)(torch.randn(2, 3, 4), torch.randn(2, 2, 4), torch.ones(2, 3))


# -- AttentionMSE -------------------------------------------------------------------------------------------------


def test_attention_mse_matches_hand_computation_over_real_query_key_pairs():
    batch, heads, length = 2, 2, 3
    student = torch.rand(batch, heads, length, length)
    teacher = torch.rand(batch, heads, length, length)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    student[1, :, 2, :] = GARBAGE  # padded query row
    student[1, :, :, 2] = GARBAGE  # padded key column
    per_example = []
    for b in range(batch):
        real = int(mask[b].sum())
        total = sum((student[b, h, q, k] - teacher[b, h, q, k]).item() ** 2
                    for h in range(heads) for q in range(real) for k in range(real))
        per_example.append(total / (heads * real * real))
    loss = AttentionMSE(heads, heads)(student, teacher, mask)
    assert loss.item() == pytest.approx(sum(per_example) / batch, rel=1e-6)


def test_attention_mse_all_padding_gives_zero():
    attention = torch.rand(2, 2, 3, 3, requires_grad=True)
    loss = AttentionMSE(2, 2)(attention, torch.rand(2, 2, 3, 3), torch.zeros(2, 3))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(attention.grad).all()


def test_attention_mse_keeps_no_difference_tensor_for_backward_and_gives_the_plain_gradient():
    student = torch.softmax(torch.randn(2, 2, 5, 5), -1).requires_grad_()
    teacher = torch.softmax(torch.randn(2, 2, 5, 5), -1)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        loss = AttentionMSE(2, 2)(student, teacher, mask)
    # summed over mapped layers, a stored (B, H, L, L) difference per layer would double the maps' memory
    assert all(t.data_ptr() in (student.data_ptr(), teacher.data_ptr()) for t in saved if t.shape == student.shape)
    loss.backward()
    plain = student.detach().requires_grad_()
    pairs = (mask[:, None, :, None] * mask[:, None, None, :]).float()
    (((plain - teacher) ** 2 * pairs).sum((1, 2, 3)) / (2 * mask.sum(-1) ** 2)).mean().backward()
    torch.testing.assert_close(student.grad, plain.grad)


def test_attention_mse_refuses_different_head_counts_clearly():
    with pytest.raises(HeadCountMismatch, match=r"student has 4 heads and the teacher 12.*num_attention_heads"):
        AttentionMSE(student_heads=4, teacher_heads=12)


def test_attention_mse_rejects_wrong_shapes():
    with pytest.raises(ValueError, match=r"\(B, H, L, L\)"):
        AttentionMSE(2, 2)(torch.rand(2, 2, 3, 3), torch.rand(2, 2, 4, 4), torch.ones(2, 3))


# -- SoftTargetKL -------------------------------------------------------------------------------------------------


def _softmax(values: list[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return [e / sum(exps) for e in exps]


def test_soft_target_kl_matches_hand_computation_with_temperature_and_masking():
    temperature = 2.0
    student = torch.tensor([[[1.0, 2.0, 0.5, GARBAGE]], [[0.0, -1.0, 3.0, 2.0]]])  # (B=2, G=1, N=4)
    teacher = torch.tensor([[[2.0, 0.0, 1.0, -GARBAGE]], [[1.0, 1.0, 0.0, -2.0]]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    expected = 0.0
    for b, real in ((0, 3), (1, 4)):
        p_t = _softmax([v / temperature for v in teacher[b, 0, :real].tolist()])
        p_s = _softmax([v / temperature for v in student[b, 0, :real].tolist()])
        expected += sum(t * (math.log(t) - math.log(s)) for t, s in zip(p_t, p_s)) / 2
    loss = SoftTargetKL(temperature)(student, teacher, mask)
    assert loss.item() == pytest.approx(temperature ** 2 * expected, rel=1e-5)


def test_soft_target_kl_agrees_with_torch_kl_div_without_padding():
    student, teacher = torch.randn(4, 2, 6), torch.randn(4, 2, 6)
    t = 3.0
    reference = F.kl_div(F.log_softmax(student / t, -1).reshape(8, 6), F.log_softmax(teacher / t, -1).reshape(8, 6),
                         log_target=True, reduction="batchmean") * t * t
    assert SoftTargetKL(t)(student, teacher).item() == pytest.approx(reference.item(), rel=1e-5)


def test_soft_target_kl_one_class_is_zero():
    assert SoftTargetKL(2.0)(torch.randn(3, 1, 1), torch.randn(3, 1, 1)).item() == 0.0


def test_soft_target_kl_all_padding_rows_are_ignored_and_never_nan():
    student = torch.randn(2, 2, 5, requires_grad=True)
    teacher = torch.randn(2, 2, 5)
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]])
    loss = SoftTargetKL(1.0)(student, teacher, mask)
    only_first = SoftTargetKL(1.0)(student[:1, :, :3], teacher[:1, :, :3])
    assert loss.item() == pytest.approx(only_first.item(), rel=1e-6)
    loss.backward()
    assert torch.isfinite(student.grad).all()
    assert torch.equal(student.grad[1], torch.zeros(2, 5))
    assert torch.equal(student.grad[0, :, 3:], torch.zeros(2, 2))

    empty = SoftTargetKL(1.0)(student, teacher, torch.zeros(2, 5))
    assert empty.item() == 0.0


def test_soft_target_kl_validates_temperature_and_shapes():
    with pytest.raises(ValueError, match="temperature"):
        SoftTargetKL(0.0)
    with pytest.raises(ValueError, match=r"\(B, G, N\)"):
        SoftTargetKL()(torch.randn(2, 3), torch.randn(2, 3))
    with pytest.raises(ValueError, match="mask"):
        SoftTargetKL()(torch.randn(2, 1, 3), torch.randn(2, 1, 3), torch.ones(2, 4))


def test_soft_target_kl_of_a_probs_ensemble_targets_the_mix_of_softened_teachers():
    # z1 = [4, 0], z2 = [-1, 1], equal weights, T = 2: the mean of softmax(z_k / 2) is [0.575, 0.425]; softening
    # the mean of softmax(z_k) instead would give [0.525, 0.475]
    z1, z2, t = torch.tensor([[4.0, 0.0]]), torch.tensor([[-1.0, 1.0]]), 2.0
    halves = torch.tensor([0.5, 0.5])
    expected = (torch.softmax(z1 / t, -1) + torch.softmax(z2 / t, -1)) / 2
    assert expected[0, 0].item() == pytest.approx(0.575, abs=1e-3)
    stored = mix_teacher_logits([z1, z2], halves, "probs", None, temperature=t)
    assert torch.allclose(torch.softmax(stored / t, -1), expected, atol=1e-6)
    # a student whose softened distribution is that mix has nothing left to learn
    student = (t * expected.log())[:, None, :]  # (B=1, G=1, N=2)
    assert SoftTargetKL(t)(student, stored[:, None, :]).item() == pytest.approx(0.0, abs=1e-6)
    # logits mode: the mean logits, divided by T
    mean_logits = mix_teacher_logits([z1, z2], halves, "logits", None, temperature=t)
    assert torch.allclose(torch.softmax(mean_logits / t, -1), torch.softmax((z1 + z2) / 2 / t, -1))


def test_one_teacher_probs_ensemble_does_not_depend_on_temperature():
    z = torch.tensor([[4.0, 0.0, -1.5], [0.3, 2.0, 1.0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    at_one = mix_teacher_logits([z], torch.ones(1), "probs", mask, temperature=1.0)
    assert torch.equal(mix_teacher_logits([z], torch.ones(1), "probs", mask, temperature=2.0), at_one)
    assert torch.allclose(at_one[1], torch.log_softmax(z[1], -1))


# -- HardLabelCE --------------------------------------------------------------------------------------------------


def test_hard_label_ce_is_the_mean_of_start_and_end_cross_entropy():
    logits = torch.tensor([[[0.0, 1.0, 2.0, GARBAGE], [1.0, 0.0, 0.0, GARBAGE]]])  # (1, 2, 4); position 3 padded
    targets = torch.tensor([[2, 0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    start = -math.log(_softmax([0.0, 1.0, 2.0])[2])
    end = -math.log(_softmax([1.0, 0.0, 0.0])[0])
    assert HardLabelCE()(logits, targets, mask).item() == pytest.approx((start + end) / 2, rel=1e-6)


def test_hard_label_ce_agrees_with_torch_cross_entropy_for_classification():
    logits, labels = torch.randn(5, 1, 3), torch.tensor([[0], [2], [1], [1], [0]])
    reference = F.cross_entropy(logits[:, 0], labels[:, 0])
    assert HardLabelCE()(logits, labels).item() == pytest.approx(reference.item(), rel=1e-6)


def test_hard_label_ce_edge_cases():
    assert HardLabelCE()(torch.randn(3, 1, 1), torch.zeros(3, 1, dtype=torch.long)).item() == 0.0  # one class
    logits = torch.randn(2, 1, 4, requires_grad=True)
    ignored = HardLabelCE()(logits, torch.tensor([[1], [IGNORE_INDEX]]))
    assert ignored.item() == pytest.approx(F.cross_entropy(logits[:1, 0], torch.tensor([1])).item(), rel=1e-6)
    padding = HardLabelCE()(logits, torch.tensor([[1], [2]]), torch.zeros(2, 4))
    padding.backward()
    assert padding.item() == 0.0 and torch.isfinite(logits.grad).all()
    with pytest.raises(ValueError, match="targets"):
        HardLabelCE()(torch.randn(2, 2, 4), torch.zeros(2, dtype=torch.long))
