"""UNITER: the single-stream image-text transformer shared by IAIS and LightningDOT.

Same maths, module names and state-dict keys as ChenRocks/UNITER ``model/model.py`` and
``model/layer.py`` (also vendored by lancopku/IAIS), so ``uniter-base.pt`` / ``uniter-large.pt`` and
fine-tuned ``model_step_{N}.pt`` files load by their original key names:

- text embeddings: word + position + token_type(0), LayerNorm(eps 1e-12), dropout;
- image embeddings: LN(img_linear(feat)) + LN(pos_linear(pos7)) + token_type_embeddings(1), then
  LayerNorm and dropout (``mask_embedding`` is kept for key compatibility and MRM-style masking);
- BERT layers with the additive mask ``(1 - m) * -10000``; pooler ``tanh(dense(h[:, 0]))``;
- ITM heads ``itm_output`` Linear(H, 2) and ``rank_output`` Linear(H, 1), ``init_output`` copying
  ``itm_output`` row 1 into ``rank_output``.

Text and image embeddings are joined either compactly through ``gather_index`` (the original
evaluation layout) or as ``[text padded | image padded]`` (the IAIS layout, ``gather_index=None``).
Per-layer attention probabilities and raw attention logits come back from the same forward pass
(``output_attentions`` / ``attention_logits_layers``); no hook and no second pass.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from itr_common.errors import UserError, did_you_mean, require_file

LOGGER = logging.getLogger(__name__)

IMG_DIM = 2048
"""Region feature size of the BUTD detector (UNITER ``utils/const.py``)."""

POS_DIM = 7
"""Region position feature: normalised box ``[x1, y1, x2, y2, w, h]`` plus area ``w * h``."""

MASK_ADD = -10000.0
"""The additive value of masked attention keys, ``(1 - m) * -10000``."""

PRETRAIN_HEAD_PREFIXES = ("cls.", "feat_regress.", "region_classifier.")
"""Pre-training heads of ``uniter-{base,large}.pt`` (MLM, MRFR, MRC) that retrieval ignores."""

HF_TOLERATED_KEYS = frozenset(
    {
        "layer_norm_eps",
        "pad_token_id",
        "output_hidden_states",
        "output_attentions",
        "model_type",
        "architectures",
        "position_embedding_type",
        "use_cache",
        "classifier_dropout",
        "gradient_checkpointing",
        "transformers_version",
    }
)
"""Keys of HuggingFace-style BERT configs (e.g. LightningDOT's ``img_base.json``) kept but unused."""


def gelu(x: Tensor) -> Tensor:
    """The erf GELU of the original ``layer.py``: ``x * 0.5 * (1 + erf(x / sqrt(2)))`` (one fused kernel)."""
    return F.gelu(x, approximate="none")


def swish(x: Tensor) -> Tensor:
    """``x * sigmoid(x)``."""
    return x * torch.sigmoid(x)


ACTIVATIONS = {"gelu": gelu, "relu": F.relu, "swish": swish}


@dataclass
class UniterConfig:
    """The fields of ``uniter-base.json`` / ``uniter-large.json`` plus the region feature size.

    ``img_dim`` is the constant ``IMG_DIM = 2048`` in the original; a config may override it (the
    synthetic world's tiny model uses small region features).
    """

    vocab_size: int = 28996
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    img_dim: int = IMG_DIM
    layer_norm_eps: float = 1e-12
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads != 0:
            raise UserError(
                f"UNITER config: hidden_size must be a multiple of num_attention_heads, found "
                f"{self.hidden_size} and {self.num_attention_heads}"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise UserError(
                f"UNITER config: hidden_act expected one of {sorted(ACTIVATIONS)}, found '{self.hidden_act}'"
            )

    @classmethod
    def field_names(cls) -> list[str]:
        """The config keys this class understands (``extras`` excluded)."""
        return [f.name for f in dataclasses.fields(cls) if f.name != "extras"]

    @classmethod
    def from_dict(
        cls, values: Mapping[str, Any], source: str | os.PathLike = "UNITER config", strict: bool = True
    ) -> UniterConfig:
        """Build from a ``uniter-*.json``-style mapping.

        Unknown keys fail with the closest valid key named, except HuggingFace BERT keys
        (``HF_TOLERATED_KEYS``), which land in ``extras``; ``strict=False`` keeps every unknown key there.
        """
        known = set(cls.field_names())
        kwargs: dict[str, Any] = {}
        extras: dict[str, Any] = {}
        for key, value in values.items():
            if key in known:
                kwargs[key] = value
            elif key in HF_TOLERATED_KEYS or not strict:
                extras[key] = value
            else:
                raise UserError(f"{source}: unknown UNITER config key '{key}'{did_you_mean(key, known)}")
        return cls(**kwargs, extras=extras)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike, strict: bool = True, **overrides: Any) -> UniterConfig:
        """Read a ``uniter-*.json`` file; ``overrides`` (e.g. ``img_dim``) win over the file."""
        require_file(path, "UNITER model config")
        try:
            with open(path, encoding="utf-8") as handle:
                values = json.load(handle)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: expected a JSON object, found invalid JSON ({err.msg})") from None
        if not isinstance(values, dict):
            raise UserError(f"{path}: expected a JSON object, found {type(values).__name__}")
        values = {**values, **overrides}
        return cls.from_dict(values, source=path, strict=strict)

    @classmethod
    def coerce(cls, config: UniterConfig | Mapping[str, Any] | str | os.PathLike) -> UniterConfig:
        """Accept a config, a mapping or a JSON path."""
        if isinstance(config, UniterConfig):
            return config
        if isinstance(config, Mapping):
            return cls.from_dict(config)
        return cls.from_json_file(config)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able fields (extras merged back in, as the original ``to_dict``)."""
        out = {name: getattr(self, name) for name in self.field_names()}
        out.update(self.extras)
        return out

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads


# --------------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------------


class UniterTextEmbeddings(nn.Module):
    """word + position + token type, LayerNorm, dropout: ``(B, L) -> (B, L, H)``."""

    def __init__(self, config: UniterConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=0)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: Tensor, position_ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        """input_ids (B, L) long; position_ids (B or 1, L); token_type_ids (B, L) or None (zeros)."""
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        embeddings = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(position_ids)
            + self.token_type_embeddings(token_type_ids)
        )
        return self.dropout(self.LayerNorm(embeddings))


class UniterImageEmbeddings(nn.Module):
    """``LN(img_linear(f)) + LN(pos_linear(p)) + type``, LayerNorm, dropout: ``(B, R, D) -> (B, R, H)``."""

    def __init__(self, config: UniterConfig) -> None:
        super().__init__()
        eps = config.layer_norm_eps
        self.img_linear = nn.Linear(config.img_dim, config.hidden_size)
        self.img_layer_norm = nn.LayerNorm(config.hidden_size, eps=eps)
        self.pos_layer_norm = nn.LayerNorm(config.hidden_size, eps=eps)
        self.pos_linear = nn.Linear(POS_DIM, config.hidden_size)
        self.mask_embedding = nn.Embedding(2, config.img_dim, padding_idx=0)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self, img_feat: Tensor, img_pos_feat: Tensor, type_embeddings: Tensor, img_masks: Tensor | None = None
    ) -> Tensor:
        """img_feat (B, R, D); img_pos_feat (B, R, 7); type_embeddings (B, R, H); img_masks (B, R) 0/1.

        A masked region (``img_masks == 1``) gets ``mask_embedding`` row 1 added; row 0 acts as zero
        (the original zeroes that row in place before every masked call; here it is never read).
        """
        if img_masks is not None:
            masked = img_masks.long().unsqueeze(-1)
            img_feat = img_feat + masked.to(img_feat.dtype) * self.mask_embedding.weight[1]
        transformed_im = self.img_layer_norm(self.img_linear(img_feat))
        transformed_pos = self.pos_layer_norm(self.pos_linear(img_pos_feat))
        embeddings = transformed_im + transformed_pos + type_embeddings
        return self.dropout(self.LayerNorm(embeddings))


# --------------------------------------------------------------------------------------------
# Transformer layers (BERT)
# --------------------------------------------------------------------------------------------


@dataclass
class AttentionResult:
    """One self-attention call: context (B, T, H); probs / logits (B, heads, T, T) when asked for."""

    context: Tensor
    probs: Tensor | None = None
    logits: Tensor | None = None


class BertSelfAttention(nn.Module):
    def __init__(self, config: UniterConfig) -> None:
        super().__init__()
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.head_size
        self.all_head_size = config.hidden_size
        self.query = nn.Linear(config.hidden_size, self.all_head_size)
        self.key = nn.Linear(config.hidden_size, self.all_head_size)
        self.value = nn.Linear(config.hidden_size, self.all_head_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def split_heads(self, x: Tensor) -> Tensor:
        """(B, T, H) -> (B, heads, T, H / heads)."""
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_attention_heads, self.attention_head_size).transpose(1, 2)

    def attention_logits(self, hidden_states: Tensor) -> Tensor:
        """Scaled dot products ``q k^T / sqrt(d)`` before any mask: (B, T, H) -> (B, heads, T, T)."""
        query = self.split_heads(self.query(hidden_states))
        key = self.split_heads(self.key(hidden_states))
        return torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(self.attention_head_size)

    def forward(
        self, hidden_states: Tensor, attention_mask: Tensor, need_probs: bool = False, need_logits: bool = False
    ) -> AttentionResult:
        """hidden_states (B, T, H); attention_mask additive (B, 1, 1, T) or (B, 1, T, T)."""
        value = self.split_heads(self.value(hidden_states))
        if not (need_probs or need_logits):
            query = self.split_heads(self.query(hidden_states))
            key = self.split_heads(self.key(hidden_states))
            context = F.scaled_dot_product_attention(
                query,
                key,
                value,
                attn_mask=attention_mask.to(query.dtype),
                dropout_p=self.dropout.p if self.training else 0.0,
            )
            return AttentionResult(self._merge_heads(context))
        logits = self.attention_logits(hidden_states)
        probs = torch.softmax(logits + attention_mask, dim=-1)
        context = torch.matmul(self.dropout(probs), value)
        return AttentionResult(
            self._merge_heads(context), probs if need_probs else None, logits if need_logits else None
        )

    def _merge_heads(self, context: Tensor) -> Tensor:
        batch, _, length, _ = context.shape
        return context.transpose(1, 2).reshape(batch, length, self.all_head_size)


class BertSelfOutput(nn.Module):
    def __init__(self, config: UniterConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: Tensor, input_tensor: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class BertAttention(nn.Module):
    def __init__(self, config: UniterConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(
        self, hidden_states: Tensor, attention_mask: Tensor, need_probs: bool = False, need_logits: bool = False
    ) -> AttentionResult:
        result = self.self(hidden_states, attention_mask, need_probs, need_logits)
        result.context = self.output(result.context, hidden_states)
        return result


class BertIntermediate(nn.Module):
    def __init__(self, config: UniterConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = ACTIVATIONS[config.hidden_act]

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.intermediate_act_fn(self.dense(hidden_states))


class BertOutput(nn.Module):
    def __init__(self, config: UniterConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: Tensor, input_tensor: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class BertLayer(nn.Module):
    """Self-attention block then feed-forward block, post-LayerNorm (BERT)."""

    def __init__(self, config: UniterConfig) -> None:
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(
        self, hidden_states: Tensor, attention_mask: Tensor, need_probs: bool = False, need_logits: bool = False
    ) -> AttentionResult:
        """Returns the layer output in ``context`` plus the attention probs/logits asked for."""
        result = self.attention(hidden_states, attention_mask, need_probs, need_logits)
        result.context = self.output(self.intermediate(result.context), result.context)
        return result


@dataclass
class EncoderOutput:
    """last_hidden_state (B, T, H); hidden_states per layer; attentions per layer (B, heads, T, T);
    attention_logits {layer index: (B, heads, T, T)} raw ``q k^T / sqrt(d)`` entering the mask."""

    last_hidden_state: Tensor
    hidden_states: list[Tensor] | None = None
    attentions: list[Tensor] | None = None
    attention_logits: dict[int, Tensor] = field(default_factory=dict)


class UniterEncoder(nn.Module):
    def __init__(self, config: UniterConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(
        self,
        hidden_states: Tensor,
        attention_mask: Tensor,
        output_all_encoded_layers: bool = False,
        output_attentions: bool = False,
        attention_logits_layers: Iterable[int] = (),
    ) -> EncoderOutput:
        """hidden_states (B, T, H); attention_mask additive (B, 1, 1, T).

        ``attention_logits_layers`` are layer indices (negative allowed: -1 is the last layer).
        """
        n_layers = len(self.layer)
        logits_layers = {index % n_layers for index in attention_logits_layers}
        all_hidden: list[Tensor] | None = [] if output_all_encoded_layers else None
        all_probs: list[Tensor] | None = [] if output_attentions else None
        logits: dict[int, Tensor] = {}
        for index, layer_module in enumerate(self.layer):
            result = layer_module(hidden_states, attention_mask, output_attentions, index in logits_layers)
            hidden_states = result.context
            if all_hidden is not None:
                all_hidden.append(hidden_states)
            if all_probs is not None:
                all_probs.append(result.probs)
            if result.logits is not None:
                logits[index] = result.logits
        return EncoderOutput(hidden_states, all_hidden, all_probs, logits)


class BertPooler(nn.Module):
    """``tanh(dense(h[:, 0]))``: (B, T, H) -> (B, H)."""

    def __init__(self, config: UniterConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.activation(self.dense(hidden_states[:, 0]))


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def init_bert_weights(module: nn.Module, initializer_range: float) -> None:
    """The original ``init_weights``: N(0, range) for Linear/Embedding, LayerNorm (1, 0), zero biases."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        module.weight.data.normal_(mean=0.0, std=initializer_range)
    elif isinstance(module, nn.LayerNorm):
        module.bias.data.zero_()
        module.weight.data.fill_(1.0)
    if isinstance(module, nn.Linear) and module.bias is not None:
        module.bias.data.zero_()


def extended_attention_mask(attention_mask: Tensor, dtype: torch.dtype) -> Tensor:
    """0/1 mask (B, T) -> additive (B, 1, 1, T) with ``(1 - m) * -10000``."""
    mask = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - mask) * MASK_ADD


def gather_packed(txt_emb: Tensor, img_emb: Tensor, gather_index: Tensor | None) -> Tensor:
    """Join text (B, L, H) and image (B, R, H) embeddings.

    With ``gather_index`` (B, T_out) (positions into ``cat([txt, img], 1)``) the result is the
    original's compact layout (B, T_out, H); without it the plain concatenation (B, L + R, H).
    """
    joint = torch.cat([txt_emb, img_emb], dim=1)
    if gather_index is None:
        return joint
    index = gather_index.unsqueeze(-1).expand(-1, -1, joint.size(-1))
    return torch.gather(joint, 1, index)


@dataclass
class UniterOutput:
    """sequence_output (B, T, H) plus the optional per-layer tensors of :class:`EncoderOutput`."""

    sequence_output: Tensor
    hidden_states: list[Tensor] | None = None
    attentions: list[Tensor] | None = None
    attention_logits: dict[int, Tensor] = field(default_factory=dict)


class UniterModel(nn.Module):
    """Embeddings + single-stream encoder + pooler; keys ``embeddings.*``, ``img_embeddings.*``,
    ``encoder.layer.{i}.*``, ``pooler.dense.*`` (prefixed ``uniter.`` inside the task models)."""

    def __init__(self, config: UniterConfig | Mapping[str, Any] | str | os.PathLike) -> None:
        super().__init__()
        config = UniterConfig.coerce(config)
        self.config = config
        self.embeddings = UniterTextEmbeddings(config)
        self.img_embeddings = UniterImageEmbeddings(config)
        self.encoder = UniterEncoder(config)
        self.pooler = BertPooler(config)
        self.apply(lambda m: init_bert_weights(m, config.initializer_range))

    def txt_embeddings(self, input_ids: Tensor, position_ids: Tensor, txt_type_ids: Tensor | None = None) -> Tensor:
        """(B, L) -> (B, L, H)."""
        return self.embeddings(input_ids, position_ids, txt_type_ids)

    def image_embeddings(
        self,
        img_feat: Tensor,
        img_pos_feat: Tensor,
        img_masks: Tensor | None = None,
        img_type_ids: Tensor | None = None,
    ) -> Tensor:
        """(B, R, D), (B, R, 7) -> (B, R, H); regions use token type 1 unless told otherwise."""
        if img_type_ids is None:
            img_type_ids = torch.ones(img_feat.shape[:2], dtype=torch.long, device=img_feat.device)
        type_embeddings = self.embeddings.token_type_embeddings(img_type_ids)
        return self.img_embeddings(img_feat, img_pos_feat, type_embeddings, img_masks)

    def forward(
        self,
        input_ids: Tensor | None,
        position_ids: Tensor | None,
        img_feat: Tensor | None,
        img_pos_feat: Tensor | None,
        attention_mask: Tensor,
        gather_index: Tensor | None = None,
        img_masks: Tensor | None = None,
        txt_type_ids: Tensor | None = None,
        img_type_ids: Tensor | None = None,
        output_all_encoded_layers: bool = False,
        output_attentions: bool = False,
        attention_logits_layers: Sequence[int] = (),
    ) -> UniterOutput:
        """Encode a batch.

        input_ids (B, L); position_ids (1 or B, L); img_feat (B, R, D); img_pos_feat (B, R, 7);
        attention_mask (B, T) 0/1 over the joint sequence; gather_index (B, T) or None.
        ``input_ids=None`` encodes images only, ``img_feat=None`` text only.
        """
        if input_ids is None and img_feat is None:
            raise ValueError("UniterModel needs input_ids, img_feat or both")
        if input_ids is None:
            embedding_output = self.image_embeddings(img_feat, img_pos_feat, img_masks, img_type_ids)
        elif img_feat is None:
            embedding_output = self.txt_embeddings(input_ids, position_ids, txt_type_ids)
        else:
            txt_emb = self.txt_embeddings(input_ids, position_ids, txt_type_ids)
            img_emb = self.image_embeddings(img_feat, img_pos_feat, img_masks, img_type_ids)
            embedding_output = gather_packed(txt_emb, img_emb, gather_index)
        if attention_mask.size(1) != embedding_output.size(1):
            raise ValueError(
                f"attention_mask covers {attention_mask.size(1)} positions, the joint sequence has "
                f"{embedding_output.size(1)}"
            )
        additive = extended_attention_mask(attention_mask, embedding_output.dtype)
        encoded = self.encoder(
            embedding_output,
            additive,
            output_all_encoded_layers=output_all_encoded_layers,
            output_attentions=output_attentions,
            attention_logits_layers=attention_logits_layers,
        )
        return UniterOutput(
            encoded.last_hidden_state, encoded.hidden_states, encoded.attentions, encoded.attention_logits
        )


class UniterForImageTextRetrieval(nn.Module):
    """UNITER + ITM heads: ``uniter.*``, ``itm_output`` Linear(H, 2), ``rank_output`` Linear(H, 1)."""

    def __init__(self, config: UniterConfig | Mapping[str, Any] | str | os.PathLike) -> None:
        super().__init__()
        config = UniterConfig.coerce(config)
        self.config = config
        self.uniter = UniterModel(config)
        self.itm_output = nn.Linear(config.hidden_size, 2)
        self.rank_output = nn.Linear(config.hidden_size, 1)
        init_bert_weights(self.itm_output, config.initializer_range)
        init_bert_weights(self.rank_output, config.initializer_range)

    @torch.no_grad()
    def init_output(self) -> None:
        """Start the ranking head from the pre-trained ITM head's "match" row (row 1).

        The original aliases the storage (``rank_output.weight.data = itm_output.weight.data[1:]``);
        here the values are copied, so later updates of ``rank_output`` leave ``itm_output`` alone.
        """
        self.rank_output.weight.copy_(self.itm_output.weight[1:])
        self.rank_output.bias.copy_(self.itm_output.bias[1:])

    def forward(
        self,
        input_ids: Tensor,
        position_ids: Tensor,
        img_feat: Tensor,
        img_pos_feat: Tensor,
        attention_mask: Tensor,
        gather_index: Tensor | None = None,
        attention_logits_layers: Sequence[int] = (),
        output_attentions: bool = False,
    ) -> tuple[Tensor, UniterOutput]:
        """Rank scores (B, 1) (raw logits of ``rank_output`` on the pooled [CLS]) and the encoder output."""
        output = self.uniter(
            input_ids,
            position_ids,
            img_feat,
            img_pos_feat,
            attention_mask,
            gather_index,
            output_attentions=output_attentions,
            attention_logits_layers=attention_logits_layers,
        )
        pooled = self.uniter.pooler(output.sequence_output)
        return self.rank_output(pooled), output


# --------------------------------------------------------------------------------------------
# Loading original checkpoints
# --------------------------------------------------------------------------------------------


def img_dim_of(state_dict: Mapping[str, Tensor], skip_prefixes: tuple[str, ...] = ()) -> int | None:
    """The region feature size a UNITER state dict was built for (``img_linear`` input width), or None.

    The released layouts' keys first (``uniter.``, ``bert.``, bare, ``module.uniter.``); else any key ending in
    ``img_embeddings.img_linear.weight`` that does not start with one of ``skip_prefixes`` (a model holding a UNITER
    tower under another name, e.g. LightningDOT's bi-encoder, whose text tower is skipped).
    """
    for key in ("uniter.img_embeddings.img_linear.weight", "bert.img_embeddings.img_linear.weight",
                "img_embeddings.img_linear.weight", "module.uniter.img_embeddings.img_linear.weight"):
        weight = state_dict.get(key)
        if isinstance(weight, Tensor) and weight.dim() == 2:
            return int(weight.shape[1])
    for key, weight in state_dict.items():
        if (key.endswith("img_embeddings.img_linear.weight") and not key.startswith(skip_prefixes)
                and isinstance(weight, Tensor) and weight.dim() == 2):
            return int(weight.shape[1])
    return None


@dataclass
class UniterLoadReport:
    """What :func:`load_uniter_state_dict` did: model keys the checkpoint lacked, checkpoint keys the
    model does not use, and the pre-training-head tensors skipped."""

    missing: list[str]
    unexpected: list[str]
    ignored_heads: list[str]


def rename_original_keys(state_dict: Mapping[str, Tensor], model_has_bert: bool = False) -> dict[str, Tensor]:
    """The renames of the original ``from_pretrained``.

    ``gamma -> weight`` and ``beta -> bias`` (TF LayerNorm names) in every key; when any key starts
    with ``bert.`` and the model has no ``bert`` attribute, the ``bert.`` keys lose that prefix (the
    original loads such a checkpoint under the ``bert.`` prefix).
    """
    renamed: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        new_key = key.replace("gamma", "weight") if "gamma" in key else key
        new_key = new_key.replace("beta", "bias") if "beta" in new_key else new_key
        renamed[new_key] = value
    if not model_has_bert and any(k.startswith("bert.") for k in renamed):
        renamed = {(k[len("bert.") :] if k.startswith("bert.") else k): v for k, v in renamed.items()}
    return renamed


def require_state_dict(state: object, source: str = "checkpoint") -> Mapping[str, Tensor]:
    """``state`` when it is a state dict (string keys, tensor values), else a one-line :class:`UserError`."""
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        found = type(state).__name__
        if isinstance(state, Mapping):
            bad = next(k for k, v in state.items() if not isinstance(v, Tensor))
            found = f"a {found} with '{bad}': {type(state[bad]).__name__}"
        raise UserError(f"{source}: expected a state dict of tensors, found {found}")
    return state


PRETRAINED_MISSING = {
    r"rank_output\.(weight|bias)": "a pre-trained UNITER has no ranking head (set from itm_output by init_output, "
                                    "as the original)",
}
"""Keys a pre-trained checkpoint (``uniter-base.pt``) may lack, with the reason logged when it does."""


def load_uniter_state_dict(
    model: nn.Module,
    state_dict: Mapping[str, Tensor],
    strict: bool = False,
    source: str = "checkpoint",
    allow_missing: Mapping[str, str] | None = None,
    ignore_unexpected: Mapping[str, str] | None = None,
) -> UniterLoadReport:
    """Load an original UNITER/IAIS state dict into ``model`` by its key names, refusing any other difference.

    A DDP ``module.`` prefix is stripped; pre-training heads (``cls.*``, ``feat_regress.*``,
    ``region_classifier.*``) are ignored and named in the log. ``strict=False`` (a pre-trained
    checkpoint, the original ``from_pretrained``) additionally allows the documented
    :data:`PRETRAINED_MISSING` (``rank_output`` absent from ``uniter-base.pt``), logged by name;
    ``strict=True`` (fine-tuned checkpoints) allows nothing else. Any other missing or unexpected key,
    or a shape mismatch, is a :class:`UserError` naming the keys (the original's ``strict=False``
    silently kept random weights). ``allow_missing`` / ``ignore_unexpected`` (``{regex: reason}``)
    document a caller's own exceptions.
    """
    from itr_common.checkpoint import load_state_dict_mapped, strip_module_prefix

    require_state_dict(state_dict, source)
    state_dict = strip_module_prefix(state_dict, model)
    renamed = rename_original_keys(state_dict, model_has_bert=hasattr(model, "bert"))
    ignored = sorted(k for k in renamed if k.startswith(PRETRAIN_HEAD_PREFIXES))
    kept = {k: v for k, v in renamed.items() if not k.startswith(PRETRAIN_HEAD_PREFIXES)}
    if ignored:
        heads = sorted({k.split(".", 1)[0] for k in ignored})
        LOGGER.info("%s: ignoring pre-training heads %s (%d tensors)", source, ", ".join(heads), len(ignored))
    documented = {} if strict else dict(PRETRAINED_MISSING)
    documented.update(allow_missing or {})
    report = load_state_dict_mapped(model, kept, strict=True, source=source, allow_missing=documented,
                                    ignore_unexpected=ignore_unexpected)
    return UniterLoadReport(report.missing, report.unexpected, ignored)
