"""The four cells: Global-Local Guidance and Cross-Modal Refinement formulas, identity, reasoning."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from dime_testlib import tiny_opt

from itr_dime.cells import (
    CrossModalRefinementCell,
    GlobalLocalGuidanceCell,
    IntraModelReasoningCell,
    RectifiedIdentityCell,
    global_local_guidance,
)
from itr_dime.pairs import PairContext
from itr_dime.refinement import Refinement


def _context(direction: str, n_img: int = 2, n_stc: int = 3, regions: int = 4, words: int = 5, d: int = 16):
    torch.manual_seed(0)
    return PairContext(
        rgn=F.normalize(torch.randn(n_img, regions, d), dim=-1), img=F.normalize(torch.randn(n_img, d), dim=-1),
        wrd=F.normalize(torch.randn(n_stc, words, d), dim=-1), stc=F.normalize(torch.randn(n_stc, d), dim=-1),
        stc_lens=torch.tensor([5, 2, 3][:n_stc]), direction=direction,
    )


def test_global_local_guidance_hand_case():
    local = torch.tensor([[[[3.0], [4.0]]]])  # (1, 1, L=2, d=1)
    out = global_local_guidance(local, local_mid=local, guide=torch.tensor([[[[2.0]]]]))
    # x = [6, 8] -> L2 over the locals [0.6, 0.8] -> (1 + x) * local
    torch.testing.assert_close(out, torch.tensor([[[[1.6 * 3.0], [1.8 * 4.0]]]]))


def test_glgc_guides_regions_with_each_sentence():
    ctx = _context("i2t")
    cell = GlobalLocalGuidanceCell(tiny_opt("i2t"), num_out_path=4)
    x = ctx.local_input()  # (n_img, 1, R, d)
    emb, prob = cell(x, ctx)
    assert emb.shape == (2, 3, 4, 16) and prob.shape == (2, 1, 4)
    i, j = 1, 2
    mid = cell.fc_1(ctx.rgn[i])
    expected = (1 + F.normalize(mid * ctx.stc[j], dim=-2)) * ctx.rgn[i]
    torch.testing.assert_close(emb[i, j], expected)


def test_glgc_guides_words_with_each_image():
    ctx = _context("t2i")
    cell = GlobalLocalGuidanceCell(tiny_opt("t2i"), num_out_path=4)
    emb, prob = cell(ctx.local_input(), ctx)
    assert emb.shape == (2, 3, 5, 16) and prob.shape == (1, 3, 4)
    i, j = 0, 1
    expected = (1 + F.normalize(cell.fc_1(ctx.wrd[j]) * ctx.img[i], dim=-2)) * ctx.wrd[j]
    torch.testing.assert_close(emb[i, j], expected)


def test_refinement_modulation_scalar_case():
    ref = Refinement(1, "clipped_l2norm", 4.0, "i2t")
    with torch.no_grad():
        for lin, (w, b) in zip((ref.fc_scale, ref.fc_shift, ref.fc_1, ref.fc_2),
                               ((2.0, 0.0), (1.0, 0.5), (1.0, -1.0), (3.0, 0.25)), strict=True):
            lin.weight.fill_(w)
            lin.bias.fill_(b)
    q, c = torch.tensor([[2.0]]), torch.tensor([[0.5]])
    inner = 2.0 * math.tanh(2 * 0.5) + (0.5 + 0.5)  # q * tanh(fc_scale(c)) + fc_shift(c)
    expected = 2.0 + 3.0 * max(0.0, inner - 1.0) + 0.25  # q + fc_2(ReLU(fc_1(.)))
    torch.testing.assert_close(ref.refine(q, c), torch.tensor([[expected]]))


def test_cmrc_i2t_attends_over_the_caption_words_only():
    ctx = _context("i2t")
    cell = CrossModalRefinementCell(tiny_opt("i2t"), num_out_path=4)
    emb, _ = cell(ctx.local_input(), ctx)
    i, j = 1, 1  # caption 1 has 2 tokens
    from itr_dime.attention import cross_attention

    attended, _ = cross_attention(ctx.rgn[i:i + 1], ctx.wrd[j:j + 1, :2], "clipped_l2norm", 4.0)
    torch.testing.assert_close(emb[i, j], cell.refine.refine(ctx.rgn[i], attended[0]))


def test_cmrc_t2i_uses_every_word_position():
    ctx = _context("t2i")
    cell = CrossModalRefinementCell(tiny_opt("t2i"), num_out_path=4)
    emb, _ = cell(ctx.local_input(), ctx)
    from itr_dime.attention import cross_attention

    attended, _ = cross_attention(ctx.wrd[1:2], ctx.rgn[0:1], "clipped_l2norm", 4.0)
    torch.testing.assert_close(emb[0, 1], cell.refine.refine(ctx.wrd[1], attended[0]))


def test_identity_and_reasoning_cells():
    ctx = _context("i2t")
    x = ctx.local_input() - 0.1
    ric = RectifiedIdentityCell(tiny_opt(), 4)
    emb, prob = ric(x, ctx)
    torch.testing.assert_close(emb, x.clamp(min=0))
    torch.testing.assert_close(prob, ric.router(x))
    imrc = IntraModelReasoningCell(tiny_opt(), 4)
    emb, _ = imrc(x, ctx)
    torch.testing.assert_close(emb[1, 0], imrc.sa(x[1])[0])
