"""Resumable training batches shared by the precomp packages (DIME, SelfAlign).

``ResumableBatchSampler`` groups a sampler's indices into batches and can skip the first batches of
the next pass, so that a run resumed mid-epoch continues with exactly the batches it had not done.
``loader_generator(seed)`` is the explicit generator a ``DataLoader`` gets so that it never draws its
worker base seed from the global RNG (which would shift every later random draw of a resumed run).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


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


def loader_generator(seed: int) -> torch.Generator:
    """An explicit generator keeps DataLoader from drawing its worker base seed from the global RNG."""
    return torch.Generator().manual_seed(seed)


__all__ = ["ResumableBatchSampler", "attention_mask_from_lengths", "loader_generator"]
