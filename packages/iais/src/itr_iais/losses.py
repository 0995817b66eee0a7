"""IAIS losses: the hard-negative margin rank loss, the IAIS attention-alignment loss, the TSA weight.

Pure functions on tensors, the maths of lancopku/IAIS ``model/itm.py`` (rank loss),
``model/model.py`` ``UniterEncoder`` (IAIS) and ``utils/training_signal_annealing.py`` (weight).

IAIS in one paragraph. For the ground-truth pair of a group, take the last layer's attention logits
(queries/keys of the hidden states entering it, no dropout) and form four head-averaged maps, each a
softmax restricted to its allowed keys: text->text ``txt`` (L x L, [CLS]/[SEP] excluded),
image->image ``img`` (R x R), text->image ``t2i`` (L x R) and image->text ``i2t`` (R x L). A pseudo
intra-modal map is built from the other modality through the cross-modal maps and the two are tied by
a symmetric KL divergence:

- singular, L side: ``a(i) = argmax_r t2i[i, r]``, ``pseudo[i, j] = softmax_j(img[a(i), a(j)])``;
  V side: ``b(r) = argmax_i i2t[r, i]``, ``pseudo[r, s] = softmax_s(txt[b(r), b(s)])``. The softmax
  runs over values that are already probabilities (the original's choice, kept). KL without epsilon.
- distributed, L side: ``pseudo = t2i @ i2t``; V side: ``pseudo = i2t @ t2i``; KL with ``log(x + 1e-6)``.

``KL(a, b) = KLDivLoss(reduction="batchmean")(log a, b) = sum b * (log b - log a) / rows``; the loss is
``KL(x, pseudo) + KL(pseudo, x)``, summed over the ground-truth pairs and divided by their number.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from itr_common.models.uniter import MASK_ADD

IAIS_MODES = ("L-singular", "V-singular", "L-distributed", "V-distributed")
"""The internal modes: ``L-`` aligns the text self-attention, ``V-`` the image self-attention."""

IAIS_CHOICES = ("distributed", "singular")
"""The values of the ``--IAIS`` flag."""

DISTRIBUTED_EPS = 1e-6
TSA_SCHEDULES = ("linear_schedule", "exp_schedule", "log_schedule")


# ----------------------------------------------------------------------------------------------
# ranking
# ----------------------------------------------------------------------------------------------


def margin_rank_loss(scores: Tensor, sample_size: int, margin: float = 0.2) -> Tensor:
    """Hinge on sigmoid scores, positive first in each group of ``sample_size``.

    scores (G * S, 1) or (G * S,) raw rank logits -> (G, S - 1) ``clamp(margin + sig(neg) - sig(pos), 0)``.
    """
    probs = torch.sigmoid(scores).reshape(-1, sample_size)
    positive, negatives = probs[:, :1], probs[:, 1:]
    return torch.clamp(margin + negatives - positive, min=0)


def tsa_threshold(schedule: str, global_step: int, num_train_steps: int) -> float:
    """Training-signal-annealing weight at ``global_step`` of ``num_train_steps``.

    ``exp_schedule``: ``exp(5 * (t - 1))`` (from e^-5 ~ 0.0067 to 1); ``linear_schedule``: ``t``;
    ``log_schedule``: ``1 - exp(-5 t)``; with ``t = global_step / num_train_steps``.
    """
    progress = float(global_step) / float(num_train_steps)
    if schedule == "exp_schedule":
        return math.exp((progress - 1.0) * 5.0)
    if schedule == "linear_schedule":
        return progress
    if schedule == "log_schedule":
        return 1.0 - math.exp(-progress * 5.0)
    raise ValueError(f"schedule must be one of {TSA_SCHEDULES}, found '{schedule}'")


# ----------------------------------------------------------------------------------------------
# attention maps
# ----------------------------------------------------------------------------------------------


def restricted_attention(logits: Tensor, query_mask: Tensor, key_mask: Tensor) -> Tensor:
    """Head-averaged attention from allowed queries to allowed keys, renormalised over those keys.

    logits (G, heads, T, T) raw ``q k^T / sqrt(d)``; query_mask, key_mask (G, T) 0/1 ->
    (G, T, T) with ``mean_h softmax(logits + (1 - m) * -10000) * m``, ``m = query_mask^T key_mask``
    (rows of disallowed queries are zero, as in the original ``get_attention_probs``).
    """
    pair_mask = (query_mask[:, :, None] * key_mask[:, None, :]).to(logits.dtype)[:, None]  # (G, 1, T, T)
    probs = torch.softmax(logits + (1.0 - pair_mask) * MASK_ADD, dim=-1) * pair_mask
    return probs.mean(dim=1)


def kl_batchmean(log_input: Tensor, target: Tensor) -> Tensor:
    """``nn.KLDivLoss(reduction="batchmean")``: ``sum target * (log target - log_input) / rows``."""
    return F.kl_div(log_input, target, reduction="batchmean")


def iais_singular(txt_attn: Tensor, img_attn: Tensor, cross_attn: Tensor, modal: str) -> Tensor:
    """Singular alignment for one pair.

    txt_attn (L, L); img_attn (R, R); cross_attn t2i (L, R) for ``modal="L"``, i2t (R, L) for "V".
    """
    index = cross_attn.argmax(dim=-1).detach()
    if modal == "L":
        pseudo = torch.softmax(img_attn[index][:, index], dim=-1)
        return kl_batchmean(txt_attn.log(), pseudo) + kl_batchmean(pseudo.log(), txt_attn)
    if modal == "V":
        pseudo = torch.softmax(txt_attn[index][:, index], dim=-1)
        return kl_batchmean(img_attn.log(), pseudo) + kl_batchmean(pseudo.log(), img_attn)
    raise ValueError(f"modal must be 'L' or 'V', found '{modal}'")


def iais_distributed(txt_attn: Tensor, img_attn: Tensor, t2i_attn: Tensor, i2t_attn: Tensor, modal: str) -> Tensor:
    """Distributed alignment for one pair: txt (L, L), img (R, R), t2i (L, R), i2t (R, L)."""
    if modal == "L":
        own, pseudo = txt_attn, t2i_attn @ i2t_attn
    elif modal == "V":
        own, pseudo = img_attn, i2t_attn @ t2i_attn
    else:
        raise ValueError(f"modal must be 'L' or 'V', found '{modal}'")
    return kl_batchmean(torch.log(own + DISTRIBUTED_EPS), pseudo) + kl_batchmean(
        torch.log(pseudo + DISTRIBUTED_EPS), own
    )


def iais_pair_loss(txt_attn: Tensor, img_attn: Tensor, t2i_attn: Tensor, i2t_attn: Tensor, mode: str) -> Tensor:
    """Dispatch one of :data:`IAIS_MODES` on one pair's four (already sliced) maps."""
    if mode == "L-singular":
        return iais_singular(txt_attn, img_attn, t2i_attn, "L")
    if mode == "V-singular":
        return iais_singular(txt_attn, img_attn, i2t_attn, "V")
    if mode == "L-distributed":
        return iais_distributed(txt_attn, img_attn, t2i_attn, i2t_attn, "L")
    if mode == "V-distributed":
        return iais_distributed(txt_attn, img_attn, t2i_attn, i2t_attn, "V")
    raise ValueError(f"IAIS mode must be one of {IAIS_MODES}, found '{mode}'")


def iais_loss(logits: Tensor, txt_mask: Tensor, img_mask: Tensor, mode: str) -> Tensor:
    """The IAIS loss of the ground-truth pairs, averaged over them.

    logits (G, heads, T, T): last-layer attention logits of the G ground-truth pairs;
    txt_mask (G, T): 1 on text tokens without [CLS]/[SEP]; img_mask (G, T): 1 on the pair's regions.
    Returns a scalar.
    """
    txt_attn = restricted_attention(logits, txt_mask, txt_mask)
    img_attn = restricted_attention(logits, img_mask, img_mask)
    t2i_attn = restricted_attention(logits, txt_mask, img_mask)
    i2t_attn = restricted_attention(logits, img_mask, txt_mask)
    total = logits.new_zeros(())
    for j in range(logits.size(0)):
        txt_pos = txt_mask[j].nonzero().squeeze(-1)
        img_pos = img_mask[j].nonzero().squeeze(-1)
        total = total + iais_pair_loss(
            txt_attn[j][txt_pos][:, txt_pos],
            img_attn[j][img_pos][:, img_pos],
            t2i_attn[j][txt_pos][:, img_pos],
            i2t_attn[j][img_pos][:, txt_pos],
            mode,
        )
    return total / logits.size(0)
