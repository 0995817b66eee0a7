"""Numbers computed by the original intersun/LightningDOT modules, pinned.

The original ``BiEncoder`` (``UniterEncoder`` + ``BertEncoder`` of ``dvl/models/bi_encoder.py``, with
``uniter_model/model``), its ``BiEncoderNllLoss`` and ``BiEncoderForPretraining`` heads were run once outside
the repository (current torch, apex's FusedLayerNorm shimmed by ``nn.LayerNorm``, transformers' BertModel
returning tuples) on the weights and inputs built below, loaded by name from this package's state dict
(strict: no missing or unexpected key). The literals are what the original printed; ours must agree to 1e-5.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from itr_lightningdot.losses import biencoder_loss
from itr_lightningdot.model import build_biencoder
from itr_lightningdot.pretrain import BiEncoderForPretraining

IMG_DIM = 2048  # the original's dvl.const.IMG_DIM (fixed there)
TINY = dict(attention_probs_dropout_prob=0.0, hidden_act="gelu", hidden_dropout_prob=0.0, hidden_size=32,
            initializer_range=0.02, intermediate_size=64, layer_norm_eps=1e-12, max_position_embeddings=64,
            num_attention_heads=4, num_hidden_layers=2, pad_token_id=0, type_vocab_size=2, vocab_size=120,
            output_hidden_states=False)
BS, NEG, L, R = 3, 2, 7, 5  # positives, hard negatives (per side), text length, regions


def seeded_(module: torch.nn.Module) -> None:
    """Every floating tensor of the state dict, in key order, from its own seed (LayerNorm weights around 1)."""
    state = module.state_dict()
    new = {}
    for i, (name, value) in enumerate(sorted(state.items())):
        if not value.is_floating_point():
            new[name] = value
            continue
        g = torch.Generator().manual_seed(1000 + i)
        noise = torch.randn(value.shape, generator=g) * 0.05
        new[name] = 1 + noise if ("LayerNorm.weight" in name or "layer_norm.weight" in name
                                  or "encode_proj.2.weight" in name) else noise
    module.load_state_dict(new, strict=True)


def tiny_model(tmp: Path, project_dim: int) -> torch.nn.Module:
    (tmp / "img.json").write_text(json.dumps(TINY))
    (tmp / "config.json").write_text(json.dumps(TINY))
    model = build_biencoder(tmp / "img.json", tmp / "config.json", project_dim, img_dim=IMG_DIM)
    seeded_(model)
    return model.eval()


def inputs() -> dict:
    """Texts (the second padded), images (the third with 3 of 5 regions), positives first then negatives."""
    g = torch.Generator().manual_seed(7)
    n = BS + NEG
    ids = torch.randint(1, 120, (n, L), generator=g)
    am = torch.ones(n, L, dtype=torch.long)
    ids[1, 5:] = 0
    am[1, 5:] = 0
    feat = torch.randn(n, R, IMG_DIM, generator=g)
    pos = torch.rand(n, R, 7, generator=g)
    iam = torch.ones(n, R + 1, dtype=torch.long)
    feat[2, 3:] = 0
    pos[2, 3:] = 0
    iam[2, 4:] = 0
    return {
        "txts": {"input_ids": ids, "attention_mask": am, "position_ids": torch.arange(L)[None]},
        "imgs": {"input_ids": torch.full((n, 1), 101), "attention_mask": iam,
                 "position_ids": torch.zeros(1, 1, dtype=torch.long), "img_feat": feat, "img_pos_feat": pos},
    }


def pretrain_inputs() -> dict:
    """The first BS pairs with MLM labels and masked regions (features zeroed, mask embedding on)."""
    batch = inputs()
    batch = {k: {kk: (v[:BS] if v.size(0) == BS + NEG else v) for kk, v in d.items()} for k, d in batch.items()}
    g = torch.Generator().manual_seed(11)
    labels = torch.full((BS, L), -1)
    labels[0, 2], labels[1, 1], labels[2, 3], labels[2, 4] = 5, 7, 9, 11
    masks = torch.zeros(BS, R, dtype=torch.bool)
    masks[0, 1] = masks[1, 0] = masks[1, 3] = masks[2, 2] = True
    img = batch["imgs"]
    targets = img["img_feat"][masks]
    img["img_feat"] = img["img_feat"].masked_fill(masks[..., None], 0)
    img["img_masks"] = masks.long()
    return {**batch, "txt_labels": labels, "feat_targets": targets,
            "img_mask_tgt": torch.cat([torch.zeros(BS, 1, dtype=torch.bool), masks], 1),
            "label_targets": torch.softmax(torch.randn(int(masks.sum()), 1601, generator=g), -1)}


# What the original computed on these weights and inputs.
ORIGINAL_TXT = {
    16: [[0.285456, 0.123643, 0.549101, 0.822763], [0.146376, 0.253721, -0.155971, 0.403631],
         [0.303244, -0.034728, 0.248493, -0.15339], [-0.283072, 0.327462, 0.160988, 0.54535],
         [0.087041, 0.328497, 0.15365, 0.347876]],
    0: [[-0.404075, -1.006653, -1.205869, -1.059219], [0.133783, -0.707221, -0.300966, -1.842039],
        [0.326448, -1.340667, -0.293795, -0.74196], [0.04731, -1.002082, -0.901907, -0.793506],
        [0.568611, 0.199991, -0.660033, -0.33669]],
}
ORIGINAL_IMG = {
    16: [[-0.322323, 0.178039, -0.701924, 0.102542], [-0.334102, 0.177669, -0.695592, 0.080252],
         [-0.312139, 0.183552, -0.687196, 0.082368], [-0.312059, 0.168443, -0.679875, 0.081823],
         [-0.32677, 0.172871, -0.719169, 0.101053]],
    0: [[-0.375711, -1.113408, -0.863732, -0.019186], [-0.359233, -1.05309, -0.839371, -0.059812],
        [-0.36873, -1.04855, -0.832492, -0.057906], [-0.332941, -1.047979, -0.834629, -0.061222],
        [-0.402775, -1.067007, -0.925313, -0.054492]],
}
ORIGINAL_LOSS = {16: 1.7056551, 0: 1.7330089}
ORIGINAL_PRETRAIN = {
    "": {"mlm": 4.7504048, "mrfr": 1.0072045, "mrckl": 0.00029916861, "mrc": 7.3962488, "itm": 1.1247967},
    "add": {"mlm": 4.7838955, "mrfr": 1.0068244, "mrckl": 0.00029909, "mrc": 7.3914371, "itm": 1.1247967},
    "multiply": {"mlm": 4.9004636, "mrfr": 1.0072231, "mrckl": 0.00029889087, "mrc": 7.3851819, "itm": 1.1247967},
}


@pytest.mark.parametrize("project_dim", [16, 0])
def test_towers_and_loss_match_the_original(tmp_path: Path, project_dim: int):
    torch.set_num_threads(1)
    model = tiny_model(tmp_path, project_dim)
    with torch.no_grad():
        out = model(inputs())
        loss = biencoder_loss(out.txt, out.img, None, BS, 0.0, gather=False)
    assert torch.allclose(out.txt[:, :4], torch.tensor(ORIGINAL_TXT[project_dim]), atol=1e-5)
    assert torch.allclose(out.img[:, :4], torch.tensor(ORIGINAL_IMG[project_dim]), atol=1e-5)
    assert loss.loss.item() == pytest.approx(ORIGINAL_LOSS[project_dim], abs=1e-5)


@pytest.mark.parametrize("cls_concat", ["", "add", "multiply"])
def test_pretraining_losses_match_the_original(tmp_path: Path, cls_concat: str):
    torch.set_num_threads(1)
    model = BiEncoderForPretraining(tiny_model(tmp_path, 16), IMG_DIM, 1601, cls_concat)
    seeded_(model)
    model.eval()
    batch = pretrain_inputs()
    with torch.no_grad():
        got = {task: model(batch, task).item() for task in ("mlm", "mrfr", "mrckl", "mrc")}
        itm = {k: v for k, v in batch.items()}
        itm["imgs"] = {k: v for k, v in batch["imgs"].items() if k != "img_masks"}
        got["itm"] = model(itm, "itm").item()
    assert set(got) == set(ORIGINAL_PRETRAIN[cls_concat])
    for task, value in ORIGINAL_PRETRAIN[cls_concat].items():
        assert got[task] == pytest.approx(value, rel=1e-5, abs=1e-7), task


def test_recall_matches_the_originals_eval_model_on_dataloader():
    """40 images x 5 captions (numpy PCG64 seed 0): the original's ``eval_model_on_dataloader`` (faiss flat
    index, each image once in the gallery, image recall over unique images) gave these recall dicts."""
    import numpy as np

    from itr_lightningdot.evaluate import EncodedSplit, evaluate_split

    rng = np.random.default_rng(0)
    n_img, per, dim = 40, 5, 16
    img = rng.standard_normal((n_img, dim)).astype(np.float32)
    txt = (np.repeat(img, per, 0) * 0.6 + rng.standard_normal((n_img * per, dim))).astype(np.float32)
    split = EncodedSplit(txt, img, [f"t{j}" for j in range(n_img * per)], [f"img{i}" for i in range(n_img)],
                         np.repeat(np.arange(n_img), per))
    result, image_retrieval, text_retrieval = evaluate_split(split)
    assert image_retrieval == pytest.approx({1: 0.43, 5: 0.795, 10: 0.91})
    assert text_retrieval == pytest.approx({1: 0.5, 5: 0.925, 10: 0.975})
    assert result.t2i[:3] == pytest.approx((43.0, 79.5, 91.0)) and result.i2t[:3] == pytest.approx((50.0, 92.5, 97.5))
