"""Data of both variants on the SCAN precomp layout (``camera_SelfAlign/data.py``, ``vsrn_SelfAlign/data.py``).

CAMERA: features + ``{split}_boxes.npy`` + ``{split}_img_sizes.npy`` (required), captions as
``[CLS] wordpieces [SEP]`` zero-padded to ``max_words`` (BERT vocabulary of ``--bert_path``); a batch is
sorted by token count (incl. [CLS]/[SEP]), longest first. VSRN: captions as vocabulary ids
``<start> words <end>`` (NLTK words of the lower-cased caption, pickled vocabulary), zero-padded to the
longest caption of the batch; plus the caption-generation labels (``max_len + 1`` ids, cut to ``max_len``
with a final ``<end>``) and their mask (ones up to and including the first ``<pad>`` after ``<end>``).

Training batches come from :func:`train_loader` (DistributedSampler + resumable batches, order a
function of ``(seed, epoch)``); evaluation encodes every image once and the captions in order, in
batches of ``batch_size`` (the VSRN context mean covers the batch's padding, so batches matter).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Self

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from itr_common.data.batching import ResumableBatchSampler, attention_mask_from_lengths, loader_generator
from itr_common.data.precomp import PrecompSplit
from itr_common.text import Vocabulary, encode_caption, word_tokenize
from itr_common.text.vocab import END, START


class _Batch:
    """A dataclass of tensors with ``ids`` (B,): moved field by field, its length the batch size."""

    ids: torch.Tensor

    def to(self, device: torch.device | str) -> Self:
        return type(self)(*(getattr(self, f.name).to(device, non_blocking=True) for f in fields(self)))

    def __len__(self) -> int:
        return int(self.ids.shape[0])


@dataclass
class CameraBatch(_Batch):
    """images (B, R, D); boxes (B, R, 4); sizes (B, 2); input_ids / attention_mask / token_type_ids (B, W);
    lengths (B,) tokens incl. [CLS]/[SEP]; ids (B,) caption indices."""

    images: torch.Tensor
    boxes: torch.Tensor
    sizes: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor
    lengths: torch.Tensor
    ids: torch.Tensor


@dataclass
class VsrnBatch(_Batch):
    """images (B, R, D); captions (B, L) ids padded to the longest; lengths (B,) incl. <start>/<end>;
    ids (B,); labels (B, max_len + 1) caption-generation targets; masks (B, max_len + 1) float."""

    images: torch.Tensor
    captions: torch.Tensor
    lengths: torch.Tensor
    ids: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor


class _CaptionDataset(Dataset):
    """One item per caption of ``split``; nothing is random per item."""

    split: PrecompSplit

    def set_epoch(self, epoch: int) -> None:
        """Nothing is random per item (kept for the common training loop)."""

    def __len__(self) -> int:
        return len(self.split)


class CameraDataset(_CaptionDataset):
    """``dataset[index]`` = (image, boxes, size, input_ids, length, index) of caption ``index``."""

    def __init__(self, split: PrecompSplit, tokenizer: Any, max_words: int = 32) -> None:
        self.split, self.tokenizer, self.max_words = split, tokenizer, max_words

    def __getitem__(self, index: int) -> tuple:
        i = self.split.image_index(index)
        ids, length = encode_caption(self.tokenizer, self.split.captions[index], self.max_words)
        return (torch.from_numpy(np.asarray(self.split.image(i))), torch.as_tensor(np.asarray(self.split.box(i)),
                dtype=torch.float32), torch.as_tensor(np.asarray(self.split.img_size(i)), dtype=torch.float32),
                ids, length, index)


def collate_camera(items: Sequence[tuple]) -> CameraBatch:
    """Sort by token count (longest first, stable) and stack."""
    items = sorted(items, key=lambda it: it[4], reverse=True)
    images, boxes, sizes, ids, lengths, index = zip(*items, strict=True)
    input_ids = torch.stack(ids)
    lengths_t = torch.tensor(lengths, dtype=torch.long)
    return CameraBatch(torch.stack(images), torch.stack(boxes), torch.stack(sizes), input_ids,
                       attention_mask_from_lengths(lengths_t, input_ids.shape[1]), torch.zeros_like(input_ids),
                       lengths_t, torch.tensor(index, dtype=torch.long))


def caption_generation_targets(vocab: Vocabulary, tokens: Sequence[str],
                               max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels (max_len + 1,) int64, mask (max_len + 1,) float32) as VSRN's ``PrecompDataset`` builds them."""
    words = [START, *tokens, END]
    if len(words) > max_len - 1:
        words = words[:max_len]
        words[-1] = END
    labels = torch.zeros(max_len + 1, dtype=torch.long)
    labels[: len(words)] = torch.tensor([vocab(w) for w in words], dtype=torch.long)
    zeros = (labels == 0).nonzero()
    mask = torch.zeros(max_len + 1, dtype=torch.float32)
    mask[: int(zeros[0, 0]) + 1] = 1
    return labels, mask


class VsrnDataset(_CaptionDataset):
    """``dataset[index]`` = (image, caption ids, index, labels, mask) of caption ``index``."""

    def __init__(self, split: PrecompSplit, vocab: Vocabulary, max_len: int = 60) -> None:
        self.split, self.vocab, self.max_len = split, vocab, max_len

    def __getitem__(self, index: int) -> tuple:
        tokens = word_tokenize(self.split.captions[index])
        target = torch.tensor([self.vocab(START), *(self.vocab(t) for t in tokens), self.vocab(END)], dtype=torch.long)
        labels, mask = caption_generation_targets(self.vocab, tokens, self.max_len)
        image = torch.from_numpy(np.asarray(self.split.image(self.split.image_index(index))))
        return image, target, index, labels, mask


def collate_vsrn(items: Sequence[tuple]) -> VsrnBatch:
    """Sort by caption length (longest first, stable), pad the captions to the longest."""
    items = sorted(items, key=lambda it: len(it[1]), reverse=True)
    images, captions, index, labels, masks = zip(*items, strict=True)
    lengths = torch.tensor([len(c) for c in captions], dtype=torch.long)
    padded = torch.zeros(len(captions), int(lengths.max()), dtype=torch.long)
    for row, cap in enumerate(captions):
        padded[row, : len(cap)] = cap
    return VsrnBatch(torch.stack(images), padded, lengths, torch.tensor(index, dtype=torch.long), torch.stack(labels),
                     torch.stack(masks))


def collate_for(dataset: Dataset):
    return collate_camera if isinstance(dataset, CameraDataset) else collate_vsrn


def train_loader(dataset: Dataset, batch_size: int, workers: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0) -> tuple[DataLoader, DistributedSampler, ResumableBatchSampler]:
    """Shuffled training batches; each process of ``world_size`` reads its own shard.

    The order of epoch e is a function of ``(seed, e)``: call ``sampler.set_epoch(e)`` before each epoch and
    ``batch_sampler.skip(n)`` to resume mid-epoch.
    """
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    batch_sampler = ResumableBatchSampler(sampler, batch_size)
    loader = DataLoader(dataset, batch_sampler=batch_sampler, num_workers=workers, collate_fn=collate_for(dataset),
                        generator=loader_generator(seed), persistent_workers=False)
    return loader, sampler, batch_sampler


class _Images(Dataset):
    def __init__(self, split: PrecompSplit, boxes: bool) -> None:
        self.split, self.boxes = split, boxes

    def __len__(self) -> int:
        return self.split.n_images

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        image = torch.from_numpy(np.asarray(self.split.image(i)))
        if not self.boxes:
            return (image,)
        return (image, torch.as_tensor(np.asarray(self.split.box(i)), dtype=torch.float32),
                torch.as_tensor(np.asarray(self.split.img_size(i)), dtype=torch.float32))


def image_loader(split: PrecompSplit, batch_size: int, workers: int = 0, boxes: bool = False) -> DataLoader:
    """Every image once, in order: batches ``(images,)`` or ``(images, boxes, sizes)``."""
    return DataLoader(_Images(split, boxes), batch_size=batch_size, shuffle=False, num_workers=workers,
                      generator=loader_generator(0))


def caption_loader(dataset: CameraDataset | VsrnDataset, batch_size: int, workers: int = 0) -> DataLoader:
    """Every caption once, in order (each batch sorted inside by the collate; ``ids`` give the order back)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                      collate_fn=collate_for(dataset), generator=loader_generator(0))


__all__ = ["CameraBatch", "CameraDataset", "VsrnBatch", "VsrnDataset", "caption_generation_targets", "caption_loader",
           "collate_camera", "collate_vsrn", "image_loader", "train_loader"]
