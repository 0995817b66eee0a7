"""Resumable training batches shared by the precomp packages (DIME, SelfAlign).

``ResumableBatchSampler`` groups a sampler's indices into batches and can skip the first batches of
the next pass, so that a run resumed mid-epoch continues with exactly the batches it had not done.
``pad_tensors`` is UNITER's region-feature padding (LightningDOT; IAIS has the same function).
``loader_generator(seed)`` is the explicit generator a ``DataLoader`` gets so that it never draws its
worker base seed from the global RNG (which would shift every later random draw of a resumed run).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Sampler


def pad_tensors(tensors: Sequence[torch.Tensor], lens: Sequence[int] | None = None) -> torch.Tensor:
    """UNITER's ``pad_tensors``: B x (n_b, D) -> (B, max n_b, D), zero padded (the first ``lens[b]`` rows kept)."""
    lens = [t.size(0) for t in tensors] if lens is None else list(lens)
    out = torch.zeros(len(tensors), max(lens), tensors[0].size(-1), dtype=tensors[0].dtype)
    for i, (tensor, length) in enumerate(zip(tensors, lens)):
        out[i, :length] = tensor[:length]
    return out


def attention_mask_from_lengths(lengths: torch.Tensor, max_words: int) -> torch.Tensor:
    """(n,) lengths -> (n, max_words) int64 mask, 1 for the first ``length`` positions."""
    return (torch.arange(max_words)[None, :] < lengths[:, None]).long()


class ResumableBatchSampler(Sampler[list[int]]):
    """Batches of a sampler's indices; :meth:`skip` drops the first batches of the next pass (resume)."""

    def __init__(self, sampler: Sampler[int], batch_size: int, drop_last: bool = False) -> None:
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last
        self._skip = 0

    def skip(self, n_batches: int) -> None:
        self._skip = n_batches

    def __iter__(self) -> Iterator[list[int]]:
        skip, self._skip = self._skip, 0
        batch: list[int] = []
        produced = 0
        for index in self.sampler:
            batch.append(int(index))
            if len(batch) == self.batch_size:
                if produced >= skip:
                    yield batch
                produced += 1
                batch = []
        if batch and not self.drop_last and produced >= skip:
            yield batch

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


class EpochStream:
    """A loader's batches forever, epoch after epoch, resumable at any batch.

    Epoch ``e`` calls ``set_epoch(e)`` on the ``sampler`` and on every object of ``epoch_aware`` (datasets
    whose random draws depend on the epoch), then skips the batches already consumed in it. ``state()``
    is ``{"epoch", "batch"}`` (batches handed out); ``load_state`` makes the next batch the one after
    them. Batches are counted when handed out, so a state taken between two steps resumes exactly.
    """

    def __init__(self, loader: Iterable[Any], sampler: Any, batch_sampler: ResumableBatchSampler,
                 epoch_aware: Sequence[Any] = ()) -> None:
        self.loader = loader
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        self.epoch_aware = list(epoch_aware)
        self.epoch = 0
        self.batch = 0

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state(self, state: dict[str, int]) -> None:
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])

    def __iter__(self) -> Iterator[Any]:
        while True:
            self.sampler.set_epoch(self.epoch)
            for item in self.epoch_aware:
                item.set_epoch(self.epoch)
            self.batch_sampler.skip(self.batch)
            produced = False
            for batch in self.loader:
                produced = True
                self.batch += 1
                yield batch
            if not produced and self.batch == 0:
                raise ValueError("EpochStream: the loader yields no batch")
            self.epoch, self.batch = self.epoch + 1, 0


def loader_generator(seed: int) -> torch.Generator:
    """An explicit generator keeps DataLoader from drawing its worker base seed from the global RNG."""
    return torch.Generator().manual_seed(seed)


__all__ = ["EpochStream", "ResumableBatchSampler", "attention_mask_from_lengths", "loader_generator"]
