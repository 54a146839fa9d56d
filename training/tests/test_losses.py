"""The CLLM losses against values computed by hand on a toy example (vocab 3)."""
import math

import torch

from training import losses


def softmax(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def test_consistency_loss_matches_hand_computation():
    # prefix length P = 2, block n = 3 at positions 2..4; logits rows are positions 0..4.
    student = torch.tensor([[9.0, 9, 9], [5, -5, 0], [1, 2, 3], [0.5, 0, -1], [7, 7, 7]])
    target = torch.tensor([[-9.0, 9, 1], [3, 3, 3], [2, 0, 1], [-1, 1, 0], [4, 4, -4]])
    state, fixed = torch.tensor([10, 11, 12]), torch.tensor([10, 21, 12])  # first mismatch k = 1
    # Block tokens 1 and 2 are predicted at positions P+0 and P+1 = rows 2 and 3.
    expected = 0.0
    for r in (2, 3):
        p, q = softmax(target[r].tolist()), softmax(student[r].tolist())
        expected += -sum(pi * math.log(qi) for pi, qi in zip(p, q))
    expected /= 2
    got = losses.consistency_loss(student, target, state, fixed, prefix_len=2, valid=3)
    assert abs(got.item() - expected) < 1e-6

    # Rows before the first mismatch and the last row (it predicts past the block) do not count.
    changed = student.clone()
    changed[0:2] = torch.tensor([[0.0, 1, 2], [3, 4, 5]])
    changed[4] = torch.tensor([-3.0, 0, 3])
    assert losses.consistency_loss(changed, target, state, fixed, 2, 3).item() == got.item()

    # valid = 2 (the block's last token follows EOS): only row 2 counts.
    p, q = softmax(target[2].tolist()), softmax(student[2].tolist())
    only_row2 = -sum(pi * math.log(qi) for pi, qi in zip(p, q))
    assert abs(losses.consistency_loss(student, target, state, fixed, 2, 2).item() - only_row2) < 1e-6


def test_consistency_loss_is_zero_without_mismatch_and_target_is_detached():
    student = torch.randn(5, 3, requires_grad=True)
    target = torch.randn(5, 3, requires_grad=True)
    same = torch.tensor([1, 2, 0])
    assert losses.consistency_loss(student, target, same, same, 2, 3).item() == 0.0
    loss = losses.consistency_loss(student, target, torch.tensor([1, 0, 0]), same, 2, 3)
    loss.backward()
    assert target.grad is None and student.grad.abs().sum() > 0


def test_ar_loss_is_label_smoothed_cross_entropy():
    logits = torch.tensor([[0.0, 0, 0], [2, 1, 0], [0, 3, 1], [1, 1, 1]])
    tokens = torch.tensor([0, 1, 2, 1])  # prefix [0, 1], block [2, 1]
    eps = 0.1
    expected = 0.0
    for r, y in ((1, 2), (2, 1)):  # row t predicts token t + 1
        logp = [math.log(p) for p in softmax(logits[r].tolist())]
        expected += (1 - eps) * -logp[y] + eps * -sum(logp) / 3
    expected /= 2
    assert abs(losses.ar_loss(logits, tokens, prefix_len=2, valid=2, smoothing=eps).item() - expected) < 1e-6
