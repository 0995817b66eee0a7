"""``BiEncoderNllLoss`` and the symmetric in-batch loss of ``train_itm.py`` / ``BiEncoderForPretraining``.

For queries q (n_q, D) and contexts c (n_c, D) with the positive context of query i at
``positive_idx[i]``::

    scores = q c^T                                   (raw dot products, no temperature)
    scores = (1 - w) q c^T + w q caps^T              (only when caption vectors are given and w != 0)
    loss   = mean_i -log_softmax(scores[i])[positive_idx[i]]

The training loss is ``0.5 * NLL(img -> txt) + 0.5 * NLL(txt -> img)``: each image of the batch is a
query over every text (positives + hard-negative texts), and each text a query over every image
(positives + hard-negative images); positives sit on the diagonal of the leading ``bs x bs`` block.

Across processes (:func:`gather_for_loss`) every rank's queries and contexts are gathered with
gradients (``itr_common.dist.all_gather_with_grad``), the positive indices shifted by the contexts of
the ranks before, and the same global loss is computed on every rank; summing the gradients over ranks
then gives exactly the gradient of one process holding the global batch. The original exchanged
detached copies and never synchronised gradients (``distributed_world_size = 1`` was hard-coded).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from itr_common import dist
from itr_lightningdot.model import dot_product_scores


@dataclass
class NllResult:
    """loss (0-dim), correct (0-dim count of queries whose best context is the positive), scores (n_q, n_c)."""

    loss: Tensor
    correct: Tensor
    scores: Tensor


class BiEncoderNllLoss:
    """The original ``BiEncoderNllLoss.calc`` (DPR), without the comet logging."""

    @staticmethod
    def get_scores(q_vectors: Tensor, ctx_vectors: Tensor) -> Tensor:
        return dot_product_scores(q_vectors, ctx_vectors)

    def calc(
        self,
        q_vectors: Tensor,
        ctx_vectors: Tensor,
        caption_vectors: Tensor | None,
        positive_idx_per_question: Sequence[int] | Tensor,
        hard_negative_idx_per_question: Sequence | None = None,
        caption_score_weight: float = 0.1,
        reduction: str = "mean",
    ) -> NllResult:
        """q (n_q, D), ctx (n_c, D), captions (n_c, D) or None -> :class:`NllResult`.

        ``hard_negative_idx_per_question`` is accepted and unused, as in the original.
        """
        scores = self.get_scores(q_vectors, ctx_vectors)
        if caption_vectors is not None and caption_score_weight != 0:
            scores_caption = self.get_scores(q_vectors, caption_vectors)
            scores = (1 - caption_score_weight) * scores + caption_score_weight * scores_caption
        if q_vectors.dim() > 1:
            scores = scores.view(q_vectors.size(0), -1)
        log_probs = F.log_softmax(scores.float(), dim=1)
        target = torch.as_tensor(positive_idx_per_question, dtype=torch.long, device=log_probs.device)
        loss = F.nll_loss(log_probs, target, reduction=reduction)
        correct = (log_probs.argmax(dim=1) == target).sum()
        return NllResult(loss, correct, scores)


@dataclass
class BiEncoderLoss:
    """loss = 0.5 * txt + 0.5 * img; ``loss_txt`` ranks texts for each image, ``loss_img`` images for each
    text; ``correct`` the mean of both directions' correct counts; ``scores`` (bs, bs + negatives) average."""

    loss: Tensor
    loss_txt: Tensor
    loss_img: Tensor
    correct: float
    scores: Tensor


def gather_for_loss(
    q_vectors: Tensor, ctx_vectors: Tensor, caption_vectors: Tensor | None, positive_idx: Sequence[int]
) -> tuple[Tensor, Tensor, Tensor | None, list[int]]:
    """Every rank's queries / contexts / captions concatenated (with gradients to the local ones) and
    the positive indices shifted into the global context list. One process: returned unchanged."""
    if dist.get_world_size() == 1:
        return q_vectors, ctx_vectors, caption_vectors, list(positive_idx)
    ctx_counts = dist.all_gather_object(int(ctx_vectors.size(0)))
    positives = dist.all_gather_object([int(i) for i in positive_idx])
    global_positive: list[int] = []
    offset = 0
    for count, idx in zip(ctx_counts, positives):
        global_positive.extend(i + offset for i in idx)
        offset += count
    global_q = dist.all_gather_with_grad(q_vectors)
    global_ctx = dist.all_gather_with_grad(ctx_vectors)
    global_caps = dist.all_gather_with_grad(caption_vectors) if caption_vectors is not None else None
    return global_q, global_ctx, global_caps, global_positive


def calc_loss(
    loss_function: BiEncoderNllLoss,
    q_vectors: Tensor,
    ctx_vectors: Tensor,
    caption_vectors: Tensor | None,
    positive_idx: Sequence[int],
    caption_score_weight: float = 0.0,
    gather: bool = True,
) -> NllResult:
    """The original ``_calc_loss``: the NLL over the (gathered) batch."""
    if gather:
        q_vectors, ctx_vectors, caption_vectors, positive_idx = gather_for_loss(
            q_vectors, ctx_vectors, caption_vectors, positive_idx
        )
    return loss_function.calc(q_vectors, ctx_vectors, caption_vectors, positive_idx, None, caption_score_weight)


def biencoder_loss(
    txt_vectors: Tensor,
    img_vectors: Tensor,
    caption_vectors: Tensor | None,
    sample_size: int,
    caption_score_weight: float = 0.0,
    gather: bool = True,
) -> BiEncoderLoss:
    """The loss of one ``train_itm.py`` step.

    txt_vectors (bs + bs*K_t, D) and img_vectors (bs + bs*K_i, D): the batch's ``sample_size`` positives
    first, then the hard negatives; caption_vectors aligned with img_vectors or None.
    """
    bs = sample_size
    positive_idx = list(range(bs))
    loss_function = BiEncoderNllLoss()
    txt = calc_loss(loss_function, img_vectors[:bs], txt_vectors, caption_vectors, positive_idx,
                    caption_score_weight, gather)
    img = calc_loss(loss_function, txt_vectors[:bs], img_vectors, caption_vectors, positive_idx,
                    caption_score_weight, gather)
    correct = (float(txt.correct) + float(img.correct)) / 2
    scores = txt.scores * 0.5 + img.scores * 0.5 if txt.scores.shape == img.scores.shape else img.scores
    return BiEncoderLoss(0.5 * txt.loss + 0.5 * img.loss, txt.loss, img.loss, correct, scores)
