"""Hard-negative selection, the two joint layouts, and the IAIS term of the model's forward pass."""

from __future__ import annotations

import random

import pytest
import torch

from itr_common.errors import UserError
from itr_common.models.uniter import UniterConfig
from itr_iais.data import (
    compact_attn_masks,
    get_gather_index,
    iais_layout_masks,
    pad_tensors,
    sample_negative,
)
from itr_iais.losses import iais_loss
from itr_iais.model import UniterForImageTextRetrievalHardNeg, expand_group, select_hard

TINY = UniterConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                    max_position_embeddings=32, img_dim=6)


def test_gather_index_hand_case():
    # text lengths 3 and 2 (padded to 3), 2 regions each: row 1 pulls its regions over the text padding
    index = get_gather_index([3, 2], [2, 2], max_txt_len=3, out_size=5)
    assert index.tolist() == [[0, 1, 2, 3, 4], [0, 1, 3, 4, 4]]
    assert compact_attn_masks([3, 2], [2, 2]).tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]


def test_iais_layout_masks_exclude_cls_sep():
    attn, txt, img = iais_layout_masks([4, 3], [2, 1])
    assert attn.tolist() == [[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 1, 0]]
    assert txt.tolist() == [[0, 1, 1, 0, 0, 0]]  # [CLS] w1 w2 [SEP] of the ground truth
    assert img.tolist() == [[0, 0, 0, 0, 1, 1]]


def test_sample_negative_avoids_ground_truths_and_checks_pool():
    random.seed(0)
    for _ in range(20):
        out = sample_negative(list("abcdef"), ["a", "b"], 3)
        assert len(set(out)) == 3 and not {"a", "b"} & set(out)
    with pytest.raises(UserError, match="negative_size"):
        sample_negative(list("abc"), ["a"], 3)


def text_group(n_images: int = 6, seed: int = 0) -> dict:
    """A text-sampled group in the compact layout: one 5-token text, images of 2..4 regions."""
    g = torch.Generator().manual_seed(seed)
    tl = 5
    nbbs = [2 + (i % 3) for i in range(n_images)]
    feats = [torch.randn(n, 6, generator=g) for n in nbbs]
    poss = [torch.rand(n, 7, generator=g) for n in nbbs]
    attn = compact_attn_masks([tl] * n_images, nbbs)
    return {
        "input_ids": torch.randint(1, 50, (1, tl), generator=g),
        "position_ids": torch.arange(tl).unsqueeze(0),
        "img_feat": pad_tensors(feats, nbbs),
        "img_pos_feat": pad_tensors(poss, nbbs),
        "attn_masks": attn,
        "gather_index": get_gather_index([tl] * n_images, nbbs, tl, attn.size(1)),
    }


def test_select_hard_from_text_keeps_positive_and_top_scores():
    batch = expand_group(text_group(), "t")
    scores = torch.tensor([[0.0], [5.0], [1.0], [4.0], [-2.0], [3.0]])
    hard = select_hard(batch, scores, hard_size=3, sample_from="t")
    chosen = [0, *sorted([1, 3, 5])]
    # rows are the positive then the hard ones (topk order not guaranteed): compare as sets
    picked = hard["attn_masks"].sum(1).tolist()
    assert hard["sample_size"] == 4 and picked[0] == 5 + 2
    assert sorted(picked[1:]) == sorted(5 + 2 + (i % 3) for i in chosen[1:])
    max_len = 5 + max(2 + (i % 3) for i in chosen)
    assert hard["attn_masks"].shape == (4, max_len) and hard["gather_index"].shape == (4, max_len)
    assert hard["img_feat"].shape[1] == max_len - 5 and hard["input_ids"].shape == (4, 5)


def image_group(iais: bool, seed: int = 0) -> dict:
    """An image-sampled group: one image of 3 regions, texts of lengths 4..7."""
    g = torch.Generator().manual_seed(seed)
    lens = [6, 4, 7, 5, 4, 6]
    texts = [torch.randint(1, 50, (n,), generator=g) for n in lens]
    ids = torch.nn.utils.rnn.pad_sequence(texts, batch_first=True)
    nbbs = [3] * len(lens)
    batch = {
        "input_ids": ids,
        "position_ids": torch.arange(ids.size(1)).unsqueeze(0),
        "img_feat": torch.randn(1, 3, 6, generator=g),
        "img_pos_feat": torch.rand(1, 3, 7, generator=g),
    }
    if iais:
        batch["attn_masks"], batch["txt_attn_masks"], batch["img_attn_masks"] = iais_layout_masks(lens, nbbs)
    else:
        batch["attn_masks"] = compact_attn_masks(lens, nbbs)
        batch["gather_index"] = get_gather_index(lens, nbbs, ids.size(1), batch["attn_masks"].size(1))
    return batch


def test_image_group_layouts_score_alike():
    """Compact (with the padded length, fixed) and IAIS layouts give the same scores for mixed text lengths."""
    torch.manual_seed(0)
    model = UniterForImageTextRetrievalHardNeg(TINY, hard_size=3).eval()
    compact = model.score(expand_group(image_group(False), "i"))
    iais = model.score(expand_group(image_group(True), "i"))
    assert torch.allclose(compact, iais, atol=1e-5)


def test_select_hard_from_image_follows_gather_index():
    torch.manual_seed(0)
    model = UniterForImageTextRetrievalHardNeg(TINY, hard_size=3).eval()
    batch = expand_group(image_group(False), "i")
    scores = model.score(batch)
    hard = select_hard(batch, scores, 3, "i")
    # the selected pairs score as they did in the full group
    rescored = model.score(hard)
    expected = torch.cat([scores[:1], scores[1:].squeeze(-1).topk(3, sorted=False).values.unsqueeze(-1)])
    assert torch.allclose(rescored, expected, atol=1e-5)


@pytest.mark.parametrize("sample_from", ["t", "i"])
@pytest.mark.parametrize("mode", ["singular", "distributed"])
def test_forward_iais_term_equals_original_recomputation(sample_from, mode):
    torch.manual_seed(1)
    model = UniterForImageTextRetrievalHardNeg(TINY, margin=0.2, hard_size=3)
    with torch.no_grad():  # sharpen the last layer's attention so that every map is far from uniform
        model.uniter.encoder.layer[-1].attention.self.query.weight.mul_(30)
        model.uniter.encoder.layer[-1].attention.self.key.weight.mul_(30)
    if sample_from == "t":
        batch = text_group()
        tl, nbbs = 5, [2 + (i % 3) for i in range(6)]
        batch.pop("gather_index")
        batch["attn_masks"], batch["txt_attn_masks"], batch["img_attn_masks"] = iais_layout_masks([tl] * 6, nbbs)
    else:
        batch = image_group(True)
    side = "L" if sample_from == "t" else "V"
    model.eval()  # no dropout: the two passes must see the same network
    with torch.no_grad():
        full = expand_group(batch, sample_from)
        hard = select_hard(full, model.score(full), 3, sample_from)
    out = model.hard_loss(hard, f"{side}-{mode}")
    assert out.rank_loss.shape == (1, 3)
    # the original: recompute q/k of the last layer on the hidden states entering it, ground truth only
    encoded = model.uniter(hard["input_ids"], hard["position_ids"], hard["img_feat"], hard["img_pos_feat"],
                           hard["attn_masks"], None, output_all_encoded_layers=True)
    entering = encoded.hidden_states[-2][:1]
    logits = model.uniter.encoder.layer[-1].attention.self.attention_logits(entering)
    expected = iais_loss(logits, hard["txt_attn_masks"], hard["img_attn_masks"], f"{side}-{mode}")
    assert out.iais.item() > 1e-3
    assert out.iais.item() == pytest.approx(expected.item(), rel=1e-4)
    assert set(out.logs) == {"self_attn_loss/layer_1", "self_attn_loss"}
    out.iais.backward()
    assert model.uniter.encoder.layer[-1].attention.self.query.weight.grad.abs().sum() > 0


def test_training_forward_restores_train_mode_and_backprops():
    torch.manual_seed(2)
    model = UniterForImageTextRetrievalHardNeg(TINY, hard_size=3).train()
    out = model(text_group(), sample_from="t")
    assert model.training and out.rank_loss.shape == (1, 3) and out.iais is None
    (out.rank_loss.mean()).backward()
    assert model.rank_output.weight.grad is not None
