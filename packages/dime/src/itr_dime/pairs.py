"""The inputs every DIME cell sees, in one broadcastable "pair" layout.

All local features are 4-D ``(a, b, L, d)`` with ``a`` in {1, n_img} and ``b`` in {1, n_stc}: regions of
image i are ``(n_img, 1, R, d)``, words of caption j are ``(1, n_stc, W, d)``, a feature refined for the
pair (i, j) is ``(n_img, n_stc, L, d)``. Broadcasting replaces the original's loops over captions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from itr_common.errors import fail

DIRECTIONS = ("i2t", "t2i")


@dataclass(frozen=True)
class PairContext:
    """Both modalities of a block of images and captions.

    Attributes:
        rgn: (n_img, R, d) L2-normalised region embeddings.
        img: (n_img, d) global image embeddings.
        wrd: (n_stc, W, d) L2-normalised word embeddings (all ``max_words`` positions).
        stc: (n_stc, d) L2-normalised sentence embeddings.
        stc_lens: (n_stc,) int64 caption lengths in tokens, ``[CLS]`` and ``[SEP]`` included.
        direction: ``"i2t"`` (locals are regions) or ``"t2i"`` (locals are words).
    """

    rgn: torch.Tensor
    img: torch.Tensor
    wrd: torch.Tensor
    stc: torch.Tensor
    stc_lens: torch.Tensor
    direction: str

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            fail(f"--direction: expected one of {', '.join(DIRECTIONS)}, found '{self.direction}'")
        if self.rgn.ndim != 3 or self.wrd.ndim != 3 or self.img.ndim != 2 or self.stc.ndim != 2:
            fail(
                "PairContext: expected rgn (n_img, R, d), img (n_img, d), wrd (n_stc, W, d), stc (n_stc, d), "
                f"found {tuple(self.rgn.shape)}, {tuple(self.img.shape)}, {tuple(self.wrd.shape)}, "
                f"{tuple(self.stc.shape)}"
            )

    @property
    def n_img(self) -> int:
        return self.rgn.shape[0]

    @property
    def n_stc(self) -> int:
        return self.wrd.shape[0]

    def local_input(self) -> torch.Tensor:
        """Layer-0 locals: regions (n_img, 1, R, d) for i2t, words (1, n_stc, W, d) for t2i."""
        return self.rgn.unsqueeze(1) if self.direction == "i2t" else self.wrd.unsqueeze(0)

    def word_mask(self) -> torch.Tensor:
        """bool (1, n_stc, W): True for the first ``stc_lens[j]`` positions of caption j."""
        positions = torch.arange(self.wrd.shape[1], device=self.wrd.device)
        mask = positions[None, :] < self.stc_lens.to(self.wrd.device)[:, None]  # (n_stc, W)
        return mask[None]


def as_pairs(x: torch.Tensor, n_img: int, n_stc: int) -> torch.Tensor:
    """Expand a broadcastable (a, b, ...) tensor to (n_img, n_stc, ...) (a view, no copy)."""
    return x.expand(n_img, n_stc, *x.shape[2:])


__all__ = ["DIRECTIONS", "PairContext", "as_pairs"]
