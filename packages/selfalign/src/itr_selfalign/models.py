"""Build either variant from its options and its text resources (BERT directory or vocabulary pickle)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from itr_common.checkpoint import load_state_dict_mapped, strip_module_prefix
from itr_common.errors import fail, require_file
from itr_common.text import Vocabulary, bert_config_from_json, find_bert_config, load_bert_model, load_vocab
from itr_selfalign.camera import CameraModel
from itr_selfalign.checkpoints import (
    checkpoint_options,
    has_bert_weights,
    load_original_state_dict,
    read_checkpoint,
)
from itr_selfalign.vsrn import VsrnModel


def build_bert(bert_path: str, load_weights: bool = True) -> nn.Module:
    """The frozen BERT of ``--bert_path``: pretrained weights, or (``load_weights=False``) its config only."""
    if load_weights:
        return load_bert_model(bert_path)
    from transformers import BertModel

    return BertModel(bert_config_from_json(find_bert_config(bert_path)))


def vocab_file(opt: argparse.Namespace) -> Path:
    """``{vocab_path}/{data_name}_vocab.pkl`` (the original's path)."""
    return Path(os.path.join(opt.vocab_path, f"{opt.data_name}_vocab.pkl"))


def read_vocab(opt: argparse.Namespace) -> Vocabulary:
    path = require_file(vocab_file(opt), "vocabulary pickle (--vocab_path/{data_name}_vocab.pkl)")
    vocab = load_vocab(path)
    if not isinstance(vocab, Vocabulary) or len(vocab) < 4:
        fail(f"{path}: expected a VSRN vocabulary with <pad>, <start>, <end>, <unk>, found {vocab!r}")
    return vocab


def build_model(variant: str, opt: argparse.Namespace, bert: nn.Module | None = None) -> nn.Module:
    """CAMERA(+SelfAlign) with ``bert`` (default: loaded from ``opt.bert_path``) or VSRN(+SelfAlign)
    (``opt.vocab_size`` must be set)."""
    if variant == "camera":
        return CameraModel(opt, bert if bert is not None else build_bert(opt.bert_path))
    return VsrnModel(opt)


def load_model(path: str | os.PathLike, variant: str, data_path: str | None = None, text_path: str | None = None,
               device: torch.device | str = "cpu") -> tuple[nn.Module, argparse.Namespace, dict[str, Any], Any]:
    """Build the model a checkpoint describes and load it strictly; returns ``(model, opt, checkpoint, text)``
    where ``text`` is the BERT tokenizer directory's path (CAMERA) or the vocabulary (VSRN).

    ``text_path`` replaces the checkpoint's ``bert_path`` (CAMERA) or ``vocab_path`` (VSRN).
    """
    state = read_checkpoint(path, variant)
    opt = checkpoint_options(state, variant)
    if data_path is not None:
        opt.data_path = data_path
    source = str(path)
    if variant == "camera":
        if text_path is not None:
            opt.bert_path = text_path
        bert = build_bert(opt.bert_path, load_weights=not has_bert_weights(state))
        model = CameraModel(opt, bert)
        if not has_bert_weights(state):  # a checkpoint without BERT: take BERT's weights from --bert_path
            state["model"][1] = {**{f"bert.{k}": v for k, v in bert.state_dict().items()}, **state["model"][1]}
        text: Any = opt.bert_path
    else:
        if text_path is not None:
            opt.vocab_path = text_path
        vocab = read_vocab(opt)
        embed = state["model"][1].get("embed.weight")
        if embed is not None and embed.shape[0] != len(vocab):
            fail(f"{vocab_file(opt)}: expected {embed.shape[0]} words (the checkpoint's embed.weight), "
                 f"found {len(vocab)}")
        opt.vocab_size = len(vocab)
        model = VsrnModel(opt)
        if "caption_model" in state:
            load_state_dict_mapped(model.caption_model, strip_module_prefix(state["caption_model"]),
                                   source=f"{source} ['caption_model']")
        text = vocab
    load_original_state_dict(model, list(state["model"]), source)
    return model.to(device).eval(), opt, state, text


__all__ = ["build_bert", "build_model", "load_model", "read_vocab", "vocab_file"]
