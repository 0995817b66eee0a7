"""CAMERA (LgQu/CAMERA ``model.py``) and CAMERA+SelfAlign (Zjamie813/SelfAlign ``camera_SelfAlign/model_SelfAlign.py``).

Image: ``fc`` (Xavier) -> ``l2norm`` over the regions (the original's dim-1 ``l2norm``) -> position gates
from boxes and image sizes -> AGSA (1 layer, ``head`` heads) -> ``l2norm`` over the regions ->
summarisation logits (B, R, k) -> softmax over regions -> k views = L^T regions, L2-normalised.
Text (frozen BERT): CAMERA maps the last layer with ``mapping`` Linear(H, d) -> AGSA -> FFN + BN residual
-> mean over all ``max_words`` positions -> L2. The SelfAlign text tower differs (its quirks kept):
Xavier ``mapping``, the mapped tokens ``l2norm``-ed over the 32 positions before AGSA, and a context branch.
Score: max over views of the dot product (:func:`~itr_selfalign.layers.multi_view_scores`).

With ``selfalign`` on, both encoders carry the context layers and the model the concept-alignment
prototypes (``region_loss``); the retrieval embeddings become (original order)
image views ``[views, 0.5 * mean(img_locals), 0.5 * img_fused]`` and caption ``[cap, cap_fused, mean(cap_locals)]``.
"""

from __future__ import annotations

from argparse import Namespace
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from itr_common.text.frozen_bert import freeze, last_hidden_state
from itr_selfalign.alignment import ConceptAlignment, Context, add_context_layers, context_branch
from itr_selfalign.layers import AGSA, PositionEncoder, Summarization, init_fc, l2norm


class CameraImage(NamedTuple):
    """views (B, k, d) L2-normalised; smry (B, R, k) summary logits; concepts (B, R, d) the fc regions
    L2-normalised over features (concept-alignment teacher input); context (SelfAlign) or None."""

    views: torch.Tensor
    smry: torch.Tensor
    concepts: torch.Tensor
    context: Context | None


class CameraText(NamedTuple):
    """emb (B, d) L2-normalised; concepts (B, W, d) mapped tokens (SelfAlign); context or None."""

    emb: torch.Tensor
    concepts: torch.Tensor | None
    context: Context | None


class CameraImageEncoder(nn.Module):
    """``EncoderImagePrecompSelfAttn``: keys fc, position_enc, agsa, mvs
    (+ ctx_fc, ctx_fc_bn1, ctx_fc_bn2, fusion_fn)."""

    def __init__(self, img_dim: int, embed_size: int, head: int, smry_k: int, drop: float = 0.0,
                 selfalign: bool = True) -> None:
        super().__init__()
        self.embed_size, self.selfalign = embed_size, selfalign
        self.fc = init_fc(nn.Linear(img_dim, embed_size))
        self.position_enc = PositionEncoder(embed_size)
        self.agsa = AGSA(1, embed_size, h=head, is_share=False, drop=drop)
        self.mvs = Summarization(embed_size, smry_k)
        if selfalign:
            add_context_layers(self, embed_size)

    def forward(self, images: torch.Tensor, boxes: torch.Tensor, imgs_wh: torch.Tensor,
                ctx_fc_relu: bool = True) -> CameraImage:
        fc_img = l2norm(self.fc(images))  # over the regions (dim 1), as the original
        att = self.agsa(fc_img, self.position_enc(boxes, imgs_wh))  # (B, R, d)
        regions = l2norm(att)
        smry = self.mvs(regions)
        views = F.softmax(smry, dim=1).transpose(1, 2) @ regions  # (B, k, d)
        context = context_branch(self, att.mean(dim=1), att, ctx_fc_relu) if self.selfalign else None
        return CameraImage(F.normalize(views, dim=-1), smry, F.normalize(fc_img, dim=-1), context)


class CameraTextEncoder(nn.Module):
    """``TextEncoder``: keys bert, mapping, agsa, fc1, fc2, bn (+ ctx_fc, ctx_fc_bn1, ctx_fc_bn2, fusion_fn).

    ``selfalign=False`` is CAMERA's text tower, ``True`` SelfAlign's (see the module docstring).
    """

    def __init__(self, bert: nn.Module, embed_size: int, head: int, drop: float = 0.0, selfalign: bool = True) -> None:
        super().__init__()
        self.embed_size, self.selfalign = embed_size, selfalign
        self.bert = bert
        freeze(self.bert)
        self.mapping = nn.Linear(bert.config.hidden_size, embed_size)
        if selfalign:
            init_fc(self.mapping)
        self.agsa = AGSA(1, embed_size, h=head, is_share=False, drop=drop)
        self.fc1 = nn.Linear(embed_size, embed_size)
        self.fc2 = nn.Linear(embed_size, embed_size)
        self.bn = nn.BatchNorm1d(embed_size)
        self.dropout = nn.Dropout(drop)
        if selfalign:
            add_context_layers(self, embed_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor,
                ctx_fc_relu: bool = True) -> CameraText:
        with torch.no_grad():  # frozen: same values, no autograd graph through BERT
            hidden = last_hidden_state(self.bert, input_ids, attention_mask, token_type_ids)
        tokens = self.mapping(hidden.float())  # (B, W, d)
        if self.selfalign:
            tokens = l2norm(tokens)  # over the W positions, pads included (the original's dim-1 l2norm)
        b, w, _ = tokens.shape
        att = self.agsa(tokens)  # no padding mask, as the original
        context = context_branch(self, att.mean(dim=1), att, ctx_fc_relu) if self.selfalign else None
        x = self.fc2(self.dropout(F.relu(self.fc1(att))))
        x = self.bn(x.reshape(b * w, -1)).view(b, w, -1)
        x = att + self.dropout(x)
        emb = F.normalize(x.mean(dim=1), dim=-1)
        return CameraText(emb, F.normalize(tokens, dim=-1) if self.selfalign else None, context)


def camera_image_embedding(img: CameraImage, eval_scale: bool = True) -> torch.Tensor:
    """The retrieval embedding of images (B, k, E): the views, with SelfAlign the context part
    ``0.5 * [mean(locals), fused]`` repeated over the views (E = 3d), else E = d."""
    if img.context is None:
        return img.views
    ctx = 0.5 * torch.cat([img.context.locals.mean(dim=1), img.context.fused], dim=-1)
    return torch.cat([img.views, ctx.unsqueeze(1).expand(-1, img.views.shape[1], -1)], dim=-1)


def camera_caption_embedding(cap: CameraText) -> torch.Tensor:
    """The retrieval embedding of captions (B, E): ``[emb, fused, mean(locals)]`` with SelfAlign, else ``emb``."""
    if cap.context is None:
        return cap.emb
    return torch.cat([cap.emb, cap.context.fused, cap.context.locals.mean(dim=1)], dim=-1)


class CameraModel(nn.Module):
    """CAMERA, or CAMERA+SelfAlign when ``opt.selfalign`` (submodules txt_enc, img_enc[, region_loss])."""

    variant = "camera"

    def __init__(self, opt: Namespace, bert: nn.Module) -> None:
        super().__init__()
        self.opt = opt
        self.selfalign = bool(opt.selfalign)
        self.img_enc = CameraImageEncoder(opt.img_dim, opt.embed_size, opt.head, opt.smry_k, opt.drop, self.selfalign)
        self.txt_enc = CameraTextEncoder(bert, opt.embed_size, opt.head, opt.drop, self.selfalign)
        if self.selfalign:
            self.region_loss = ConceptAlignment(opt.embed_size, nmb_prototypes=opt.local_clu_num)

    def original_modules(self) -> list[nn.Module]:
        """The modules of the original ``state_dict()`` list, in order."""
        mods: list[nn.Module] = [self.img_enc, self.txt_enc]
        return [*mods, self.region_loss] if self.selfalign else mods

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Adam's parameters in the original order (text, image, prototypes), frozen BERT left out."""
        mods: list[nn.Module] = [self.txt_enc, self.img_enc] + ([self.region_loss] if self.selfalign else [])
        return [p for m in mods for p in m.parameters() if p.requires_grad]

    def prototype_parameters(self) -> list[nn.Parameter]:
        return [self.region_loss.v_prototypes.weight] if self.selfalign else []

    def forward(self, batch, max_violation: bool | None = None):
        """The training objective of one :class:`~itr_selfalign.data.CameraBatch` (a
        :class:`~itr_selfalign.losses.Losses`); ``max_violation`` overrides ``opt.max_violation``."""
        from itr_selfalign.losses import camera_losses

        relu = bool(self.opt.ctx_fc_relu)
        img = self.img_enc(batch.images, batch.boxes, batch.sizes, relu)
        cap = self.txt_enc(batch.input_ids, batch.attention_mask, batch.token_type_ids, relu)
        return camera_losses(img, cap, batch.lengths, self.opt, self.region_loss if self.selfalign else None,
                             max_violation)

    def encode_images(self, images: torch.Tensor, boxes: torch.Tensor, imgs_wh: torch.Tensor) -> torch.Tensor:
        """(B, R, D) features, (B, R, 4) boxes, (B, 2) sizes -> (B, k, E) retrieval embeddings."""
        return camera_image_embedding(self.img_enc(images, boxes, imgs_wh, bool(self.opt.ctx_fc_relu)))

    def encode_captions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(B, W) ids and mask -> (B, E) retrieval embeddings."""
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        return camera_caption_embedding(self.txt_enc(input_ids, attention_mask, token_type_ids,
                                                     bool(self.opt.ctx_fc_relu)))


__all__ = ["CameraImage", "CameraImageEncoder", "CameraModel", "CameraText", "CameraTextEncoder",
           "camera_caption_embedding", "camera_image_embedding"]
