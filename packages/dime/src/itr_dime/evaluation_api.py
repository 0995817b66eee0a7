"""The Python API of LgQu/DIME's ``evaluation.py`` and ``evaluation_models.py``, with the original names and
signatures, on our model and block scoring.

``evaluation.py``::

    encode_data(model, data_loader, opt, log_step=10, logging=print) -> (rgn, img, wrd, stc, stc_lens)
    calItr(model, embs, stc_lens, opt, shard_size=128) -> sims (n_img, n_stc)
    i2t(model, embs, stc_lens, opt, npts=None, return_ranks=False) -> (r1, r5, r10, medr, meanr)[, (ranks, top1)], sims
    t2i(model, sims, opt, npts=None, return_ranks=False) -> (r1, r5, r10, medr, meanr)[, (ranks, top1)]
    evalrank(model_path, data_path=None, split='dev', fold5=False)   (prints; writes ranks.pth.tar)

(``evaluation_models.py``'s ``evalrank_single``, ``evalrank_ensemble``, ensemble ``i2t`` / ``t2i`` live in
:mod:`itr_dime.evaluation_models` and use the helpers here.)

What comes back: as the originals (numpy arrays; metric tuples; ``evalrank_single`` with ``fold5=True``
returns the data loader so a second call can reuse it), and our :class:`~itr_common.metrics.RetrievalResult`
where the original returned nothing (``evalrank``, ``evalrank_ensemble``, ``evalrank_single`` without fold5).
The fold5 data loader carries the result as ``loader.result``.

``encode_data`` follows the original layout: one row per caption (an image's region and global embeddings
repeated for each of its captions; ``i2t`` keeps every 5th row). ``model`` is our
:class:`~itr_dime.model.DIME`; ``data_loader`` any iterable of the original batches ``(images, input_ids,
lengths, ids, attention_mask, token_type_ids)`` (or our :class:`~itr_dime.data.Batch`), e.g. from
:func:`get_test_loader`. Fixed: fold5 works (the original read an undefined ``opt.itr``), and the rsum printed
is R@1+R@5+R@10 of both directions.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from itr_common import metrics
from itr_common.checkpoint import save_atomic
from itr_common.data.precomp import PrecompSplit
from itr_common.errors import fail
from itr_common.metrics import FOLD5_FOLDS, RetrievalResult
from itr_common.text import load_bert_tokenizer
from itr_dime.data import Batch, DimeCaptionDataset, collate_items
from itr_dime.evaluation import (
    EncodedSplit,
    encode_split,
    ensemble_scores,
    model_device,
    protocol_for,
    score_matrix,
)
from itr_dime.model import DIME

if TYPE_CHECKING:
    from itr_dime.evaluation_models import EvalSettings, LoadedModels

CAPTIONS_PER_IMAGE = 5  # the originals hard-code it (rows 0, 5, 10, ... are the images)
RANKS_FILE = "ranks.pth.tar"
Embeddings = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


# ------------------------------------------------------------------------------------------------ loaders
def _original_batch(items: Sequence[Any]) -> tuple[torch.Tensor, ...]:
    batch = collate_items(items)
    return batch.images, batch.input_ids, batch.lengths, batch.ids, batch.attention_mask, batch.token_type_ids


def get_test_loader(split_name: str, data_name: str, batch_size: int, workers: int, opt: argparse.Namespace,
                    tokenizer: Any = None) -> DataLoader:
    """The original ``data.get_test_loader``: the captions of ``split_name`` in order, batches
    ``(images, input_ids, lengths, ids, attention_mask, token_type_ids)`` sorted by length (longest first).

    ``loader.dataset.split`` is the :class:`PrecompSplit` (``evalrank_single`` reuses it).
    """
    split = PrecompSplit(opt.data_path, data_name, split_name)
    if tokenizer is None:
        tokenizer = load_bert_tokenizer(opt.bert_path)
    dataset = DimeCaptionDataset(split, tokenizer, opt.max_words)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=_original_batch)


def _unpack(batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(images, input_ids, attention_mask, lengths, ids)`` of an original tuple batch or a :class:`Batch`."""
    if isinstance(batch, Batch):
        return batch.images, batch.input_ids, batch.attention_mask, batch.lengths, batch.ids
    if isinstance(batch, list | tuple) and len(batch) == 6:
        images, input_ids, lengths, ids, attention_mask, _ = batch
        return images, input_ids, attention_mask, torch.as_tensor(lengths), torch.as_tensor(ids)
    fail(f"data_loader: expected batches (images, input_ids, lengths, ids, attention_mask, token_type_ids), "
         f"found {type(batch).__name__}")


# ------------------------------------------------------------------------------------------ evaluation.py
@torch.inference_mode()
def encode_data(model: DIME, data_loader: Iterable, opt: argparse.Namespace | None = None, log_step: int = 10,
                logging: Callable[[str], Any] = print) -> tuple[np.ndarray, ...]:
    """Encode every caption of ``data_loader`` with its image: ``(rgn (N, R, d), img (N, d), wrd (N, W, d),
    stc (N, d), stc_lens (N,))`` float32/int64 numpy arrays, row ``ids[j]`` for the j-th item of a batch."""
    model.eval()
    device = model_device(model)
    total = len(data_loader.dataset) if hasattr(data_loader, "dataset") else None
    rows: list[tuple[torch.Tensor, ...]] = []
    for i, batch in enumerate(data_loader):
        images, input_ids, attention_mask, lengths, ids = _unpack(batch)
        img, rgn = model.encode_images(images.to(device))
        text = model.encode_captions(input_ids.to(device), attention_mask.to(device))
        rows.append((ids, rgn.float().cpu(), img.float().cpu(), text.wrd.float().cpu(), text.stc.float().cpu(),
                     lengths))
        if log_step and i % log_step == 0 and logging is not None:
            logging(f"Test: [{i}/{len(data_loader) if hasattr(data_loader, '__len__') else '?'}]")
    if not rows:
        fail("data_loader: expected at least one batch, found none")
    n = total if total is not None else int(max(int(r[0].max()) for r in rows)) + 1
    first = rows[0]
    out = [np.zeros((n, *t.shape[1:]), dtype=np.float32) for t in first[1:5]]
    lens = np.zeros(n, dtype=np.int64)
    for ids, *tensors, length in rows:
        index = ids.numpy()
        for array, tensor in zip(out, tensors, strict=True):
            array[index] = tensor.numpy()
        lens[index] = length.numpy()
    return (*out, lens)


def _as_encoded(embs: Sequence[Any], stc_lens: Any) -> EncodedSplit:
    rgn, img, wrd, stc = (torch.as_tensor(np.asarray(e, dtype=np.float32)) for e in embs)
    return EncodedSplit(rgn, img, wrd, stc, torch.as_tensor(np.asarray(stc_lens)).long(), CAPTIONS_PER_IMAGE)


def shard_for(opt: argparse.Namespace | None, default: int = 128) -> int:
    batch_size = getattr(opt, "batch_size", None)
    return int(batch_size * 2) if batch_size else default


def calItr(model: DIME, embs: Sequence[Any], stc_lens: Any, opt: argparse.Namespace | None = None,  # noqa: N802
           shard_size: int = 128) -> np.ndarray:
    """Scores (n_img, n_stc) of every image of ``embs = (rgn, img, wrd, stc)`` against every caption,
    ``shard_size`` x ``shard_size`` pairs per pass (float32; the original filled a float64 array)."""
    return score_matrix(model, _as_encoded(embs, stc_lens), shard_size).numpy()


def every_kth_image(embs: Sequence[Any]) -> Embeddings:
    rgn, img, wrd, stc = embs
    return np.asarray(rgn)[::CAPTIONS_PER_IMAGE], np.asarray(img)[::CAPTIONS_PER_IMAGE], wrd, stc


def i2t_from_sims(sims: np.ndarray, return_ranks: bool) -> tuple:
    r, ranks = metrics.i2t(sims, return_ranks=True, captions_per_image=CAPTIONS_PER_IMAGE)
    return (r, ranks, sims) if return_ranks else (r, sims)


def i2t(model: DIME, embs: Sequence[Any], stc_lens: Any, opt: argparse.Namespace | None = None,
        npts: int | None = None, return_ranks: bool = False) -> tuple:
    """Image -> text recalls of one model; embeddings one row per caption as :func:`encode_data` gives them.

    Returns ``((r1, r5, r10, medr, meanr), sims)``, with ``return_ranks`` ``(r, (ranks, top1), sims)``.
    """
    sims = calItr(model, every_kth_image(embs), stc_lens, opt, shard_size=shard_for(opt))
    return i2t_from_sims(sims, return_ranks)


def t2i(model: DIME | None, sims: np.ndarray, opt: argparse.Namespace | None = None, npts: int | None = None,
        return_ranks: bool = False) -> tuple:
    """Text -> image recalls on ``sims`` (n_img, 5 n_img) (``model`` and ``opt`` unused, as in the original).

    Returns ``(r1, r5, r10, medr, meanr)``, with ``return_ranks`` also ``(ranks, top1)``.
    """
    return metrics.t2i(sims, return_ranks=return_ranks, captions_per_image=CAPTIONS_PER_IMAGE)


# ---------------------------------------------------------------------------------------- evalrank family
def first_block_ranks(loaded: LoadedModels, sims: torch.Tensor | None, fold5: bool, shard: int) -> dict:
    """``{'rt': (ranks, top1), 'rti': (ranks, top1)}`` of the whole matrix, or of fold 0 (as the original)."""
    if sims is None:
        fold = slice(0, loaded.encoded[0].n_images // FOLD5_FOLDS) if fold5 else None
        sims = ensemble_scores(loaded.models, loaded.encoded, fold, shard, loaded.device)
    k = loaded.encoded[0].captions_per_image
    _, rt = metrics.i2t(sims, return_ranks=True, captions_per_image=k)
    _, rti = metrics.t2i(sims, return_ranks=True, captions_per_image=k)
    return {"rt": rt, "rti": rti}


def evaluate_loaded(loaded: LoadedModels, settings: EvalSettings,
                    ranks_path: str | os.PathLike | None = None) -> RetrievalResult:
    """Recalls of the loaded model(s) under the settings' protocol; prints the table; optionally saves the
    ranks as the original's ``ranks.pth.tar``."""
    protocol = protocol_for(settings.split, settings.fold5)
    shard = settings.shard_size or loaded.shard_size
    result, sims = loaded.evaluate(protocol, shard, settings.fp16)
    print(result.table())
    if ranks_path is not None:
        save_atomic(first_block_ranks(loaded, sims, settings.fold5, shard), ranks_path)
        result.extras["ranks"] = str(ranks_path)
    return result


def eval_settings(data_path: str | None, split: str, fold5: bool, settings: dict[str, Any]) -> EvalSettings:
    """:class:`EvalSettings` from the original arguments plus keywords (unknown ones fail naming the valid)."""
    from itr_dime.evaluation_models import EvalSettings

    fields = list(EvalSettings.__dataclass_fields__)
    unknown = sorted(set(settings) - set(fields))
    if unknown:
        fail(f"keyword {unknown[0]!r}: expected one of {', '.join(fields)}")
    return EvalSettings(data_path=data_path, split=split, fold5=fold5, **settings)


def evalrank(model_path: str | os.PathLike, data_path: str | None = None, split: str = "dev", fold5: bool = False,
             ranks_path: str | os.PathLike | None = RANKS_FILE, **settings: Any) -> RetrievalResult:
    """``evaluation.evalrank``: evaluate one checkpoint on ``split`` (fold5: COCO 1K, five folds), print the
    recalls and save ``{'rt': (ranks, top1), 'rti': (ranks, top1)}`` to ``ranks_path`` (None: no file).
    Further :class:`EvalSettings` fields (``bert_path``, ``batch_size``, ``device``, ...) as keywords."""
    from itr_dime.evaluation_models import load_and_encode

    config = eval_settings(data_path, split, fold5, settings)
    return evaluate_loaded(load_and_encode([model_path], config), config, ranks_path)


def split_of(data_loader: Any) -> PrecompSplit | None:
    """The :class:`PrecompSplit` a loader reads (``loader.dataset.split``), if any."""
    split = getattr(getattr(data_loader, "dataset", None), "split", None)
    return split if isinstance(split, PrecompSplit) else None


def encode_loader(model: DIME, data_loader: Iterable, opt: argparse.Namespace, workers: int = 0) -> EncodedSplit:
    """Encode a user's loader: each image once when it reads a :class:`PrecompSplit`, else :func:`encode_data`."""
    split = split_of(data_loader)
    if split is not None:
        tokenizer = getattr(data_loader.dataset, "tokenizer", None) or load_bert_tokenizer(opt.bert_path)
        return encode_split(model, split, tokenizer, opt.max_words, opt.batch_size, workers)
    rgn, img, wrd, stc, lens = encode_data(model, data_loader, opt, logging=None)
    images = every_kth_image((rgn, img, wrd, stc))
    return EncodedSplit(*(torch.from_numpy(np.ascontiguousarray(a)) for a in images), torch.from_numpy(lens),
                        CAPTIONS_PER_IMAGE)


__all__ = [
    "CAPTIONS_PER_IMAGE",
    "RANKS_FILE",
    "calItr",
    "encode_data",
    "encode_loader",
    "eval_settings",
    "evalrank",
    "evaluate_loaded",
    "every_kth_image",
    "first_block_ranks",
    "get_test_loader",
    "i2t",
    "i2t_from_sims",
    "shard_for",
    "split_of",
    "t2i",
]
