"""ALADIN's losses and the TERAN alignment scores (mesnico/ALADIN ``alad/loss.py``, from mesnico/TERAN).

* :func:`alignment_scores`: the parameter-free alignment head. Region and word vectors are
  L2-normalised; the first region and, of the text, ``[CLS]``, the last wordpiece and ``[SEP]`` are left
  out (``im_set[:, 1:]``, ``s_seq[:, 1:-2]``, lengths ``- 1`` and ``- 3``); ``A[i, j] = R_i W_j^T``
  (B_i x B_c x S_im x S_w) with padded positions set to 0, then aggregated: ``MrSw`` (max over regions,
  sum over words, ALADIN's choice), ``MrAVGw``, ``MwSr``, ``symm``, ``sum``, ``mean``, ``scan-sentences``.
* :func:`contrastive` is itr_common's VSE++ hinge loss (summed; max violation) used on both the
  alignment and the matching score matrices.
* :func:`distillation_loss`: ``listnet`` (teacher = alignment scores, detached; student = matching
  scores times 6.0), and the original's other modes (``mse``, ``ordinal``, ``contrastive``).
* :func:`combine_losses`: fixed weights or the 'auto' uncertainty weighting
  ``0.5 * sum_k (L_k * exp(-w_k) + w_k)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from itr_common.errors import fail
from itr_common.losses import contrastive_loss

LISTNET_STUDENT_SCALE = 6.0
LISTNET_EPS = 1e-10
AUTO_WEIGHT_INIT = -2.3


def _lengths(values: Sequence[int] | Tensor, device: torch.device) -> Tensor:
    return torch.as_tensor(values, dtype=torch.long, device=device).reshape(-1)


def alignment_matrix(
    im_set: Tensor, s_seq: Tensor, im_len: Sequence[int] | Tensor, s_len: Sequence[int] | Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The masked region-word cosine tensor after the original slicing.

    im_set (B_i, S_im + 1, D) region vectors, s_seq (B_c, S_w + 3, D) token vectors (not yet normalised).
    Returns ``(A (B_i, B_c, S_im, S_w) with padded entries 0, mask (same shape, True = padded),
    im_len - 1 (B_i,), s_len - 3 (B_c,), the sliced normalised s_seq (B_c, S_w, D) and im_set (B_i, S_im, D))``.
    """
    im_set = F.normalize(im_set, p=2, dim=2)[:, 1:, :]
    s_seq = F.normalize(s_seq, p=2, dim=2)[:, 1:-2, :]
    im_l = _lengths(im_len, im_set.device) - 1
    s_l = _lengths(s_len, im_set.device) - 3
    alignments = torch.einsum("ird,cwd->icrw", im_set, s_seq)
    im_pad = torch.arange(im_set.size(1), device=im_set.device)[None, :] >= im_l[:, None]  # (B_i, S_im)
    s_pad = torch.arange(s_seq.size(1), device=im_set.device)[None, :] >= s_l[:, None]  # (B_c, S_w)
    mask = im_pad[:, None, :, None] | s_pad[None, :, None, :]
    return alignments.masked_fill(mask, 0), mask, im_l, s_l, s_seq, im_set


def alignment_scores(
    im_set: Tensor,
    s_seq: Tensor,
    im_len: Sequence[int] | Tensor,
    s_len: Sequence[int] | Tensor,
    aggregation: str = "MrSw",
    padded_len: tuple[int, int] | None = None,
) -> Tensor:
    """(B_i, B_c) alignment scores of every image set with every token sequence (``AlignmentContrastiveLoss``).

    ``padded_len`` = (regions, tokens) the sets would have been zero-padded to before slicing: the original
    evaluation stores every set in 71 slots, so a padded zero region always takes part in the max over
    regions (``MrSw`` scores are then ``sum_w max(0, max_r cos)``) and ``mean`` divides by 70 x 68. With
    ``None`` the tensors' own sizes count, as in training (batch padding).
    """
    alignments, mask, im_l, s_l, s_seq_n, im_set_n = alignment_matrix(im_set, s_seq, im_len, s_len)
    n_im, n_s = alignments.shape[2], alignments.shape[3]
    v_im = n_im if padded_len is None else max(n_im, padded_len[0] - 1)
    v_s = n_s if padded_len is None else max(n_s, padded_len[1] - 3)
    im_floor = (im_l < v_im)[:, None, None]  # a padded zero region takes part in max over regions
    s_floor = (s_l < v_s)[None, :, None]
    if aggregation == "sum":
        return alignments.sum(dim=(2, 3))
    if aggregation == "mean":
        return alignments.sum(dim=(2, 3)) / (v_im * v_s)
    if aggregation in ("MrSw", "MrAVGw", "symm"):
        best_region = alignments.max(dim=2).values  # (B_i, B_c, S_w)
        best_region = torch.where(im_floor, best_region.clamp(min=0), best_region)
        scores = best_region.sum(dim=2)
        if aggregation == "MrAVGw":
            return scores / s_l.to(scores.dtype)[None, :]
        if aggregation == "MrSw":
            return scores
        best_word = alignments.max(dim=3).values  # (B_i, B_c, S_im)
        best_word = torch.where(s_floor, best_word.clamp(min=0), best_word)
        return scores + best_word.sum(dim=2)
    if aggregation == "MwSr":
        best_word = alignments.max(dim=3).values
        best_word = torch.where(s_floor, best_word.clamp(min=0), best_word)
        return best_word.sum(dim=2)
    if aggregation == "scan-sentences":
        norm = F.normalize(F.relu(alignments), p=2, dim=2)
        weights = torch.softmax(norm.masked_fill(mask, float("-inf")), dim=3)  # (B_i, B_c, S_im, S_w)
        attended = torch.einsum("icrw,cwd->icrd", weights, s_seq_n)
        new = F.cosine_similarity(im_set_n[:, None, :, :].expand_as(attended), attended, dim=3)
        im_pad = mask.all(dim=3)
        return new.masked_fill(im_pad, 0).nan_to_num(0.0).sum(dim=2)
    fail(f"alignment-mode: expected one of MrSw, MrAVGw, MwSr, symm, sum, mean, scan-sentences, found {aggregation!r}")


def contrastive(scores: Tensor, margin: float = 0.2, max_violation: bool = True) -> Tensor:
    """VSE++ hinge loss on a square (B, B) score matrix, summed (``Contrastive.compute_contrastive_loss``)."""
    return contrastive_loss(scores, margin=margin, max_violation=max_violation, n_pairs=scores.size(0))


def listnet(teacher_scores: Tensor, student_scores: Tensor, scale: float = LISTNET_STUDENT_SCALE) -> Tensor:
    """ListNet both ways: ``mean_i[-sum_j softmax_j(T) log(softmax_j(6 S) + 1e-10)]`` plus the same over
    columns; the teacher is detached."""
    teacher = teacher_scores.detach()
    rows = torch.mean(-torch.sum(torch.softmax(teacher, dim=1)
                                 * torch.log(torch.softmax(student_scores * scale, dim=1) + LISTNET_EPS), dim=1))
    cols = torch.mean(-torch.sum(torch.softmax(teacher, dim=0)
                                 * torch.log(torch.softmax(student_scores * scale, dim=0) + LISTNET_EPS), dim=0))
    return cols + rows


def distillation_loss(
    teacher_scores: Tensor, student_scores: Tensor, mode: str = "listnet", margin: float = 0.2,
    threshold: float = 0.1, stride: int = 3, wb: Tensor | None = None,
) -> Tensor:
    """``DistillationLoss(mode)``; ``wb`` is the learnt (scale, shift) of mode 'mse'."""
    teacher = teacher_scores.detach()
    if mode == "listnet":
        return listnet(teacher, student_scores)
    if mode == "mse":
        if wb is None:
            fail("distillation-mode 'mse' needs its (scale, shift) parameter")
        student = student_scores * wb[0] + wb[1]
        return F.mse_loss(student.reshape(-1, 1), teacher.reshape(-1, 1))
    if mode == "ordinal":
        t_row, rank_row = torch.sort(teacher, dim=1)
        s_row = torch.gather(student_scores, 1, rank_row)
        d_row = (s_row[:, :-stride] - s_row[:, stride:])[(t_row >= threshold)[:, stride:]]
        t_col, rank_col = torch.sort(teacher, dim=0)
        s_col = torch.gather(student_scores, 0, rank_col)
        d_col = (s_col[:-stride, :] - s_col[stride:, :])[(t_col >= threshold)[stride:, :]]
        return F.relu(margin + d_row).mean() + F.relu(margin + d_col).mean()
    if mode == "contrastive":
        eye = torch.eye(teacher.size(0), dtype=torch.bool, device=teacher.device)
        t_nodiag = teacher.masked_fill(eye, 0)
        diagonal = student_scores.diag().view(-1, 1)
        cost_s = (margin + student_scores - diagonal).clamp(min=0)
        cost_im = (margin + student_scores - diagonal.t()).clamp(min=0)
        cost_s = cost_s.index_select(1, t_nodiag.max(1)[1])
        cost_im = cost_im.index_select(0, t_nodiag.max(0)[1])
        return cost_s.sum() + cost_im.sum()
    fail(f"distillation-mode: expected listnet, mse, ordinal or contrastive, found {mode!r}")


def combine_losses(losses: Mapping[str, Tensor], weights: Mapping[str, float | Tensor], auto: bool) -> Tensor:
    """``sum_k w_k L_k``, or with ``auto`` the uncertainty weighting ``0.5 * sum_k (L_k exp(-w_k) + w_k)``."""
    total = None
    for name, value in losses.items():
        if auto:
            w = weights[name].reshape(())
            term = value * torch.exp(-w) + w
        else:
            term = value * weights[name]
        total = term if total is None else total + term
    if total is None:
        fail("no loss to optimise: loss-type selects none")
    return 0.5 * total if auto else total


__all__ = [
    "AUTO_WEIGHT_INIT",
    "LISTNET_STUDENT_SCALE",
    "alignment_matrix",
    "alignment_scores",
    "combine_losses",
    "contrastive",
    "distillation_loss",
    "listnet",
]
