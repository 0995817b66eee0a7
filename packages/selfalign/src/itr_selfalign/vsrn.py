"""VSRN (KunpengLi1994/VSRN ``model.py``) and VSRN+SelfAlign (Zjamie813/SelfAlign
``vsrn_SelfAlign/model_SelfAlign.py``).

Image: ``fc`` (Xavier) -> (not on f30k_precomp) ``l2norm`` over the regions -> four Rs_GCN blocks ->
``l2norm`` over the regions -> GRU(d, d) over the regions, final hidden state -> (f30k_precomp) BatchNorm
-> L2. Text: ``embed`` (U(-0.1, 0.1)) -> GRU over the caption (packed), output at its last word -> L2;
SelfAlign inserts ``local_fc`` Linear(word_dim, d) before a GRU(d, d) and adds a context branch over the
padded GRU outputs (pads included, as the original). Caption generation (:class:`S2VTAttModel`): an
attention GRU decoder over the GCN regions, teacher-forced, trained with the masked NLL summed / batch.

With ``selfalign`` on, the retrieval embeddings are image ``[emb, 0.5 * fused, 0.5 * mean(locals)]`` and
caption ``[emb, mean(locals), fused]`` (the original order): one dot product scores a pair.
"""

from __future__ import annotations

from argparse import Namespace
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from itr_selfalign.alignment import (
    ConceptAlignment,
    Context,
    add_context_layers,
    add_vsrn_image_context_layers,
    context_branch,
)
from itr_selfalign.layers import RsGCN, init_fc, l2norm

F30K = "f30k_precomp"


class VsrnImage(NamedTuple):
    """emb (B, d) L2; regions (B, R, d) GCN output l2norm-ed over regions (the decoder's input);
    concepts (B, R, d) fc regions L2 over features (SelfAlign teacher input); context or None."""

    emb: torch.Tensor
    regions: torch.Tensor
    concepts: torch.Tensor
    context: Context | None


class VsrnText(NamedTuple):
    """emb (B, d) L2; concepts (B, L, d) local_fc words L2 over features (SelfAlign); context or None."""

    emb: torch.Tensor
    concepts: torch.Tensor | None
    context: Context | None


class VsrnImageEncoder(nn.Module):
    """``EncoderImagePrecompAttn``: keys fc, img_rnn, Rs_GCN_1..4 (+ ctx_fc_bn1, ctx_fc_bn2, ctx_fc,
    fusion_fn), bn (f30k)."""

    def __init__(self, img_dim: int, embed_size: int, data_name: str, no_imgnorm: bool = False,
                 use_abs: bool = False, selfalign: bool = True) -> None:
        super().__init__()
        self.embed_size, self.data_name, self.selfalign = embed_size, data_name, selfalign
        self.no_imgnorm, self.use_abs = no_imgnorm, use_abs
        self.fc = init_fc(nn.Linear(img_dim, embed_size))
        self.img_rnn = nn.GRU(embed_size, embed_size, 1, batch_first=True)
        for i in range(1, 5):
            setattr(self, f"Rs_GCN_{i}", RsGCN(embed_size, embed_size))
        if selfalign:
            add_vsrn_image_context_layers(self, embed_size)
        if data_name == F30K:
            self.bn = nn.BatchNorm1d(embed_size)

    def forward(self, images: torch.Tensor, ctx_relu: bool = True) -> VsrnImage:
        fc_img = self.fc(images)
        if self.data_name != F30K:
            fc_img = l2norm(fc_img)  # over the regions (dim 1), as the original
        x = fc_img.permute(0, 2, 1)
        for i in range(1, 5):
            x = getattr(self, f"Rs_GCN_{i}")(x)
        gcn = x.permute(0, 2, 1)  # (B, R, d)
        regions = l2norm(gcn)  # over the regions
        context = context_branch(self, gcn.mean(dim=1), gcn, ctx_relu) if self.selfalign else None
        _, hidden = self.img_rnn(regions)
        emb = hidden[0]
        if self.data_name == F30K:
            emb = self.bn(emb)
        if not self.no_imgnorm:
            emb = l2norm(emb)
        if self.use_abs:
            emb = emb.abs()
        return VsrnImage(emb, regions, F.normalize(fc_img, dim=-1), context)


class VsrnTextEncoder(nn.Module):
    """``EncoderText``: keys embed, rnn (VSRN) / embed, local_fc, rnn, ctx_fc, ctx_fc_bn1, ctx_fc_bn2,
    fusion_fn (SelfAlign)."""

    def __init__(self, vocab_size: int, word_dim: int, embed_size: int, num_layers: int = 1,
                 use_abs: bool = False, selfalign: bool = True) -> None:
        super().__init__()
        self.embed_size, self.use_abs, self.selfalign = embed_size, use_abs, selfalign
        self.embed = nn.Embedding(vocab_size, word_dim)
        if selfalign:
            self.local_fc = init_fc(nn.Linear(word_dim, embed_size))
        self.rnn = nn.GRU(embed_size if selfalign else word_dim, embed_size, num_layers, batch_first=True)
        if selfalign:
            add_context_layers(self, embed_size)
        with torch.no_grad():
            self.embed.weight.uniform_(-0.1, 0.1)

    def forward(self, captions: torch.Tensor, lengths: torch.Tensor, ctx_relu: bool = True) -> VsrnText:
        """captions (B, L) word ids, lengths (B,) with <start>/<end> -> :class:`VsrnText`."""
        x = self.embed(captions)
        if self.selfalign:
            x = self.local_fc(x)
        lengths = torch.as_tensor(lengths).long()
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        padded, _ = pad_packed_sequence(out, batch_first=True)  # (B, max length, d), zero pads
        last = padded.gather(1, (lengths.to(padded.device) - 1).view(-1, 1, 1).expand(-1, 1, self.embed_size))
        emb = l2norm(last.squeeze(1))
        if self.use_abs:
            emb = emb.abs()
        if not self.selfalign:
            return VsrnText(emb, None, None)
        context = context_branch(self, padded.mean(dim=1), padded, ctx_relu)
        return VsrnText(emb, F.normalize(x, dim=-1), context)


class EncoderRNN(nn.Module):
    """S2VT encoder: ``vid2hid`` Linear(dim_vid, dim_hidden) (Xavier normal) -> dropout -> GRU/LSTM."""

    def __init__(self, dim_vid: int, dim_hidden: int, input_dropout_p: float = 0.2, rnn_dropout_p: float = 0.5,
                 n_layers: int = 1, bidirectional: bool = False, rnn_cell: str = "gru") -> None:
        super().__init__()
        self.dim_vid, self.dim_hidden = dim_vid, dim_hidden
        self.vid2hid = nn.Linear(dim_vid, dim_hidden)
        self.input_dropout = nn.Dropout(input_dropout_p)
        cell = nn.LSTM if rnn_cell.lower() == "lstm" else nn.GRU
        self.rnn = cell(dim_hidden, dim_hidden, n_layers, batch_first=True, bidirectional=bool(bidirectional),
                        dropout=rnn_dropout_p if n_layers > 1 else 0.0)
        nn.init.xavier_normal_(self.vid2hid.weight)

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, _ = feats.shape
        x = self.input_dropout(self.vid2hid(feats.reshape(b * n, -1))).view(b, n, self.dim_hidden)
        return self.rnn(x)


class Attention(nn.Module):
    """``context = softmax(linear2(tanh(linear1([enc, hidden])))) . enc``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.linear1 = nn.Linear(dim * 2, dim)
        self.linear2 = nn.Linear(dim, 1, bias=False)

    def forward(self, hidden: torch.Tensor, encoder_outputs: torch.Tensor) -> torch.Tensor:
        b, n, _ = encoder_outputs.shape
        inputs = torch.cat([encoder_outputs, hidden.unsqueeze(1).expand(-1, n, -1)], dim=2).reshape(-1, self.dim * 2)
        alpha = F.softmax(self.linear2(torch.tanh(self.linear1(inputs))).view(b, n), dim=1)
        return torch.bmm(alpha.unsqueeze(1), encoder_outputs).squeeze(1)


class DecoderRNN(nn.Module):
    """S2VT attention decoder (teacher forcing): ``max_len - 1`` steps of GRU([word, context]) -> log-softmax."""

    def __init__(self, vocab_size: int, max_len: int, dim_hidden: int, dim_word: int, n_layers: int = 1,
                 rnn_cell: str = "gru", bidirectional: bool = False, input_dropout_p: float = 0.1,
                 rnn_dropout_p: float = 0.1) -> None:
        super().__init__()
        self.bidirectional_encoder = bool(bidirectional)
        self.dim_output = vocab_size
        self.dim_hidden = dim_hidden * 2 if bidirectional else dim_hidden
        self.dim_word, self.max_length = dim_word, max_len
        self.input_dropout = nn.Dropout(input_dropout_p)
        self.embedding = nn.Embedding(vocab_size, dim_word)
        self.attention = Attention(self.dim_hidden)
        cell = nn.LSTM if rnn_cell.lower() == "lstm" else nn.GRU
        self.rnn = cell(self.dim_hidden + dim_word, self.dim_hidden, n_layers, batch_first=True,
                        dropout=rnn_dropout_p if n_layers > 1 else 0.0)
        self.out = nn.Linear(self.dim_hidden, vocab_size)
        nn.init.xavier_normal_(self.out.weight)

    def _init_state(self, h: torch.Tensor) -> torch.Tensor:
        if self.bidirectional_encoder:
            h = torch.cat([h[0 : h.size(0) : 2], h[1 : h.size(0) : 2]], 2)
        return h

    def forward(self, encoder_outputs: torch.Tensor, encoder_hidden: torch.Tensor,
                targets: torch.Tensor) -> torch.Tensor:
        """targets (B, >= max_len) -> log-probabilities (B, max_len - 1, V)."""
        hidden = self._init_state(encoder_hidden)
        words = self.embedding(targets)
        steps = []
        for i in range(self.max_length - 1):
            context = self.attention(hidden.squeeze(0), encoder_outputs)
            step_in = self.input_dropout(torch.cat([words[:, i, :], context], dim=1)).unsqueeze(1)
            output, hidden = self.rnn(step_in, hidden)
            steps.append(F.log_softmax(self.out(output.squeeze(1)), dim=1).unsqueeze(1))
        return torch.cat(steps, 1)


class S2VTAttModel(nn.Module):
    """``caption_model``: keys encoder.*, decoder.* (saved beside the original checkpoint entries)."""

    def __init__(self, encoder: EncoderRNN, decoder: DecoderRNN) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def forward(self, feats: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        encoder_outputs, encoder_hidden = self.encoder(feats)
        return self.decoder(encoder_outputs, encoder_hidden, targets)


def caption_loss(logprobs: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``LanguageModelCriterion`` on ``labels[:, 1:]``, ``masks[:, 1:]``: masked NLL summed / batch size."""
    target, mask = labels[:, 1:], masks[:, 1:]
    steps = logprobs.shape[1]
    target, mask = target[:, :steps], mask[:, :steps]
    nll = -logprobs.gather(2, target.unsqueeze(2)).squeeze(2)
    return (nll * mask).sum() / logprobs.shape[0]


def vsrn_image_embedding(img: VsrnImage) -> torch.Tensor:
    """(B, 1, E): ``[emb, 0.5 * fused, 0.5 * mean(locals)]`` with SelfAlign, else ``emb`` (one view)."""
    if img.context is None:
        return img.emb.unsqueeze(1)
    ctx = 0.5 * torch.cat([img.context.fused, img.context.locals.mean(dim=1)], dim=-1)
    return torch.cat([img.emb, ctx], dim=-1).unsqueeze(1)


def vsrn_caption_embedding(cap: VsrnText) -> torch.Tensor:
    """(B, E): ``[emb, mean(locals), fused]`` with SelfAlign, else ``emb``."""
    if cap.context is None:
        return cap.emb
    return torch.cat([cap.emb, cap.context.locals.mean(dim=1), cap.context.fused], dim=-1)


class VsrnModel(nn.Module):
    """VSRN, or VSRN+SelfAlign when ``opt.selfalign`` (txt_enc, img_enc[, region_loss], caption_model)."""

    variant = "vsrn"

    def __init__(self, opt: Namespace) -> None:
        super().__init__()
        self.opt = opt
        self.selfalign = bool(opt.selfalign)
        self.img_enc = VsrnImageEncoder(opt.img_dim, opt.embed_size, opt.data_name, opt.no_imgnorm, opt.use_abs,
                                        self.selfalign)
        self.txt_enc = VsrnTextEncoder(opt.vocab_size, opt.word_dim, opt.embed_size, opt.num_layers, opt.use_abs,
                                       self.selfalign)
        if self.selfalign:
            self.region_loss = ConceptAlignment(opt.embed_size, nmb_prototypes=opt.local_clu_num)
        encoder = EncoderRNN(opt.dim_vid, opt.dim_hidden, bidirectional=opt.bidirectional,
                             input_dropout_p=opt.input_dropout_p, rnn_cell=opt.rnn_type,
                             rnn_dropout_p=opt.rnn_dropout_p)
        decoder = DecoderRNN(opt.vocab_size, opt.max_len, opt.dim_hidden, opt.dim_word,
                             input_dropout_p=opt.input_dropout_p, rnn_cell=opt.rnn_type,
                             rnn_dropout_p=opt.rnn_dropout_p, bidirectional=opt.bidirectional)
        self.caption_model = S2VTAttModel(encoder, decoder)

    def original_modules(self) -> list[nn.Module]:
        mods: list[nn.Module] = [self.img_enc, self.txt_enc]
        return [*mods, self.region_loss] if self.selfalign else mods

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The original order (text, image, prototypes, decoder, encoder), each parameter once."""
        mods: list[nn.Module] = [self.txt_enc, self.img_enc] + ([self.region_loss] if self.selfalign else [])
        mods += [self.caption_model.decoder, self.caption_model.encoder]
        return [p for m in mods for p in m.parameters() if p.requires_grad]

    def prototype_parameters(self) -> list[nn.Parameter]:
        return []  # the VSRN variant never freezes its prototypes

    def forward(self, batch, max_violation: bool | None = None):
        """The training objective of one :class:`~itr_selfalign.data.VsrnBatch` (a
        :class:`~itr_selfalign.losses.Losses`); ``max_violation`` overrides ``opt.max_violation``."""
        from itr_selfalign.losses import vsrn_losses

        relu = bool(self.opt.ctx_relu)
        img = self.img_enc(batch.images, relu)
        cap = self.txt_enc(batch.captions, batch.lengths, relu)
        generated = caption_loss(self.caption_model(img.regions, batch.labels), batch.labels, batch.masks)
        return vsrn_losses(img, cap, batch.lengths, generated, self.opt,
                           self.region_loss if self.selfalign else None, max_violation)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return vsrn_image_embedding(self.img_enc(images, bool(self.opt.ctx_relu)))

    def encode_captions(self, captions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return vsrn_caption_embedding(self.txt_enc(captions, lengths, bool(self.opt.ctx_relu)))


__all__ = ["Attention", "DecoderRNN", "EncoderRNN", "S2VTAttModel", "VsrnImage", "VsrnImageEncoder", "VsrnModel",
           "VsrnText", "VsrnTextEncoder", "caption_loss", "vsrn_caption_embedding", "vsrn_image_embedding"]
