"""A closed-form retrieval probe of the synthetic world: is it learnable, and only from true pairs?

The probe parses each caption into its ``(attribute, object)`` word pairs, gives every word a vector
and scores a caption against an image by word-region alignment::

    s(caption, image) = sum over pairs (a, o) of max over regions r of cos(region_r, v_a + v_o)

With the world's own concept vectors (:func:`oracle_vectors`) this is the upper bound. With vectors
*learnt* from paired data by :func:`fit_word_vectors` (the mean image feature of the captions holding
a word, minus the mean over all captions: the concept direction, and nothing if the pairs are
shuffled) it is a one-line "model": far above chance on the true pairing, at chance on
:func:`~itr_common.synthetic.world.shuffled_pairs`. The world's tests use both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from itr_common.synthetic.world import World, WorldSplit


def parse_pairs(caption: str, attributes: Sequence[str], objects: Sequence[str]) -> list[tuple[str, str]]:
    """The ``(attribute, object)`` word pairs of ``caption``: an attribute word directly before an object word."""
    attrs, objs = set(attributes), set(objects)
    words = caption.split()
    return [(a, o) for a, o in zip(words, words[1:]) if a in attrs and o in objs]


def oracle_vectors(world: World) -> dict[str, np.ndarray]:
    """Word -> the world's own concept vector (float32 (D,)) for every attribute and object."""
    vectors = dict(zip(world.objects, world.object_vectors))
    vectors.update(zip(world.attributes, world.attribute_vectors))
    return vectors


def fit_word_vectors(split: WorldSplit, words: Sequence[str]) -> dict[str, np.ndarray]:
    """Word -> mean precomp feature (over regions) of the images of captions holding it, minus the mean over
    all captions. float32 (D,) each; words never seen get zeros."""
    image_means = split.images.mean(axis=1)  # (N, D)
    caption_means = image_means[np.arange(len(split.captions)) // split.captions_per_image]  # (kN, D)
    overall = caption_means.mean(axis=0)
    wanted = set(words)
    sums = {w: np.zeros(split.images.shape[-1], dtype=np.float64) for w in words}
    counts = dict.fromkeys(words, 0)
    for row, caption in zip(caption_means, split.captions):
        for w in set(caption.split()) & wanted:
            sums[w] += row
            counts[w] += 1
    return {w: ((sums[w] / counts[w] - overall) if counts[w] else sums[w]).astype(np.float32) for w in words}


def _unit(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def alignment_sims(
    split: WorldSplit,
    vectors: Mapping[str, np.ndarray],
    attributes: Sequence[str],
    objects: Sequence[str],
    chunk: int = 4096,
) -> np.ndarray:
    """float32 (N, k*N) probe scores of every image against every caption of ``split`` (precomp regions)."""
    regions = _unit(split.images.astype(np.float32)).reshape(-1, split.images.shape[-1])  # (N*R, D)
    n, r = split.images.shape[:2]
    queries: list[np.ndarray] = []
    owner: list[int] = []
    for c, caption in enumerate(split.captions):
        for a, o in parse_pairs(caption, attributes, objects):
            queries.append(vectors[a] + vectors[o])
            owner.append(c)
    sims = np.zeros((n, len(split.captions)), dtype=np.float32)
    if not queries:
        return sims
    q = _unit(np.stack(queries).astype(np.float32))
    owner_arr = np.asarray(owner)
    for lo in range(0, len(q), chunk):
        best = (regions @ q[lo : lo + chunk].T).reshape(n, r, -1).max(axis=1)  # (N, P)
        np.add.at(sims.T, owner_arr[lo : lo + chunk], best.T)
    return sims


__all__ = ["alignment_sims", "fit_word_vectors", "oracle_vectors", "parse_pairs"]
