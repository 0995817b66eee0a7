"""SelfAlign's two modules (Zjamie813/SelfAlign ``loss_SelfAlign.py`` and the encoders' context branch).

Concept-level alignment (:class:`ConceptAlignment`, the original ``LCA_loss``, saved as ``region_loss``):
prototypes ``v_prototypes`` = Linear(d, K, bias=False) whose rows are renormalised (in place) at every
call; the teacher is a Sinkhorn-Knopp assignment (eps 0.05, 2 iterations) of all B*R region-prototype
scores; the student is the word-prototype scores / 0.1; each word's target is the code of the region of
its own image it is most similar to (argmax of word . region); cross-entropy averaged over the words of a
caption (its first ``length`` positions), then over the batch.

Context-level alignment: each encoder carries ``ctx_fc``, ``ctx_fc_bn1``, ``ctx_fc_bn2`` and ``fusion_fn``
(:func:`add_context_layers`); :func:`context_branch` computes the attended context
``a = ReLU(BN1(ctx_fc(mean)))``, the locals ``ReLU(BN2(locals))`` and the gated fusion
``g * mean + (1 - g) * a``, ``g = sigmoid(fusion_fn([mean, a]))``; :func:`context_alignment_loss` (the
original ``CRA_loss``) is the InfoNCE of one modality's context against the other's locals.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

SINKHORN_EPSILON = 0.05
SINKHORN_ITERATIONS = 2
STUDENT_TEMPERATURE = 0.1
NEGATIVES = 512
SELF_PAIR_LOGIT = -10.0


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float = SINKHORN_EPSILON,
             iterations: int = SINKHORN_ITERATIONS) -> torch.Tensor:
    """Sinkhorn-Knopp codes of ``scores`` (n, K) -> (n, K), each row summing to 1 (the original
    ``distributed_sinkhorn`` on one process): Q = exp(s/eps)^T normalised to sum 1, then per iteration
    rows (prototypes) to 1/K and columns (samples) to 1/n; finally columns times n. Float32 throughout."""
    q = torch.exp(scores.float() / epsilon).t()
    n, k = q.shape[1], q.shape[0]
    q = q / q.sum()
    for _ in range(iterations):
        q = q / q.sum(dim=1, keepdim=True) / k
        q = q / q.sum(dim=0, keepdim=True) / n
    return (q * n).t()


class ConceptAlignment(nn.Module):
    """The concept-level alignment loss with its prototypes (original ``LCA_loss``; key ``v_prototypes.weight``)."""

    def __init__(self, in_dim: int, nmb_prototypes: int = 1024, student_temp: float = STUDENT_TEMPERATURE,
                 epsilon: float = SINKHORN_EPSILON, sinkhorn_iterations: int = SINKHORN_ITERATIONS) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, nmb_prototypes
        self.student_temp, self.epsilon, self.sinkhorn_iterations = student_temp, epsilon, sinkhorn_iterations
        self.v_prototypes = nn.Linear(in_dim, nmb_prototypes, bias=False)

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        """Rows of the prototype matrix to unit length, in place (as every original forward does)."""
        self.v_prototypes.weight.copy_(F.normalize(self.v_prototypes.weight, dim=1, p=2))

    def forward(self, v_feats: torch.Tensor, t_feats: torch.Tensor, t_lengths: torch.Tensor) -> torch.Tensor:
        """v_feats (B, R, d) region concepts (teacher side), t_feats (B, L, d) word concepts, t_lengths (B,)
        words used per caption -> scalar loss."""
        self.normalize_prototypes()
        b, r, _ = v_feats.shape
        length = t_feats.shape[1]
        v_codes = sinkhorn(self.v_prototypes(v_feats.detach().reshape(b * r, -1)), self.epsilon,
                           self.sinkhorn_iterations).view(b, r, -1)  # (B, R, K)
        t_logits = self.v_prototypes(t_feats.reshape(b * length, -1)).view(b, length, -1) / self.student_temp
        with torch.no_grad():
            nearest = (t_feats @ v_feats.transpose(1, 2)).argmax(dim=2)  # (B, L): each word's region
        targets = v_codes.gather(1, nearest.unsqueeze(-1).expand(-1, -1, self.out_dim))  # (B, L, K)
        per_word = -(targets * F.log_softmax(t_logits.float(), dim=-1)).sum(dim=-1)  # (B, L)
        lengths = torch.as_tensor(t_lengths, device=per_word.device).long()
        used = torch.arange(length, device=per_word.device)[None, :] < lengths[:, None]
        per_caption = (per_word * used).sum(dim=1) / lengths.clamp(min=1)
        return per_caption.mean()


def add_context_layers(module: nn.Module, embed_size: int) -> None:
    """Register the context branch of an encoder under the original names (in the given order)."""
    module.ctx_fc = nn.Linear(embed_size, embed_size)
    module.ctx_fc_bn1 = nn.BatchNorm1d(embed_size)
    module.ctx_fc_bn2 = nn.BatchNorm1d(embed_size)
    module.fusion_fn = nn.Sequential(nn.Linear(2 * embed_size, embed_size), nn.ReLU(), nn.Linear(embed_size, 1))


def add_vsrn_image_context_layers(module: nn.Module, embed_size: int) -> None:
    """VSRN+SelfAlign's image encoder registers the BatchNorms before ``ctx_fc`` (key order of its state dict)."""
    module.ctx_fc_bn1 = nn.BatchNorm1d(embed_size)
    module.ctx_fc_bn2 = nn.BatchNorm1d(embed_size)
    module.ctx_fc = nn.Linear(embed_size, embed_size)
    module.fusion_fn = nn.Sequential(nn.Linear(2 * embed_size, embed_size), nn.ReLU(), nn.Linear(embed_size, 1))


class Context(NamedTuple):
    """The context branch of one modality, all L2-normalised over features:
    ``attended`` (B, d) = a, ``locals`` (B, N, d), ``fused`` (B, d)."""

    attended: torch.Tensor
    locals: torch.Tensor
    fused: torch.Tensor


def context_branch(module: nn.Module, mean: torch.Tensor, feats: torch.Tensor, relu: bool) -> Context:
    """mean (B, d) = the mean of ``feats`` (B, N, d) over its N positions (pads included where the
    original includes them) -> :class:`Context`."""
    b, n, d = feats.shape
    attended = module.ctx_fc_bn1(module.ctx_fc(mean))
    locals_ = module.ctx_fc_bn2(feats.reshape(b * n, d)).view(b, n, d)
    if relu:
        attended, locals_ = F.relu(attended), F.relu(locals_)
    gate = torch.sigmoid(module.fusion_fn(torch.cat([mean, attended], dim=-1)))  # (B, 1)
    fused = gate * mean + (1 - gate) * attended
    return Context(F.normalize(attended, dim=-1), F.normalize(locals_, dim=-1), F.normalize(fused, dim=-1))


def context_alignment_loss(locals_: torch.Tensor, query: torch.Tensor, temperature: float = 1.0,
                           neg_num: int | None = NEGATIVES) -> torch.Tensor:
    """The original ``CRA_loss`` with ``l = locals_`` and ``m = query``.

    locals_ (N, n_l, d): one sample's locals (keys); query (N, d) or (N, n_m, d): the other modality's context.
    For local l of sample i: positive ``q_i . l_{i,l} / T``; negatives ``q_i . l_{j,*} / T`` for every
    sample j, its own entries set to -10 (not -inf, as the original); with ``neg_num`` only the
    ``min(neg_num, N * n_l)`` largest negatives are kept (the original's topk fails when fewer exist).
    Loss = mean over (i, l, m) of ``-log softmax([pos, negs])[0]``.
    """
    if query.dim() == 2:
        query = query.unsqueeze(1)
    n, n_l, d = locals_.shape
    n_m = query.shape[1]
    u_p = (locals_ @ query.transpose(1, 2)).unsqueeze(2) / temperature  # (N, n_l, 1, n_m)
    u_n = (query.reshape(-1, d) @ locals_.reshape(-1, d).t()) / temperature  # (N*n_m, N*n_l)
    u_n = u_n.view(n, n_m, n, n_l).permute(0, 2, 3, 1)  # (N, N, n_l, n_m)
    keep = (1 - torch.eye(n, device=locals_.device, dtype=u_n.dtype))[:, :, None, None]
    u_n = keep * u_n + SELF_PAIR_LOGIT * (1 - keep)
    u_n = u_n.reshape(n, n * n_l, n_m)  # the same negatives for every local of sample i
    if neg_num:
        u_n = torch.topk(u_n, k=min(neg_num, n * n_l), dim=1).values
    u_n = u_n.unsqueeze(1).expand(-1, n_l, -1, -1)
    logits = torch.cat([u_p, u_n], dim=2)
    return -F.log_softmax(logits.float(), dim=2)[:, :, 0].mean()


def context_loss(img_attended: torch.Tensor, img_locals: torch.Tensor, cap_attended: torch.Tensor,
                 cap_locals: torch.Tensor, v5_tao: float, v6_tao: float,
                 neg_num: int | None = NEGATIVES) -> torch.Tensor:
    """``0.5 * (v2t + t2v)``: v2t = the caption's context against the image's locals (T = v5_tao),
    t2v = the image's context against the caption's locals (T = v6_tao)."""
    v2t = context_alignment_loss(img_locals, cap_attended, v5_tao, neg_num)
    t2v = context_alignment_loss(cap_locals, img_attended, v6_tao, neg_num)
    return 0.5 * t2v + 0.5 * v2t


__all__ = ["NEGATIVES", "ConceptAlignment", "Context", "add_context_layers", "add_vsrn_image_context_layers",
           "context_alignment_loss", "context_branch", "context_loss", "sinkhorn"]
