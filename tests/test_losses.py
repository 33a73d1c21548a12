"""The shared symmetric InfoNCE (stage 2's text pairs and the CTR model's scene alignment)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from larr.losses import info_nce


def _masked_reference(a: torch.Tensor, b: torch.Tensor, tau: float, excluded: torch.Tensor) -> torch.Tensor:
    """Plain symmetric InfoNCE with ``excluded`` (off-diagonal) entries removed from both directions."""
    logits = (a @ b.T / tau).masked_fill(excluded & ~torch.eye(len(a), dtype=torch.bool), float("-inf"))
    target = torch.arange(len(a))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def test_group_ids_on_both_sides_mask_each_group_out_of_its_denominators() -> None:
    torch.manual_seed(0)
    a, b = F.normalize(torch.randn(6, 4), dim=-1), F.normalize(torch.randn(6, 4), dim=-1)
    groups = torch.tensor([0, 0, 1, 2, 2, 2])
    same = groups[:, None] == groups[None, :]
    got = info_nce(a, b, 0.2, left_keys=groups, right_keys=groups)
    assert torch.equal(got, _masked_reference(a, b, 0.2, same))
    assert torch.equal(info_nce(a, b, 0.2), _masked_reference(a, b, 0.2, torch.zeros_like(same)))


def test_text_keys_mask_a_candidate_that_is_the_query_own_text() -> None:
    """Pairs (u, s) and (s, t): for query a_1 = s the candidate b_0 = s is itself, and so is a_1
    for query b_0; u and t stay true negatives of each other."""
    torch.manual_seed(1)
    a, b = F.normalize(torch.randn(2, 4), dim=-1), F.normalize(torch.randn(2, 4), dim=-1)
    left, right = torch.tensor([10, 11]), torch.tensor([11, 12])  # texts u=10, s=11, t=12
    logits, target = a @ b.T / 0.5, torch.arange(2)
    rows = F.cross_entropy(logits.masked_fill(torch.tensor([[False, False], [True, False]]), float("-inf")), target)
    cols = F.cross_entropy(logits.T.masked_fill(torch.tensor([[False, True], [False, False]]), float("-inf")), target)
    assert torch.equal(info_nce(a, b, 0.5, left_keys=left, right_keys=right), (rows + cols) / 2)
