"""Hand-computed checks of the IAIS losses, TSA weight and learning-rate schedule."""

from __future__ import annotations

import math

import pytest
import torch

from itr_iais.losses import (
    iais_distributed,
    iais_loss,
    iais_singular,
    margin_rank_loss,
    restricted_attention,
    tsa_threshold,
)
from itr_iais.optim import AdamW, build_optimizer, get_lr_sched, parameter_groups, warmup_linear

# A 3-token text x 2-region toy: every map row sums to one over its allowed keys.
TXT = [[0.5, 0.25, 0.25], [0.2, 0.6, 0.2], [0.1, 0.1, 0.8]]
IMG = [[0.7, 0.3], [0.4, 0.6]]
T2I = [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]
I2T = [[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


def softmax_row(row):
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


def kl_rows(log_of, target, eps=0.0):
    """KLDivLoss(batchmean)(log(log_of + eps), target) by hand."""
    total = sum(
        q * (math.log(q) - math.log(p + eps)) for prow, qrow in zip(log_of, target) for p, q in zip(prow, qrow)
    )
    return total / len(log_of)


def test_margin_rank_loss_hand_case():
    probs = torch.tensor([0.8, 0.7, 0.5, 0.3, 0.4, 0.45, 0.1, 0.3])
    scores = torch.log(probs / (1 - probs)).unsqueeze(1)  # logits whose sigmoid is probs
    loss = margin_rank_loss(scores, sample_size=4, margin=0.2)
    expected = torch.tensor([[0.1, 0.0, 0.0], [0.25, 0.0, 0.1]])
    assert loss.shape == (2, 3)
    assert torch.allclose(loss, expected, atol=1e-6)


def test_tsa_exp_schedule_values():
    assert tsa_threshold("exp_schedule", 0, 5000) == pytest.approx(math.exp(-5))
    assert tsa_threshold("exp_schedule", 2500, 5000) == pytest.approx(math.exp(-2.5))
    assert tsa_threshold("exp_schedule", 5000, 5000) == pytest.approx(1.0)
    assert tsa_threshold("linear_schedule", 1000, 5000) == pytest.approx(0.2)
    assert tsa_threshold("log_schedule", 1000, 5000) == pytest.approx(1 - math.exp(-1))
    with pytest.raises(ValueError):
        tsa_threshold("cosine", 1, 2)


def test_warmup_linear_and_lr_floor():
    assert warmup_linear(250, 500, 5000) == 0.5
    assert warmup_linear(2750, 500, 5000) == 0.5
    assert get_lr_sched(0, 5e-5, 500, 5000) == 1e-8  # lr 0 is floored
    assert get_lr_sched(250, 5e-5, 500, 5000) == pytest.approx(2.5e-5)
    assert get_lr_sched(500, 5e-5, 500, 5000) == pytest.approx(5e-5)
    assert get_lr_sched(5000, 5e-5, 500, 5000) == 1e-8
    assert get_lr_sched(6000, 5e-5, 500, 5000) == 1e-8


def test_optimizer_groups_exclude_bias_and_layernorm():
    model = torch.nn.Sequential()
    model.add_module("dense", torch.nn.Linear(2, 2))
    model.add_module("LayerNorm", torch.nn.LayerNorm(2))
    decay, no_decay = parameter_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and len(decay["params"]) == 1
    assert no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) == 3
    opt = build_optimizer(model, "adamw", 5e-5, [0.9, 0.98], 0.01)
    assert isinstance(opt, AdamW)
    assert opt.param_groups[0]["betas"] == (0.9, 0.98) and opt.param_groups[0]["eps"] == 1e-6


def test_adamw_is_the_original_huggingface_update():
    # p0 = 1, lr 0.1, betas (0.9, 0.98), eps 0.1 (large, so its placement shows), weight decay 0.01.
    # step 1, g = 0.5: m = 0.05, v = 0.005; p = 1 - 0.1 * sqrt(0.02) / 0.1 * 0.05 / (sqrt(0.005) + 0.1)
    #   = 0.9585786, then decay after the step: * (1 - 0.1 * 0.01) = 0.9576201
    # step 2, g = -0.25: m = 0.02, v = 0.00615; p -= 0.1 * sqrt(0.0396) / 0.19 * 0.02 / (sqrt(0.00615) + 0.1)
    #   -> 0.9458797, * 0.999 = 0.9449340
    param = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = AdamW([{"params": [param], "weight_decay": 0.01}], lr=0.1, betas=(0.9, 0.98), eps=0.1)
    for grad, expected in ((0.5, 0.9576201), (-0.25, 0.9449340)):
        param.grad = torch.tensor([grad], dtype=torch.float64)
        opt.step()
        assert param.item() == pytest.approx(expected, abs=1e-7)
    # torch.optim.AdamW adds eps after the bias correction and decays first: 0.9156667 after step 1
    other = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    torch_opt = torch.optim.AdamW([other], lr=0.1, betas=(0.9, 0.98), eps=0.1, weight_decay=0.01)
    other.grad = torch.tensor([0.5], dtype=torch.float64)
    torch_opt.step()
    assert other.item() == pytest.approx(0.9156667, abs=1e-7)


def test_singular_text_side_toy():
    # argmax_r t2i = [0, 1, 0]; pseudo[i, j] = softmax_j(img[a(i), a(j)])
    pseudo = [softmax_row([IMG[a][b] for b in (0, 1, 0)]) for a in (0, 1, 0)]
    assert pseudo[0] == pytest.approx([0.3744869, 0.2510261, 0.3744869], abs=1e-6)
    expected = kl_rows(TXT, pseudo) + kl_rows(pseudo, TXT)
    assert expected == pytest.approx(0.3698213, abs=1e-6)
    got = iais_singular(t(TXT), t(IMG), t(T2I), "L")
    assert got.item() == pytest.approx(expected, rel=1e-9)


def test_singular_image_side_toy():
    # argmax_i i2t = [0, 2]; pseudo[r, s] = softmax_s(txt[b(r), b(s)])
    pseudo = [softmax_row([TXT[a][b] for b in (0, 2)]) for a in (0, 2)]
    expected = kl_rows(IMG, pseudo) + kl_rows(pseudo, IMG)
    assert expected == pytest.approx(0.0512027, abs=1e-6)
    assert iais_singular(t(TXT), t(IMG), t(I2T), "V").item() == pytest.approx(expected, rel=1e-9)


def test_distributed_both_sides_toy():
    pseudo_txt = [[0.46, 0.28, 0.26], [0.18, 0.14, 0.68], [0.34, 0.22, 0.44]]  # t2i @ i2t by hand
    pseudo_img = [[0.63, 0.37], [0.59, 0.41]]  # i2t @ t2i by hand
    exp_l = kl_rows(TXT, pseudo_txt, 1e-6) + kl_rows(pseudo_txt, TXT, 1e-6)
    exp_v = kl_rows(IMG, pseudo_img, 1e-6) + kl_rows(pseudo_img, IMG, 1e-6)
    assert exp_l == pytest.approx(0.6231987, abs=1e-6)
    got_l = iais_distributed(t(TXT), t(IMG), t(T2I), t(I2T), "L")
    got_v = iais_distributed(t(TXT), t(IMG), t(T2I), t(I2T), "V")
    assert got_l.item() == pytest.approx(exp_l, rel=1e-9)
    assert got_v.item() == pytest.approx(exp_v, rel=1e-9)


def test_restricted_attention_excludes_cls_sep_and_renormalises():
    # positions: [CLS] w1 w2 [SEP] r1 ; two heads
    logits = torch.zeros(1, 2, 5, 5, dtype=torch.float64)
    logits[0, 0, 1] = torch.tensor([9.0, 0.0, math.log(3.0), 9.0, 9.0])
    txt_mask = torch.tensor([[0, 1, 1, 0, 0]])
    attn = restricted_attention(logits, txt_mask, txt_mask)
    # head 0 row w1: softmax over {w1, w2} of (0, ln 3) = (1/4, 3/4); head 1 uniform (1/2, 1/2)
    assert attn[0, 1].tolist() == pytest.approx([0.0, 0.375, 0.625, 0.0, 0.0], abs=1e-7)
    assert attn[0, 0].abs().sum() == 0 and attn[0, 3].abs().sum() == 0  # [CLS]/[SEP] rows zero
    assert attn[0, 1:3].sum(dim=-1).tolist() == pytest.approx([1.0, 1.0])


def toy_logits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits whose restricted maps are the toy maps: [CLS] t1 t2 t3 [SEP] r1 r2 pad."""
    torch.manual_seed(0)
    logits = torch.randn(1, 1, 8, 8, dtype=torch.float64) * 3  # entries outside the blocks must not matter
    text, regions = [1, 2, 3], [5, 6]
    for rows, cols, values in ((text, text, TXT), (text, regions, T2I), (regions, regions, IMG), (regions, text, I2T)):
        for i, row in enumerate(rows):
            for j, col in enumerate(cols):
                logits[0, 0, row, col] = math.log(values[i][j])
    txt_mask = torch.tensor([[0, 1, 1, 1, 0, 0, 0, 0]])
    img_mask = torch.tensor([[0, 0, 0, 0, 0, 1, 1, 0]])
    return logits, txt_mask, img_mask


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("L-singular", 0.3698213), ("V-singular", 0.0512027), ("L-distributed", 0.6231987), ("V-distributed", None)],
)
def test_iais_loss_from_logits_matches_toy(mode, expected):
    logits, txt_mask, img_mask = toy_logits()
    got = iais_loss(logits, txt_mask, img_mask, mode).item()
    if expected is None:
        expected = iais_distributed(t(TXT), t(IMG), t(T2I), t(I2T), "V").item()
    assert got == pytest.approx(expected, abs=1e-6)


def test_iais_loss_averages_over_ground_truth_pairs():
    logits, txt_mask, img_mask = toy_logits()
    both = iais_loss(torch.cat([logits, logits]), txt_mask.repeat(2, 1), img_mask.repeat(2, 1), "L-singular")
    assert both.item() == pytest.approx(0.3698213, abs=1e-6)  # mean over the pairs, not the sum
    with pytest.raises(ValueError):
        iais_loss(logits, txt_mask, img_mask, "singular")
