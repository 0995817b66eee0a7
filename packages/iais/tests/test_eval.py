"""Evaluation: the original recall keys on a hand case, standard metrics, blocked scoring, results files."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from itr_common.errors import UserError
from itr_common.metrics import i2t, t2i
from itr_iais.evaluate import itm_eval, retrieval_result, score_matrix, sorted_image_ids
from itr_iais.results_io import load_results, write_results

# 3 images (a, b, c), 2 texts each; rows are texts, columns images
TXT_IDS = ["a0", "a1", "b0", "b1", "c0", "c1"]
IMG_IDS = ["a", "b", "c"]
TXT2IMG = {t: t[0] for t in TXT_IDS}
IMG2TXTS = {i: [f"{i}0", f"{i}1"] for i in IMG_IDS}
SCORES = np.array([
    [0.9, 0.1, 0.0],  # a0: its image first
    [0.2, 0.8, 0.1],  # a1: second
    [0.7, 0.6, 0.1],  # b0: second
    [0.0, 0.1, 0.5],  # b1: third
    [0.3, 0.2, 0.9],  # c0: first
    [0.1, 0.4, 0.3],  # c1: second
], dtype=np.float32)


def test_itm_eval_hand_case():
    log = itm_eval(torch.from_numpy(SCORES), TXT_IDS, IMG_IDS, TXT2IMG, IMG2TXTS)
    # image retrieval (per text): ranks 0, 1, 1, 2, 0, 1 -> R@1 2/6; R@5 = R@10 = 1
    assert log["img_r1"] == pytest.approx(2 / 6) and log["img_r5"] == 1.0 and log["img_r10"] == 1.0
    # text retrieval (per image, best of its texts): column a best a0 (rank 0); column b: scores
    # [.1,.8,.6,.1,.2,.4] -> b0 .6 has a1 above -> rank 1; column c: c0 .9 is top -> rank 0
    assert log["txt_r1"] == pytest.approx(2 / 3) and log["txt_r5"] == 1.0
    assert log["r_mean"] == pytest.approx(((2 / 3 + 2) / 3 + (2 / 6 + 2) / 3) / 2)
    assert list(log) == ["txt_r1", "txt_r5", "txt_r10", "txt_r_mean", "img_r1", "img_r5", "img_r10",
                         "img_r_mean", "r_mean"]


def test_itm_eval_does_not_count_row_indices():
    """The original's ``(nonzero(topk == gt) < K).sum()`` also counts row indices < K; ours does not."""
    n = 12
    scores = -np.eye(n, dtype=np.float32)  # every text ranks its own image last (rank n-1 >= 10)
    ids = [str(i) for i in range(n)]
    log = itm_eval(scores, ids, ids, {i: i for i in ids}, {i: [i] for i in ids})
    assert log["img_r10"] == 0.0 and log["txt_r10"] == 0.0


def test_standard_metrics_match_itr_common_on_the_usual_layout():
    rng = np.random.default_rng(0)
    n, k = 6, 5
    sims = rng.standard_normal((n, k * n)).astype(np.float32)  # (images, captions), caption j -> image j // k
    txt_ids = [f"t{j}" for j in range(k * n)]
    img_ids = [f"i{i}" for i in range(n)]
    txt2img = {f"t{j}": f"i{j // k}" for j in range(k * n)}
    img2txts = {f"i{i}": [f"t{j}" for j in range(k * i, k * i + k)] for i in range(n)}
    result = retrieval_result(torch.from_numpy(sims.T.copy()), txt_ids, img_ids, txt2img, img2txts, "f30k")
    assert result.i2t == pytest.approx(i2t(sims))
    assert result.t2i == pytest.approx(t2i(sims))
    assert result.rsum == pytest.approx(sum(i2t(sims)[:3]) + sum(t2i(sims)[:3]))


def test_score_matrix_is_independent_of_block_size(world):
    from itr_common.data.uniter_lmdb import DetectFeatLmdb, TxtTokLmdb
    from itr_common.models.uniter import UniterConfig
    from itr_iais.model import UniterForImageTextRetrievalHardNeg

    torch.manual_seed(0)
    txt = TxtTokLmdb(world / "txt_db" / "itm_flickr30k_test.db", -1)
    img = DetectFeatLmdb(world / "img_db" / "flickr30k", compressed=False)
    cfg = UniterConfig.from_json_file(world / "pretrained" / "uniter-tiny.json", img_dim=32)
    model = UniterForImageTextRetrievalHardNeg(cfg).eval()
    with torch.no_grad():  # sharper weights so that scores differ visibly between pairs
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(5)
    txt_ids, img_ids = txt.ids[:7], sorted_image_ids(list(txt.img2txts), img)
    assert [img.name2nbb[i] for i in img_ids] == sorted(img.name2nbb[i] for i in img_ids)
    full = score_matrix(model.score, txt, img, txt_ids, img_ids, block_size=400)
    blocks = score_matrix(model.score, txt, img, txt_ids, img_ids, block_size=3)
    iais = score_matrix(model.score, txt, img, txt_ids, img_ids, block_size=6, iais_layout=True)
    assert full.shape == (7, 20) and full.std() > 1e-3
    assert torch.allclose(full, blocks, atol=1e-5) and torch.allclose(full, iais, atol=1e-5)


def test_results_round_trip_and_refuse_code(tmp_path):
    scores = torch.randn(4, 3)
    write_results(tmp_path, scores, ["1", "2", "3", "4"], ["a", "b", "c"])
    with open(tmp_path / "results.bin", "rb") as f:  # the original format: a plain pickle of the tuple
        original = pickle.load(f)
    assert torch.equal(original[0], scores) and original[1] == ["1", "2", "3", "4"]
    for source in (tmp_path / "results.bin", tmp_path / "results.npz", tmp_path):
        loaded = load_results(source)
        assert torch.equal(loaded[0], scores) and loaded[2] == ["a", "b", "c"]

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.bin"
    evil.write_bytes(pickle.dumps((Evil(), [], [])))
    with pytest.raises(UserError, match="builtins.print"):
        load_results(evil)
