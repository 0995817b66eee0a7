"""Image-text retrieval metrics of the SCAN family: R@1/5/10, median and mean rank, both directions.

Layout (as in kuanghuei/SCAN ``evaluation.py`` and every descendant: VSRN, CAMERA, DIME, SelfAlign):
a similarity matrix ``sims`` of shape ``(n_images, k * n_images)``, one row per image, one column per
caption, captions ``k*i .. k*i+k-1`` belonging to image ``i`` (``k = captions_per_image``, 5 on COCO
and Flickr30K).

- image to text (``i2t``): the rank of image ``i`` is the best position among its ``k`` captions in
  its row sorted by descending score; ``top1`` is the best caption's column.
- text to image (``t2i``): the rank of caption ``j`` is the position of image ``j // k`` in its column
  sorted by descending score; ``top1`` is the best image's row.
- ``R@K = 100 * mean(rank < K)``, ``medr = floor(median(rank)) + 1``, ``meanr = mean(rank) + 1``.

Rank semantics. The originals argsort every query (a Python loop, one ``np.argsort`` per query). We
count, for each query, the candidates of *other* images (i2t) or the other images (t2i) that score at
least as high as its (best) positive, in a vectorised pass over chunks of rows. Both give the same rank
whenever the positive's score is not tied with another candidate's (always the case in practice with
real-valued scores). With exact ties the original's position depends on the order ``np.argsort``
happens to leave equal values in; ours is the pessimistic rank (a tie counts against the query), so a
collapsed model that scores every pair the same reads as chance-or-worse, never as perfect recall.
``top1`` is the first maximum.

Memory. The rank passes read the matrix in blocks of ``chunk_rows`` rows; besides the input they
allocate O(chunk_rows * n_captions) bytes of booleans plus O(n_captions) counters, never a full-size
copy (5K x 25K float32 is 500 MB). A torch tensor is read through a zero-copy numpy view when it is a
float32/float64 CPU tensor; other dtypes and devices are converted (one copy).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from itr_common.errors import did_you_mean, fail
from itr_common.fileio import read_json, write_json_atomic

Metrics = tuple[float, float, float, float, float]
"""``(r1, r5, r10, medr, meanr)``."""

METRIC_NAMES: tuple[str, ...] = ("r1", "r5", "r10", "medr", "meanr")
RESULT_FORMAT = "itr_common.retrieval_result/1"
# extras key of the per-query latency (ms) an evaluation measured (RetrievalResult.record_latency)
LATENCY_KEY = "latency_ms_per_query"
DEFAULT_CHUNK_ROWS = 64

PROTOCOLS: dict[str, str] = {
    "1k": "1K test, e.g. Flickr30K: whole matrix as one block",
    "f30k": "Flickr30K 1K test: whole matrix as one block",
    "coco-5k": "COCO 5K test: whole matrix as one block",
    "coco-1k-fold5": "COCO 1K test: mean over 5 diagonal folds",
}
"""Evaluation protocols accepted by :func:`evaluate_sims` and :func:`evaluate_embeddings`."""

FOLD5_FOLDS = 5
FLICKR_PROTOCOL, COCO_5K_PROTOCOL, COCO_FOLD5_PROTOCOL = "1k", "coco-5k", "coco-1k-fold5"
"""The protocols the SCAN-family packages (DIME, SelfAlign) name: Flickr30K test, COCO 5K, COCO 1K x 5 folds."""


# --------------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------------


def _to_numpy(array: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    """A numpy view of ``array`` (zero-copy for float32/float64 CPU tensors and numpy arrays)."""
    if isinstance(array, torch.Tensor):
        tensor = array.detach()
        if tensor.dtype not in (torch.float32, torch.float64):
            tensor = tensor.float()
        return tensor.cpu().numpy()
    result = np.asarray(array)
    if result.dtype.kind not in "fiu":
        fail(f"{name}: expected a real-valued numeric array, found dtype {result.dtype}")
    return result


def _check_layout(sims: np.ndarray, captions_per_image: int, npts: int | None = None) -> int:
    """Check ``sims`` is ``(n_images, k * n_images)``; return ``n_images``."""
    k = captions_per_image
    if not isinstance(k, int | np.integer) or k < 1:
        fail(f"captions_per_image: expected a positive integer, found {k!r}")
    if sims.ndim != 2:
        fail(f"sims: expected a 2-D (n_images, {k} * n_images) matrix, found shape {tuple(sims.shape)}")
    n_images, n_captions = sims.shape
    if n_images == 0:
        fail("sims: expected at least one image row, found shape (0, ...)")
    if npts is not None and npts != n_images:
        fail(f"npts: expected the number of image rows of sims ({n_images}), found {npts}")
    if n_captions != k * n_images:
        fail(
            f"sims: expected shape ({n_images}, {k * n_images}) = (n_images, {k} * n_images) with "
            f"{k} captions per image, found {tuple(sims.shape)}"
        )
    return n_images


# --------------------------------------------------------------------------------------------------
# ranks from a similarity matrix
# --------------------------------------------------------------------------------------------------


@dataclass
class _SimsRanks:
    """Ranks (and top-1 indices) of both directions; ``None`` for what was not asked for."""

    i2t: np.ndarray | None = None
    i2t_top1: np.ndarray | None = None
    t2i: np.ndarray | None = None
    t2i_top1: np.ndarray | None = None


def _count_dtype(n: int) -> type[np.integer]:
    """The narrowest unsigned integer that holds counts up to ``n`` (narrow sums run faster)."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if n <= np.iinfo(dtype).max:
            return dtype
    return np.int64


def _ranks_from_sims(
    sims: np.ndarray,
    k: int,
    *,
    want_i2t: bool,
    want_t2i: bool,
    want_top1: bool,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> _SimsRanks:
    """One pass over ``sims`` (n_images, k*n_images) in blocks of rows: at-least-as-high counts.

    i2t rank of image i = #captions of other images scoring >= max(sims[i, k*i:k*i+k]);
    t2i rank of caption j = #other images scoring >= sims[j // k, j] in column j (ties count against).
    Extra memory: one (chunk_rows, k*N) boolean buffer and a few (k*N,) vectors.
    """
    if chunk_rows < 1:
        fail(f"chunk_rows: expected a positive integer, found {chunk_rows}")
    n_images, n_captions = sims.shape
    is_float = sims.dtype.kind == "f"
    chunk_rows = min(chunk_rows, n_images)
    above = np.empty((chunk_rows, n_captions), dtype=bool)  # reused comparison buffer
    row_count_dtype = _count_dtype(n_captions)
    column_count_dtype = _count_dtype(chunk_rows)
    out = _SimsRanks()
    own_captions = np.arange(k)
    if want_i2t:
        out.i2t = np.empty(n_images, dtype=np.int64)
        if want_top1:
            out.i2t_top1 = np.empty(n_images, dtype=np.int64)
    if want_t2i:
        captions = np.arange(n_captions)
        positive_t2i = sims[captions // k, captions]  # (k*N,) score of each caption's own image
        counts_t2i = np.zeros(n_captions, dtype=np.int64)
        if want_top1:
            column_best = np.full(n_captions, -np.inf, dtype=sims.dtype if is_float else np.float64)
            column_arg = np.zeros(n_captions, dtype=np.int64)

    for start in range(0, n_images, chunk_rows):
        stop = min(n_images, start + chunk_rows)
        block = sims[start:stop]  # view (C, k*N)
        mask = above[: stop - start]
        if is_float and np.isnan(block.min()):
            fail(f"sims: expected finite scores, found NaN in image rows {start}..{stop - 1}")
        if want_i2t:
            rows = np.arange(start, stop)[:, None]
            own = sims[rows, rows * k + own_captions]  # (C, k)
            best_positive = own.max(axis=1)  # (C,)
            np.greater_equal(block, best_positive[:, None], out=mask)
            at_least = mask.view(np.uint8).sum(axis=1, dtype=row_count_dtype).astype(np.int64)
            out.i2t[start:stop] = at_least - (own >= best_positive[:, None]).sum(axis=1)  # own captions excluded
            if want_top1:
                out.i2t_top1[start:stop] = block.argmax(axis=1)
        if want_t2i:
            np.greater_equal(block, positive_t2i, out=mask)
            counts_t2i += mask.view(np.uint8).sum(axis=0, dtype=column_count_dtype)
            if want_top1:
                # running first-argmax down the columns; argmax(axis=0) on the whole block is slow in
                # numpy (it copies the block transposed), so only columns whose maximum improved are gathered
                block_max = block.max(axis=0)
                improved = np.flatnonzero(block_max > column_best)
                if improved.size:
                    column_best[improved] = block_max[improved]
                    column_arg[improved] = block[:, improved].argmax(axis=0) + start

    if want_t2i:
        out.t2i = counts_t2i - 1  # the caption's own image always scores >= itself
        if want_top1:
            out.t2i_top1 = column_arg
    return out


def metrics_from_ranks(ranks: np.ndarray | torch.Tensor | Sequence[float]) -> Metrics:
    """``(r1, r5, r10, medr, meanr)`` from 0-based ranks, shape (Q,), with the originals' arithmetic.

    ``R@K = 100 * count(rank < K) / Q``, ``medr = floor(median) + 1``, ``meanr = mean + 1``.
    """
    values = np.asarray(_to_numpy(ranks, "ranks") if isinstance(ranks, torch.Tensor) else ranks, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        fail(f"ranks: expected a non-empty 1-D array of ranks, found shape {tuple(values.shape)}")
    n = values.size
    r1 = 100.0 * int(np.count_nonzero(values < 1)) / n
    r5 = 100.0 * int(np.count_nonzero(values < 5)) / n
    r10 = 100.0 * int(np.count_nonzero(values < 10)) / n
    medr = float(np.floor(np.median(values)) + 1)
    meanr = float(values.mean() + 1)
    return (r1, r5, r10, medr, meanr)


def chance_recalls(n_images: int, captions_per_image: int = 5, ks: Sequence[int] = (1, 5, 10)) -> dict[str, Any]:
    """Expected R@K (percent) of a scorer that ranks at random, on N images x k*N captions.

    Image -> text: the k true captions fall in the top K of the k*N shuffled captions with probability
    ``1 - prod_{i<K} (kN - k - i) / (kN - i)``; text -> image: ``K / N``. Returns
    ``{"i2t": [...], "t2i": [...], "rsum": float}`` (one value per ``ks``). The honesty controls of the
    learning tests compare with this. The spread is wide on small galleries: random scores on 20 images
    give rsum 149 +- 27 (std), on 50 images 62 +- 13.
    """
    if n_images < 1 or captions_per_image < 1:
        fail(f"chance_recalls: expected positive n_images and captions_per_image, found {n_images}, "
             f"{captions_per_image}")
    n_caps, k = n_images * captions_per_image, captions_per_image
    i2t_chance, t2i_chance = [], []
    for top in ks:
        miss = 1.0
        for i in range(min(top, n_caps)):
            miss *= max(n_caps - k - i, 0) / (n_caps - i)
        i2t_chance.append(100.0 * (1.0 - miss))
        t2i_chance.append(100.0 * min(top, n_images) / n_images)
    return {"i2t": i2t_chance, "t2i": t2i_chance, "rsum": sum(i2t_chance) + sum(t2i_chance)}


def chance_rsum_spread(n_images: int, captions_per_image: int = 5, ks: Sequence[int] = (1, 5, 10),
                       draws: int | None = None, seed: int = 0) -> float:
    """Standard deviation of the rsum a random scorer gets on N images x k*N captions (Monte Carlo).

    Draws ``draws`` iid uniform score matrices (N, k*N) from a seeded generator, so the value is
    reproducible, and ranks both directions of each at once: the two directions share the true pairs,
    which widens the spread beyond what independent recalls would give. ``draws`` defaults to
    200 down to 10 as the matrix grows (about 50M scores in all). Random scores on 20 images give
    25, on 50 images 13, on 500 images 1.4: a table row within a few spreads of
    :func:`chance_recalls` has not shown that it learned.
    """
    if n_images < 1 or captions_per_image < 1:
        fail(f"chance_rsum_spread: expected positive n_images and captions_per_image, found {n_images}, "
             f"{captions_per_image}")
    n_caps = n_images * captions_per_image
    if draws is None:
        draws = int(min(200, max(10, 50_000_000 // (n_images * n_caps))))
    if draws < 2:
        fail(f"chance_rsum_spread: expected draws >= 2, found {draws}")
    rng = np.random.default_rng(seed)
    tops = np.asarray(list(ks))
    rsums = np.empty(draws)
    for d in range(draws):
        sims = rng.random((n_images, n_caps), dtype=np.float32)
        ranks = _ranks_from_sims(sims, captions_per_image, want_i2t=True, want_t2i=True, want_top1=False,
                                 chunk_rows=DEFAULT_CHUNK_ROWS)
        rsums[d] = 100.0 * sum(float((r[:, None] < tops).mean(axis=0).sum()) for r in (ranks.i2t, ranks.t2i))
    return float(rsums.std(ddof=1))


def i2t(
    sims: np.ndarray | torch.Tensor,
    return_ranks: bool = False,
    npts: int | None = None,
    captions_per_image: int = 5,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> Metrics | tuple[Metrics, tuple[np.ndarray, np.ndarray]]:
    """Image -> text retrieval (image annotation) on ``sims`` (N, k*N).

    Returns ``(r1, r5, r10, medr, meanr)``; with ``return_ranks`` also ``(ranks, top1)``, both int64
    of shape (N,): the rank of each image's best caption and the column of its top caption (the
    originals hold the same values in float64 arrays). ``npts``, when given, must equal N.
    """
    return _one_direction(sims, "i2t", return_ranks, npts, captions_per_image, chunk_rows)


def t2i(
    sims: np.ndarray | torch.Tensor,
    return_ranks: bool = False,
    npts: int | None = None,
    captions_per_image: int = 5,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> Metrics | tuple[Metrics, tuple[np.ndarray, np.ndarray]]:
    """Text -> image retrieval (image search) on ``sims`` (N, k*N).

    Returns ``(r1, r5, r10, medr, meanr)``; with ``return_ranks`` also ``(ranks, top1)``, both int64
    of shape (k*N,): the rank of each caption's image and the row of its top image.
    """
    return _one_direction(sims, "t2i", return_ranks, npts, captions_per_image, chunk_rows)


def _one_direction(
    sims: np.ndarray | torch.Tensor,
    direction: Literal["i2t", "t2i"],
    return_ranks: bool,
    npts: int | None,
    captions_per_image: int,
    chunk_rows: int,
) -> Metrics | tuple[Metrics, tuple[np.ndarray, np.ndarray]]:
    """:func:`i2t` (``direction="i2t"``) or :func:`t2i` (``"t2i"``): check ``sims``, rank, summarise."""
    matrix = _to_numpy(sims, "sims")
    _check_layout(matrix, captions_per_image, npts)
    is_i2t = direction == "i2t"
    ranks = _ranks_from_sims(
        matrix, captions_per_image, want_i2t=is_i2t, want_t2i=not is_i2t, want_top1=return_ranks, chunk_rows=chunk_rows
    )
    per_query, top1 = (ranks.i2t, ranks.i2t_top1) if is_i2t else (ranks.t2i, ranks.t2i_top1)
    metrics = metrics_from_ranks(per_query)
    if return_ranks:
        return metrics, (per_query, top1)
    return metrics


# --------------------------------------------------------------------------------------------------
# result record
# --------------------------------------------------------------------------------------------------


def _as_metrics(values: Sequence[float], name: str) -> Metrics:
    values = tuple(float(v) for v in values)
    if len(values) != len(METRIC_NAMES):
        fail(f"{name}: expected {len(METRIC_NAMES)} values {METRIC_NAMES}, found {len(values)}")
    return values  # type: ignore[return-value]


def _metrics_dict(metrics: Metrics) -> dict[str, float]:
    return dict(zip(METRIC_NAMES, metrics))


def _metrics_from_dict(values: Mapping[str, Any], name: str) -> Metrics:
    if not isinstance(values, Mapping):
        fail(f"{name}: expected an object with keys {list(METRIC_NAMES)}, found {type(values).__name__}")
    missing = [key for key in METRIC_NAMES if key not in values]
    if missing:
        fail(f"{name}: expected keys {list(METRIC_NAMES)}, missing {missing}")
    return _as_metrics([values[key] for key in METRIC_NAMES], name)


def _jsonable(value: Any) -> Any:
    """``json.dumps`` fallback: numpy scalars/arrays, tensors and paths as plain JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray | torch.Tensor):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"extras: value of type {type(value).__name__} is not JSON serialisable")


@dataclass
class RetrievalResult:
    """Metrics of one evaluation run, both directions.

    ``i2t`` / ``t2i``: ``(r1, r5, r10, medr, meanr)`` (for fold protocols: the mean over folds, medr and
    meanr included, as the originals' ``evalrank``). ``folds``: per-fold ``(i2t, t2i)`` pairs (empty
    for single-block protocols). ``extras``: free JSON-serialisable facts (model name, time_s, ...).

    JSON layout (:meth:`to_dict`), keys stable::

        {"format": "itr_common.retrieval_result/1", "protocol": str, "n_images": int|null,
         "n_captions": int|null, "i2t": {"r1","r5","r10","medr","meanr"}, "t2i": {...},
         "rsum": float, "selection_rsum": float, "folds": [{"i2t": {...}, "t2i": {...}}, ...],
         "extras": {...}}
    """

    i2t: Metrics
    t2i: Metrics
    protocol: str
    extras: dict[str, Any] = field(default_factory=dict)
    n_images: int | None = None
    n_captions: int | None = None
    folds: list[tuple[Metrics, Metrics]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.i2t = _as_metrics(self.i2t, "i2t")
        self.t2i = _as_metrics(self.t2i, "t2i")
        self.folds = [(_as_metrics(a, "folds.i2t"), _as_metrics(b, "folds.t2i")) for a, b in self.folds]

    @property
    def rsum(self) -> float:
        """R@1 + R@5 + R@10 of both directions (the originals' fold5 summary prints 2x the i2t sum)."""
        return sum(self.i2t[:3]) + sum(self.t2i[:3])

    @property
    def selection_rsum(self) -> float:
        """r1 + r5 + r1i + r5i: the dev-set model-selection score of VSRN, CAMERA, DIME, SelfAlign."""
        return self.i2t[0] + self.i2t[1] + self.t2i[0] + self.t2i[1]

    @property
    def i2t_average(self) -> float:
        """Mean of the three i2t recalls ("Average i2t Recall")."""
        return sum(self.i2t[:3]) / 3

    @property
    def t2i_average(self) -> float:
        """Mean of the three t2i recalls ("Average t2i Recall")."""
        return sum(self.t2i[:3]) / 3

    def table(self) -> str:
        """The usual printed block: protocol, rsum, both directions' R@1 R@5 R@10 medr meanr."""

        def row(metrics: Metrics) -> str:
            return "{:.2f} {:.2f} {:.2f} {:.1f} {:.1f}".format(*metrics)

        description = PROTOCOLS.get(self.protocol, "custom protocol")
        lines = [f"Protocol: {self.protocol} ({description})"]
        if self.n_images is not None:
            lines.append(f"Images: {self.n_images}, captions: {self.n_captions}")
        for index, (fold_i2t, fold_t2i) in enumerate(self.folds):
            rsum = sum(fold_i2t[:3]) + sum(fold_t2i[:3])
            lines.append(f"Fold {index}: i2t {row(fold_i2t)} | t2i {row(fold_t2i)} | rsum {rsum:.2f}")
        lines += [
            f"rsum: {self.rsum:.2f}",
            f"Average i2t Recall: {self.i2t_average:.2f}",
            f"Image to text: {row(self.i2t)}",
            f"Average t2i Recall: {self.t2i_average:.2f}",
            f"Text to image: {row(self.t2i)}",
        ]
        return "\n".join(lines)

    def record_latency(self, compute_s: float) -> RetrievalResult:
        """Store the time the evaluation spent encoding and scoring (model and data already loaded).

        ``extras["compute_s"]`` is that time; ``extras["latency_ms_per_query"]`` spreads it over every query
        of both directions (``n_images + n_captions``), the per-query figure of ALADIN's rsum-latency plot
        and of ``itr-reproduce``'s table. Returns ``self``.
        """
        if not isinstance(compute_s, int | float) or not math.isfinite(compute_s) or compute_s < 0:
            fail(f"compute_s: expected a finite number of seconds >= 0, found {compute_s!r}")
        queries = (self.n_images or 0) + (self.n_captions or 0)
        if queries < 1:
            fail("record_latency: expected a result with n_images and n_captions set, found none")
        self.extras["compute_s"] = float(compute_s)
        self.extras[LATENCY_KEY] = 1000.0 * float(compute_s) / queries
        return self

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready record (layout in the class docstring)."""
        return {
            "format": RESULT_FORMAT,
            "protocol": self.protocol,
            "n_images": self.n_images,
            "n_captions": self.n_captions,
            "i2t": _metrics_dict(self.i2t),
            "t2i": _metrics_dict(self.t2i),
            "rsum": self.rsum,
            "selection_rsum": self.selection_rsum,
            "folds": [{"i2t": _metrics_dict(a), "t2i": _metrics_dict(b)} for a, b in self.folds],
            "extras": dict(self.extras),
        }

    def write_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` to ``path`` atomically (temp file + rename); create parent dirs."""
        return write_json_atomic(path, self.to_dict(), default=_jsonable)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "result") -> RetrievalResult:
        """Inverse of :meth:`to_dict` (``rsum`` and ``selection_rsum`` are recomputed)."""
        if not isinstance(data, Mapping):
            fail(f"{source}: expected a JSON object, found {type(data).__name__}")
        for key in ("protocol", "i2t", "t2i"):
            if key not in data:
                fail(f"{source}: expected a retrieval result with key '{key}', found keys {sorted(data)}")
        folds = [
            (_metrics_from_dict(f["i2t"], f"{source}: folds.i2t"), _metrics_from_dict(f["t2i"], f"{source}: folds.t2i"))
            for f in data.get("folds", [])
        ]
        return cls(
            i2t=_metrics_from_dict(data["i2t"], f"{source}: i2t"),
            t2i=_metrics_from_dict(data["t2i"], f"{source}: t2i"),
            protocol=str(data["protocol"]),
            extras=dict(data.get("extras", {})),
            n_images=data.get("n_images"),
            n_captions=data.get("n_captions"),
            folds=folds,
        )

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> RetrievalResult:
        """Read a file written by :meth:`write_json`."""
        return cls.from_dict(read_json(path, "retrieval result JSON"), source=str(Path(path)))


# --------------------------------------------------------------------------------------------------
# protocols
# --------------------------------------------------------------------------------------------------


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        fail(f"protocol: expected one of {sorted(PROTOCOLS)}, found '{protocol}'{did_you_mean(protocol, PROTOCOLS)}")


def fold_slices(n_images: int, fold_size: int, captions_per_image: int = 5) -> list[tuple[slice, slice]]:
    """Consecutive folds along the diagonal: ``[(image_slice, caption_slice), ...]``.

    Fold ``f`` holds images ``f*fold_size .. (f+1)*fold_size - 1`` and their captions
    ``k*f*fold_size .. k*(f+1)*fold_size - 1``. ``n_images`` must be a multiple of ``fold_size``.
    """
    if fold_size < 1 or n_images < fold_size or n_images % fold_size:
        fail(f"fold_size: expected a positive divisor of the number of images ({n_images}), found {fold_size}")
    k = captions_per_image
    return [
        (slice(start, start + fold_size), slice(k * start, k * (start + fold_size)))
        for start in range(0, n_images, fold_size)
    ]


def _protocol_folds(
    protocol: str, n_images: int, captions_per_image: int, fold_size: int | None
) -> list[tuple[slice, slice]]:
    """The (image, caption) slices a protocol evaluates; one block unless ``coco-1k-fold5``."""
    _check_protocol(protocol)
    if protocol != "coco-1k-fold5":
        if fold_size is not None:
            fail(f"fold_size: only used by protocol 'coco-1k-fold5', found fold_size={fold_size} with '{protocol}'")
        return [(slice(0, n_images), slice(0, captions_per_image * n_images))]
    if fold_size is None:
        if n_images % FOLD5_FOLDS:
            fail(f"sims: protocol 'coco-1k-fold5' expects a number of images divisible by 5, found {n_images}")
        fold_size = n_images // FOLD5_FOLDS
    return fold_slices(n_images, fold_size, captions_per_image)


def _mean_metrics(per_fold: Sequence[Metrics]) -> Metrics:
    return _as_metrics(np.mean(np.asarray(per_fold, dtype=np.float64), axis=0), "mean")


def _result_from_folds(
    fold_metrics: list[tuple[Metrics, Metrics]],
    protocol: str,
    n_images: int,
    captions_per_image: int,
    extras: Mapping[str, Any] | None,
) -> RetrievalResult:
    return RetrievalResult(
        i2t=_mean_metrics([a for a, _ in fold_metrics]),
        t2i=_mean_metrics([b for _, b in fold_metrics]),
        protocol=protocol,
        extras=dict(extras or {}),
        n_images=n_images,
        n_captions=captions_per_image * n_images,
        folds=fold_metrics if len(fold_metrics) > 1 else [],
    )


def evaluate_sims(
    sims: np.ndarray | torch.Tensor,
    protocol: str,
    captions_per_image: int = 5,
    *,
    fold_size: int | None = None,
    extras: Mapping[str, Any] | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> RetrievalResult:
    """Evaluate a full similarity matrix ``sims`` (N, k*N) under ``protocol`` (see :data:`PROTOCOLS`).

    ``"1k"``, ``"f30k"``, ``"coco-5k"``: the whole matrix as one block. ``"coco-1k-fold5"``: five
    diagonal blocks of N/5 images x k*N/5 captions (1,000 x 5,000 on COCO 5K test; ``fold_size``
    overrides N/5), metrics averaged over the folds, medr and meanr included.
    """
    matrix = _to_numpy(sims, "sims")
    n_images = _check_layout(matrix, captions_per_image)
    fold_metrics = []
    for images, captions in _protocol_folds(protocol, n_images, captions_per_image, fold_size):
        ranks = _ranks_from_sims(
            matrix[images, captions],
            captions_per_image,
            want_i2t=True,
            want_t2i=True,
            want_top1=False,
            chunk_rows=chunk_rows,
        )
        fold_metrics.append((metrics_from_ranks(ranks.i2t), metrics_from_ranks(ranks.t2i)))
    return _result_from_folds(fold_metrics, protocol, n_images, captions_per_image, extras)


# --------------------------------------------------------------------------------------------------
# ranks straight from embeddings (dot-product two-tower models)
# --------------------------------------------------------------------------------------------------


def _as_tensor(array: np.ndarray | torch.Tensor, name: str, device: torch.device | str | None) -> torch.Tensor:
    tensor = array.detach() if isinstance(array, torch.Tensor) else torch.as_tensor(_to_numpy(array, name))
    if tensor.ndim != 2:
        fail(f"{name}: expected a 2-D (rows, dim) embedding matrix, found shape {tuple(tensor.shape)}")
    if tensor.dtype not in (torch.float32, torch.float64):
        tensor = tensor.float()
    return tensor.to(device) if device is not None else tensor


def _image_rows(img: torch.Tensor, n_captions: int, k: int) -> torch.Tensor:
    """Image embeddings once per image: given (N, D) keep them, given (k*N, D) take every k-th row."""
    if k * img.shape[0] == n_captions:
        return img
    if img.shape[0] == n_captions:
        return img[::k]
    fail(
        f"img_emb: expected {n_captions // k if n_captions % k == 0 else '?'} rows (one per image) or "
        f"{n_captions} rows (one per caption) for {n_captions} captions with {k} captions per image, "
        f"found {img.shape[0]}"
    )


def _check_embeddings(
    img_emb: np.ndarray | torch.Tensor,
    cap_emb: np.ndarray | torch.Tensor,
    k: int,
    device: torch.device | str | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(k, int | np.integer) or k < 1:
        fail(f"captions_per_image: expected a positive integer, found {k!r}")
    cap = _as_tensor(cap_emb, "cap_emb", device)
    img = _as_tensor(img_emb, "img_emb", cap.device)
    if cap.shape[0] == 0 or cap.shape[0] % k:
        fail(f"cap_emb: expected a positive multiple of {k} rows ({k} captions per image), found {cap.shape[0]}")
    img = _image_rows(img, cap.shape[0], k)
    if img.shape[1] != cap.shape[1]:
        fail(f"img_emb: expected embedding dim {cap.shape[1]} (that of cap_emb), found {img.shape[1]}")
    dtype = torch.promote_types(img.dtype, cap.dtype)
    return img.to(dtype), cap.to(dtype)


@torch.inference_mode()
def ranks_from_embeddings(
    img_emb: np.ndarray | torch.Tensor,
    cap_emb: np.ndarray | torch.Tensor,
    captions_per_image: int = 5,
    chunk_size: int = 1024,
    device: torch.device | str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact i2t and t2i ranks of a dot-product model without building the N x k*N matrix.

    ``img_emb``: (N, D) once per image, or (k*N, D) once per caption as the originals store it (every
    k-th row is taken); ``cap_emb``: (k*N, D), captions ``k*i..k*i+k-1`` of image ``i``. Scores are
    ``img @ cap.T``, computed ``chunk_size`` queries at a time (on ``device`` if given). Returns
    ``(i2t_ranks (N,), t2i_ranks (k*N,))`` int64: the number of other images' candidates scoring at least
    as high as the (best) positive, taken from the same score block, the same semantics as :func:`i2t` /
    :func:`t2i` (a tie counts against the query).
    Extra memory: one score block of ``chunk_size x k*N`` (plus its boolean mask), 100 MB in float32
    for 1,024 queries against 25K captions.
    """
    if chunk_size < 1:
        fail(f"chunk_size: expected a positive integer, found {chunk_size}")
    k = captions_per_image
    img, cap = _check_embeddings(img_emb, cap_emb, k, device)
    if bool(torch.isnan(img).any()) or bool(torch.isnan(cap).any()):
        fail("img_emb/cap_emb: expected finite embeddings, found NaN")
    n_images, n_captions = img.shape[0], cap.shape[0]
    own_captions = torch.arange(k, device=img.device)

    i2t_ranks = torch.empty(n_images, dtype=torch.int64)
    for start in range(0, n_images, chunk_size):
        stop = min(n_images, start + chunk_size)
        block = img[start:stop] @ cap.T  # (C, k*N)
        rows = torch.arange(stop - start, device=img.device)[:, None]
        own = block[rows, (rows + start) * k + own_captions]  # (C, k)
        best_positive = own.amax(dim=1, keepdim=True)  # (C, 1)
        i2t_ranks[start:stop] = ((block >= best_positive).sum(dim=1) - (own >= best_positive).sum(dim=1)).cpu()

    t2i_ranks = torch.empty(n_captions, dtype=torch.int64)
    for start in range(0, n_captions, chunk_size):
        stop = min(n_captions, start + chunk_size)
        block = cap[start:stop] @ img.T  # (C, N)
        rows = torch.arange(stop - start, device=img.device)
        positive = block[rows, (rows + start) // k]  # (C,)
        t2i_ranks[start:stop] = ((block >= positive[:, None]).sum(dim=1) - 1).cpu()  # own image excluded

    return i2t_ranks.numpy(), t2i_ranks.numpy()


def evaluate_embeddings(
    img_emb: np.ndarray | torch.Tensor,
    cap_emb: np.ndarray | torch.Tensor,
    protocol: str,
    captions_per_image: int = 5,
    *,
    chunk_size: int = 1024,
    device: torch.device | str | None = None,
    fold_size: int | None = None,
    extras: Mapping[str, Any] | None = None,
) -> RetrievalResult:
    """:func:`evaluate_sims` for a dot-product model, in bounded memory (see :func:`ranks_from_embeddings`).

    ``img_emb`` (N, D) or (k*N, D), ``cap_emb`` (k*N, D); same protocols and fold rules.
    """
    k = captions_per_image
    img, cap = _check_embeddings(img_emb, cap_emb, k, device)
    n_images = img.shape[0]
    fold_metrics = []
    for images, captions in _protocol_folds(protocol, n_images, k, fold_size):
        ranks_i2t, ranks_t2i = ranks_from_embeddings(img[images], cap[captions], k, chunk_size)
        fold_metrics.append((metrics_from_ranks(ranks_i2t), metrics_from_ranks(ranks_t2i)))
    return _result_from_folds(fold_metrics, protocol, n_images, k, extras)


__all__ = [
    "COCO_5K_PROTOCOL",
    "COCO_FOLD5_PROTOCOL",
    "LATENCY_KEY",
    "FLICKR_PROTOCOL",
    "METRIC_NAMES",
    "PROTOCOLS",
    "Metrics",
    "RetrievalResult",
    "chance_recalls",
    "chance_rsum_spread",
    "evaluate_embeddings",
    "evaluate_sims",
    "fold_slices",
    "i2t",
    "metrics_from_ranks",
    "ranks_from_embeddings",
    "t2i",
]
