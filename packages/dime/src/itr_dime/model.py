"""The DIME model: text encoder, region encoder and interaction module in one ``nn.Module``.

The original ``DIME`` (LgQu/DIME ``model.py``) is a plain object whose ``state_dict()`` is the list
``[img_enc.state_dict(), txt_enc.state_dict(), itr_module.state_dict()]``; checkpoints store that list
under ``'model'``. :meth:`DIME.original_state_dict` / :meth:`DIME.load_original_state_dict` read and
write that layout with the original key names.
"""

from __future__ import annotations

import logging
from argparse import Namespace
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
from torch import nn

from itr_common.checkpoint import load_state_dict_mapped, strip_module_prefix
from itr_common.errors import fail
from itr_dime.image_encoder import EncoderImagePrecomp
from itr_dime.interaction import InteractionModule
from itr_dime.pairs import PairContext
from itr_dime.text_encoder import EncoderText, TextEmbeddings

logger = logging.getLogger(__name__)

ORIGINAL_PARTS = ("img_enc", "txt_enc", "itr_module")
"""The order of the state dicts in a checkpoint's ``'model'`` list."""
# Early DIME checkpoints (before LgQu/DIME 5a711c4) name BERT's LayerNorm parameters gamma/beta.
BERT_LAYER_NORM_RENAME = ((r"LayerNorm\.gamma$", "LayerNorm.weight"), (r"LayerNorm\.beta$", "LayerNorm.bias"))


class TrainOutput(NamedTuple):
    """``scores`` (n_img, n_stc); ``sim_paths`` (B, B) path-embedding similarities of the B paired samples;
    ``bert`` (n_stc, H) the captions' normalised mean BERT features."""

    scores: torch.Tensor
    sim_paths: torch.Tensor
    bert: torch.Tensor


def build_bert(bert_path: str, load_weights: bool = True) -> nn.Module:
    """The frozen BERT of ``--bert_path``: pretrained weights, or (``load_weights=False``) its config only,
    for checkpoints that carry BERT's weights themselves."""
    from itr_common.text import bert_config_from_json, find_bert_config, load_bert_model

    if load_weights:
        return load_bert_model(bert_path)
    from transformers import BertModel

    return BertModel(bert_config_from_json(find_bert_config(bert_path)))


class DIME(nn.Module):
    """DIME for one direction (``opt.direction``: ``i2t`` or ``t2i``).

    Submodules (original names): ``txt_enc`` (:class:`EncoderText`), ``img_enc``
    (:class:`EncoderImagePrecomp`), ``itr_module`` (:class:`InteractionModule`); registered in the order
    the original collects its parameters for Adam (text, image, interaction).

    Args:
        opt: the training options (``train.py`` flags).
        bert: a BERT model with a Hugging Face style config; default: loaded from ``opt.bert_path``.
    """

    def __init__(self, opt: Namespace, bert: nn.Module | None = None) -> None:
        super().__init__()
        self.direction = opt.direction
        if bert is None:
            bert = build_bert(opt.bert_path)
        config = bert.config
        self.txt_enc = EncoderText(bert, config.hidden_size, opt.embed_size, config.hidden_dropout_prob)
        self.img_enc = EncoderImagePrecomp(
            opt.img_dim, opt.embed_size, opt.direction, use_abs=opt.use_abs, no_imgnorm=opt.no_imgnorm
        )
        self.itr_module = InteractionModule(opt)

    # ------------------------------------------------------------------------------------ forward
    def encode_images(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, R, img_dim) -> ``(img (B, d), rgn (B, R, d))``."""
        return self.img_enc(images)

    def encode_captions(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> TextEmbeddings:
        """(B, W) ids and mask -> :class:`TextEmbeddings` (stc (B, d), wrd (B, W, d), bert (B, H))."""
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        return self.txt_enc(input_ids, attention_mask, token_type_ids)

    def score(
        self, rgn: torch.Tensor, img: torch.Tensor, wrd: torch.Tensor, stc: torch.Tensor, stc_lens: torch.Tensor
    ) -> torch.Tensor:
        """Scores (n_img, n_stc) of every image against every caption of a block (evaluation)."""
        return self.itr_module(PairContext(rgn, img, wrd, stc, stc_lens, self.direction)).scores

    def forward(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor,
        lengths: torch.Tensor,
    ) -> TrainOutput:
        """One training forward pass over a batch (images and captions may include extra negatives)."""
        img, rgn = self.img_enc(images)
        text = self.txt_enc(input_ids, attention_mask, token_type_ids)
        out = self.itr_module(PairContext(rgn, img, text.wrd, text.stc, lengths, self.direction))
        n_pairs = min(img.shape[0], text.stc.shape[0])
        sim_paths = self.itr_module.path_similarity(out.paths[:n_pairs])
        return TrainOutput(out.scores, sim_paths, text.bert)

    # ------------------------------------------------------------------------- original checkpoints
    def original_state_dict(self) -> list[dict[str, torch.Tensor]]:
        """``[img_enc, txt_enc, itr_module]`` state dicts, the original ``DIME.state_dict()``."""
        return [getattr(self, part).state_dict() for part in ORIGINAL_PARTS]

    def load_original_state_dict(self, state: Sequence[Mapping[str, torch.Tensor]], source: str = "checkpoint") -> None:
        """Load the original list layout.

        Strict, naming any missing or unexpected key, with the original's documented exceptions (logged
        by name): the image encoder ignores keys it does not have; a checkpoint without any ``bert.*``
        key keeps the BERT of ``--bert_path`` (one with BERT weights must hold all of them, so a
        ``--bert_path`` config with another layer count is refused). BERT LayerNorm ``gamma``/``beta``
        names are accepted; a DDP ``module.`` prefix is stripped.
        """
        if not isinstance(state, list | tuple) or len(state) != len(ORIGINAL_PARTS):
            kind = type(state).__name__
            found = f"a {kind} of {len(state)}" if isinstance(state, list | tuple) else kind
            fail(f"{source}: expected 'model' to be the list [img_enc, txt_enc, itr_module] of state dicts, "
                 f"found {found}")
        img_state, txt_state, itr_state = (strip_module_prefix(part) for part in state)
        load_state_dict_mapped(self.img_enc, img_state, strict=True, source=f"{source} [img_enc]",
                               ignore_unexpected={".*": "the image encoder keeps only its own keys (as the original)"})
        has_bert = any(k.startswith("bert.") for k in txt_state)
        no_bert = {} if has_bert else {r"bert\..*": "the checkpoint holds no BERT weights: --bert_path's are used"}
        # a checkpoint with BERT weights must hold all of them: a --bert_path config with another number of
        # layers than the checkpoint's is refused by name (instead of running with random layers)
        load_state_dict_mapped(self.txt_enc, txt_state, rename=BERT_LAYER_NORM_RENAME, strict=True,
                               source=f"{source} [txt_enc]", allow_missing=no_bert)
        load_state_dict_mapped(self.itr_module, itr_state, strict=True, source=f"{source} [itr_module]")

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters with ``requires_grad`` in the original's order (text, image, interaction)."""
        return [p for p in self.parameters() if p.requires_grad]


def original_key_names(model: DIME) -> list[list[str]]:
    """The key names of :meth:`DIME.original_state_dict`, per part."""
    return [list(sd) for sd in model.original_state_dict()]


__all__ = ["DIME", "ORIGINAL_PARTS", "TrainOutput", "build_bert", "original_key_names"]
