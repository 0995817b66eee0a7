"""The two bases and their SelfAlign variants: original key names (tiny and full size), shapes, the switch."""

from __future__ import annotations

import pytest
import torch
from selfalign_testlib import tiny_bert, tiny_opt

from itr_selfalign.camera import CameraModel
from itr_selfalign.checkpoints import original_state_dict
from itr_selfalign.options import default_options
from itr_selfalign.vsrn import VsrnModel

LIN = ("weight", "bias")
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
GRU = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")


def keys(prefix: str, names) -> list[str]:
    return [f"{prefix}.{n}" for n in names]


AGSA_KEYS = (keys("agsa.bns.0", BN) + [f"agsa.att_layers.0.linears.{i}.{p}" for i in range(3) for p in LIN]
             + [f"agsa.att_layers.0.{fc}.{p}" for fc in ("fc_q", "fc_k", "fc_g") for p in LIN])
CONTEXT_KEYS = keys("ctx_fc", LIN) + keys("ctx_fc_bn1", BN) + keys("ctx_fc_bn2", BN) + keys("fusion_fn.0", LIN) + keys(
    "fusion_fn.2", LIN)
CAMERA_IMG = (keys("fc", LIN) + keys("position_enc.proj", LIN) + AGSA_KEYS
              + [f"mvs.convs_dilate.{i}.{p}" for i in range(7) for p in LIN] + keys("mvs.convs_fc", LIN))
CAMERA_TXT_HEAD = keys("mapping", LIN) + AGSA_KEYS + keys("fc1", LIN) + keys("fc2", LIN) + keys("bn", BN)
GCN = [f"Rs_GCN_{i}.{k}" for i in range(1, 5) for k in (*keys("g", LIN), *keys("W.0", LIN), *keys("W.1", BN),
                                                       *keys("theta", LIN), *keys("phi", LIN))]
VSRN_IMG_BASE = keys("fc", LIN) + keys("img_rnn", GRU) + GCN
VSRN_IMG_CONTEXT = keys("ctx_fc_bn1", BN) + keys("ctx_fc_bn2", BN) + keys("ctx_fc", LIN) + keys(
    "fusion_fn.0", LIN) + keys("fusion_fn.2", LIN)
CAPTION = (keys("encoder.vid2hid", LIN) + keys("encoder.rnn", GRU) + ["decoder.embedding.weight"]
           + keys("decoder.attention.linear1", LIN) + ["decoder.attention.linear2.weight"] + keys("decoder.rnn", GRU)
           + keys("decoder.out", LIN))


def bert_keys(state: dict) -> list[str]:
    return [k for k in state if k.startswith("bert.")]


@pytest.mark.parametrize("selfalign", [1, 0])
def test_camera_original_keys(selfalign):
    model = CameraModel(tiny_opt("camera", selfalign), tiny_bert())
    states = original_state_dict(model)
    assert len(states) == 2 + selfalign
    img, txt = list(states[0]), list(states[1])
    assert img == CAMERA_IMG + (CONTEXT_KEYS if selfalign else [])
    bert = bert_keys(states[1])
    assert bert[0] == "bert.embeddings.word_embeddings.weight" and bert[-1] == "bert.pooler.dense.bias"
    assert txt == bert + CAMERA_TXT_HEAD + (CONTEXT_KEYS if selfalign else [])
    if selfalign:
        assert list(states[2]) == ["v_prototypes.weight"]


@pytest.mark.parametrize("data_name", ["f30k_precomp", "coco_precomp"])
@pytest.mark.parametrize("selfalign", [1, 0])
def test_vsrn_original_keys(selfalign, data_name):
    model = VsrnModel(tiny_opt("vsrn", selfalign, data_name=data_name))
    states = original_state_dict(model)
    assert len(states) == 2 + selfalign
    bn = keys("bn", BN) if data_name == "f30k_precomp" else []
    assert list(states[0]) == VSRN_IMG_BASE + (VSRN_IMG_CONTEXT if selfalign else []) + bn
    text = ["embed.weight", *(keys("local_fc", LIN) if selfalign else []), *keys("rnn", GRU)]
    assert list(states[1]) == text + (CONTEXT_KEYS if selfalign else [])
    assert list(model.caption_model.state_dict()) == CAPTION


def test_full_size_shapes():
    from transformers import BertConfig, BertModel

    with torch.device("meta"):
        camera = CameraModel(default_options("camera"), BertModel(BertConfig()))
        vsrn_opt = default_options("vsrn")
        vsrn_opt.vocab_size = 8481  # vocab/f30k_precomp_vocab.pkl
        vsrn = VsrnModel(vsrn_opt)
    img, txt, protos = (dict((k, tuple(v.shape)) for k, v in sd.items()) for sd in original_state_dict(camera))
    assert list(img) == CAMERA_IMG + CONTEXT_KEYS and list(txt)[-len(CAMERA_TXT_HEAD + CONTEXT_KEYS):] == (
        CAMERA_TXT_HEAD + CONTEXT_KEYS) and len(bert_keys(txt)) == 5 + 16 * 12 + 2  # BERT-base, 12 layers
    assert img["fc.weight"] == (2048, 2048) and img["position_enc.proj.weight"] == (2048, 6)
    assert img["agsa.att_layers.0.fc_g.weight"] == (64, 32)  # 64 heads of 32
    assert [img[f"mvs.convs_dilate.{i}.weight"] for i in (0, 1, 6)] == [(256, 2048, 1), (128, 2048, 3), (128, 2048, 5)]
    assert img["mvs.convs_fc.weight"] == (12, 1024) and img["fusion_fn.0.weight"] == (2048, 4096)
    assert txt["bert.embeddings.word_embeddings.weight"] == (30522, 768) and txt["mapping.weight"] == (2048, 768)
    assert protos["v_prototypes.weight"] == (1024, 2048)
    img, txt, protos = (dict((k, tuple(v.shape)) for k, v in sd.items()) for sd in original_state_dict(vsrn))
    assert list(img) == VSRN_IMG_BASE + VSRN_IMG_CONTEXT + keys("bn", BN)
    assert list(txt) == ["embed.weight", *keys("local_fc", LIN), *keys("rnn", GRU), *CONTEXT_KEYS]
    assert img["Rs_GCN_1.theta.weight"] == (2048, 2048, 1) and img["img_rnn.weight_ih_l0"] == (6144, 2048)
    assert img["bn.weight"] == (2048,)  # f30k_precomp
    assert txt["embed.weight"] == (8481, 300) and txt["local_fc.weight"] == (2048, 300)
    assert txt["rnn.weight_ih_l0"] == (6144, 2048)  # SelfAlign: GRU(2048, 2048) after local_fc
    cap = {k: tuple(v.shape) for k, v in vsrn.caption_model.state_dict().items()}
    assert cap["decoder.rnn.weight_ih_l0"] == (1536, 812) and cap["decoder.out.weight"] == (8481, 512)
    with torch.device("meta"):
        vsrn_opt.selfalign = 0
        base = VsrnModel(vsrn_opt)
    assert tuple(base.txt_enc.rnn.weight_ih_l0.shape) == (6144, 300)  # plain VSRN: GRU(300, 2048)


def test_selfalign_off_is_the_plain_base():
    base = CameraModel(tiny_opt("camera", 0), tiny_bert())
    assert not hasattr(base, "region_loss") and not hasattr(base.img_enc, "ctx_fc")
    base.eval()
    images, boxes = torch.randn(2, 5, 8), torch.tensor([[[0.0, 0.0, 10.0, 20.0]] * 5] * 2)
    emb = base.encode_images(images, boxes, torch.tensor([[40.0, 50.0]] * 2))
    assert emb.shape == (2, 3, 16)  # the k views only
    full = CameraModel(tiny_opt("camera", 1), tiny_bert()).eval()
    assert full.encode_images(images, boxes, torch.tensor([[40.0, 50.0]] * 2)).shape == (2, 3, 48)


def test_trainable_parameters_exclude_bert_and_repeat_nothing():
    model = CameraModel(tiny_opt("camera"), tiny_bert())
    params = model.trainable_parameters()
    assert len({id(p) for p in params}) == len(params)
    assert not any(p is q for p in params for q in model.txt_enc.bert.parameters())
    vsrn = VsrnModel(tiny_opt("vsrn"))
    vparams = vsrn.trainable_parameters()
    assert len({id(p) for p in vparams}) == len(vparams) == len(list(vsrn.parameters()))
