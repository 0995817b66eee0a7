"""Attention blocks on hand-computed cases: clipped_l2norm, SCAN cross-attention (mask = truncation),
the multi-head self-attention and the IMRC residual block."""

from __future__ import annotations

import math

import pytest
import torch

from itr_dime.attention import (
    MultiHeadSelfAttention,
    SelfAttention,
    clipped_l2norm,
    cross_attention,
    normalize_raw_attention,
)


def test_clipped_l2norm_is_leaky_relu_then_l2_over_the_axis():
    x = torch.tensor([[-1.0, 2.0], [3.0, -4.0]])
    out = clipped_l2norm(x, dim=0)
    col0, col1 = math.sqrt(0.01 + 9.0), math.sqrt(4.0 + 0.16)
    expected = torch.tensor([[-0.1 / col0, 2.0 / col1], [3.0 / col0, -0.4 / col1]])
    torch.testing.assert_close(out, expected)


def test_other_raw_feature_norms():
    x = torch.tensor([[3.0], [-4.0]])
    torch.testing.assert_close(normalize_raw_attention(x, "l2norm", 0), torch.tensor([[0.6], [-0.8]]))
    torch.testing.assert_close(normalize_raw_attention(x, "l1norm", 0), torch.tensor([[3 / 7], [-4 / 7]]))
    torch.testing.assert_close(normalize_raw_attention(x, "clipped", 0), torch.tensor([[3.0], [-0.4]]))
    torch.testing.assert_close(normalize_raw_attention(x, "no_norm", 0), x)
    e = math.exp(7.0)
    torch.testing.assert_close(normalize_raw_attention(x, "softmax", 0), torch.tensor([[e / (e + 1)], [1 / (e + 1)]]))


def test_cross_attention_hand_case():
    query = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # (1, Lq=2, 2)
    context = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])  # (1, Lc=3, 2)
    # raw scores q.c = [[1, 0, 1], [0, 1, 1]]; L2 over the query axis: columns [1,0], [0,1], [1,1]/sqrt2
    # logits (lambda = 2): row 0 [2, 0, sqrt2], row 1 [0, 2, sqrt2]
    r2 = math.sqrt(2.0)
    z = math.exp(2) + 1 + math.exp(r2)
    w_row0 = [math.exp(2) / z, 1 / z, math.exp(r2) / z]
    w_row1 = [1 / z, math.exp(2) / z, math.exp(r2) / z]
    attended, weights = cross_attention(query, context, "clipped_l2norm", smooth=2.0)
    torch.testing.assert_close(weights[0], torch.tensor([w_row0, w_row1]))
    expected = torch.tensor([[w_row0[0] + w_row0[2], w_row0[1] + w_row0[2]],
                             [w_row1[0] + w_row1[2], w_row1[1] + w_row1[2]]])
    torch.testing.assert_close(attended[0], expected)


def test_masked_context_equals_truncated_context():
    torch.manual_seed(0)
    query = torch.nn.functional.normalize(torch.randn(3, 5, 8), dim=-1)
    context = torch.nn.functional.normalize(torch.randn(3, 7, 8), dim=-1)
    mask = torch.zeros(3, 7, dtype=torch.bool)
    mask[:, :4] = True
    masked, weights = cross_attention(query, context, "clipped_l2norm", 4.0, mask)
    truncated, _ = cross_attention(query, context[:, :4], "clipped_l2norm", 4.0)
    torch.testing.assert_close(masked, truncated)
    assert torch.all(weights[..., 4:] == 0)


def test_cross_attention_broadcasts_pairs():
    torch.manual_seed(1)
    regions = torch.randn(2, 1, 4, 6)  # (n_img, 1, R, d)
    words = torch.randn(1, 3, 5, 6)  # (1, n_stc, W, d)
    out, _ = cross_attention(regions, words, "clipped_l2norm", 4.0)
    assert out.shape == (2, 3, 4, 6)
    single, _ = cross_attention(regions[1], words[0, 2:3], "clipped_l2norm", 4.0)
    torch.testing.assert_close(out[1, 2], single[0])


def _identity_(linear: torch.nn.Linear) -> None:
    torch.nn.init.eye_(linear.weight)
    torch.nn.init.zeros_(linear.bias)


def test_self_attention_one_head_identity_projections():
    att = MultiHeadSelfAttention(2, h=1)
    for lin in att.linears:
        _identity_(lin)
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    a = math.exp(1 / math.sqrt(2.0))  # scores x x^T / sqrt(d_k) = diag(1/sqrt2)
    expected = torch.tensor([[[a / (a + 1), 1 / (a + 1)], [1 / (a + 1), a / (a + 1)]]])
    torch.testing.assert_close(att(x), expected)


def test_self_attention_heads_are_independent_slices():
    att = MultiHeadSelfAttention(4, h=2)
    for lin in att.linears:
        _identity_(lin)
    torch.manual_seed(2)
    x = torch.randn(1, 3, 4)
    one_head = MultiHeadSelfAttention(2, h=1)
    for lin in one_head.linears:
        _identity_(lin)
    torch.testing.assert_close(att(x)[..., :2], one_head(x[..., :2]))
    torch.testing.assert_close(att(x)[..., 2:], one_head(x[..., 2:]))


def test_imrc_block_has_two_residuals_and_no_layer_norm():
    block = SelfAttention(2, 3, h=1)
    for lin in block.att_layer.linears:
        _identity_(lin)
    torch.nn.init.zeros_(block.feed_forward_layer.fc2.weight)
    torch.nn.init.constant_(block.feed_forward_layer.fc2.bias, 0.5)
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    expected = x + block.att_layer(x) + 0.5
    torch.testing.assert_close(block(x), expected)


def test_bad_head_count_is_a_user_error():
    from itr_common.errors import UserError

    with pytest.raises(UserError, match="num_head_IMRC"):
        MultiHeadSelfAttention(10, h=3)
