"""``evalrank_single`` / ``evalrank_ensemble`` of LgQu/DIME ``evaluation_models.py``, returning results.

Single model: its own score matrix. Ensemble: the mean of two models' score matrices (the paper's DIME*
averages the i2t and the t2i model). ``fold5=True`` on COCO ``testall``: mean over five 1K folds;
``fold5=False``: the whole split (COCO 5K, or Flickr30K's 1K ``test``).
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from itr_common.data.precomp import PrecompSplit
from itr_common.errors import fail
from itr_common.metrics import RetrievalResult
from itr_common.text import load_bert_tokenizer
from itr_dime.checkpoints import load_model
from itr_dime.evaluation import EncodedSplit, encode_split, evaluate_encoded, protocol_for
from itr_dime.model import DIME

logger = logging.getLogger(__name__)


@dataclass
class EvalSettings:
    """Where and how to evaluate; ``None`` keeps the checkpoint's own option."""

    data_path: str | None = None
    bert_path: str | None = None
    data_name: str | None = None
    split: str = "test"
    fold5: bool = False
    batch_size: int | None = None
    shard_size: int | None = None
    workers: int = 0
    device: str | None = None
    fp16: bool = False


def _device(name: str | None) -> torch.device:
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


@dataclass
class LoadedModels:
    """Checkpoints loaded and the split encoded by each: ``models``, ``encoded``, ``options`` (one per model)."""

    models: list[DIME]
    encoded: list[EncodedSplit]
    options: list[argparse.Namespace]
    paths: list[str]
    device: torch.device
    split: str

    @property
    def shard_size(self) -> int:
        return 2 * self.options[0].batch_size

    def describe(self, result: RetrievalResult) -> RetrievalResult:
        """Record which models and data ``result`` comes from in its extras."""
        opt = self.options[0]
        result.extras.update({
            "models": self.paths,
            "directions": [o.direction for o in self.options],
            "split": self.split,
            "data": os.path.join(opt.data_path, opt.data_name),
            "ensemble": len(self.models) > 1,
        })
        return result


def load_and_encode(model_paths: Sequence[str | os.PathLike], settings: EvalSettings) -> LoadedModels:
    """Load every checkpoint and encode ``settings.split`` with each (the split is opened once)."""
    for name in ("batch_size", "shard_size"):
        value = getattr(settings, name)
        if value is not None and value < 1:
            fail(f"--{name}: expected a positive integer, found {value}")
    device = _device(settings.device)
    loaded = LoadedModels([], [], [], [str(p) for p in model_paths], device, settings.split)
    split = None
    for index, path in enumerate(model_paths, start=1):
        model, opt, state = load_model(path, settings.data_path, settings.bert_path, device)
        if settings.data_name:
            opt.data_name = settings.data_name
        if settings.batch_size:
            opt.batch_size = settings.batch_size
        logger.info("Best model %d: Epoch = %s, Eiters = %s", index, state.get("epoch"), state.get("Eiters"))
        logger.info("best_rsum: %.2f, best_r1: %.2f", float(state.get("best_rsum", 0)), float(state.get("best_r1", 0)))
        if split is None:
            split = PrecompSplit(opt.data_path, opt.data_name, settings.split)
        tokenizer = load_bert_tokenizer(opt.bert_path)
        loaded.encoded.append(encode_split(model, split, tokenizer, opt.max_words, opt.batch_size, settings.workers,
                                           device, settings.fp16))
        loaded.models.append(model)
        loaded.options.append(opt)
    return loaded


def evalrank(model_paths: Sequence[str | os.PathLike], settings: EvalSettings) -> RetrievalResult:
    """Evaluate one checkpoint, or the score ensemble of several, on ``settings.split``."""
    loaded = load_and_encode(model_paths, settings)
    protocol = protocol_for(settings.split, settings.fold5)
    shard = settings.shard_size or loaded.shard_size
    result, _ = evaluate_encoded(loaded.models, loaded.encoded, protocol, shard, loaded.device, settings.fp16)
    return loaded.describe(result)


def evalrank_single(model_path: str | os.PathLike, data_path: str | None = None, split: str = "test",
                    fold5: bool = False, **settings: object) -> RetrievalResult:
    """One model (the original's signature; further :class:`EvalSettings` fields as keywords)."""
    return evalrank([model_path], EvalSettings(data_path=data_path, split=split, fold5=fold5, **settings))


def evalrank_ensemble(model_path: str | os.PathLike, model_path2: str | os.PathLike, data_path: str | None = None,
                      split: str = "dev", fold5: bool = False, **settings: object) -> RetrievalResult:
    """Two models, scores averaged (the original's signature and default split)."""
    return evalrank([model_path, model_path2], EvalSettings(data_path=data_path, split=split, fold5=fold5, **settings))


__all__ = ["EvalSettings", "LoadedModels", "evalrank", "evalrank_ensemble", "evalrank_single", "load_and_encode"]
