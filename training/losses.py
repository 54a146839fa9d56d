"""The CLLM losses (Kou et al. 2024, eq. 4-7), for one block example in one forward pass.

The input rows share the prefix (prompt + earlier fixed points, length P) and differ in the block:
  student = prefix + a random intermediate state s        (gradients flow)
  target  = prefix + the fixed point  (global consistency) or the next state (local), detached
  ar      = prefix + the fixed point                       (gradients flow; also the global target)
Consistency: soft cross-entropy -sum_v p_target(v) log p_student(v), averaged over the positions
that predict block tokens j in [k, valid), where k is the first position at which s differs from
the target block: earlier predictions see identical contexts, and (as in the CLLM code) are left
out. valid excludes tokens after EOS. AR: cross-entropy with label smoothing 0.1 on the fixed
point's valid tokens, each predicted from its exact context."""
import torch
import torch.nn.functional as F

from training.acceptance import first_mismatch


def soft_cross_entropy(student_logits, target_logits):
    """[m, V] x [m, V] -> mean over the m positions of -sum_v softmax(target) log_softmax(student)."""
    target = torch.softmax(target_logits.float(), dim=-1)
    return -(target * torch.log_softmax(student_logits.float(), dim=-1)).sum(-1).mean()


def consistency_loss(student_logits, target_logits, state, target, prefix_len, valid):
    """student_logits, target_logits: [T, V] for prefix + block (T = prefix_len + n);
    state, target: [n] block tokens. Returns a scalar (0 with no gradient when nothing differs)."""
    k = first_mismatch(state, target)
    if k is None or k >= valid:
        return student_logits.sum() * 0.0
    # Logits at position t predict token t + 1: block tokens k..valid-1 come from P+k-1 .. P+valid-2.
    rows = slice(prefix_len + k - 1, prefix_len + valid - 1)
    return soft_cross_entropy(student_logits[rows], target_logits[rows].detach())


def ar_loss(logits, tokens, prefix_len, valid, smoothing=0.1):
    """logits [T, V] of prefix + fixed point, tokens [T]: label-smoothed CE on block tokens 0..valid-1."""
    rows = slice(prefix_len - 1, prefix_len + valid - 1)
    return F.cross_entropy(logits[rows].float(), tokens[prefix_len:prefix_len + valid], label_smoothing=smoothing)
