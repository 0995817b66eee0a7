"""Text encoder of DIME: frozen BERT, then a 1/2/3-gram CNN (LgQu/DIME ``models/TextNet.py``)."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from itr_common.text.frozen_bert import freeze, last_hidden_state

NGRAM_SIZES = (1, 2, 3)


class TextEmbeddings(NamedTuple):
    """``stc`` (B, d) and ``wrd`` (B, W, d), both L2-normalised; ``bert`` (B, H): the L2-normalised mean of
    BERT's last layer over all W positions, detached (the target of the path regularisation)."""

    stc: torch.Tensor
    wrd: torch.Tensor
    bert: torch.Tensor


class EncoderText(nn.Module):
    """``bert`` (frozen) -> ``convs1`` (Conv2d(1, d, (K, H)) for K = 1, 2, 3) -> ``mapping`` Linear(3d, d).

    Word embeddings: mapping of the concatenated n-gram features + ``fc`` (Linear(H, d)) of BERT's tokens.
    Sentence embedding: mapping of the max-pooled n-gram features + the mean of the fc'd tokens.
    The 2-gram input is padded by one position at the end, the 3-gram input by one on each side, so every
    n-gram map keeps W positions. ``dropout`` is defined (BERT's hidden_dropout_prob) but unused, as in
    the original. ``H`` is the BERT config's hidden size (768 for BERT-base).
    """

    def __init__(self, bert: nn.Module, hidden_size: int, embed_size: int, hidden_dropout_prob: float = 0.1) -> None:
        super().__init__()
        self.bert = bert
        freeze(self.bert)
        self.fc = nn.Linear(hidden_size, embed_size)
        self.convs1 = nn.ModuleList([nn.Conv2d(1, embed_size, (k, hidden_size)) for k in NGRAM_SIZES])
        self.dropout = nn.Dropout(hidden_dropout_prob)
        self.mapping = nn.Linear(len(NGRAM_SIZES) * embed_size, embed_size)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> TextEmbeddings:
        """input_ids, attention_mask, token_type_ids: (B, W) int64 -> :class:`TextEmbeddings`."""
        with torch.no_grad():  # frozen: same values as the original, without an autograd graph
            hidden = last_hidden_state(self.bert, input_ids, attention_mask, token_type_ids)  # (B, W, H)
        hidden = hidden.float()
        bert_emb = F.normalize(hidden.mean(dim=1), dim=-1)
        x_emb = self.fc(hidden)  # (B, W, d)
        x = hidden.unsqueeze(1)  # (B, 1, W, H)
        padded = (x, F.pad(x, (0, 0, 0, 1)), F.pad(x, (0, 0, 1, 1)))
        grams = [F.relu(conv(inp)).squeeze(3) for conv, inp in zip(self.convs1, padded, strict=True)]  # (B, d, W)
        word_emb = self.mapping(torch.cat(grams, dim=1).transpose(1, 2)) + x_emb
        pooled = torch.cat([g.amax(dim=2) for g in grams], dim=1)  # (B, 3d)
        stc_emb = self.mapping(pooled) + x_emb.mean(dim=1)
        return TextEmbeddings(F.normalize(stc_emb, dim=-1), F.normalize(word_emb, dim=-1), bert_emb)


__all__ = ["NGRAM_SIZES", "EncoderText", "TextEmbeddings", "freeze", "last_hidden_state"]
