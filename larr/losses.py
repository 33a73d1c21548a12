"""The symmetric in-batch InfoNCE loss, shared by stage 2 (text pairs) and the CTR model's scene alignment."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(
    a: torch.Tensor,
    b: torch.Tensor,
    temperature: float,
    left_keys: torch.Tensor | None = None,
    right_keys: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of positive pairs ``(a[i], b[i])``; the other rows are negatives.

    ``a`` and ``b`` are L2-normalised (B, d). Logits are cosine / τ; the loss is the mean of the
    cross-entropy over each row (a → b) and each column (b → a).

    ``left_keys``/``right_keys`` (B,) identify the text behind each side. An off-diagonal entry
    that is not a true negative — the same text as the positive (a popular shop in two pairs),
    a text paired with the query elsewhere in the batch, or the query's own text (a user paired
    with two neighbours) — is masked out instead of being pushed away. The same tensor on both
    sides (a group id per pair, e.g. the request of a CTR impression) masks the pairs of a group
    out of each other's denominators: they are identical pairs, not negatives.
    """
    logits = a @ b.T / temperature
    if left_keys is not None and right_keys is not None:
        eye = torch.eye(len(a), dtype=torch.bool, device=a.device)
        lk, rk = left_keys, right_keys
        shared = (lk[:, None] == lk[None, :]) | (rk[:, None] == rk[None, :])  # pairs i, j share a side
        row_same = shared | (rk[None, :] == lk[:, None])  # candidate b_j is query a_i's own text
        col_same = shared | (lk[None, :] == rk[:, None])  # candidate a_j is query b_i's own text
        row_logits = logits.masked_fill(row_same & ~eye, float("-inf"))
        col_logits = logits.T.masked_fill(col_same & ~eye, float("-inf"))
    else:
        row_logits, col_logits = logits, logits.T
    target = torch.arange(len(a), device=a.device)
    return (F.cross_entropy(row_logits, target) + F.cross_entropy(col_logits, target)) / 2
