"""VSE++ hinge-based triplet ranking loss, as in every SCAN-family repository (VSE++, SCAN, VSRN, CAMERA,
DIME, SelfAlign), with DIME's optional extra negatives.

Score matrix ``scores`` (n_img, n_cap), rows images, columns captions. The first ``B = n_pairs`` rows
and columns are the batch's matching pairs: ``scores[i, i]`` is the positive of image ``i`` and of
caption ``i``. Any further columns are extra negative captions, any further rows extra negative images:

- caption retrieval (an image queries captions), for paired image ``i < B``:
  ``cost_s[i, j] = max(0, margin + scores[i, j] - scores[i, i])`` over every column ``j != i``;
- image retrieval (a caption queries images), for paired caption ``j < B``:
  ``cost_im[i, j] = max(0, margin + scores[i, j] - scores[j, j])`` over every row ``i != j``.

Extra captions and extra images are never queries; they only enlarge the other
direction's negative set. This is DIME's layout (LgQu/DIME ``loss.py``):

- ``--extra_stc k``: the batch's B captions followed by B*k random captions -> scores (B, B*(1+k));
- ``--extra_img k``: the batch's B images followed by B*k random images -> scores (B*(1+k), B).

Extra negatives are sampled at random and are not masked even when one happens to match its query
(as in the original). The loss is summed over the batch, not averaged; ``max_violation`` keeps only
the hardest negative of each query (VSE++ "MH" loss), otherwise all violating negatives are summed.
"""

from __future__ import annotations

import torch
from torch import nn

from itr_common.errors import fail


def _pairs_in(scores: torch.Tensor, n_pairs: int | None) -> int:
    """Check ``scores`` is 2-D and return the number of matching pairs B (default: the smaller side)."""
    if scores.ndim != 2:
        fail(f"scores: expected a 2-D (n_img, n_cap) score matrix, found shape {tuple(scores.shape)}")
    smaller = min(scores.shape)
    if n_pairs is None:
        n_pairs = smaller
    if n_pairs < 1 or n_pairs > smaller:
        fail(
            f"n_pairs: expected 1..{smaller} matching pairs for scores of shape {tuple(scores.shape)}, found {n_pairs}"
        )
    return n_pairs


def contrastive_loss(
    scores: torch.Tensor,
    margin: float = 0.2,
    max_violation: bool = False,
    n_pairs: int | None = None,
) -> torch.Tensor:
    """VSE++ triplet ranking loss on a score matrix; returns a scalar (summed over queries).

    Args:
        scores: (n_img, n_cap), positives on the diagonal of the leading (B, B) block; columns beyond
            B are extra negative captions, rows beyond B extra negative images (module docstring).
        margin: hinge margin (0.2 in all SCAN-family papers).
        max_violation: keep only the hardest negative per query instead of summing all.
        n_pairs: B, the number of matching pairs; default ``min(n_img, n_cap)``. Pass it explicitly to
            have a layout mistake reported instead of silently reinterpreted.
    """
    b = _pairs_in(scores, n_pairs)
    positives = scores[:b, :b].diagonal()  # (B,)
    # caption retrieval: paired images (rows < B) against every caption column, extras included
    cost_s = (margin + scores[:b, :] - positives[:, None]).clamp(min=0)  # (B, n_cap)
    # image retrieval: paired captions (columns < B) against every image row, extras included
    cost_im = (margin + scores[:, :b] - positives[None, :]).clamp(min=0)  # (n_img, B)

    eye = torch.eye(b, dtype=torch.bool, device=scores.device)
    mask_s = torch.zeros(cost_s.shape, dtype=torch.bool, device=scores.device)
    mask_s[:, :b] = eye
    mask_im = torch.zeros(cost_im.shape, dtype=torch.bool, device=scores.device)
    mask_im[:b, :] = eye
    cost_s = cost_s.masked_fill(mask_s, 0)
    cost_im = cost_im.masked_fill(mask_im, 0)

    if max_violation:
        # max(), not amax(): on exact ties the gradient goes to one negative, as in the originals
        return cost_s.max(dim=1).values.sum() + cost_im.max(dim=0).values.sum()
    return cost_s.sum() + cost_im.sum()


def max_violation_at(epoch: int, max_violation: bool, sum_violation_epochs: int = 0) -> bool:
    """Whether the hinge loss of (0-based) ``epoch`` keeps only the hardest negatives.

    ``--max_violation`` as given, except during the first ``sum_violation_epochs`` epochs, which sum every
    violating negative (VSE++'s "SH" loss) instead. 0, the originals' schedule, uses max violation from the
    first step. Trained from scratch on a weak signal (a randomly initialised BERT, many similar images) the
    max-violation loss can settle on equal scores for every pair, where it is flat at ``2 * margin`` per pair;
    summing first gives every negative a gradient until the scores have spread out. VSE++ warns of this
    collapse; VSE-infinity warms up the same way.
    """
    return max_violation and epoch >= sum_violation_epochs


class ContrastiveLoss(nn.Module):
    """VSE++ loss on embeddings: ``loss(im, s)`` scores ``im @ s.T`` then :func:`contrastive_loss`.

    The cosine measure of the originals: callers pass L2-normalised embeddings. ``im`` (n_img, D),
    ``s`` (n_cap, D); pairs are ``(im[i], s[i])`` for ``i < n_pairs`` (default ``min(n_img, n_cap)``),
    further rows of either are extra negatives. Models that score pairs themselves (cross-attention,
    DIME) call :meth:`from_scores` with their (n_img, n_cap) matrix.
    """

    def __init__(self, margin: float = 0.2, max_violation: bool = False) -> None:
        super().__init__()
        self.margin = margin
        self.max_violation = max_violation

    def forward(self, im: torch.Tensor, s: torch.Tensor, n_pairs: int | None = None) -> torch.Tensor:
        if im.ndim != 2 or s.ndim != 2 or im.shape[1] != s.shape[1]:
            fail(
                f"ContrastiveLoss: expected im (n_img, D) and s (n_cap, D), "
                f"found {tuple(im.shape)} and {tuple(s.shape)}"
            )
        return self.from_scores(im @ s.T, n_pairs)

    def from_scores(self, scores: torch.Tensor, n_pairs: int | None = None) -> torch.Tensor:
        """The loss of a precomputed (n_img, n_cap) score matrix."""
        return contrastive_loss(scores, self.margin, self.max_violation, n_pairs)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, max_violation={self.max_violation}"


__all__ = ["ContrastiveLoss", "contrastive_loss", "max_violation_at"]
