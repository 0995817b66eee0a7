"""DIME's data pipeline on the SCAN precomp layout (LgQu/DIME ``data.py``).

A caption becomes ``[CLS] wordpieces [SEP]`` zero-padded to ``max_words`` ids (BERT WordPiece from
``--bert_path``). Training items may carry extra negatives: ``--extra_stc k`` adds k random captions
per item, ``--extra_img k`` k random images (``extra_stc`` wins when both are set, as in the original).
A batch is sorted by caption length, longest first; extra captions/images follow the batch's own,
item by item.

Differences from the original: the extra negatives are drawn from a generator seeded by
``(seed, epoch, index)`` instead of the global ``random`` (so a resumed run draws the same ones), and
evaluation encodes each image once instead of once per caption.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from itr_common.data.batching import ResumableBatchSampler, attention_mask_from_lengths, loader_generator
from itr_common.data.precomp import PrecompSplit
from itr_common.text import encode_caption

logger = logging.getLogger(__name__)


@dataclass
class Batch:
    """A collated batch.

    images (n_img, R, D) float32; input_ids / attention_mask / token_type_ids (n_stc, W) int64;
    lengths (n_stc,) int64 tokens incl. [CLS]/[SEP]; ids (B,) int64 caption indices of the paired items.
    With ``--extra_stc k`` n_stc = B(1+k), with ``--extra_img k`` n_img = B(1+k); otherwise both are B.
    """

    images: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor
    lengths: torch.Tensor
    ids: torch.Tensor

    def to(self, device: torch.device | str) -> Batch:
        return Batch(*(t.to(device, non_blocking=True) for t in (
            self.images, self.input_ids, self.attention_mask, self.token_type_ids, self.lengths, self.ids)))

    def __len__(self) -> int:
        return int(self.ids.shape[0])


@dataclass
class Item:
    """One training/evaluation item: a caption with its image, and optional extra negatives."""

    image: torch.Tensor  # (R, D)
    input_ids: torch.Tensor  # (W,)
    length: int
    index: int
    img_id: int
    extra_ids: torch.Tensor | None = None  # (k, W)
    extra_lengths: torch.Tensor | None = None  # (k,)
    extra_images: torch.Tensor | None = None  # (k, R, D)


class DimeCaptionDataset(Dataset):
    """Captions of a :class:`~itr_common.data.precomp.PrecompSplit`, tokenised for BERT.

    ``dataset[index]`` is an :class:`Item`. ``extra_stc`` / ``extra_img`` (training only) add random
    negatives drawn with ``numpy.random.default_rng((seed, epoch, index))``; call :meth:`set_epoch`.
    """

    def __init__(
        self,
        split: PrecompSplit,
        tokenizer: Any,
        max_words: int = 32,
        extra_stc: int = 0,
        extra_img: int = 0,
        seed: int = 0,
    ) -> None:
        self.split = split
        self.tokenizer = tokenizer
        self.max_words = max_words
        self.extra_stc = extra_stc
        self.extra_img = 0 if extra_stc > 0 else extra_img
        if extra_stc > 0 and extra_img > 0:
            logger.warning("--extra_stc and --extra_img are both set: only the extra sentences are used "
                           "(as the original)")
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.split)

    def encode(self, index: int) -> tuple[torch.Tensor, int]:
        return encode_caption(self.tokenizer, self.split.captions[index], self.max_words)

    def __getitem__(self, index: int) -> Item:
        img_id = self.split.image_index(index)
        image = torch.from_numpy(self.split.image(img_id))
        ids, length = self.encode(index)
        item = Item(image, ids, length, index, img_id)
        if self.extra_stc or self.extra_img:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            n = len(self.split)
            if self.extra_stc:
                encoded = [self.encode(int(j)) for j in rng.integers(0, n, size=self.extra_stc)]
                item.extra_ids = torch.stack([e[0] for e in encoded])
                item.extra_lengths = torch.tensor([e[1] for e in encoded], dtype=torch.long)
            else:
                k = self.split.captions_per_image
                picks = [int(j) // k for j in rng.integers(0, n, size=self.extra_img)]
                item.extra_images = torch.stack([torch.from_numpy(self.split.image(i)) for i in picks])
        return item


def collate_items(items: Sequence[Item], max_words: int | None = None) -> Batch:
    """Sort by caption length (longest first, stable), stack, append extra captions/images item by item."""
    items = sorted(items, key=lambda it: it.length, reverse=True)
    images = torch.stack([it.image for it in items])
    input_ids = torch.stack([it.input_ids for it in items])
    lengths = torch.tensor([it.length for it in items], dtype=torch.long)
    if items[0].extra_ids is not None:
        input_ids = torch.cat([input_ids, *[it.extra_ids for it in items]])
        lengths = torch.cat([lengths, *[it.extra_lengths for it in items]])
    if items[0].extra_images is not None:
        images = torch.cat([images, *[it.extra_images for it in items]])
    width = input_ids.shape[1] if max_words is None else max_words
    mask = attention_mask_from_lengths(lengths, width)
    ids = torch.tensor([it.index for it in items], dtype=torch.long)
    return Batch(images, input_ids, mask, torch.zeros_like(input_ids), lengths, ids)


def train_loader(
    dataset: DimeCaptionDataset, batch_size: int, workers: int, rank: int = 0, world_size: int = 1, seed: int = 0
) -> tuple[DataLoader, DistributedSampler, ResumableBatchSampler]:
    """Shuffled training batches; each process of ``world_size`` reads its own shard (DistributedSampler).

    The order of epoch e is a function of ``(seed, e)``: call ``sampler.set_epoch(e)`` and
    ``dataset.set_epoch(e)`` before each epoch, ``batch_sampler.skip(n)`` to resume mid-epoch.
    """
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    batch_sampler = ResumableBatchSampler(sampler, batch_size)
    loader = DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        num_workers=workers,
        collate_fn=collate_items,
        generator=loader_generator(seed),
        persistent_workers=False,
    )
    return loader, sampler, batch_sampler


class SplitCaptions(Dataset):
    """The captions of a split, tokenised: ``dataset[j]`` is ``(input_ids (W,), length)``."""

    def __init__(self, split: PrecompSplit, tokenizer: Any, max_words: int = 32) -> None:
        self.split = split
        self.tokenizer = tokenizer
        self.max_words = max_words

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, j: int) -> tuple[torch.Tensor, int]:
        return encode_caption(self.tokenizer, self.split.captions[j], self.max_words)


def _collate_captions(items: Sequence[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    input_ids = torch.stack([ids for ids, _ in items])
    lengths = torch.tensor([length for _, length in items], dtype=torch.long)
    return input_ids, attention_mask_from_lengths(lengths, input_ids.shape[1]), lengths


def caption_loader(split: PrecompSplit, tokenizer: Any, max_words: int, batch_size: int, workers: int) -> DataLoader:
    """Batches ``(input_ids (B, W), attention_mask (B, W), lengths (B,))`` of a split's captions, in order."""
    return DataLoader(SplitCaptions(split, tokenizer, max_words), batch_size=batch_size, shuffle=False,
                      num_workers=workers, collate_fn=_collate_captions, generator=loader_generator(0))


class SplitImages(Dataset):
    """The images of a split, once each: ``dataset[i]`` is the (R, D) features of image i."""

    def __init__(self, split: PrecompSplit) -> None:
        self.split = split

    def __len__(self) -> int:
        return self.split.n_images

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.split.image(i))


def image_loader(split: PrecompSplit, batch_size: int, workers: int) -> DataLoader:
    return DataLoader(SplitImages(split), batch_size=batch_size, shuffle=False, num_workers=workers,
                      generator=loader_generator(0))


__all__ = [
    "Batch",
    "DimeCaptionDataset",
    "Item",
    "ResumableBatchSampler",
    "SplitCaptions",
    "SplitImages",
    "attention_mask_from_lengths",
    "caption_loader",
    "collate_items",
    "image_loader",
    "train_loader",
]
