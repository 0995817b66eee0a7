"""DIME's training objective: VSE++ ranking loss with extra negatives + path regularisation.

(LgQu/DIME ``loss.py`` and ``model.py``: ``loss = retrieval_loss + trade_off * path_sim_loss``.)
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from itr_common.losses import contrastive_loss


class DimeLoss(NamedTuple):
    """``total = rank + trade_off * path`` (scalars)."""

    total: torch.Tensor
    rank: torch.Tensor
    path: torch.Tensor


def ranking_loss(scores: torch.Tensor, margin: float = 0.2, max_violation: bool = True) -> torch.Tensor:
    """VSE++ hinge loss on (n_img, n_stc) scores, positives on the diagonal of the leading B x B block.

    ``--extra_stc k``: scores (B, B(1+k)), the extra captions are negatives for caption retrieval only;
    ``--extra_img k``: scores (B(1+k), B), the extra images are negatives for image retrieval only.
    Summed over queries (see :func:`itr_common.losses.contrastive_loss`).
    """
    return contrastive_loss(scores, margin=margin, max_violation=max_violation, n_pairs=min(scores.shape))


def path_regularization_loss(sim_paths: torch.Tensor, bert_emb: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``sum((sim_paths - bert_emb @ bert_emb.T) ** 2) / batch_size``.

    ``sim_paths`` (B, B): cosine similarities of the samples' path embeddings; ``bert_emb`` (B, H):
    L2-normalised mean BERT features of the batch's captions (detached). ``batch_size`` is the
    ``--batch_size`` flag, as in the original (the last, smaller batch of an epoch is divided by it too).
    """
    sim_label = bert_emb @ bert_emb.t()
    return ((sim_paths - sim_label) ** 2).sum() / batch_size


def dime_loss(
    scores: torch.Tensor,
    sim_paths: torch.Tensor,
    bert_emb: torch.Tensor,
    *,
    margin: float,
    max_violation: bool,
    trade_off: float,
    batch_size: int,
) -> DimeLoss:
    """The full objective; ``bert_emb`` is cut to the ``sim_paths`` rows (the paired captions)."""
    rank = ranking_loss(scores, margin, max_violation)
    path = path_regularization_loss(sim_paths, bert_emb[: sim_paths.shape[0]], batch_size)
    return DimeLoss(rank + trade_off * path, rank, path)


__all__ = ["DimeLoss", "dime_loss", "path_regularization_loss", "ranking_loss"]
