"""itr_common.metrics: hand-computed cases, equality with an original-style argsort loop, protocols, JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from itr_common.errors import UserError
from itr_common.metrics import (
    RetrievalResult,
    chance_recalls,
    chance_rsum_spread,
    evaluate_embeddings,
    evaluate_sims,
    fold_slices,
    i2t,
    metrics_from_ranks,
    ranks_from_embeddings,
    t2i,
)

# image 0 owns captions 0, 1; image 1 owns captions 2, 3
HAND_SIMS = np.array(
    [
        [0.9, 0.1, 0.5, 0.95],
        [0.2, 0.3, 0.4, 0.1],
    ],
    dtype=np.float32,
)


def reference_loop(sims: np.ndarray, k: int = 5):
    """The originals' per-query argsort loops (kept here only as the test oracle)."""
    n = sims.shape[0]
    ranks_i2t, top1_i2t = np.zeros(n), np.zeros(n)
    for index in range(n):
        order = np.argsort(sims[index])[::-1]
        ranks_i2t[index] = min(np.where(order == c)[0][0] for c in range(k * index, k * index + k))
        top1_i2t[index] = order[0]
    ranks_t2i, top1_t2i = np.zeros(k * n), np.zeros(k * n)
    by_caption = sims.T
    for caption in range(k * n):
        order = np.argsort(by_caption[caption])[::-1]
        ranks_t2i[caption] = np.where(order == caption // k)[0][0]
        top1_t2i[caption] = order[0]

    def metrics(ranks):
        r1 = 100.0 * len(np.where(ranks < 1)[0]) / len(ranks)
        r5 = 100.0 * len(np.where(ranks < 5)[0]) / len(ranks)
        r10 = 100.0 * len(np.where(ranks < 10)[0]) / len(ranks)
        return (r1, r5, r10, np.floor(np.median(ranks)) + 1, ranks.mean() + 1)

    return (metrics(ranks_i2t), (ranks_i2t, top1_i2t)), (metrics(ranks_t2i), (ranks_t2i, top1_t2i))


def random_sims(n_images: int, k: int = 5, seed: int = 0, signal: float = 1.5) -> np.ndarray:
    """Tie-free random scores with the positives lifted, so that all recall levels are exercised."""
    rng = np.random.default_rng(seed)
    sims = rng.standard_normal((n_images, k * n_images))
    sims[np.arange(k * n_images) // k, np.arange(k * n_images)] += signal
    return sims.astype(np.float32)


def test_hand_computed_i2t():
    metrics, (ranks, top1) = i2t(HAND_SIMS, return_ranks=True, captions_per_image=2)
    # image 0: best own caption 0.9, one caption (0.95) above -> rank 1; image 1: own 0.4 is the max
    assert ranks.tolist() == [1, 0]
    assert top1.tolist() == [3, 2]
    assert metrics == (50.0, 100.0, 100.0, 1.0, 1.5)  # medr floor(0.5)+1, meanr 0.5+1


def test_hand_computed_t2i():
    metrics, (ranks, top1) = t2i(HAND_SIMS, return_ranks=True, captions_per_image=2)
    # columns: c0 0.9 vs 0.2 -> 0; c1 0.1 vs 0.3 -> 1; c2 0.4 vs 0.5 -> 1; c3 0.1 vs 0.95 -> 1
    assert ranks.tolist() == [0, 1, 1, 1]
    assert top1.tolist() == [0, 1, 0, 0]
    assert metrics == (25.0, 100.0, 100.0, 2.0, 1.75)


@pytest.mark.parametrize("signal", [0.0, 2.5])
def test_identical_to_original_loop_on_tie_free_matrix(signal):
    sims = random_sims(40, seed=1, signal=signal)
    (ref_i2t, (ref_ri, ref_ti)), (ref_t2i, (ref_rt, ref_tt)) = reference_loop(sims)
    got_i2t, (ranks_i, top_i) = i2t(sims, return_ranks=True)
    got_t2i, (ranks_t, top_t) = t2i(sims, return_ranks=True)
    assert got_i2t == ref_i2t
    assert got_t2i == ref_t2i
    np.testing.assert_array_equal(ranks_i, ref_ri)
    np.testing.assert_array_equal(top_i, ref_ti)
    np.testing.assert_array_equal(ranks_t, ref_rt)
    np.testing.assert_array_equal(top_t, ref_tt)
    assert i2t(sims) == got_i2t and t2i(sims) == got_t2i


def test_chunk_size_does_not_change_results():
    sims = random_sims(23, k=3, seed=2)
    full_i, (ri, ti) = i2t(sims, return_ranks=True, captions_per_image=3, chunk_rows=1000)
    full_t, (rt, tt) = t2i(sims, return_ranks=True, captions_per_image=3, chunk_rows=1000)
    for chunk in (1, 4, 7):
        small_i, (ri2, ti2) = i2t(sims, return_ranks=True, captions_per_image=3, chunk_rows=chunk)
        small_t, (rt2, tt2) = t2i(sims, return_ranks=True, captions_per_image=3, chunk_rows=chunk)
        assert small_i == full_i and small_t == full_t
        for a, b in ((ri, ri2), (ti, ti2), (rt, rt2), (tt, tt2)):
            np.testing.assert_array_equal(a, b)


def test_wide_chunks_use_wider_counters():
    sims = random_sims(300, k=2, seed=9, signal=0.5)  # 300-row chunks: column counts above uint8
    narrow = (i2t(sims, True, None, 2, chunk_rows=64), t2i(sims, True, None, 2, chunk_rows=64))
    wide = (i2t(sims, True, None, 2, chunk_rows=300), t2i(sims, True, None, 2, chunk_rows=300))
    for (m_narrow, arrays_narrow), (m_wide, arrays_wide) in zip(narrow, wide):
        assert m_narrow == m_wide
        for a, b in zip(arrays_narrow, arrays_wide):
            np.testing.assert_array_equal(a, b)
    assert wide[1][1][0].max() > 255  # some caption ranks exceed a uint8 count


def test_ties_count_against_the_query():
    # a collapsed model (every pair scored the same) must not read as perfect recall
    sims = np.zeros((3, 15), dtype=np.float32)
    assert i2t(sims) == (0.0, 0.0, 0.0, 11.0, 11.0)  # the 10 other images' captions tie with the best own one
    assert t2i(sims) == (0.0, 100.0, 100.0, 3.0, 3.0)  # the 2 other images tie with the own one
    # ties among an image's own captions do not count; a tie with one other image's caption does
    sims = np.array([[1.0, 1.0, 0.5, 0.0], [0.0, 0.0, 2.0, 2.0]], dtype=np.float32)
    _, (ranks_i2t, _) = i2t(sims, True, None, 2)
    _, (ranks_t2i, _) = t2i(sims, True, None, 2)
    np.testing.assert_array_equal(ranks_i2t, [0, 0])
    np.testing.assert_array_equal(ranks_t2i, [0, 0, 0, 0])
    sims[0, 2] = 1.0  # image 0's best own score 1.0 now tied by image 1's first caption; caption 2 tied too
    _, (ranks_i2t, _) = i2t(sims, True, None, 2)
    _, (ranks_t2i, _) = t2i(sims, True, None, 2)
    np.testing.assert_array_equal(ranks_i2t, [1, 0])
    np.testing.assert_array_equal(ranks_t2i, [0, 0, 0, 0])
    sims[0, 3] = 2.0  # caption 3's own image 1 scores 2.0, image 0 ties it
    _, (ranks_t2i, _) = t2i(sims, True, None, 2)
    np.testing.assert_array_equal(ranks_t2i, [0, 0, 0, 1])


def test_ranks_from_embeddings_count_ties_against_the_query():
    img, cap = torch.zeros(3, 4), torch.zeros(15, 4)
    ranks_i2t, ranks_t2i = ranks_from_embeddings(img, cap, chunk_size=2)
    np.testing.assert_array_equal(ranks_i2t, [10, 10, 10])
    np.testing.assert_array_equal(ranks_t2i, [2] * 15)


def test_torch_input_matches_numpy():
    sims = random_sims(12, seed=3)
    expected = (i2t(sims), t2i(sims))
    assert (i2t(torch.from_numpy(sims)), t2i(torch.from_numpy(sims))) == expected
    assert i2t(torch.from_numpy(sims).double()) == expected[0]
    assert i2t(sims.astype(np.float64)) == expected[0]


def test_shape_and_value_errors():
    with pytest.raises(UserError, match=r"expected shape \(2, 10\).*found \(2, 8\)"):
        i2t(np.zeros((2, 8)))
    with pytest.raises(UserError, match=r"expected shape \(2, 4\)"):
        t2i(np.zeros((2, 5)), captions_per_image=2)
    with pytest.raises(UserError, match="2-D"):
        i2t(np.zeros(10))
    with pytest.raises(UserError, match="npts"):
        i2t(np.zeros((2, 10)), npts=3)
    with pytest.raises(UserError, match="captions_per_image"):
        i2t(np.zeros((2, 10)), captions_per_image=0)
    bad = random_sims(4)
    bad[2, 7] = np.nan
    with pytest.raises(UserError, match="NaN"):
        t2i(bad)


def test_metrics_from_ranks_formulas():
    ranks = np.array([0, 0, 3, 7, 12, 40])
    r1, r5, r10, medr, meanr = metrics_from_ranks(ranks)
    assert r1 == pytest.approx(100 * 2 / 6)
    assert r5 == pytest.approx(100 * 3 / 6)
    assert r10 == pytest.approx(100 * 4 / 6)
    assert medr == 6.0  # median 5.0 -> floor + 1
    assert meanr == pytest.approx(62 / 6 + 1)
    assert metrics_from_ranks([0, 1, 2, 3])[3] == 2.0  # median 1.5 -> floor 1 -> 2
    with pytest.raises(UserError):
        metrics_from_ranks(np.array([]))


def test_fold_slices():
    folds = fold_slices(10, 2, captions_per_image=5)
    assert len(folds) == 5
    assert folds[1] == (slice(2, 4), slice(10, 20))
    with pytest.raises(UserError, match="fold_size"):
        fold_slices(10, 3)


def test_fold5_is_the_mean_of_diagonal_blocks():
    sims = random_sims(20, seed=4, signal=1.0)
    result = evaluate_sims(sims, "coco-1k-fold5")
    per_fold = []
    for f in range(5):
        block = sims[4 * f : 4 * f + 4, 20 * f : 20 * f + 20]
        per_fold.append((reference_loop(block)[0][0], reference_loop(block)[1][0]))
    expected_i2t = np.mean([a for a, _ in per_fold], axis=0)
    expected_t2i = np.mean([b for _, b in per_fold], axis=0)
    np.testing.assert_allclose(result.i2t, expected_i2t)
    np.testing.assert_allclose(result.t2i, expected_t2i)  # medr and meanr averaged too
    assert len(result.folds) == 5
    assert result.n_images == 20 and result.n_captions == 100
    assert result.rsum == pytest.approx(sum(expected_i2t[:3]) + sum(expected_t2i[:3]))


@pytest.mark.parametrize("protocol", ["1k", "f30k", "coco-5k"])
def test_single_block_protocols(protocol):
    sims = random_sims(15, seed=5)
    result = evaluate_sims(sims, protocol)
    assert result.i2t == i2t(sims) and result.t2i == t2i(sims)
    assert result.protocol == protocol and result.folds == []


def test_protocol_errors():
    sims = random_sims(6)
    with pytest.raises(UserError, match="did you mean 'coco-5k'"):
        evaluate_sims(sims, "coco-5K")
    with pytest.raises(UserError, match="divisible by 5"):
        evaluate_sims(sims, "coco-1k-fold5")
    assert len(evaluate_sims(sims, "coco-1k-fold5", fold_size=3).folds) == 2


def test_retrieval_result_rsum_table_and_json(tmp_path):
    result = RetrievalResult(
        i2t=(77.4, 95.0, 97.4, 1.0, 3.2),
        t2i=(60.0, 88.0, 93.0, 1.0, 6.5),
        protocol="coco-1k-fold5",
        extras={"model": "dime", "time_s": np.float32(1.5)},
        n_images=5000,
        n_captions=25000,
    )
    assert result.rsum == pytest.approx(77.4 + 95.0 + 97.4 + 60.0 + 88.0 + 93.0)  # not 2x the i2t sum
    assert result.selection_rsum == pytest.approx(77.4 + 95.0 + 60.0 + 88.0)
    table = result.table()
    assert "Image to text: 77.40 95.00 97.40 1.0 3.2" in table
    assert "Text to image: 60.00 88.00 93.00 1.0 6.5" in table
    assert "rsum: 510.80" in table and "coco-1k-fold5" in table

    path = result.write_json(tmp_path / "sub" / "result.json")
    data = json.loads(path.read_text())
    assert data["i2t"] == {"r1": 77.4, "r5": 95.0, "r10": 97.4, "medr": 1.0, "meanr": 3.2}
    assert data["rsum"] == pytest.approx(510.8) and data["protocol"] == "coco-1k-fold5"
    assert data["extras"] == {"model": "dime", "time_s": 1.5}
    loaded = RetrievalResult.from_json(path)
    assert loaded.i2t == result.i2t and loaded.t2i == result.t2i and loaded.n_images == 5000


def test_from_json_bad_input(tmp_path):
    with pytest.raises(UserError, match="not found"):
        RetrievalResult.from_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="invalid JSON"):
        RetrievalResult.from_json(bad)
    bad.write_text(json.dumps({"protocol": "1k", "i2t": {"r1": 1}, "t2i": {}}))
    with pytest.raises(UserError, match="missing"):
        RetrievalResult.from_json(bad)


def test_fold_result_round_trips_folds(tmp_path):
    result = evaluate_sims(random_sims(10, seed=6), "coco-1k-fold5", extras={"name": "x"})
    loaded = RetrievalResult.from_json(result.write_json(tmp_path / "r.json"))
    assert loaded.folds == result.folds and loaded.extras == {"name": "x"}
    assert "Fold 4:" in result.table()


def _random_embeddings(n_images: int, k: int, dim: int = 8, seed: int = 7):
    gen = torch.Generator().manual_seed(seed)
    img = torch.randn(n_images, dim, generator=gen, dtype=torch.float64)
    cap = img.repeat_interleave(k, dim=0) + 1.5 * torch.randn(k * n_images, dim, generator=gen, dtype=torch.float64)
    return img, cap


def test_ranks_from_embeddings_equal_full_matrix():
    img, cap = _random_embeddings(30, 5)
    sims = (img @ cap.T).numpy()
    (_, (ref_i2t, _)), (_, (ref_t2i, _)) = (i2t(sims, return_ranks=True), t2i(sims, return_ranks=True))
    for chunk in (1, 7, 1024):
        ranks_i2t, ranks_t2i = ranks_from_embeddings(img, cap, chunk_size=chunk)
        np.testing.assert_array_equal(ranks_i2t, ref_i2t)
        np.testing.assert_array_equal(ranks_t2i, ref_t2i)
    # image embeddings stored once per caption, as the originals do; numpy input
    per_caption = img.repeat_interleave(5, dim=0).numpy()
    ranks_i2t, ranks_t2i = ranks_from_embeddings(per_caption, cap.numpy(), chunk_size=16)
    np.testing.assert_array_equal(ranks_i2t, ref_i2t)
    np.testing.assert_array_equal(ranks_t2i, ref_t2i)
    assert metrics_from_ranks(ranks_i2t) == i2t(sims)


def test_evaluate_embeddings_matches_evaluate_sims():
    img, cap = _random_embeddings(20, 5, seed=8)
    sims = (img @ cap.T).numpy()
    for protocol in ("coco-1k-fold5", "coco-5k"):
        from_emb = evaluate_embeddings(img, cap, protocol, chunk_size=6, extras={"m": 1})
        from_sims = evaluate_sims(sims, protocol)
        assert from_emb.i2t == from_sims.i2t and from_emb.t2i == from_sims.t2i
        assert from_emb.folds == from_sims.folds and from_emb.extras == {"m": 1}


def test_embedding_shape_errors():
    img, cap = _random_embeddings(4, 5)
    with pytest.raises(UserError, match="img_emb: expected 4 rows"):
        ranks_from_embeddings(img[:3], cap)
    with pytest.raises(UserError, match="embedding dim"):
        ranks_from_embeddings(img[:, :4], cap)
    with pytest.raises(UserError, match="multiple of 5"):
        ranks_from_embeddings(img, cap[:-1])


def test_chance_recalls_hand_case_and_random_scores():
    # 2 images x 2 captions each: image 0 finds one of its 2 captions at top 1 with p = 1 - 2/4;
    # top 5 covers all 4 captions. Text -> image: 1/2 at top 1, certain from top 2 on.
    tiny = chance_recalls(2, captions_per_image=2, ks=(1, 5))
    assert tiny["i2t"] == pytest.approx([50.0, 100.0]) and tiny["t2i"] == pytest.approx([50.0, 100.0])
    # 20 images x 100 captions: i2t 5 / 23.04 / 41.62, t2i 5 / 25 / 50
    twenty = chance_recalls(20)
    assert twenty["i2t"] == pytest.approx([5.0, 23.04, 41.62], abs=0.01) and twenty["t2i"] == [5.0, 25.0, 50.0]
    rng = np.random.default_rng(0)
    rsums = []
    for _ in range(200):
        sims = rng.standard_normal((20, 100))
        rsums.append(sum(i2t(sims)[:3]) + sum(t2i(sims)[:3]))
    assert np.mean(rsums) == pytest.approx(twenty["rsum"], abs=4.0)  # 200 draws of std ~25: s.e. ~1.8
    # the spread of those 200 independent draws (through the public i2t / t2i) matches chance_rsum_spread's
    # own seeded estimate within sampling error (the std of a 200-draw std is ~5% of it)
    assert chance_rsum_spread(20) == pytest.approx(np.std(rsums, ddof=1), rel=0.15)


def test_chance_rsum_spread_is_seeded_shrinks_with_the_gallery_and_refuses_bad_input():
    from itr_common.errors import UserError

    assert chance_rsum_spread(50) == chance_rsum_spread(50)  # same seed, same value
    assert chance_rsum_spread(50) == pytest.approx(13.0, abs=1.5)
    assert chance_rsum_spread(500) < chance_rsum_spread(50) / 5
    # one image, one caption: every scorer ranks it first, so random scores have no spread at all
    assert chance_rsum_spread(1, captions_per_image=1, draws=5) == 0.0
    for bad in ({"n_images": 0}, {"n_images": 5, "draws": 1}):
        with pytest.raises(UserError, match="chance_rsum_spread"):
            chance_rsum_spread(**{"n_images": 5, **bad})


def test_record_latency_spreads_compute_time_over_both_directions_queries():
    from itr_common.errors import UserError
    from itr_common.metrics import LATENCY_KEY, RetrievalResult

    result = RetrievalResult((1, 2, 3, 1, 1), (1, 2, 3, 1, 1), "f30k", n_images=10, n_captions=50)
    assert result.record_latency(0.3) is result
    assert result.extras["compute_s"] == 0.3
    assert result.extras[LATENCY_KEY] == pytest.approx(1000 * 0.3 / 60)  # 10 image + 50 caption queries
    assert RetrievalResult.from_dict(result.to_dict()).extras[LATENCY_KEY] == result.extras[LATENCY_KEY]
    for bad in (-1.0, float("nan")):
        with pytest.raises(UserError, match="compute_s"):
            result.record_latency(bad)
    with pytest.raises(UserError, match="n_images"):
        RetrievalResult((1, 2, 3, 1, 1), (1, 2, 3, 1, 1), "f30k").record_latency(1.0)
