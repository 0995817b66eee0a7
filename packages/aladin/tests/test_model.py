"""The VinVL backbone, the checkpoint directory by original keys, ALADIN's module tree, freeze-teran,
activate_distillation_after and the two inputs' layout."""

from __future__ import annotations

import pytest
import torch
from aladin_testlib import config_path

from itr_aladin.config import load_alad_config
from itr_aladin.data import Tokens, collate_images, collate_text
from itr_aladin.model import ALADModel
from itr_aladin.oscar import ImageBertForSequenceClassification, OscarConfig, load_oscar_model
from itr_common.errors import UserError
from itr_common.synthetic.checkpoints import oscar_config_dict, oscar_state_dict_shapes
from itr_common.text import load_bert_tokenizer


def _ckpt(world):
    return world / "pretrained" / "checkpoint-0132780"


def test_full_size_key_names_and_shapes_match_the_vinvl_checkpoint():
    config = oscar_config_dict(30522, 2054)  # bert-base, VinVL's 2054-d region features
    with torch.device("meta"):
        model = ImageBertForSequenceClassification(OscarConfig.from_dict(config))
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == oscar_state_dict_shapes(config)


def test_full_size_aladin_keys():
    """VinVL-base under the six configs' model section: the original ALADModel's parameter names and shapes."""
    config = load_alad_config(config_path("alad-alignment-and-matching-distill", tiny=False))
    with torch.device("meta"):
        model = ALADModel(config, OscarConfig.from_dict(oscar_config_dict(30522, 2054)))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    base = oscar_state_dict_shapes(oscar_config_dict(30522, 2054))
    vinvl = {f"img_txt_enc.oscar_model.{k}": v for k, v in base.items()}
    assert {k: v for k, v in shapes.items() if k.startswith("img_txt_enc.oscar_model.")} == vinvl
    head = "img_txt_enc.final_projection_net.layers"
    for i in range(2):
        assert shapes[f"{head}.{i}.self_attn.in_proj_weight"] == (2304, 768)
        assert shapes[f"{head}.{i}.linear1.weight"] == (768, 768) and shapes[f"{head}.{i}.norm2.bias"] == (768,)
    assert shapes["img_txt_enc.img_proj.weight"] == (768, 768)
    others = {k for k in shapes if not k.startswith(("img_txt_enc.oscar_model.", head))}
    assert others == {"img_txt_enc.img_proj.weight", "img_txt_enc.img_proj.bias", "img_txt_enc.cap_proj.weight",
                      "img_txt_enc.cap_proj.bias"}


def test_loads_the_checkpoint_directory_strictly(world):
    model = load_oscar_model(_ckpt(world))
    saved = torch.load(_ckpt(world) / "pytorch_model.bin")
    for key, value in saved.items():
        torch.testing.assert_close(model.state_dict()[key], value)


def test_text_pass_is_bert(world):
    """The text-only pass equals Hugging Face's BertModel on the same weights (eager attention)."""
    from transformers import BertConfig, BertModel

    model = load_oscar_model(_ckpt(world)).eval()
    cfg = model.config
    sizes = {k: getattr(cfg, k) for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                          "intermediate_size", "max_position_embeddings", "type_vocab_size")}
    hf = BertModel(BertConfig(**sizes, attn_implementation="eager")).eval()
    state = {k.removeprefix("bert."): v for k, v in model.state_dict().items() if k.startswith("bert.")
             and not k.startswith(("bert.img_embedding", "bert.LayerNorm"))}
    hf.load_state_dict(state, strict=True)
    ids = torch.tensor([[101, 120, 130, 102, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
    ours, pooled = model.bert(ids, torch.zeros_like(ids), mask)
    theirs = hf(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids))
    torch.testing.assert_close(ours[:, :4], theirs.last_hidden_state[:, :4], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pooled, theirs.pooler_output, atol=1e-5, rtol=1e-5)


def test_region_embedding_is_linear_layernorm_after_the_tokens(world):
    model = load_oscar_model(_ckpt(world)).eval()
    bert = model.bert
    feats = torch.randn(1, 3, model.config.img_feature_dim)
    expected = bert.LayerNorm(bert.img_embedding(feats))
    seen = {}
    hook = bert.encoder.register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
    bert(torch.tensor([[101, 102]]), None, torch.ones(1, 5, dtype=torch.long), feats)
    hook.remove()
    torch.testing.assert_close(seen["x"][:, 2:], expected)


def _model(world, name: str) -> ALADModel:
    config = load_alad_config(config_path(name))
    model = ALADModel(config, OscarConfig.from_dir(_ckpt(world)))
    return model


def test_aladin_keys_follow_the_original_module_tree(world):
    keys = set(_model(world, "alad-alignment-and-matching-distill").state_dict())
    assert "img_txt_enc.oscar_model.bert.encoder.layer.0.attention.self.query.weight" in keys
    assert "img_txt_enc.oscar_model.classifier.weight" in keys
    assert {"img_txt_enc.img_proj.weight", "img_txt_enc.cap_proj.bias"} <= keys
    for part in ("self_attn.in_proj_weight", "self_attn.out_proj.weight", "linear1.weight", "linear2.bias",
                 "norm1.weight", "norm2.bias"):
        assert f"img_txt_enc.final_projection_net.layers.1.{part}" in keys
    assert not any(k.startswith("img_txt_enc.final_projection_net.layers.2") for k in keys)


def _batch(world, n: int = 4):
    from itr_common.data.vinvl_tsv import VinVLRetrievalSplit

    data = VinVLRetrievalSplit.open(world / "coco_ir", world / "features" / "features.tsv", "train", feat_dim=38)
    tokens = Tokens(load_bert_tokenizer(_ckpt(world)))
    keys = data.image_keys[:n]
    images = collate_images(tokens, [data.image_features(k) for k in keys], [data.tags(k) for k in keys], 20, 34)
    texts = collate_text(tokens, [data.caption(k, 0) for k in keys], 20)
    return images, texts, tokens, data


def test_inputs_layout(world):
    images, texts, tokens, data = _batch(world)
    assert texts.input_ids[0, 0].item() == tokens.cls_id
    n = int(texts.lengths[0])
    assert texts.input_ids[0, n - 1].item() == tokens.sep_id and texts.attention_mask[0].sum().item() == n
    assert (texts.token_type_ids == 0).all()
    # tags: [UNK] (the original's int 0) tags [SEP], token types 0 then 1, then regions in the mask
    assert images.input_ids[0, 0].item() == tokens.unk_id
    m = int(images.attention_mask[0, :20].sum())
    assert images.input_ids[0, m - 1].item() == tokens.sep_id
    assert images.token_type_ids[0, :m].tolist() == [0] + [1] * (m - 1)
    assert images.attention_mask[0, 20:].sum().item() == images.lengths[0].item()
    n_boxes = data.image_features(data.image_keys[0]).shape[0]
    assert images.lengths[0].item() == min(n_boxes, 34)


def test_freeze_teran_trains_only_the_matching_head(world):
    images, texts, _, _ = _batch(world)
    model = _model(world, "alad-matching-triplet-finetune")
    loss, parts = model(images, texts)
    loss.backward()
    assert set(parts) == {"matching"}
    assert all(p.grad is None for p in model.img_txt_enc.oscar_model.parameters())
    assert all(p.grad is not None for p in model.img_txt_enc.final_projection_net.parameters())


def test_alignment_training_reaches_the_backbone(world):
    images, texts, _, _ = _batch(world)
    model = _model(world, "alad-alignment-triplet")
    loss, parts = model(images, texts)
    loss.backward()
    assert set(parts) == {"alignment"}
    assert model.img_txt_enc.oscar_model.bert.embeddings.word_embeddings.weight.grad is not None


def test_activate_distillation_after_is_honoured(world):
    images, texts, _, _ = _batch(world)
    model = _model(world, "alad-alignment-and-matching-distill")
    model.distill_epoch = 2  # what 'activate_distillation_after: 2' gives
    _, early = model(images, texts, epoch=1)
    _, late = model(images, texts, epoch=2)
    assert set(early) == {"alignment"} and set(late) == {"alignment", "distillation"}


def test_activate_distillation_after_read_from_the_yaml(tmp_path):
    from itr_aladin.config import activate_distillation_after

    text = config_path("alad-alignment-and-matching-distill").read_text().replace(
        "activate_distillation_after: 0", "activate_distillation_after: 3")
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert activate_distillation_after(load_alad_config(path)) == 3


def test_auto_weights_are_parameters(world, tmp_path):
    text = config_path("alad-alignment-and-matching-distill").read_text().replace("loss-weights: [1, 1]",
                                                                                 "loss-weights: 'auto'")
    path = tmp_path / "auto.yaml"
    path.write_text(text)
    model = ALADModel(load_alad_config(path), OscarConfig.from_dir(_ckpt(world)))
    images, texts, _, _ = _batch(world)
    loss, parts = model(images, texts)
    expected = 0.5 * sum(v * torch.exp(torch.tensor(2.3)) - 2.3 for v in parts.values())
    assert loss.item() == pytest.approx(float(expected), rel=1e-5)
    loss.backward()
    assert model.losses_weights["alignment"].grad is not None


def _tiny_oscar_dict(**extra) -> dict:
    values = oscar_config_dict(40, 6, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    values.update(extra)
    return values


def test_config_without_use_img_layernorm_has_no_image_layer_norm():
    # Oscar's BertImgModel: ``use_img_layernorm`` only when config.json has it (``hasattr``), else None
    values = _tiny_oscar_dict()
    del values["use_img_layernorm"]
    model = ImageBertForSequenceClassification(OscarConfig.from_dict(values))
    assert not hasattr(model.bert, "LayerNorm")
    assert not any(k.startswith("bert.LayerNorm.") for k in model.state_dict())
    model.eval()
    feats = torch.randn(1, 3, 6)
    ids = torch.tensor([[1, 2]])
    with torch.no_grad():
        seq, _ = model.bert(ids, None, torch.ones(1, 5, dtype=torch.long), feats)
        again, _ = model.bert(ids, None, torch.ones(1, 5, dtype=torch.long), feats * 3.0)
    # without the LayerNorm the region embedding is not scale invariant
    assert not torch.allclose(seq[:, 2:], again[:, 2:], atol=1e-3)
    assert any(k.startswith("bert.LayerNorm.") for k in
               ImageBertForSequenceClassification(OscarConfig.from_dict(_tiny_oscar_dict())).state_dict())


def test_mlp_classifier_of_the_config_is_built_with_its_keys():
    model = ImageBertForSequenceClassification(OscarConfig.from_dict(_tiny_oscar_dict(classifier="mlp",
                                                                                      cls_hidden_scale=3)))
    keys = {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith("classifier.")}
    assert keys == {"classifier.0.weight": (24, 8), "classifier.0.bias": (24,), "classifier.2.weight": (2, 24),
                    "classifier.2.bias": (2,)}
    model.eval()
    ids, mask, feats = torch.tensor([[1, 2]]), torch.ones(1, 4, dtype=torch.long), torch.randn(1, 2, 6)
    with torch.no_grad():
        _, pooled = model.bert(ids, None, mask, feats)
        c = model.classifier
        expected = c[2](torch.relu(c[0](pooled)))
        assert torch.allclose(model(ids, None, mask, feats), expected)
    with pytest.raises(UserError, match="classifier"):
        OscarConfig.from_dict(_tiny_oscar_dict(classifier="bilinear"))
