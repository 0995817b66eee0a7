"""The interaction module: a block of pairs scores as each pair alone; scoring head; path vector layout."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from dime_testlib import tiny_opt

from itr_dime.interaction import InteractionModule, path_embedding_similarity, pool_and_score
from itr_dime.pairs import PairContext


def _inputs(n_img=3, n_stc=4, regions=5, words=7, d=16, seed=0):
    torch.manual_seed(seed)
    return dict(
        rgn=F.normalize(torch.randn(n_img, regions, d), dim=-1), img=F.normalize(torch.randn(n_img, d), dim=-1),
        wrd=F.normalize(torch.randn(n_stc, words, d), dim=-1), stc=F.normalize(torch.randn(n_stc, d), dim=-1),
        stc_lens=torch.tensor([7, 3, 5, 2][:n_stc]),
    )


def _module(direction: str) -> InteractionModule:
    torch.manual_seed(1)
    module = InteractionModule(tiny_opt(direction)).eval()
    module.bn.running_mean.normal_()
    module.bn.running_var.uniform_(0.5, 2.0)
    return module


@pytest.mark.parametrize("direction", ["i2t", "t2i"])
def test_block_scores_equal_pairwise_scores(direction):
    module, x = _module(direction), _inputs()
    with torch.no_grad():
        block = module(PairContext(**x, direction=direction))
        assert block.scores.shape == (3, 4)
        for i in range(3):
            for j in range(4):
                n = int(x["stc_lens"][j]) if direction == "i2t" else x["wrd"].shape[1]
                # i2t: the caption truncated to its length, as the original does; t2i: every position
                single = PairContext(x["rgn"][i:i + 1], x["img"][i:i + 1], x["wrd"][j:j + 1, :n], x["stc"][j:j + 1],
                                     torch.tensor([n]), direction)
                torch.testing.assert_close(module(single).scores[0, 0], block.scores[i, j], atol=1e-5, rtol=1e-5)


def test_path_vector_layout():
    module, x = _module("i2t"), _inputs()
    with torch.no_grad():
        out = module(PairContext(**x, direction="i2t"))
    assert out.paths.shape == (3, 36)  # i2t: per image, averaged over the captions
    layer0 = out.paths[:, :16].view(3, 4, 4)  # (image, output path, cell), gates normalised over cells
    torch.testing.assert_close(layer0.sum(-1), torch.ones(3, 4), atol=1e-6, rtol=0)
    layer1 = out.paths[:, 16:32].view(3, 4, 4)
    torch.testing.assert_close(layer1.sum(-1), torch.ones(3, 4), atol=1e-6, rtol=0)
    last = out.paths[:, 32:]  # raw gates of the last layer's four cells
    assert torch.all((last >= 0) & (last < 1))
    # layer 0 gates depend on the image only: they equal the normalised router outputs of its regions
    layer = module.dynamic_itr_l0
    raw = torch.stack([cell.router(x["rgn"]) for cell in layer.cells()], dim=-1)  # (n_img, 4 outputs, 4 cells)
    torch.testing.assert_close(layer0, raw / (raw.sum(-1, keepdim=True) + 1e-8))

    t2i = _module("t2i")
    with torch.no_grad():
        assert t2i(PairContext(**x, direction="t2i")).paths.shape == (4, 36)  # t2i: per caption


def test_pool_and_score_hand_case():
    bn = torch.nn.BatchNorm1d(2).eval()  # running mean 0, var 1: x / sqrt(1 + eps)
    refined = torch.tensor([[[[1.0, 0.0], [0.0, 3.0]]]])  # (1, 1, L=2, d=2)
    score = pool_and_score(refined, bn, torch.tensor([[[1.0, 0.0]]]))
    # mean + max over locals = [0.5 + 1, 1.5 + 3] -> normalised [1, 3] / sqrt(10)
    torch.testing.assert_close(score, torch.tensor([[1 / math.sqrt(10.0)]]))


def test_path_similarity_is_a_cosine_gram_matrix():
    mapping = torch.nn.Linear(36, 128)
    sims = path_embedding_similarity(torch.rand(5, 36), mapping)
    assert sims.shape == (5, 5)
    torch.testing.assert_close(sims.diagonal(), torch.ones(5))
    torch.testing.assert_close(sims, sims.T)
