"""ALADIN's inputs (mesnico/ALADIN ``alad/dataset.py``) on the VinVL ``coco_ir`` tree (itr_common reader).

Pair ``i`` of a split is image ``i // k`` with its caption ``i % k`` (OSCAR's ``RetrievalDataset``); the
collate function makes the two inputs of ``tensorize_example_disentangled``:

* caption: ``[CLS] wordpieces[:max_seq_length - 2] [SEP]``, ``[PAD]``-padded to ``max_seq_length``,
  token types 0, attention mask ``[1] * len + [0] * pad``; its length counts [CLS] and [SEP];
* image: the object tags ``wordpieces[:max_seq_length - 2]`` between a first token and ``[SEP]``, padded to
  ``max_seq_length``, token types ``[0] + [1] * (n + 1) + [0] * pad``; then the first
  ``max_img_seq_length`` region rows (all ``img_feature_dim`` values), zero-padded; attention mask
  ``[1] * len + [0] * pad + [1] * regions + [0] * region pad`` (OSCAR's 'CLR' mask). The original puts the
  int ``0`` where ``[CLS]`` was meant as the first tag token, which its tokenizer maps to ``[UNK]``; the
  released checkpoints were trained that way, so the first tag token is ``[UNK]`` here too.

Evaluation encodes every image and every caption once (the original encoded each image once per caption).
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from itr_aladin.model import ImageBatch, TextBatch
from itr_common.data.batching import ResumableBatchSampler, loader_generator
from itr_common.data.vinvl_tsv import VinVLRetrievalSplit
from itr_common.errors import UserError, fail


@contextlib.contextmanager
def worker_errors_as_one_line() -> Iterator[None]:
    """A UserError raised in a DataLoader worker comes back with the worker's traceback in its message
    ("Caught UserError in DataLoader worker process 0. Original Traceback ..."): keep its last line."""
    try:
        yield
    except UserError as err:
        lines = [line for line in str(err).strip().splitlines() if line.strip()]
        if len(lines) > 1:
            raise UserError(lines[-1].split("UserError: ", 1)[-1]) from None
        raise


def open_split(args: argparse.Namespace, split: str, is_train: bool) -> VinVLRetrievalSplit:
    """``{data_dir}/{split}_captions.pt`` with ``--img_feat_file`` (and predictions.tsv beside it).

    ``--eval_img_keys_file`` applies to evaluation splits only (``is_train=False``), as in OSCAR. The first
    image's features row is decoded here, so a wrong ``--img_feature_dim`` fails before any work.
    """
    if not args.add_od_labels:
        fail("--add_od_labels: ALADIN's image input is the object tags followed by the regions, so it needs the "
             "tags (training_args.bin of the VinVL checkpoint sets add_od_labels=True); found it off")
    k = args.num_captions_per_img_train if is_train else args.num_captions_per_img_val
    keys_file = None if is_train else (args.eval_img_keys_file or None)
    data = VinVLRetrievalSplit.open(args.data_dir, args.img_feat_file, split, captions_per_image=k,
                                    img_keys_file=keys_file, add_od_labels=True, feat_dim=args.img_feature_dim)
    data.image_features(data.image_keys[0])
    return data


class Tokens:
    """WordPiece tokens of captions and tags, cached per string."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.cache: dict[str, list[int]] = {}
        self.cls_id = tokenizer.cls_token_id
        self.sep_id = tokenizer.sep_token_id
        self.pad_id = tokenizer.pad_token_id
        self.unk_id = tokenizer.unk_token_id

    def ids(self, text: str) -> list[int]:
        if text not in self.cache:
            self.cache[text] = self.tokenizer.convert_tokens_to_ids(self.tokenizer.tokenize(text))
        return self.cache[text]


def text_example(tokens: Tokens, caption: str, max_seq_len: int) -> tuple[list[int], list[int], int]:
    """(input_ids, token types, length) of ``[CLS] caption [SEP]`` padded to ``max_seq_len``."""
    pieces = tokens.ids(caption)[: max_seq_len - 2]
    ids = [tokens.cls_id, *pieces, tokens.sep_id]
    length = len(ids)
    return ids + [tokens.pad_id] * (max_seq_len - length), [0] * max_seq_len, length


def tags_example(tokens: Tokens, tags: str, max_seq_len: int) -> tuple[list[int], list[int], int]:
    """(input_ids, token types, length) of ``[UNK] tags [SEP]`` padded to ``max_seq_len`` (module docstring)."""
    pieces = tokens.ids(tags)[: max_seq_len - 2]
    ids = [tokens.unk_id, *pieces, tokens.sep_id]
    length = len(ids)
    types = [0] + [1] * (len(pieces) + 1) + [0] * (max_seq_len - length)
    return ids + [tokens.pad_id] * (max_seq_len - length), types, length


def collate_text(tokens: Tokens, captions: Sequence[str], max_seq_len: int) -> TextBatch:
    rows = [text_example(tokens, c, max_seq_len) for c in captions]
    ids = torch.tensor([r[0] for r in rows], dtype=torch.long)
    types = torch.tensor([r[1] for r in rows], dtype=torch.long)
    lengths = torch.tensor([r[2] for r in rows], dtype=torch.long)
    mask = (torch.arange(max_seq_len)[None, :] < lengths[:, None]).long()
    return TextBatch(ids, mask, types, lengths)


def collate_images(tokens: Tokens, features: Sequence[np.ndarray], tags: Sequence[str], max_seq_len: int,
                   max_img_seq_len: int) -> ImageBatch:
    rows = [tags_example(tokens, t, max_seq_len) for t in tags]
    ids = torch.tensor([r[0] for r in rows], dtype=torch.long)
    types = torch.tensor([r[1] for r in rows], dtype=torch.long)
    seq_len = torch.tensor([r[2] for r in rows], dtype=torch.long)
    dim = features[0].shape[1]
    feats = torch.zeros(len(features), max_img_seq_len, dim)
    img_len = torch.zeros(len(features), dtype=torch.long)
    for i, f in enumerate(features):
        n = min(f.shape[0], max_img_seq_len)
        if n == 0:
            fail("features.tsv: an image has 0 regions; ALADIN needs at least one")
        feats[i, :n] = torch.from_numpy(np.ascontiguousarray(f[:n]))
        img_len[i] = n
    mask = torch.cat([(torch.arange(max_seq_len)[None, :] < seq_len[:, None]),
                      (torch.arange(max_img_seq_len)[None, :] < img_len[:, None])], dim=1).long()
    return ImageBatch(ids, mask, types, feats, img_len)


@dataclass
class PairItem:
    index: int
    caption: str
    features: np.ndarray
    tags: str


class PairDataset(Dataset):
    """``len = n_images * k`` (image, caption) pairs of a split (the original ``RetrievalDataset``)."""

    def __init__(self, data: VinVLRetrievalSplit) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> PairItem:
        image_key, caption_key, caption_idx = self.data.pair(index)
        return PairItem(index, self.data.caption(caption_key, caption_idx), self.data.image_features(image_key),
                        self.data.tags(image_key) or "")


class PairCollate:
    """``MyCollate``: a list of :class:`PairItem` -> (ImageBatch, TextBatch)."""

    def __init__(self, tokenizer: Any, max_seq_len: int, max_img_seq_len: int) -> None:
        self.tokens = Tokens(tokenizer)
        self.max_seq_len = max_seq_len
        self.max_img_seq_len = max_img_seq_len

    def __call__(self, items: Sequence[PairItem]) -> tuple[ImageBatch, TextBatch]:
        images = collate_images(self.tokens, [it.features for it in items], [it.tags for it in items],
                                self.max_seq_len, self.max_img_seq_len)
        return images, collate_text(self.tokens, [it.caption for it in items], self.max_seq_len)


def train_loader(data: VinVLRetrievalSplit, collate: PairCollate, batch_size: int, workers: int, seed: int,
                 rank: int = 0, world_size: int = 1) -> tuple[DataLoader, DistributedSampler, ResumableBatchSampler]:
    """Shuffled pairs (a new order every epoch through ``sampler.set_epoch``), resumable mid-epoch."""
    sampler = DistributedSampler(PairDataset(data), num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    batches = ResumableBatchSampler(sampler, batch_size, drop_last=False)
    loader = DataLoader(PairDataset(data), batch_sampler=batches, num_workers=workers, collate_fn=collate,
                        generator=loader_generator(seed), persistent_workers=False)
    return loader, sampler, batches


class ImageItems(Dataset):
    def __init__(self, data: VinVLRetrievalSplit) -> None:
        self.data = data

    def __len__(self) -> int:
        return self.data.num_images

    def __getitem__(self, i: int) -> tuple[np.ndarray, str]:
        key = self.data.image_keys[i]
        return self.data.image_features(key), self.data.tags(key) or ""


class CaptionItems(Dataset):
    def __init__(self, data: VinVLRetrievalSplit) -> None:
        self.captions = data.flat_captions()

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, j: int) -> str:
        return self.captions[j]


def image_loader(data: VinVLRetrievalSplit, tokenizer: Any, max_seq_len: int, max_img_seq_len: int,
                 batch_size: int, workers: int) -> DataLoader:
    tokens = Tokens(tokenizer)

    def collate(items: Sequence[tuple[np.ndarray, str]]) -> ImageBatch:
        return collate_images(tokens, [f for f, _ in items], [t for _, t in items], max_seq_len, max_img_seq_len)

    return DataLoader(ImageItems(data), batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate)


def caption_loader(data: VinVLRetrievalSplit, tokenizer: Any, max_seq_len: int, batch_size: int,
                   workers: int) -> DataLoader:
    tokens = Tokens(tokenizer)
    return DataLoader(CaptionItems(data), batch_size=batch_size, shuffle=False, num_workers=workers,
                      collate_fn=lambda items: collate_text(tokens, items, max_seq_len))


__all__ = [
    "PairCollate", "PairDataset", "Tokens", "caption_loader", "collate_images", "collate_text", "image_loader",
    "open_split", "tags_example", "text_example", "train_loader", "worker_errors_as_one_line",
]
