"""UNITER backbone: original key names/shapes, checkpoint loading, attention outputs, embedding maths."""

from __future__ import annotations

import math

import pytest
import torch

from itr_common.errors import UserError
from itr_common.models.uniter import (
    UniterConfig,
    UniterForImageTextRetrieval,
    UniterModel,
    img_dim_of,
    load_uniter_state_dict,
    rename_original_keys,
)
from itr_common.synthetic import checkpoints

BASE = checkpoints.UNITER_BASE_CONFIG  # ChenRocks/UNITER config/uniter-base.json
LARGE = checkpoints.UNITER_LARGE_CONFIG
TINY = {**BASE, "hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2, "num_hidden_layers": 2,
        "vocab_size": 40, "max_position_embeddings": 24, "img_dim": 6}


def original_key_table(cfg: dict, img_dim: int = 2048) -> dict[str, tuple[int, ...]]:
    """The UNITER ITM state dict as the original modules define it, written out by hand."""
    h, ffn, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    table: dict[str, tuple[int, ...]] = {
        "uniter.embeddings.word_embeddings.weight": (cfg["vocab_size"], h),
        "uniter.embeddings.position_embeddings.weight": (cfg["max_position_embeddings"], h),
        "uniter.embeddings.token_type_embeddings.weight": (cfg["type_vocab_size"], h),
        "uniter.embeddings.LayerNorm.weight": (h,),
        "uniter.embeddings.LayerNorm.bias": (h,),
        "uniter.img_embeddings.img_linear.weight": (h, img_dim),
        "uniter.img_embeddings.img_linear.bias": (h,),
        "uniter.img_embeddings.img_layer_norm.weight": (h,),
        "uniter.img_embeddings.img_layer_norm.bias": (h,),
        "uniter.img_embeddings.pos_layer_norm.weight": (h,),
        "uniter.img_embeddings.pos_layer_norm.bias": (h,),
        "uniter.img_embeddings.pos_linear.weight": (h, 7),
        "uniter.img_embeddings.pos_linear.bias": (h,),
        "uniter.img_embeddings.mask_embedding.weight": (2, img_dim),
        "uniter.img_embeddings.LayerNorm.weight": (h,),
        "uniter.img_embeddings.LayerNorm.bias": (h,),
    }
    for i in range(layers):
        p = f"uniter.encoder.layer.{i}."
        for name in ("query", "key", "value"):
            table[p + f"attention.self.{name}.weight"] = (h, h)
            table[p + f"attention.self.{name}.bias"] = (h,)
        table[p + "attention.output.dense.weight"] = (h, h)
        table[p + "attention.output.dense.bias"] = (h,)
        table[p + "attention.output.LayerNorm.weight"] = (h,)
        table[p + "attention.output.LayerNorm.bias"] = (h,)
        table[p + "intermediate.dense.weight"] = (ffn, h)
        table[p + "intermediate.dense.bias"] = (ffn,)
        table[p + "output.dense.weight"] = (h, ffn)
        table[p + "output.dense.bias"] = (h,)
        table[p + "output.LayerNorm.weight"] = (h,)
        table[p + "output.LayerNorm.bias"] = (h,)
    table["uniter.pooler.dense.weight"] = (h, h)
    table["uniter.pooler.dense.bias"] = (h,)
    table["itm_output.weight"] = (2, h)
    table["itm_output.bias"] = (2,)
    table["rank_output.weight"] = (1, h)
    table["rank_output.bias"] = (1,)
    return table


@pytest.mark.parametrize(("cfg", "n_keys"), [(BASE, 16 * 12 + 22), (LARGE, 16 * 24 + 22)])
def test_full_size_state_dict_matches_original_keys(cfg, n_keys):
    with torch.device("meta"):
        model = UniterForImageTextRetrieval(UniterConfig.from_dict(cfg))
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = original_key_table(cfg)
    assert list(ours) == list(expected)  # same names, same order
    assert ours == expected
    assert len(ours) == n_keys


def test_full_size_keys_match_synthetic_writer_table():
    table = {k: tuple(v) for k, v in checkpoints.uniter_state_dict_shapes(BASE).items()}
    with torch.device("meta"):
        model = UniterForImageTextRetrieval(UniterConfig.from_dict(BASE))
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.startswith("rank_output")}
    heads = ("cls.", "feat_regress.", "region_classifier.")
    assert ours == {k: v for k, v in table.items() if not k.startswith(heads)}


def test_config_keys_checked_and_hf_keys_tolerated(tmp_path):
    with pytest.raises(UserError, match="did you mean 'hidden_size'"):
        UniterConfig.from_dict({**BASE, "hiden_size": 768})
    cfg = UniterConfig.from_dict({**BASE, "layer_norm_eps": 1e-12, "pad_token_id": 0, "output_hidden_states": False})
    assert cfg.img_dim == 2048 and cfg.extras == {"pad_token_id": 0, "output_hidden_states": False}
    path = tmp_path / "uniter-tiny.json"
    path.write_text('{"hidden_size": 8, "num_attention_heads": 2}')
    assert UniterConfig.from_json_file(path, img_dim=5).img_dim == 5
    with pytest.raises(UserError, match="not found"):
        UniterConfig.from_json_file(tmp_path / "missing.json")
    with pytest.raises(UserError, match="multiple of num_attention_heads"):
        UniterConfig.from_dict({"hidden_size": 10, "num_attention_heads": 3})


def hand_config() -> UniterConfig:
    return UniterConfig(vocab_size=8, hidden_size=2, num_hidden_layers=1, num_attention_heads=1,
                        intermediate_size=2, max_position_embeddings=4, img_dim=3,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def test_text_embedding_hand_case():
    model = UniterModel(hand_config()).eval()
    emb = model.embeddings
    with torch.no_grad():
        emb.word_embeddings.weight[5] = torch.tensor([1.0, 3.0])
        emb.position_embeddings.weight[1] = torch.tensor([0.0, 1.0])
        emb.token_type_embeddings.weight[0] = torch.tensor([1.0, 0.0])
        emb.LayerNorm.weight.fill_(2.0)
        emb.LayerNorm.bias.fill_(0.5)
    # word + position + type = [2, 4]; LayerNorm -> [-1, 1]; * 2 + 0.5 -> [-1.5, 2.5]
    out = model.txt_embeddings(torch.tensor([[0, 5]]), torch.tensor([[0, 1]]))
    assert out[0, 1].tolist() == pytest.approx([-1.5, 2.5], abs=1e-6)


def test_image_embedding_hand_case():
    model = UniterModel(hand_config()).eval()
    img = model.img_embeddings
    with torch.no_grad():
        img.img_linear.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]]))
        img.img_linear.bias.zero_()
        img.pos_linear.weight.zero_()
        img.pos_linear.weight[0, 6] = 1.0  # first unit reads the area w * h
        img.pos_linear.bias.zero_()
        model.embeddings.token_type_embeddings.weight[1] = torch.tensor([0.25, 0.75])
        img.mask_embedding.weight[1] = torch.tensor([10.0, 0.0, 0.0])
    feat = torch.tensor([[[3.0, 9.0, 1.0]]])  # img_linear -> [3, 2] -> LN -> [1, -1]
    pos = torch.tensor([[[0.1, 0.1, 0.6, 0.5, 0.5, 0.4, 0.2]]])  # pos_linear -> [0.2, 0] -> LN -> [1, -1]
    out = model.image_embeddings(feat, pos)
    # [1, -1] + [1, -1] + [0.25, 0.75] = [2.25, -1.25] -> LN -> [1, -1]
    assert out[0, 0].tolist() == pytest.approx([1.0, -1.0], abs=1e-5)
    # a masked region adds mask_embedding row 1 to the feature: [13, 9, 1] -> [13, 2] (LN [1, -1] again),
    # a swapped feature shows that the mask really is added: [1, 9, 1] + [10, 0, 0] -> [11, 2]
    masked = model.image_embeddings(torch.tensor([[[1.0, 9.0, 1.0]]]), pos, img_masks=torch.tensor([[1]]))
    unmasked = model.image_embeddings(torch.tensor([[[1.0, 9.0, 1.0]]]), pos, img_masks=torch.tensor([[0]]))
    assert masked[0, 0].tolist() == pytest.approx([1.0, -1.0], abs=1e-5)
    # unmasked: img_linear [1, 2] -> LN [-1, 1]; + [1, -1] + [0.25, 0.75] = [0.25, 0.75] -> LN [-1, 1]
    assert unmasked[0, 0].tolist() == pytest.approx([-1.0, 1.0], abs=1e-5)


def tiny_inputs(seed: int = 0):
    torch.manual_seed(seed)
    cfg = UniterConfig.from_dict(TINY)
    tl, nbbs = 5, [3, 2]
    input_ids = torch.randint(1, 40, (1, tl)).expand(2, -1)
    position_ids = torch.arange(tl).unsqueeze(0)
    img_feat = torch.randn(2, 3, 6)
    img_feat[1, 2:] = 0
    img_pos = torch.rand(2, 3, 7)
    return cfg, tl, nbbs, input_ids, position_ids, img_feat, img_pos


def test_attention_outputs_match_manual_recomputation():
    cfg, tl, nbbs, input_ids, position_ids, img_feat, img_pos = tiny_inputs()
    model = UniterModel(cfg).eval()
    attn_mask = torch.tensor([[1] * 8, [1] * 7 + [0]])
    out = model(input_ids, position_ids, img_feat, img_pos, attn_mask, output_all_encoded_layers=True,
                output_attentions=True, attention_logits_layers=(0, -1))
    plain = model(input_ids, position_ids, img_feat, img_pos, attn_mask)
    assert torch.allclose(out.sequence_output, plain.sequence_output, atol=1e-5)  # SDPA path == explicit path
    hidden = model.image_embeddings(img_feat, img_pos)
    hidden = torch.cat([model.txt_embeddings(input_ids, position_ids), hidden], dim=1)
    additive = (1.0 - attn_mask[:, None, None, :].float()) * -10000.0
    for index, layer in enumerate(model.encoder.layer):
        attn = layer.attention.self
        q = attn.query(hidden).view(2, 8, 2, 8).transpose(1, 2)
        k = attn.key(hidden).view(2, 8, 2, 8).transpose(1, 2)
        logits = q @ k.transpose(-1, -2) / math.sqrt(8)
        probs = torch.softmax(logits + additive, dim=-1)
        assert torch.allclose(out.attentions[index], probs, atol=1e-6)
        assert torch.allclose(out.attention_logits[index], logits, atol=1e-5)
        assert probs[1, :, :, 7].abs().max() < 1e-6  # the padded region gets no attention
        hidden = out.hidden_states[index]
    assert set(out.attention_logits) == {0, 1}


def test_gather_index_layout_equals_iais_layout():
    cfg, tl, nbbs, input_ids, position_ids, img_feat, img_pos = tiny_inputs(1)
    model = UniterForImageTextRetrieval(cfg).eval()
    # compact: text then regions with no gap; IAIS: [text | regions padded to 3]
    compact_mask = torch.tensor([[1] * 8, [1] * 7 + [0]])
    gather = torch.arange(8).unsqueeze(0).repeat(2, 1)
    iais_mask = torch.tensor([[1] * 8, [1] * 7 + [0]])
    compact, _ = model(input_ids, position_ids, img_feat, img_pos, compact_mask, gather)
    iais, _ = model(input_ids, position_ids, img_feat, img_pos, iais_mask, None)
    assert torch.allclose(compact, iais, atol=1e-5)
    # a padded text: the compact layout pulls the regions forward over the text padding
    ids = torch.tensor([[3, 4, 5, 0], [3, 4, 5, 6]])
    feat, pos = img_feat[:, :2], img_pos[:, :2]
    gather = torch.tensor([[0, 1, 2, 4, 5, 5], [0, 1, 2, 3, 4, 5]])
    compact_mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1] * 6])
    iais_mask = torch.tensor([[1, 1, 1, 0, 1, 1], [1] * 6])
    a, _ = model(ids, torch.arange(4).unsqueeze(0), feat, pos, compact_mask, gather)
    b, _ = model(ids, torch.arange(4).unsqueeze(0), feat, pos, iais_mask, None)
    assert torch.allclose(a, b, atol=1e-5)


def test_init_output_copies_match_row():
    model = UniterForImageTextRetrieval(UniterConfig.from_dict(TINY))
    model.init_output()
    assert torch.equal(model.rank_output.weight[0], model.itm_output.weight[1])
    assert torch.equal(model.rank_output.bias, model.itm_output.bias[1:])
    with torch.no_grad():
        model.rank_output.weight.add_(1.0)
    assert not torch.equal(model.rank_output.weight[0], model.itm_output.weight[1])  # copied, not aliased


def test_rename_gamma_beta_and_bert_prefix():
    sd = {"bert.embeddings.LayerNorm.gamma": torch.ones(2), "bert.embeddings.LayerNorm.beta": torch.zeros(2),
          "itm_output.weight": torch.ones(2, 2)}
    renamed = rename_original_keys(sd)
    assert sorted(renamed) == ["embeddings.LayerNorm.bias", "embeddings.LayerNorm.weight", "itm_output.weight"]


def pretrained_state_dict(model: UniterForImageTextRetrieval) -> dict[str, torch.Tensor]:
    """A uniter-base.pt-style dict: backbone + itm_output + pre-training heads, no rank_output."""
    sd = {k: v.clone() + 0.5 for k, v in model.state_dict().items() if not k.startswith("rank_output")}
    sd["cls.predictions.bias"] = torch.zeros(40)
    sd["feat_regress.weight"] = torch.zeros(16, 6)
    sd["region_classifier.net.0.weight"] = torch.zeros(16, 16)
    return sd


def test_img_dim_of_reads_the_released_layouts_and_a_nested_tower():
    w = lambda n: torch.zeros(8, n)  # noqa: E731  (img_linear: hidden x region feature size)
    assert img_dim_of({"uniter.img_embeddings.img_linear.weight": w(2048)}) == 2048
    assert img_dim_of({"module.uniter.img_embeddings.img_linear.weight": w(32)}) == 32
    assert img_dim_of({"uniter.embeddings.word_embeddings.weight": w(4)}) is None
    # a bi-encoder: the text tower may hold its own img_linear; skip_prefixes leaves it out
    both = {"txt_model.img_embeddings.img_linear.weight": w(16), "img_model.img_embeddings.img_linear.weight": w(64)}
    assert img_dim_of(both, ("txt_model.",)) == 64
    assert img_dim_of({"txt_model.img_embeddings.img_linear.weight": w(16)}, ("txt_model.",)) is None


def test_load_pretrained_ignores_heads_and_reports_missing_rank_output():
    source = UniterForImageTextRetrieval(UniterConfig.from_dict(TINY))
    sd = pretrained_state_dict(source)
    model = UniterForImageTextRetrieval(UniterConfig.from_dict(TINY))
    report = load_uniter_state_dict(model, sd)
    assert report.missing == ["rank_output.weight", "rank_output.bias"]
    assert report.unexpected == []
    assert report.ignored_heads == ["cls.predictions.bias", "feat_regress.weight", "region_classifier.net.0.weight"]
    assert torch.equal(model.uniter.pooler.dense.weight, sd["uniter.pooler.dense.weight"])
    with pytest.raises(UserError, match="rank_output"):
        load_uniter_state_dict(model, sd, strict=True)
    bad = dict(sd)
    bad["uniter.pooler.dense.weight"] = torch.zeros(3, 3)
    with pytest.raises(UserError, match="shape"):
        load_uniter_state_dict(model, bad)


def test_synthetic_tiny_checkpoint_loads(tmp_path):
    from itr_common.checkpoint import load_checkpoint

    config = checkpoints.tiny_config(vocab_size=200)
    path = checkpoints.write_uniter_checkpoint(tmp_path / "uniter-tiny.pt", config, img_dim=12, seed=3)
    sd = load_checkpoint(path)
    model = UniterForImageTextRetrieval(UniterConfig.from_json_file(path.with_suffix(".json"), img_dim=12))
    report = load_uniter_state_dict(model, sd, source=str(path))
    assert report.unexpected == []
    assert report.missing == ["rank_output.weight", "rank_output.bias"]
    assert {k.split(".")[0] for k in report.ignored_heads} == {"cls", "feat_regress", "region_classifier"}
    model.init_output()
    for key, value in model.state_dict().items():
        expected = sd["itm_output.weight"][1:] if key == "rank_output.weight" else (
            sd["itm_output.bias"][1:] if key == "rank_output.bias" else sd[key])
        assert torch.equal(value, expected), key
    # strict: everything but the pre-training heads, plus the initialised ranking head
    strict = {k: v for k, v in sd.items() if not k.startswith(("cls.", "feat_regress.", "region_classifier."))}
    strict.update({"rank_output.weight": model.rank_output.weight.detach(),
                   "rank_output.bias": model.rank_output.bias.detach()})
    assert load_uniter_state_dict(model, strict, strict=True).missing == []
