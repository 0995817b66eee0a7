"""The LightningDOT bi-encoder (``dvl/models/bi_encoder.py``): a BERT text tower and a UNITER image tower.

- text tower :class:`BertEncoder`: ``transformers.BertModel`` over ``[CLS] caption [SEP]``; the
  embedding is the last layer's ``[CLS]`` vector (not the pooler);
- image tower :class:`UniterEncoder`: UNITER (``itr_common.models.uniter``) over one text token,
  ``[CLS]`` (id 101), followed by the regions; the embedding is that ``[CLS]`` output;
- each tower ends with ``encode_proj`` = ``Linear(H, 2H) -> GELU -> LayerNorm(2H, eps 1e-12) ->
  Linear(2H, project_dim)`` when ``project_dim > 0``;
- score = raw dot product of the two embeddings (no normalisation, no temperature).

State-dict keys are the original's: ``txt_model.bert.*`` (Hugging Face BERT names),
``txt_model.encode_proj.{0,2,3}.*``, ``img_model.bert.*`` (UNITER names under ``bert.``, the layout of
LightningDOT's vendored UNITER) and ``img_model.encode_proj.*``; the released ``LightningDot.pt``
holds the same under a ``bert.`` prefix plus the pre-training heads (see :mod:`itr_lightningdot.checkpoints`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from itr_common.errors import UserError, fail
from itr_common.models.uniter import UniterConfig, UniterModel, gelu, init_bert_weights

LOGGER = logging.getLogger(__name__)

IMG_CLS_ID = 101
"""The image tower's one text token, ``[CLS]`` of bert-base-cased (hard-coded in the original dataset)."""

TXT_MODEL_TYPES = ("bert-base", "uniter-base")
IMG_MODEL_TYPES = ("uniter-base",)


class GELU(nn.Module):
    """The erf GELU of UNITER's ``layer.py`` as a module (it sits inside ``encode_proj``)."""

    def forward(self, x: Tensor) -> Tensor:
        return gelu(x)


def projection(hidden_size: int, project_dim: int) -> nn.Sequential | None:
    """``encode_proj``: Linear(H, 2H), GELU, LayerNorm(2H, eps 1e-12), Linear(2H, project_dim); None if 0."""
    if project_dim <= 0:
        return None
    return nn.Sequential(
        nn.Linear(hidden_size, hidden_size * 2),
        GELU(),
        nn.LayerNorm(hidden_size * 2, eps=1e-12),
        nn.Linear(hidden_size * 2, project_dim),
    )


@dataclass
class TowerOutput:
    """sequence_output (B, T, H) of the last layer; pooled (B, D): [CLS] after the projection."""

    sequence_output: Tensor
    pooled: Tensor


class BertEncoder(nn.Module):
    """Text tower: ``bert`` (a ``transformers.BertModel``) + optional ``encode_proj``.

    forward(input_ids (B, L), attention_mask (B, L), position_ids (1|B, L)) -> :class:`TowerOutput`.
    """

    def __init__(self, bert: nn.Module, project_dim: int = 0) -> None:
        super().__init__()
        self.bert = bert
        hidden = int(bert.config.hidden_size)
        self.encode_proj = projection(hidden, project_dim)
        if self.encode_proj is not None:
            self.encode_proj.apply(lambda m: init_bert_weights(m, bert.config.initializer_range))
        self.hidden_size = hidden

    @property
    def out_size(self) -> int:
        """Embedding size (the original's ``get_out_size`` read ``.out_features`` of a Sequential and failed)."""
        return self.encode_proj[-1].out_features if self.encode_proj is not None else self.hidden_size

    def forward(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor | None = None,
                **_: Any) -> TowerOutput:
        if position_ids is not None and position_ids.size(0) != input_ids.size(0):
            position_ids = position_ids.expand(input_ids.size(0), -1)
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                        token_type_ids=torch.zeros_like(input_ids))
        sequence_output = out.last_hidden_state
        pooled = sequence_output[:, 0, :]
        if self.encode_proj is not None:
            pooled = self.encode_proj(pooled)
        return TowerOutput(sequence_output, pooled)


class UniterEncoder(nn.Module):
    """Image tower: ``bert`` (a UNITER model) + optional ``encode_proj``.

    forward(input_ids (B, 1) = [CLS], attention_mask (B, 1 + R), position_ids (1, 1), img_feat (B, R, D),
    img_pos_feat (B, R, 7), img_masks (B, R) or None) -> :class:`TowerOutput`. With one text token
    the original's ``gather_index`` is the identity, so the joint sequence is ``[CLS] | regions``.
    A text-only call (``img_feat=None``) encodes text with UNITER (``txt_model_type uniter-base``).
    """

    def __init__(self, config: UniterConfig, project_dim: int = 0) -> None:
        super().__init__()
        self.config = config
        self.bert = UniterModel(config)
        self.encode_proj = projection(config.hidden_size, project_dim)
        if self.encode_proj is not None:
            self.encode_proj.apply(lambda m: init_bert_weights(m, config.initializer_range))

    @property
    def out_size(self) -> int:
        return self.encode_proj[-1].out_features if self.encode_proj is not None else self.config.hidden_size

    def forward(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor,
                img_feat: Tensor | None = None, img_pos_feat: Tensor | None = None,
                img_masks: Tensor | None = None, **_: Any) -> TowerOutput:
        out = self.bert(input_ids, position_ids, img_feat, img_pos_feat, attention_mask, gather_index=None,
                        img_masks=img_masks)
        sequence_output = out.sequence_output
        pooled = sequence_output[:, 0, :]
        if self.encode_proj is not None:
            pooled = self.encode_proj(pooled)
        return TowerOutput(sequence_output, pooled)


@dataclass
class BiEncoderOutput:
    """Pooled embeddings: txt (N_t, D), img (N_i, D), caps (N_c, D) or None; sequence outputs likewise."""

    txt: Tensor | None
    img: Tensor | None
    caps: Tensor | None = None
    txt_seq: Tensor | None = None
    img_seq: Tensor | None = None


class BiEncoder(nn.Module):
    """``img_model`` + ``txt_model`` (the original's module names, so state dicts keep their keys).

    ``fix_img_encoder`` / ``fix_txt_encoder`` freeze a tower (the original froze the image tower with
    ``fix_txt_encoder``: fixed here, each flag freezes its own tower).
    """

    def __init__(self, img_model: UniterEncoder, txt_model: nn.Module, fix_img_encoder: bool = False,
                 fix_txt_encoder: bool = False) -> None:
        super().__init__()
        self.img_model = img_model
        self.txt_model = txt_model
        self.fix_img_encoder = fix_img_encoder
        self.fix_txt_encoder = fix_txt_encoder
        if img_model.out_size != txt_model.out_size:
            fail(f"project_dim: expected both towers to give the same embedding size, found image "
                 f"{img_model.out_size} and text {txt_model.out_size} (set project_dim > 0)")
        for flag, tower in ((fix_img_encoder, img_model), (fix_txt_encoder, txt_model)):
            if flag:
                for param in tower.parameters():
                    param.requires_grad = False

    @property
    def vector_size(self) -> int:
        return self.img_model.out_size

    @staticmethod
    def _run(tower: nn.Module, inputs: Mapping[str, Any], fixed: bool) -> TowerOutput:
        if fixed:
            with torch.no_grad():
                return tower(**inputs)
        return tower(**inputs)

    def encode_text(self, inputs: Mapping[str, Any]) -> TowerOutput:
        """inputs: input_ids, attention_mask, position_ids -> TowerOutput."""
        return self._run(self.txt_model, inputs, self.fix_txt_encoder)

    def encode_image(self, inputs: Mapping[str, Any]) -> TowerOutput:
        """inputs: input_ids ([CLS]), attention_mask, position_ids, img_feat, img_pos_feat[, img_masks]."""
        return self._run(self.img_model, inputs, self.fix_img_encoder)

    def forward(self, batch: Mapping[str, Any]) -> BiEncoderOutput:
        """batch: optional ``txts``, ``imgs``, ``caps`` input dicts (the original collate's layout)."""
        txt = self.encode_text(batch["txts"]) if batch.get("txts") is not None else None
        img = self.encode_image(batch["imgs"]) if batch.get("imgs") is not None else None
        caps = batch.get("caps")
        cap = self.encode_text(caps) if caps is not None and caps.get("input_ids") is not None else None
        return BiEncoderOutput(
            txt.pooled if txt is not None else None,
            img.pooled if img is not None else None,
            cap.pooled if cap is not None else None,
            txt.sequence_output if txt is not None else None,
            img.sequence_output if img is not None else None,
        )


# ---------------------------------------------------------------------------------------------- building


def uniter_config(path: str | os.PathLike, img_dim: int | None = None) -> UniterConfig:
    """``img_base.json`` / ``uniter-*.json`` as a UNITER config (HF BERT keys tolerated); ``img_dim``
    overrides the region feature size (2048 unless the checkpoint says otherwise)."""
    overrides = {"img_dim": img_dim} if img_dim is not None else {}
    return UniterConfig.from_json_file(path, strict=False, **overrides)


def bert_config(path: str | os.PathLike, dropout: float | None = None) -> Any:
    """The text tower's ``transformers.BertConfig`` from a local BERT directory or a config json.

    The original named a Hugging Face hub model (``bert-base-cased``); nothing is downloaded here, so
    ``txt_model_config`` must be a local directory (``config.json`` / ``bert_config.json``) or file.
    """
    from itr_common.text import bert_config_from_json, find_bert_config

    candidate = Path(path)
    if candidate.is_dir():
        config_file = find_bert_config(candidate)
    elif candidate.is_file():
        config_file = candidate
    else:
        raise UserError(
            f"txt_model_config: expected a local BERT directory or config json (nothing is downloaded), "
            f"found '{path}'"
        )
    overrides = {} if dropout is None else {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
    config = bert_config_from_json(config_file, **overrides)
    config._attn_implementation = "sdpa"
    return config


def build_bert_tower(config_path: str | os.PathLike, project_dim: int) -> BertEncoder:
    """A text tower with random weights (loaded later from a checkpoint or the BERT directory)."""
    from transformers import BertModel

    config = bert_config(config_path)
    bert = BertModel(config)
    return BertEncoder(bert, project_dim)


def build_uniter_tower(config_path: str | os.PathLike, project_dim: int, img_dim: int | None = None) -> UniterEncoder:
    return UniterEncoder(uniter_config(config_path, img_dim), project_dim)


def build_biencoder(
    img_model_config: str | os.PathLike,
    txt_model_config: str | os.PathLike,
    project_dim: int,
    img_dim: int | None = None,
    txt_model_type: str = "bert-base",
    img_model_type: str = "uniter-base",
    fix_img_encoder: bool = False,
    fix_txt_encoder: bool = False,
) -> BiEncoder:
    """The bi-encoder with freshly initialised weights (see :mod:`itr_lightningdot.checkpoints` to load)."""
    if img_model_type not in IMG_MODEL_TYPES:
        fail(f"img_model_type: expected one of {', '.join(IMG_MODEL_TYPES)}, found '{img_model_type}'")
    if txt_model_type not in TXT_MODEL_TYPES:
        fail(f"txt_model_type: expected one of {', '.join(TXT_MODEL_TYPES)}, found '{txt_model_type}'")
    img_model = build_uniter_tower(img_model_config, project_dim, img_dim)
    if txt_model_type == "bert-base":
        txt_model: nn.Module = build_bert_tower(txt_model_config, project_dim)
    else:
        txt_model = build_uniter_tower(txt_model_config, project_dim, img_dim)
    return BiEncoder(img_model, txt_model, fix_img_encoder, fix_txt_encoder)


def dot_product_scores(q_vectors: Tensor, ctx_vectors: Tensor) -> Tensor:
    """(n1, D) x (n2, D) -> (n1, n2) raw inner products (the original's ``dot_product_scores``)."""
    return torch.matmul(q_vectors, ctx_vectors.transpose(0, 1))
