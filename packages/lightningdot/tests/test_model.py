"""The two towers, the projection, state-dict keys (fine-tuned and released layouts) and strict loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ldot_testlib import CONFIG_DIR

from itr_common.checkpoint import save_atomic
from itr_common.errors import UserError
from itr_lightningdot.checkpoints import load_biencoder_checkpoint, load_img_checkpoint, released_state_dict
from itr_lightningdot.data import image_batch
from itr_lightningdot.model import IMG_CLS_ID, build_biencoder, dot_product_scores


def tiny(project_dim: int = 16, img_dim: int = 32):
    torch.manual_seed(0)
    return build_biencoder(CONFIG_DIR / "img_tiny.json", CONFIG_DIR / "bert_tiny.json", project_dim, img_dim).eval()


def test_projection_is_linear_gelu_layernorm_linear():
    model = tiny(project_dim=16)
    proj = model.txt_model.encode_proj
    assert [type(m).__name__ for m in proj] == ["Linear", "GELU", "LayerNorm", "Linear"]
    assert proj[0].weight.shape == (128, 64) and proj[2].eps == 1e-12 and proj[3].weight.shape == (16, 128)
    x = torch.randn(3, 64)
    h = proj[0](x)
    h = h * 0.5 * (1 + torch.erf(h / 2**0.5))
    h = torch.nn.functional.layer_norm(h, (128,), proj[2].weight, proj[2].bias, 1e-12)
    assert torch.allclose(proj(x), proj[3](h), atol=1e-6)
    assert tiny(project_dim=0).txt_model.encode_proj is None and tiny(project_dim=0).vector_size == 64


def test_text_tower_is_the_cls_of_the_last_layer_and_ignores_padding():
    model = tiny()
    ids = torch.tensor([[101, 7, 8, 102, 0, 0], [101, 9, 10, 11, 12, 102]])
    mask = (ids != 0).long()
    pos = torch.arange(6)[None]
    out = model.encode_text({"input_ids": ids, "attention_mask": mask, "position_ids": pos})
    hidden = model.txt_model.bert(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.allclose(out.pooled, model.txt_model.encode_proj(hidden[:, 0]), atol=1e-5)
    alone = model.encode_text({"input_ids": ids[:1, :4], "attention_mask": mask[:1, :4], "position_ids": pos[:, :4]})
    assert torch.allclose(alone.pooled, out.pooled[:1], atol=1e-5)


def test_image_tower_reads_cls_then_regions_and_ignores_padding():
    model = tiny()
    feats = [torch.randn(3, 32), torch.randn(5, 32)]
    poss = [torch.rand(3, 7), torch.rand(5, 7)]
    batch = image_batch(feats, poss)
    assert batch["input_ids"].tolist() == [[IMG_CLS_ID], [IMG_CLS_ID]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]]
    out = model.encode_image(batch)
    uniter = model.img_model.bert(batch["input_ids"], batch["position_ids"], batch["img_feat"],
                                  batch["img_pos_feat"], batch["attention_mask"]).sequence_output
    assert torch.allclose(out.pooled, model.img_model.encode_proj(uniter[:, 0]), atol=1e-5)
    alone = model.encode_image(image_batch(feats[:1], poss[:1]))
    assert torch.allclose(alone.pooled, out.pooled[:1], atol=1e-5)


def test_score_is_the_raw_dot_product():
    a, b = torch.randn(3, 4), torch.randn(5, 4)
    assert torch.allclose(dot_product_scores(a, b), a @ b.T)


def test_state_dict_keys_are_the_originals():
    keys = list(tiny().state_dict())
    assert "img_model.bert.img_embeddings.img_linear.weight" in keys
    assert "img_model.bert.encoder.layer.1.attention.self.query.weight" in keys
    assert "txt_model.bert.encoder.layer.0.attention.output.LayerNorm.weight" in keys
    assert {"img_model.encode_proj.3.weight", "txt_model.encode_proj.2.bias"} <= set(keys)
    assert all(k.startswith(("img_model.bert.", "img_model.encode_proj.", "txt_model.bert.", "txt_model.encode_proj."))
               for k in keys)


def test_full_size_key_list_and_shapes():
    with torch.device("meta"):
        model = build_biencoder(CONFIG_DIR / "img_base.json", CONFIG_DIR / "bert_base.json", 768)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["img_model.bert.embeddings.word_embeddings.weight"] == (28996, 768)
    assert shapes["img_model.bert.img_embeddings.img_linear.weight"] == (768, 2048)
    assert shapes["img_model.encode_proj.0.weight"] == (1536, 768)
    assert shapes["txt_model.encode_proj.3.weight"] == (768, 1536)
    assert shapes["txt_model.bert.encoder.layer.11.output.dense.weight"] == (768, 3072)
    # layers, text embeddings, image embeddings, pooler, projection
    assert len([k for k in shapes if k.startswith("img_model.")]) == 12 * 16 + 5 + 11 + 2 + 6
    assert len([k for k in shapes if k.startswith("txt_model.")]) == 12 * 16 + 5 + 2 + 6


def test_released_layout_loads_by_name_and_roundtrips(tmp_path: Path):
    source = tiny()
    heads = {"cls.predictions.bias": torch.zeros(254), "itm_output.weight": torch.zeros(2, 64)}
    save_atomic(released_state_dict(source, heads), tmp_path / "LightningDot.pt")
    target = tiny()
    torch.nn.init.zeros_(target.txt_model.encode_proj[0].weight)
    assert load_biencoder_checkpoint(target, tmp_path / "LightningDot.pt").startswith("pre-training")
    for (k, a), b in zip(source.state_dict().items(), target.state_dict().values()):
        assert torch.equal(a, b), k


def test_wrong_checkpoints_are_refused_by_name(tmp_path: Path):
    model = tiny()
    only_img = {"model_dict": {k: v for k, v in model.state_dict().items() if k.startswith("img_model.")}}
    save_atomic(only_img, tmp_path / "img_only.pt")
    with pytest.raises(UserError, match="holds only"):
        load_biencoder_checkpoint(tiny(), tmp_path / "img_only.pt")
    save_atomic({"model_dict": tiny(project_dim=0).state_dict()}, tmp_path / "noproj.pt")
    with pytest.raises(UserError, match="projection"):
        load_biencoder_checkpoint(tiny(), tmp_path / "noproj.pt")
    save_atomic({"bert.img_model.x": torch.zeros(1), "weird.head": torch.zeros(1)}, tmp_path / "odd.pt")
    with pytest.raises(UserError, match="weird"):
        load_biencoder_checkpoint(tiny(), tmp_path / "odd.pt")


def test_uniter_checkpoints_load_under_either_prefix(world: Path, tmp_path: Path):
    from itr_common.checkpoint import load_checkpoint

    state = load_checkpoint(world / "pretrained" / "uniter-tiny.pt")
    model = tiny()
    load_img_checkpoint(model, world / "pretrained" / "uniter-tiny.pt")
    assert torch.equal(model.img_model.bert.img_embeddings.img_linear.weight,
                       state["uniter.img_embeddings.img_linear.weight"])
    renamed = {("bert." + k[len("uniter."):] if k.startswith("uniter.") else k): v for k, v in state.items()}
    save_atomic(renamed, tmp_path / "old-layout.pt")
    other = tiny()
    load_img_checkpoint(other, tmp_path / "old-layout.pt")
    assert torch.equal(other.img_model.bert.encoder.layer[0].attention.self.query.weight,
                       state["uniter.encoder.layer.0.attention.self.query.weight"])
    save_atomic({"something.else": torch.zeros(2)}, tmp_path / "junk.pt")
    with pytest.raises(UserError, match="expected UNITER weights"):
        load_img_checkpoint(tiny(), tmp_path / "junk.pt")


def test_full_size_released_layout_heads():
    from itr_lightningdot.pretrain import BiEncoderForPretraining

    with torch.device("meta"):
        model = build_biencoder(CONFIG_DIR / "img_base.json", CONFIG_DIR / "bert_base.json", 768)
        full = BiEncoderForPretraining(model, 2048, 1601, "add")
    shapes = {k: tuple(v.shape) for k, v in full.state_dict().items()}
    assert shapes["cls.predictions.decoder.weight"] == (28996, 768) and shapes["cls.predictions.bias"] == (28996,)
    assert shapes["feat_regress.weight"] == (768, 2048) and shapes["feat_regress.bias"] == (2048,)
    assert shapes["region_classifier.net.3.weight"] == (1601, 768) and shapes["itm_output.weight"] == (2, 768)
    assert shapes["bert.txt_model.encode_proj.3.weight"] == (768, 1536)
    assert {k.split(".")[0] for k in shapes} == {"bert", "cls", "feat_regress", "region_classifier", "itm_output"}


def test_build_model_reads_the_biencoder_checkpoint_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The image size and the weights come from one read of the file (released checkpoints are hundreds of MB)."""
    import argparse

    from itr_lightningdot import build

    source = tiny()
    path = tmp_path / "LightningDot.pt"
    save_atomic(released_state_dict(source, {}), path)
    reads: list[str] = []
    real = build.load_checkpoint
    monkeypatch.setattr(build, "load_checkpoint", lambda p: reads.append(str(p)) or real(p))
    args = argparse.Namespace(img_model_config=CONFIG_DIR / "img_tiny.json",
                              txt_model_config=CONFIG_DIR / "bert_tiny.json", project_dim=16,
                              biencoder_checkpoint=str(path), img_checkpoint=None, txt_checkpoint=None)
    model, img_dim = build.build_model(args)
    assert img_dim == 32 and reads == [str(path)]
    for (k, a), b in zip(source.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), k
