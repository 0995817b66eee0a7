"""Region encoder and the BERT + 1/2/3-gram CNN text encoder."""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from itr_dime.image_encoder import EncoderImagePrecomp
from itr_dime.text_encoder import EncoderText


def test_region_encoder_i2t_and_t2i():
    torch.manual_seed(0)
    images = torch.randn(3, 5, 8)
    for direction in ("i2t", "t2i"):
        enc = EncoderImagePrecomp(8, 6, direction)
        bound = math.sqrt(6.0) / math.sqrt(8 + 6)
        assert enc.fc.weight.abs().max() <= bound and torch.all(enc.fc.bias == 0)
        enc.train()
        img, rgn = enc(images)
        fc = enc.fc(images)
        torch.testing.assert_close(rgn, F.normalize(fc, dim=-1))
        pooled = fc.mean(1)
        if direction == "t2i":  # BatchNorm (batch statistics in training) before the L2 norm
            pooled = (pooled - pooled.mean(0)) / torch.sqrt(pooled.var(0, unbiased=False) + 1e-5)
        torch.testing.assert_close(img, F.normalize(pooled, dim=-1))


class FixedBert(nn.Module):
    """Stands in for BERT: returns a given last hidden state."""

    def __init__(self, hidden: torch.Tensor) -> None:
        super().__init__()
        self.hidden = hidden
        self.anchor = nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(hidden_size=hidden.shape[-1], hidden_dropout_prob=0.1)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        return SimpleNamespace(last_hidden_state=self.hidden)


def _pick(conv: nn.Conv2d, rows: list[int]) -> None:
    """Output channel c of ``conv`` returns hidden feature 0 at kernel row rows[c]."""
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        for channel, row in enumerate(rows):
            conv.weight[channel, 0, row, 0] = 1.0


def test_text_encoder_ngram_padding_and_pooling():
    h = torch.tensor([[[1.0], [2.0], [3.0], [4.0]]])  # (B=1, W=4, H=1), positive so ReLU keeps it
    enc = EncoderText(FixedBert(h), hidden_size=1, embed_size=2)
    assert all(not p.requires_grad for p in enc.bert.parameters())
    _pick(enc.convs1[0], [0, 0])  # K=1: position t
    _pick(enc.convs1[1], [0, 1])  # K=2 (pad 1 at the end): t and t+1
    _pick(enc.convs1[2], [0, 2])  # K=3 (pad 1 each side): t-1 and t+1
    with torch.no_grad():
        enc.mapping.weight.zero_()
        enc.mapping.bias.zero_()
        enc.mapping.weight[0, 3] = 1.0  # channel 1 of the 2-gram map: h[t+1] (0 after the end)
        enc.mapping.weight[1, 4] = 1.0  # channel 0 of the 3-gram map: h[t-1] (0 before the start)
        enc.fc.weight.zero_()
        enc.fc.bias.fill_(1.0)
    ids = torch.zeros(1, 4, dtype=torch.long)
    out = enc(ids, torch.ones_like(ids), torch.zeros_like(ids))
    next_pos = torch.tensor([2.0, 3.0, 4.0, 0.0])
    prev_pos = torch.tensor([0.0, 1.0, 2.0, 3.0])
    words = torch.stack([next_pos, prev_pos], dim=-1) + 1.0  # + fc (bias 1)
    torch.testing.assert_close(out.wrd[0], F.normalize(words, dim=-1))
    # sentence: mapping of the max-pooled maps (max h[t+1] = 4, max h[t-1] = 3) + mean of fc'd tokens (1)
    torch.testing.assert_close(out.stc[0], F.normalize(torch.tensor([5.0, 4.0]), dim=0))
    # path-regularisation target: normalised mean of BERT's last layer over all positions
    torch.testing.assert_close(out.bert, torch.ones(1, 1))


def test_text_encoder_with_hugging_face_bert_shapes():
    from dime_testlib import tiny_bert

    enc = EncoderText(tiny_bert(), hidden_size=12, embed_size=8)
    ids = torch.randint(1, 40, (3, 10))
    out = enc(ids, torch.ones_like(ids), torch.zeros_like(ids))
    assert out.stc.shape == (3, 8) and out.wrd.shape == (3, 10, 8) and out.bert.shape == (3, 12)
    torch.testing.assert_close(out.wrd.norm(dim=-1), torch.ones(3, 10))
    assert [tuple(c.weight.shape) for c in enc.convs1] == [(8, 1, 1, 12), (8, 1, 2, 12), (8, 1, 3, 12)]
