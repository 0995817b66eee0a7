"""ALADIN's model (mesnico/ALADIN ``alad/alad_model.py``), same module tree and state-dict keys.

``ALADModel`` (checkpoint ``'model'`` keys ``img_txt_enc.*`` [+ ``losses_weights.*`` with 'auto' weights,
``distillation_loss.wb`` with 'mse' distillation]) holds ``JointTextImageTransformerEncoder``:

* ``oscar_model``: the VinVL ``ImageBertForSequenceClassification`` (only its ``bert`` runs), loaded from
  the coco_ir checkpoint directory; two passes with shared weights: the caption alone
  (``[CLS] caption [SEP]``), and the object tags followed by the regions. With ``freeze-teran`` both passes
  run without gradients (the backbone still follows train/eval mode, as in the original).
* the alignment head is parameter-free (:func:`itr_aladin.losses.alignment_scores`) on the L2-normalised
  token outputs of the caption pass (``[:, :max cap len]``) and the region outputs of the image pass
  (``[:, L_tags : L_tags + max regions]``);
* the matching head: one ``nn.TransformerEncoder`` (``final_projection_net``: d_model = embed-size, 4
  heads, feed-forward = embed-size, dropout, ``tern-layers`` layers, ReLU, post-norm) shared by both
  modalities, applied with the padding mask; the output at position 0 ([CLS] for text, the first region
  for images), L2-normalised, is the embedding; scores are ``img @ cap.T``;
* ``img_proj`` / ``cap_proj`` (Linear(H, embed)) exist in the original but are never used: kept for the keys;
  ``transformer_encoder_1`` (/ ``_2``) exist only with ``teran-layers > 0``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from itr_aladin.config import activate_distillation_after, loss_types
from itr_aladin.losses import AUTO_WEIGHT_INIT, alignment_scores, combine_losses, contrastive, distillation_loss
from itr_aladin.oscar import ImageBertForSequenceClassification, OscarConfig
from itr_common.checkpoint import load_state_dict_mapped
from itr_common.errors import fail

LOGGER = logging.getLogger(__name__)
HEADS = 4  # nhead of every TransformerEncoderLayer in the original


class _Tensors:
    """``to(device)`` of a dataclass of tensors: every field moved."""

    def to(self, device: torch.device | str) -> Any:
        return type(self)(*(getattr(self, f.name).to(device) for f in dataclasses.fields(self)))  # type: ignore


@dataclass
class TextBatch(_Tensors):
    """``[CLS] caption [SEP]`` padded: input_ids / attention_mask / token_type_ids (B, L); lengths (B,)."""

    input_ids: Tensor
    attention_mask: Tensor
    token_type_ids: Tensor
    lengths: Tensor


@dataclass
class ImageBatch(_Tensors):
    """Tags + regions: input_ids / token_type_ids (B, L); attention_mask (B, L + R); img_feats (B, R, D);
    lengths (B,) regions kept (<= R)."""

    input_ids: Tensor
    attention_mask: Tensor
    token_type_ids: Tensor
    img_feats: Tensor
    lengths: Tensor


@dataclass
class Embeddings:
    """One modality's outputs: ``emb`` (B, D) L2-normalised matching embedding; ``sets`` (B, S, D)
    L2-normalised token/region vectors for the alignment head; ``lengths`` (B,) valid positions."""

    emb: Tensor
    sets: Tensor
    lengths: Tensor


def l2norm(x: Tensor) -> Tensor:
    """The original ``l2norm``: ``x / sqrt(sum x^2)`` along dim 1 (no epsilon)."""
    return x / x.pow(2).sum(dim=1, keepdim=True).sqrt()


def padding_mask(lengths: Tensor, size: int) -> Tensor:
    """(B,) lengths -> (B, size) bool, True at padded positions (``src_key_padding_mask``)."""
    return torch.arange(size, device=lengths.device)[None, :] >= lengths[:, None]


def check_embed_size(config: dict[str, Any], oscar_config: OscarConfig) -> int:
    """``model.embed-size`` must be the backbone's hidden size (the matching head takes its outputs unprojected)."""
    embed, hidden = config["model"]["embed-size"], oscar_config.hidden_size
    if embed != hidden:
        fail(f"config model.embed-size: expected the backbone's hidden size {hidden} (the matching head takes "
             f"the backbone outputs unprojected), found {embed}")
    return int(embed)


def transformer_encoder(d_model: int, layers: int, dropout: float) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(d_model=d_model, nhead=HEADS, dim_feedforward=d_model, dropout=dropout,
                                       batch_first=True)
    return nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)


class JointTextImageTransformerEncoder(nn.Module):
    """The two shared-weight VinVL passes, the (optional) TERAN layers and the matching head."""

    def __init__(self, config: dict[str, Any], oscar_config: OscarConfig) -> None:
        super().__init__()
        model_cfg = config["model"]
        self.oscar_model = ImageBertForSequenceClassification(oscar_config)
        hidden = oscar_config.hidden_size
        embed = check_embed_size(config, oscar_config)
        dropout = model_cfg["dropout"]
        self.freeze_teran = bool(model_cfg.get("freeze-teran", False))
        self.shared_transformer = bool(model_cfg["shared-transformer"])
        self.embed_size = embed
        self.img_proj = nn.Linear(hidden, embed)
        self.cap_proj = nn.Linear(hidden, embed)
        teran_layers = model_cfg["teran-layers"]
        self.transformer_encoder_1 = transformer_encoder(embed, teran_layers, dropout) if teran_layers else None
        self.transformer_encoder_2 = (transformer_encoder(embed, teran_layers, dropout)
                                      if teran_layers and not self.shared_transformer else None)
        self.final_projection_net = transformer_encoder(embed, model_cfg["tern-layers"], dropout)

    @property
    def bert(self) -> nn.Module:
        return self.oscar_model.bert

    def _teran(self, x: Tensor, mask: Tensor, image: bool) -> Tensor:
        encoder = self.transformer_encoder_2 if image and self.transformer_encoder_2 is not None else \
            self.transformer_encoder_1
        return x if encoder is None else encoder(x, src_key_padding_mask=mask)

    def encode_text(self, txt: TextBatch) -> Embeddings:
        """Caption pass: tokens (B, max cap len, H) -> matching embedding and normalised token set."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_teran):
            out, _ = self.bert(txt.input_ids, txt.token_type_ids, txt.attention_mask, None)
            max_len = int(txt.lengths.max())
            c_emb = out[:, :max_len]
            mask = padding_mask(txt.lengths, max_len)
            sets = self._teran(c_emb, mask, image=False)
        emb = self.final_projection_net(c_emb, src_key_padding_mask=mask)[:, 0]
        return Embeddings(l2norm(emb), F.normalize(sets, p=2, dim=2), txt.lengths)

    def encode_image(self, img: ImageBatch) -> Embeddings:
        """Tags + regions pass: the region outputs (B, max regions, H) -> embedding and normalised region set."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_teran):
            out, _ = self.bert(img.input_ids, img.token_type_ids, img.attention_mask, img.img_feats)
            start = img.input_ids.size(1)
            max_len = int(img.lengths.max())
            i_emb = out[:, start : start + max_len]
            mask = padding_mask(img.lengths, max_len)
            sets = self._teran(i_emb, mask, image=True)
        emb = self.final_projection_net(i_emb, src_key_padding_mask=mask)[:, 0]
        return Embeddings(l2norm(emb), F.normalize(sets, p=2, dim=2), img.lengths)

    def forward(self, img: ImageBatch, txt: TextBatch) -> tuple[Embeddings, Embeddings]:
        return self.encode_image(img), self.encode_text(txt)


class DistillationLoss(nn.Module):
    """Holds the learnt ``wb`` (scale, shift) of mode 'mse' (key ``distillation_loss.wb``); other modes have none."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        if mode == "mse":
            self.wb = nn.Parameter(torch.tensor([0.5, 0.5]))

    def forward(self, teacher: Tensor, student: Tensor) -> Tensor:
        return distillation_loss(teacher, student, self.mode, wb=getattr(self, "wb", None))


class ALADModel(nn.Module):
    """The whole model and its training losses (``ALADModel`` of the original)."""

    def __init__(self, config: dict[str, Any], oscar_config: OscarConfig) -> None:
        super().__init__()
        self.config = config
        self.img_txt_enc = JointTextImageTransformerEncoder(config, oscar_config)
        training = config["training"]
        self.losses_types = loss_types(config)
        weights = training["loss-weights"]
        self.auto_weight = not isinstance(weights, list)
        if self.auto_weight:
            self.losses_weights = nn.ParameterDict(
                {k: nn.Parameter(torch.full((1,), AUTO_WEIGHT_INIT)) for k in self.losses_types})
            self.fixed_weights: dict[str, float] = {}
        else:
            self.fixed_weights = {k: float(w) for k, w in zip(self.losses_types, weights, strict=True)}
        if "distillation" in self.losses_types:
            self.distillation_loss = DistillationLoss(training["distillation-mode"])
        self.alignment_mode = training.get("alignment-mode", "MrSw")
        self.margin = float(training["margin"])
        self.max_violation = bool(training["max-violation"])
        self.distill_epoch = activate_distillation_after(config)
        self.Eiters = 0

    # -- scores
    def matching_scores(self, img: Embeddings, cap: Embeddings) -> Tensor:
        """(B_i, B_c) ``img @ cap.T`` (measure 'dot'; 'cosine' re-normalises, the same on unit vectors)."""
        if self.config["training"]["measure"] == "cosine":
            return l2norm(img.emb) @ l2norm(cap.emb).T
        return img.emb @ cap.emb.T

    def alignment_scores(self, img: Embeddings, cap: Embeddings, padded_len: tuple[int, int] | None = None) -> Tensor:
        return alignment_scores(img.sets, cap.sets, img.lengths, cap.lengths, self.alignment_mode, padded_len)

    # -- losses
    def forward_loss(self, img: Embeddings, cap: Embeddings) -> dict[str, Tensor]:
        """The losses the loss-type asks for (before weighting), by name."""
        losses: dict[str, Tensor] = {}
        matching_mat = self.matching_scores(img, cap)
        if "matching" in self.losses_types:
            losses["matching"] = contrastive(matching_mat, self.margin, self.max_violation)
        if "alignment" in self.losses_types or "distillation" in self.losses_types:
            teacher = self.alignment_scores(img, cap)
            if "alignment" in self.losses_types:
                losses["alignment"] = contrastive(teacher, self.margin, self.max_violation)
            if "distillation" in self.losses_types:
                losses["distillation"] = self.distillation_loss(teacher, matching_mat)
        return losses

    def forward(self, img: ImageBatch, txt: TextBatch, epoch: int = 0) -> tuple[Tensor, dict[str, float]]:
        """One training step's loss; the distillation term waits ``activate_distillation_after`` epochs
        when another loss is there to train on (the original's ``epoch < distill_epoch`` rule)."""
        self.Eiters += 1
        img_emb, cap_emb = self.img_txt_enc(img, txt)
        losses = self.forward_loss(img_emb, cap_emb)
        if epoch < self.distill_epoch and len(losses) > 1:
            losses.pop("distillation", None)
        weights = self.losses_weights if self.auto_weight else self.fixed_weights
        total = combine_losses(losses, weights, self.auto_weight)
        return total, {k: float(v.detach()) for k, v in losses.items()}

    # -- checkpoints
    def load_aladin_state_dict(self, state: dict[str, Tensor], strict: bool = True, source: str = "checkpoint") -> None:
        """Load an ALADIN checkpoint's ``'model'`` (``module.`` stripped). Strict, except that the 'auto'
        loss weights (never saved by the original, which did not register them) may be absent: logged by name.
        ``strict=False`` is ``--load-teacher-model`` (the original's ``strict=False``): differences are logged."""
        state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
        auto_keys = [f"losses_weights.{k}" for k in self.losses_types] if self.auto_weight else []
        absent = [k for k in auto_keys if k not in state]
        if absent:
            LOGGER.warning("%s: %s absent (the original never saved its 'auto' loss weights): starting them at %s",
                           source, ", ".join(absent), AUTO_WEIGHT_INIT)
            state = {**state, **{k: v for k, v in self.state_dict().items() if k in absent}}
        report = load_state_dict_mapped(self, state, strict=strict, source=source)
        if not strict and not report.ok:
            if report.mismatched:
                fail(f"{source}: does not match the model: {report.summary()}")
            LOGGER.warning("%s: loaded non-strictly (--load-teacher-model): %s", source, report.summary())


__all__ = ["ALADModel", "Embeddings", "ImageBatch", "JointTextImageTransformerEncoder", "TextBatch", "l2norm"]
