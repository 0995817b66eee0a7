"""BiEncoderNllLoss and the symmetric training loss on hand-computed cases; optimiser and schedule."""

from __future__ import annotations

import math

import pytest
import torch

from itr_lightningdot.losses import BiEncoderNllLoss, biencoder_loss
from itr_lightningdot.optim import get_optimizer, get_schedule_linear, linear_factor, warmup_for


def test_nll_on_a_two_by_two_case():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    ctx = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    res = BiEncoderNllLoss().calc(q, ctx, None, [0, 1], None, 0.0)
    # rows: -log softmax([2, 0])[0] = log(1 + e^-2); -log softmax([0, 1])[1] = log(1 + e^-1)
    expected = (math.log1p(math.exp(-2)) + math.log1p(math.exp(-1))) / 2
    assert float(res.loss) == pytest.approx(expected, abs=1e-6)
    assert int(res.correct) == 2
    assert torch.equal(res.scores, torch.tensor([[2.0, 0.0], [0.0, 1.0]]))


def test_symmetric_loss_averages_both_directions():
    txt = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    img = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    res = biencoder_loss(txt, img, None, sample_size=2, gather=False)
    # text queries: S = txt img^T = [[1, 0], [1, 2]] -> both rows log(1 + e^-1)
    loss_img = math.log1p(math.exp(-1))
    # image queries: S^T = [[1, 1], [0, 2]] -> log 2 and log(1 + e^-2)
    loss_txt = (math.log(2) + math.log1p(math.exp(-2))) / 2
    assert float(res.loss_img) == pytest.approx(loss_img, abs=1e-6)
    assert float(res.loss_txt) == pytest.approx(loss_txt, abs=1e-6)
    assert float(res.loss) == pytest.approx(0.5 * loss_img + 0.5 * loss_txt, abs=1e-6)


def test_hard_negatives_are_extra_contexts_on_both_sides():
    txt = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # positive text, then its image's hard-negative text
    img = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # positive image, then the text's hard-negative image
    res = biencoder_loss(txt, img, None, sample_size=1, gather=False)
    assert float(res.loss_txt) == pytest.approx(math.log1p(math.exp(-1)), abs=1e-6)  # image vs [1, 0]
    assert float(res.loss_img) == pytest.approx(math.log(2), abs=1e-6)  # text vs [1, 1]
    assert res.scores.shape == (1, 2)


def test_caption_scores_are_mixed_in_by_weight():
    q = torch.tensor([[1.0, 0.0]])
    ctx = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    caps = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    res = BiEncoderNllLoss().calc(q, ctx, caps, [0], None, 0.5)
    assert torch.allclose(res.scores, torch.tensor([[0.5, 0.5]]))
    assert float(res.loss) == pytest.approx(math.log(2), abs=1e-6)
    plain = BiEncoderNllLoss().calc(q, ctx, caps, [0], None, 0.0)  # weight 0: captions ignored
    assert torch.allclose(plain.scores, torch.tensor([[1.0, 0.0]]))


def test_gradient_of_the_loss_is_the_softmax_residual():
    q = torch.tensor([[1.0, 0.0]], requires_grad=True)
    ctx = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    BiEncoderNllLoss().calc(q, ctx, None, [0], None, 0.0).loss.backward()
    p = torch.softmax(torch.tensor([2.0, 0.0]), 0)
    expected = (p[:, None] * ctx).sum(0) - ctx[0]  # d/dq of logsumexp(q c^T) - q c_0
    assert torch.allclose(q.grad[0], expected, atol=1e-6)


def test_optimizer_is_hf_adamw_without_decay_and_schedule_is_10_percent_warmup():
    from itr_common.optim import AdamW

    model = torch.nn.Module()
    model.dense = torch.nn.Linear(2, 2)
    model.LayerNorm = torch.nn.LayerNorm(2)
    opt = get_optimizer(model, 0.1)
    assert isinstance(opt, AdamW) and opt.defaults["eps"] == 1e-8 and opt.defaults["betas"] == (0.9, 0.999)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 0.0]
    assert len(opt.param_groups[1]["params"]) == 3  # dense.bias, LayerNorm.weight, LayerNorm.bias (by name)
    assert warmup_for(100) == 10
    sched = get_schedule_linear(opt, 10, 100)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(0.05) and lrs[10] == pytest.approx(0.1)
    assert lrs[55] == pytest.approx(0.1 * 45 / 90) and linear_factor(100, 10, 100) == 0.0
