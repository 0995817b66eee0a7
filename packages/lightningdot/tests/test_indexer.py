"""faiss indexes: flat = brute force, HNSW (original parameters) with its guard fixed, IP scores, on-disk format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from itr_common.errors import UserError
from itr_lightningdot.indexer import DenseFlatIndexer, DenseHNSWFlatIndexer, DenseIndexer


def vectors(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d)) * rng.uniform(0.5, 2.0, (n, 1))).astype(np.float32)


def test_flat_index_is_exact_maximum_inner_product():
    gallery, queries = vectors(200), vectors(7, seed=1)
    index = DenseFlatIndexer(16)
    index.index_data([(f"img{i}", v) for i, v in enumerate(gallery)])
    scores, rows = index.search(queries, 5)
    brute = queries @ gallery.T
    assert np.array_equal(rows, np.argsort(-brute, axis=1)[:, :5])
    assert np.allclose(scores, np.sort(brute, axis=1)[:, ::-1][:, :5], atol=1e-4)
    ids, _ = index.search_knn(queries[:1], 3)[0]
    assert ids == [f"img{i}" for i in rows[0, :3]]


def test_hnsw_returns_inner_products_and_the_same_neighbours_on_a_small_gallery():
    gallery, queries = vectors(300), vectors(10, seed=2)
    index = DenseHNSWFlatIndexer(16)
    assert index.index.hnsw.efSearch == 128 and index.index.hnsw.efConstruction == 200
    index.index_vectors(gallery)
    scores, rows = index.search(queries, 10)
    brute = queries @ gallery.T
    exact = np.argsort(-brute, axis=1)[:, :10]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, exact)])
    assert recall >= 0.95
    assert np.allclose(scores, np.take_along_axis(brute, rows, 1), atol=1e-3)  # IP, not L2 distances


def test_hnsw_guard_refuses_a_second_batch():
    index = DenseHNSWFlatIndexer(16, store_n=8)
    index.index_vectors(vectors(20))
    assert index.phi > 0  # the original reset phi to 0, so this guard never fired
    with pytest.raises(UserError, match="at once"):
        index.index_vectors(vectors(5, seed=3))


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_serialize_roundtrip(tmp_path: Path, kind: str):
    gallery = vectors(50)
    index = DenseFlatIndexer(16) if kind == "flat" else DenseHNSWFlatIndexer(16, store_n=8)
    index.index_vectors(gallery, [f"id{i}" for i in range(50)])
    index.serialize(tmp_path / "gallery", extra={"note": "x"})
    assert (tmp_path / "gallery.index.dpr").is_file() and (tmp_path / "gallery.index_meta.json").is_file()
    loaded = DenseIndexer.deserialize(tmp_path / "gallery")
    assert loaded.kind == kind and loaded.index_id_to_db_id == index.index_id_to_db_id
    q = vectors(3, seed=5)
    assert np.array_equal(loaded.search(q, 5)[1], index.search(q, 5)[1])
    with pytest.raises(UserError, match="at once" if kind == "hnsw" else "dimension"):
        loaded.index_vectors(vectors(2, d=16 if kind == "hnsw" else 8))


def test_bad_vectors_and_queries_are_refused():
    index = DenseFlatIndexer(16)
    with pytest.raises(UserError, match="dimension 16"):
        index.index_vectors(vectors(3, d=8))
    index.index_vectors(vectors(3))
    with pytest.raises(UserError, match="dimension 16"):
        index.search(vectors(1, d=4), 1)
    with pytest.raises(UserError, match="finite"):
        index.search(np.full((1, 16), np.nan, dtype=np.float32), 1)


def test_ivf_index_finds_the_exact_neighbours_of_clustered_data_and_roundtrips(tmp_path: Path):
    from itr_lightningdot.indexer import DenseIVFFlatIndexer

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((20, 16)).astype(np.float32)
    gallery = (centres[rng.integers(0, 20, 2000)] + 0.3 * rng.standard_normal((2000, 16))).astype(np.float32)
    queries = gallery[:10] + 0.1
    index = DenseIVFFlatIndexer(16, nprobe=8)
    index.index_vectors(gallery, [f"g{i}" for i in range(2000)])
    assert index.nlist == min(int(4 * np.sqrt(2000)), 2000 // 39)  # 4 sqrt(N), at least 39 vectors a list
    scores, rows = index.search(queries, 10)
    exact = np.argsort(-(queries @ gallery.T), axis=1)[:, :10]
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, exact)]) >= 0.95
    assert np.allclose(scores, np.take_along_axis(queries @ gallery.T, rows, 1), atol=1e-3)
    index.serialize(tmp_path / "ivf")
    loaded = DenseIndexer.deserialize(tmp_path / "ivf")
    assert loaded.kind == "ivf" and loaded.nprobe == 8 and np.array_equal(loaded.search(queries, 10)[1], rows)
