"""The Oscar/VinVL backbone: ``BertImgModel`` and ``ImageBertForSequenceClassification`` (microsoft/Oscar
``oscar/modeling/modeling_bert.py``), loading a VinVL ``coco_ir`` checkpoint directory by its original keys.

``BertImgModel`` is BERT with region features appended after the token embeddings:

- text: word + position + token type embeddings, LayerNorm, dropout (BERT's ``BertEmbeddings``);
- regions: ``img_embedding`` Linear(img_feature_dim, H) -> ``LayerNorm`` (eps ``img_layer_norm_eps``, when
  config.json's ``use_img_layernorm`` is true; absent means none, as Oscar's ``hasattr`` test) -> dropout; no
  position or token type embedding for regions;
- the concatenation goes through the BERT encoder with the additive mask ``(1 - m) * -10000``;
  pooler ``tanh(dense(h[:, 0]))``.

The blocks are itr_common's UNITER/BERT blocks (same maths, same key names): ``embeddings.*``,
``encoder.layer.{i}.*``, ``pooler.dense.*``, plus Oscar's ``img_embedding.*`` and ``LayerNorm.*``.
``ImageBertForSequenceClassification`` adds ``classifier`` Linear(H, num_labels) (or, with config.json's
``classifier: 'mlp'``, Linear(H, scale H) -> ReLU -> Linear(scale H, num_labels)) on the dropped-out pooled
output: the VinVL retrieval cross-encoder (ALADIN only uses its ``bert``; the bench scores every pair with the
whole thing). A checkpoint directory holds ``config.json``, ``pytorch_model.bin``,
``vocab.txt`` (and ``training_args.bin``, read by :mod:`itr_aladin.options`).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from itr_common.checkpoint import load_checkpoint, load_state_dict_mapped
from itr_common.errors import UserError, fail, require_dir, require_file
from itr_common.models.uniter import (
    BertPooler,
    UniterConfig,
    UniterEncoder,
    UniterTextEmbeddings,
    extended_attention_mask,
    init_bert_weights,
)

LOGGER = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "pytorch_model.bin"
VOCAB_NAME = "vocab.txt"
TRAINING_ARGS_NAME = "training_args.bin"
REQUIRED_CONFIG_KEYS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "max_position_embeddings", "type_vocab_size", "img_feature_dim",
)  # fmt: skip
CODE_FEATURE_TYPES = ("dis_code", "dis_code_t", "dis_code_scale")


@dataclass
class OscarConfig(UniterConfig):
    """The fields of a VinVL/OSCAR ``config.json`` this model uses (the rest are kept in ``extras``): the BERT
    sizes of itr_common's :class:`UniterConfig` plus Oscar's image fields (``img_dim`` follows
    ``img_feature_dim``)."""

    img_feature_dim: int = 2054
    img_feature_type: str = "frcnn"
    use_img_layernorm: int = 1
    img_layer_norm_eps: float = 1e-12
    num_labels: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        self.img_dim = self.img_feature_dim

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config.json") -> OscarConfig:
        missing = [key for key in REQUIRED_CONFIG_KEYS if key not in values]
        if missing:
            fail(f"{source}: expected the OSCAR config keys {list(REQUIRED_CONFIG_KEYS)}, missing {missing}")
        names = {f for f in cls.__dataclass_fields__ if f not in ("extras", "img_dim")}
        known = {k: v for k, v in values.items() if k in names}
        for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                    "max_position_embeddings", "type_vocab_size", "img_feature_dim"):
            if isinstance(known[key], bool) or not isinstance(known[key], int) or known[key] < 1:
                fail(f"{source}: {key}: expected a positive int, found {known[key]!r}")
        if known["hidden_size"] % known["num_attention_heads"]:
            fail(f"{source}: hidden_size {known['hidden_size']} is not a multiple of num_attention_heads "
                 f"{known['num_attention_heads']}")
        if "use_img_layernorm" not in values:  # Oscar: ``hasattr(config, 'use_img_layernorm')`` else None
            known["use_img_layernorm"] = 0
        classifier = values.get("classifier", "linear")
        if classifier not in ("linear", "mlp"):
            fail(f"{source}: classifier: expected 'linear' or 'mlp' (Oscar's two heads), found {classifier!r}")
        scale = values.get("cls_hidden_scale", 2)
        if classifier == "mlp" and (isinstance(scale, bool) or not isinstance(scale, int) or scale < 1):
            fail(f"{source}: cls_hidden_scale: expected a positive int, found {scale!r}")
        if known.get("img_feature_type", "frcnn") in CODE_FEATURE_TYPES:
            fail(f"{source}: img_feature_type '{known['img_feature_type']}' (discrete codes) is not supported; "
                 "expected region features (frcnn)")
        return cls(**known, extras={k: v for k, v in values.items() if k not in names})

    @classmethod
    def from_dir(cls, checkpoint_dir: str | os.PathLike) -> OscarConfig:
        directory = require_dir(checkpoint_dir, "VinVL checkpoint directory (--eval_model_dir)")
        path = directory / CONFIG_NAME
        if not path.is_file():
            fail(f"{directory}: expected a VinVL checkpoint directory with {CONFIG_NAME}, found none")
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            fail(f"{path}: expected a JSON object, found invalid JSON ({err})")
        if not isinstance(values, dict):
            fail(f"{path}: expected a JSON object, found {type(values).__name__}")
        return cls.from_dict(values, str(path))

    def bert_config(self) -> UniterConfig:
        """The BERT block sizes as itr_common's config (this object: an OscarConfig is one)."""
        return self


class BertImgModel(nn.Module):
    """Oscar's ``BertImgModel``: ``(input_ids, token_type_ids, attention_mask, img_feats)`` ->
    ``(sequence_output (B, L + R, H), pooled_output (B, H))``; ``img_feats=None`` encodes text only."""

    def __init__(self, config: OscarConfig) -> None:
        super().__init__()
        self.config = config
        bert = config.bert_config()
        self.embeddings = UniterTextEmbeddings(bert)
        self.encoder = UniterEncoder(bert)
        self.pooler = BertPooler(bert)
        self.img_embedding = nn.Linear(config.img_feature_dim, config.hidden_size, bias=True)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.use_img_layernorm = bool(config.use_img_layernorm)
        if self.use_img_layernorm:
            self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.img_layer_norm_eps)
        self.apply(lambda m: init_bert_weights(m, config.initializer_range))

    def forward(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        img_feats: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """input_ids (B, L); token_type_ids (B, L); attention_mask (B, L [+ R]) 0/1; img_feats (B, R, D)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        position_ids = torch.arange(input_ids.size(1), device=input_ids.device)[None, :]
        embedding_output = self.embeddings(input_ids, position_ids, token_type_ids)
        if img_feats is not None:
            img_embedding_output = self.img_embedding(img_feats)
            if self.use_img_layernorm:
                img_embedding_output = self.LayerNorm(img_embedding_output)
            img_embedding_output = self.dropout(img_embedding_output)
            embedding_output = torch.cat((embedding_output, img_embedding_output), 1)
        if attention_mask.dim() != 2 or attention_mask.size(1) != embedding_output.size(1):
            raise ValueError(f"attention_mask {tuple(attention_mask.shape)} does not cover the "
                             f"{embedding_output.size(1)} positions")
        additive = extended_attention_mask(attention_mask, embedding_output.dtype)
        sequence_output = self.encoder(embedding_output, additive).last_hidden_state
        return sequence_output, self.pooler(sequence_output)


class ImageBertForSequenceClassification(nn.Module):
    """``bert`` (:class:`BertImgModel`) + dropout + ``classifier`` Linear(H, num_labels): the VinVL
    retrieval model; ``forward`` returns the logits (B, num_labels) of the pooled [CLS]."""

    def __init__(self, config: OscarConfig) -> None:
        super().__init__()
        self.config = config
        self.num_labels = config.num_labels
        self.bert = BertImgModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        h = config.hidden_size
        if config.extras.get("classifier") == "mlp":  # Oscar's ``classifier: 'mlp'`` (keys classifier.0 / .2)
            wide = h * int(config.extras.get("cls_hidden_scale", 2))
            self.classifier: nn.Module = nn.Sequential(nn.Linear(h, wide), nn.ReLU(),
                                                       nn.Linear(wide, config.num_labels))
        else:
            self.classifier = nn.Linear(h, config.num_labels)
        self.classifier.apply(lambda m: init_bert_weights(m, config.initializer_range))

    def forward(
        self, input_ids: Tensor, token_type_ids: Tensor | None = None, attention_mask: Tensor | None = None,
        img_feats: Tensor | None = None,
    ) -> Tensor:
        _, pooled = self.bert(input_ids, token_type_ids, attention_mask, img_feats)
        return self.classifier(self.dropout(pooled))

    def match_scores(self, logits: Tensor) -> Tensor:
        """OSCAR's retrieval score: ``softmax(logits)[:, 1]`` for 2 labels, the logit otherwise."""
        return torch.softmax(logits, dim=-1)[:, 1] if self.num_labels == 2 else logits[:, 0]


def _rename_tf_layer_norm(key: str) -> str:
    """pytorch_transformers' ``from_pretrained`` renames: ``gamma`` -> ``weight``, ``beta`` -> ``bias``."""
    return key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")


def load_oscar_weights(model: ImageBertForSequenceClassification, checkpoint_dir: str | os.PathLike) -> None:
    """Load ``{checkpoint_dir}/pytorch_model.bin`` strictly (after the gamma/beta rename)."""
    path = require_file(Path(checkpoint_dir) / WEIGHTS_NAME, "VinVL weights (pytorch_model.bin)")
    state = load_checkpoint(path)
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        fail(f"{path}: expected a state dict of tensors, found {type(state).__name__}")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    load_state_dict_mapped(model, state, rename=_rename_tf_layer_norm, strict=True, source=str(path))


def load_oscar_model(
    checkpoint_dir: str | os.PathLike, load_weights: bool = True
) -> ImageBertForSequenceClassification:
    """``ImageBertForSequenceClassification.from_pretrained(checkpoint_dir)``: config.json + pytorch_model.bin."""
    config = OscarConfig.from_dir(checkpoint_dir)
    model = ImageBertForSequenceClassification(config)
    if load_weights:
        load_oscar_weights(model, checkpoint_dir)
    return model


def check_vocab(checkpoint_dir: str | os.PathLike, config: OscarConfig) -> Path:
    """``vocab.txt`` of the checkpoint directory, its size checked against ``vocab_size``."""
    path = require_file(Path(checkpoint_dir) / VOCAB_NAME, "BERT vocabulary (vocab.txt)")
    n_tokens = sum(1 for _ in path.open(encoding="utf-8"))
    if n_tokens > config.vocab_size:
        raise UserError(f"{path}: {n_tokens} wordpieces, more than the model's vocab_size {config.vocab_size}")
    return path


__all__ = [
    "BertImgModel",
    "ImageBertForSequenceClassification",
    "OscarConfig",
    "check_vocab",
    "load_oscar_model",
    "load_oscar_weights",
]
