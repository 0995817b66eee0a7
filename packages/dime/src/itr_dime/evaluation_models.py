"""LgQu/DIME ``evaluation_models.py`` with its original API: ``evalrank_single(model_path, test_opt=None,
data_path=None, split='test', fold5=False, data_loader=None)``, ``evalrank_ensemble(model_path, model_path2,
data_path=None, split='dev', fold5=False)``, the ensemble ``i2t(model, model2, embs, embs2, stc_lens, stc_lens2,
opt, npts=None, return_ranks=False)`` and ``t2i(sims, opt, npts=None, return_ranks=False)``; plus
``evalrank(model_paths, settings)`` and :class:`EvalSettings` (ours, used by the command line).

Single model: its own score matrix. Ensemble: the mean of two models' score matrices (the paper's DIME*
averages the i2t and the t2i model). ``fold5=True`` on COCO ``testall``: mean over five 1K folds;
``fold5=False``: the whole split (COCO 5K, or Flickr30K's 1K ``test``).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from itr_common.data.precomp import PrecompSplit
from itr_common.errors import cli_entry, fail
from itr_common.metrics import RetrievalResult
from itr_common.text import load_bert_tokenizer
from itr_dime.checkpoints import load_model
from itr_dime.evaluation import EncodedSplit, check_split_features, encode_split, evaluate_encoded, protocol_for
from itr_dime.evaluation_api import (
    RANKS_FILE,
    calItr,
    encode_loader,
    eval_settings,
    evaluate_loaded,
    every_kth_image,
    get_test_loader,
    i2t_from_sims,
    shard_for,
)
from itr_dime.evaluation_api import t2i as t2i_single
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
    encode_s: float = 0.0  # seconds load_and_encode spent encoding (models loaded, data opened before)

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

    def evaluate(self, protocol: str, shard_size: int,
                 fp16: bool = False) -> tuple[RetrievalResult, torch.Tensor | None]:
        """Score (the mean of) the models' matrices under ``protocol``: ``(result, sims or None for fold5)``.

        The result's latency (:meth:`RetrievalResult.record_latency`) is the encoding time plus this scoring
        and ranking (every model's encoding and score matrix, and the averaging, for an ensemble).
        """
        start = time.perf_counter()
        result, sims = evaluate_encoded(self.models, self.encoded, protocol, shard_size, self.device, fp16)
        result.record_latency(self.encode_s + time.perf_counter() - start)
        return self.describe(result), sims


def load_and_encode(
    model_paths: Sequence[str | os.PathLike],
    settings: EvalSettings,
    encode: Callable[[DIME, argparse.Namespace], EncodedSplit] | None = None,
) -> LoadedModels:
    """Load every checkpoint (and open the split once), then encode ``settings.split`` with each model.

    ``encode(model, opt)``, when given, encodes the data instead (e.g. a user's data loader).
    ``loaded.encode_s`` is the time of the encoding alone (every model loaded and the data opened first).
    """
    for name in ("batch_size", "shard_size"):
        value = getattr(settings, name)
        if value is not None and value < 1:
            fail(f"--{name}: expected a positive integer, found {value}")
    device = _device(settings.device)
    loaded = LoadedModels([], [], [], [str(p) for p in model_paths], device, settings.split)
    split = None
    tokenizers = []
    for index, path in enumerate(model_paths, start=1):
        model, opt, state = load_model(path, settings.data_path, settings.bert_path, device)
        if settings.data_name:
            opt.data_name = settings.data_name
        if settings.batch_size:
            opt.batch_size = settings.batch_size
        if encode is None and split is None:
            split = PrecompSplit(opt.data_path, opt.data_name, settings.split)
        if split is not None:
            check_split_features(model, split)  # before any output: a split of another size is one error line
        logger.info("Best model %d: Epoch = %s, Eiters = %s", index, state.get("epoch"), state.get("Eiters"))
        logger.info("best_rsum: %.2f, best_r1: %.2f", float(state.get("best_rsum", 0)), float(state.get("best_r1", 0)))
        tokenizers.append(load_bert_tokenizer(opt.bert_path) if encode is None else None)
        loaded.models.append(model)
        loaded.options.append(opt)
    start = time.perf_counter()
    for model, opt, tokenizer in zip(loaded.models, loaded.options, tokenizers, strict=True):
        if encode is not None:
            loaded.encoded.append(encode(model, opt))
        else:
            loaded.encoded.append(encode_split(model, split, tokenizer, opt.max_words, opt.batch_size,
                                               settings.workers, device, settings.fp16))
    loaded.encode_s = time.perf_counter() - start
    return loaded


def evalrank(model_paths: Sequence[str | os.PathLike], settings: EvalSettings) -> RetrievalResult:
    """Evaluate one checkpoint, or the score ensemble of several, on ``settings.split``."""
    loaded = load_and_encode(model_paths, settings)
    protocol = protocol_for(settings.split, settings.fold5)
    result, _ = loaded.evaluate(protocol, settings.shard_size or loaded.shard_size, settings.fp16)
    return result


def evalrank_single(
    model_path: str | os.PathLike,
    test_opt: argparse.Namespace | None = None,
    data_path: str | None = None,
    split: str = "test",
    fold5: bool = False,
    data_loader: Iterable | None = None,
    **settings: Any,
) -> RetrievalResult | DataLoader:
    """One checkpoint on ``split`` (or on ``data_loader``'s captions), the original's signature.

    ``test_opt`` is accepted and unused, as in the original. Prints the recalls. Returns the
    :class:`RetrievalResult`; with ``fold5=True`` the data loader, as the original (to pass back as
    ``data_loader=`` for the next model), carrying the result as ``loader.result``. Further
    :class:`EvalSettings` fields (``bert_path``, ``batch_size``, ``device``, ...) as keywords.
    """
    config = eval_settings(data_path, split, fold5, settings)
    encode = None
    if data_loader is not None:
        def encode(model: DIME, opt: argparse.Namespace) -> EncodedSplit:
            return encode_loader(model, data_loader, opt, config.workers)

    loaded = load_and_encode([model_path], config, encode)
    result = evaluate_loaded(loaded, config)
    if not fold5:
        return result
    if data_loader is None:
        opt = loaded.options[0]
        data_loader = get_test_loader(split, opt.data_name, opt.batch_size, config.workers, opt)
    data_loader.result = result
    return data_loader


def evalrank_ensemble(
    model_path: str | os.PathLike,
    model_path2: str | os.PathLike,
    data_path: str | None = None,
    split: str = "dev",
    fold5: bool = False,
    ranks_path: str | os.PathLike | None = RANKS_FILE,
    **settings: Any,
) -> RetrievalResult:
    """Two checkpoints, score matrices averaged (DIME*), the original's signature and default split.

    Prints the recalls and, as the original, saves ``{'rt', 'rti'}`` ranks to ``ranks_path`` (None: no file).
    """
    config = eval_settings(data_path, split, fold5, settings)
    return evaluate_loaded(load_and_encode([model_path, model_path2], config), config, ranks_path)


def i2t(model: DIME, model2: DIME, embs: Sequence[Any], embs2: Sequence[Any], stc_lens: Any, stc_lens2: Any,
        opt: argparse.Namespace | None = None, npts: int | None = None, return_ranks: bool = False) -> tuple:
    """Image -> text recalls of the mean of two models' score matrices; embeddings one row per caption
    (:func:`~itr_dime.evaluation_api.encode_data`). Returns ``(r, sims)`` or ``(r, (ranks, top1), sims)``."""
    shard = shard_for(opt)
    sims = calItr(model, every_kth_image(embs), stc_lens, opt, shard_size=shard)
    sims2 = calItr(model2, every_kth_image(embs2), stc_lens2, opt, shard_size=shard)
    return i2t_from_sims((sims + sims2) / 2, return_ranks)


def t2i(sims: Any, opt: argparse.Namespace | None = None, npts: int | None = None, return_ranks: bool = False) -> tuple:
    """Text -> image recalls on ``sims`` (n_img, 5 n_img): ``(r1, r5, r10, medr, meanr)`` [, ``(ranks, top1)``]."""
    return t2i_single(None, sims, opt, npts, return_ranks)


def configured_argv(model_path: Any, model_path2: Any = None, data_path: Any = None, split: Any = "test",
                    fold5: Any = False, where: str = "evaluation_models.py") -> list[str]:
    """``evaluate_models.py`` flags from the paths edited at the top of ``evaluation_models.py`` (checked)."""
    for name, value, optional in (("model_path", model_path, False), ("model_path2", model_path2, True),
                                  ("data_path", data_path, True), ("split", split, False)):
        if not (isinstance(value, str | os.PathLike) or (optional and value is None)) or value == "":
            kind = "a path" if name != "split" else "a split name (test, testall, dev)"
            fail(f"{where}: {name}: expected {kind}{' or None' if optional else ''}, found {value!r}")
    if not isinstance(fold5, bool):
        fail(f"{where}: fold5: expected True or False, found {fold5!r}")
    argv = ["--model_path", os.fspath(model_path), "--split", split]
    if model_path2 is not None:
        argv += ["--model_path2", os.fspath(model_path2)]
    if data_path is not None:
        argv += ["--data_path", os.fspath(data_path)]
    return argv + (["--fold5"] if fold5 else [])


@cli_entry
def run_configured(model_path: Any, model_path2: Any = None, data_path: Any = None, split: Any = "test",
                   fold5: Any = False) -> None:
    """``python evaluation_models.py`` without flags: evaluate the paths set at the top of the script."""
    from itr_dime.evaluate_models import run

    run(configured_argv(model_path, model_path2, data_path, split, fold5), "evaluation_models.py")


__all__ = [
    "EvalSettings",
    "LoadedModels",
    "configured_argv",
    "evalrank",
    "evalrank_ensemble",
    "evalrank_single",
    "i2t",
    "load_and_encode",
    "run_configured",
    "t2i",
]
