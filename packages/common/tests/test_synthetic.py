"""The synthetic world: determinism, structure, learnability (and only from true pairs), every layout
read back through the readers bit for bit, the tiny checkpoints' key names, and the itr-synth CLI."""

from __future__ import annotations

import argparse
import json
import re
import runpy
import sys
import time

import numpy as np
import pytest
import torch

from itr_common.checkpoint import load_checkpoint
from itr_common.data.precomp import PrecompSplit
from itr_common.data.uniter_lmdb import DetectFeatLmdb, TxtTokLmdb
from itr_common.data.vinvl_tsv import FeatureTSV, PredictionsTSV, load_captions_pt, read_img_keys
from itr_common.errors import UserError
from itr_common.metrics import i2t, t2i
from itr_common.synthetic import checkpoints as ckpt
from itr_common.synthetic import cli, layouts
from itr_common.synthetic.probe import alignment_sims, fit_word_vectors, oracle_vectors, parse_pairs
from itr_common.synthetic.world import (
    PRESETS,
    WorldConfig,
    generate_world,
    preset,
    render_caption,
    shuffled_pairs,
    with_shuffled_training_pairs,
)
from itr_common.text import load_bert_model, load_bert_tokenizer, load_vocab


@pytest.fixture(scope="module")
def world():
    return generate_world(preset("tiny"))


@pytest.fixture(scope="module")
def tree(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    layouts.write_world(world, out)
    return out


# ---------------------------------------------------------------------------------------------- world


def test_tiny_world_is_fast_and_deterministic():
    start = time.perf_counter()
    a = generate_world(preset("tiny"))
    assert time.perf_counter() - start < 2.0
    b = generate_world(preset("tiny"))
    for name in ("train", "dev", "test"):
        sa, sb = a.split(name), b.split(name)
        for field in ("features", "boxes", "conf", "region_class", "img_sizes", "image_ids", "sent_ids"):
            assert getattr(sa, field).tobytes() == getattr(sb, field).tobytes(), field
        assert sa.captions == sb.captions
    c = generate_world(preset("tiny", seed=1))
    assert c.split("train").features.tobytes() != a.split("train").features.tobytes()
    assert c.split("train").captions != a.split("train").captions


def test_split_streams_are_independent_of_other_split_sizes():
    a = generate_world(preset("tiny"))
    b = generate_world(preset("tiny", n_train=30))
    assert a.split("test").features.tobytes() == b.split("test").features.tobytes()
    assert a.split("test").captions == b.split("test").captions


def test_world_shapes_and_ids(world):
    cfg = world.config
    ids, sents = [], []
    for name, n in cfg.split_sizes().items():
        s = world.split(name)
        assert s.features.shape == (n, cfg.max_regions, cfg.feat_dim) and s.features.dtype == np.float32
        assert s.images.shape == (n, cfg.n_regions, cfg.feat_dim)
        assert s.boxes.shape == (n, cfg.max_regions, 4) and s.conf.shape == (n, cfg.max_regions)
        assert s.img_sizes.shape == (n, 2) and len(s.captions) == 5 * n and len(s.mentions) == 5 * n
        ids += s.image_ids.tolist()
        sents += s.sent_ids.tolist()
    assert len(set(ids)) == len(ids) and min(ids) >= 1
    assert sorted(sents) == list(range(5 * cfg.n_images))


def test_regions_sorted_by_confidence_and_objects_in_precomp_view(world):
    s = world.split("train")
    assert np.all(np.diff(s.conf, axis=1) <= 0)
    kept = s.region_kind != 2  # objects and backgrounds
    assert np.all(s.conf[kept] > 0.2) and np.all(s.conf[~kept] < 0.2)
    assert not kept[:, s.n_regions :].any()  # all of them inside the precomp rows
    w, h = s.img_sizes[:, None, 0], s.img_sizes[:, None, 1]
    x1, y1, x2, y2 = np.moveaxis(s.boxes, -1, 0)
    assert np.all((0 <= x1) & (x1 < x2) & (x2 <= w + 1e-3) & (0 <= y1) & (y1 < y2) & (y2 <= h + 1e-3))
    for i, scene in enumerate(s.scenes):  # each object of the scene has a region of its class
        objects = {o for _, o in scene}
        assert objects <= {c - 1 for c in s.region_class[i][s.region_kind[i] == 0]}


def test_captions_mention_only_the_scene_and_differ(world):
    s = world.split("dev")
    for i, scene in enumerate(s.scenes):
        captions = s.captions[5 * i : 5 * i + 5]
        assert len(set(captions)) == 5
        for j in range(5 * i, 5 * i + 5):
            pairs = parse_pairs(s.captions[j], world.attributes, world.objects)
            assert set(s.mentions[j]) <= set(scene)
            assert sorted(pairs) == sorted((world.attributes[a], world.objects[o]) for a, o in s.mentions[j])
            assert 2 <= len(pairs) <= 3


def test_render_caption_articles():
    assert render_caption("{a} next to {b} .", [("red", "dog"), ("old", "table")]) == "a red dog next to an old table ."
    assert render_caption("the {a_} .", [("wooden", "cup")]) == "the wooden cup ."


def test_num_bb_and_norm_bb_by_hand(world):
    s = world.split("test")
    above = (s.conf > 0.2).sum(axis=1)
    assert np.array_equal(s.num_bb(0.2, 10, 100), np.clip(above, 10, 100))
    assert np.array_equal(s.num_bb(0.2, 3, 5), np.clip(above, 3, 5))
    i, r = 2, 1
    (x1, y1, x2, y2), (w, h) = s.boxes[i, r], s.img_sizes[i]
    np.testing.assert_allclose(s.norm_bb()[i, r], [x1 / w, y1 / h, x2 / w, y2 / h, (x2 - x1) / w, (y2 - y1) / h],
                               rtol=1e-6)


def test_soft_labels(world):
    s = world.split("test")
    labels = s.soft_labels(1601, rows=slice(0, 3))
    assert labels.shape == (3, world.config.max_regions, 1601)
    np.testing.assert_allclose(labels.sum(-1), 1.0, rtol=1e-6)
    cls = s.region_class[:3]
    np.testing.assert_array_equal(np.take_along_axis(labels, cls[..., None], -1)[..., 0], s.conf[:3])


def test_shuffled_pairs_is_a_derangement_of_whole_caption_groups(world):
    s = world.split("train")
    sh = shuffled_pairs(s, seed=3)
    assert sh.features is s.features and sorted(sh.captions) == sorted(s.captions)
    groups = {tuple(s.captions[5 * i : 5 * i + 5]): i for i in range(s.n_images)}
    perm = [groups[tuple(sh.captions[5 * i : 5 * i + 5])] for i in range(s.n_images)]
    assert sorted(perm) == list(range(s.n_images)) and all(p != i for i, p in enumerate(perm))
    assert shuffled_pairs(s, seed=3).captions == sh.captions


def test_honesty_worlds_differ_in_training_captions_only(world, tmp_path):
    trees = layouts.write_honesty_worlds(world, tmp_path, layouts=("precomp",))
    real, shuffled = (trees[k] / "data" / "f30k_precomp" for k in ("real", "shuffled"))
    for name in ("train_caps.txt", "dev_caps.txt"):
        assert (real / name).read_text() != (shuffled / name).read_text()
        assert sorted((real / name).read_text().splitlines()) == sorted((shuffled / name).read_text().splitlines())
    assert (real / "test_caps.txt").read_text() == (shuffled / "test_caps.txt").read_text()
    assert np.array_equal(np.load(real / "train_ims.npy"), np.load(shuffled / "train_ims.npy"))

def test_with_shuffled_training_pairs_keeps_the_test_pairs_true(world):
    shuffled = with_shuffled_training_pairs(world, seed=3)
    assert shuffled.split("test") is world.split("test")
    for name in ("train", "dev"):
        assert shuffled.split(name).captions == shuffled_pairs(world.split(name), seed=3).captions
        assert shuffled.split(name).captions != world.split(name).captions
    assert world.split("train").captions == generate_world(preset("tiny")).split("train").captions  # not mutated


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"n_train": 0}, "n_train"),
        ({"n_objects": 99}, "n_objects"),
        ({"n_regions": 4}, "n_regions"),
        ({"max_regions": 8}, "max_regions"),
        ({"objects_per_image": (3, 2)}, "objects_per_image"),
    ],
)
def test_bad_config_is_one_clear_error(changes, message):
    with pytest.raises(UserError, match=message):
        WorldConfig(**changes)


def test_presets_are_valid_and_scaled():
    assert set(PRESETS) == {"tiny", "small", "demo", "base"}
    assert PRESETS["base"].feat_dim == 2048 and PRESETS["base"].n_regions == 36
    assert PRESETS["demo"].n_regions == 36 and PRESETS["demo"].n_images >= 2000
    assert all(cfg.n_test % 5 == 0 for cfg in PRESETS.values())  # COCO 1K-fold5 folds
    with pytest.raises(UserError, match="did you mean 'tiny'"):
        preset("tiyn")


# ------------------------------------------------------------------------------------ learnability


def _recalls(sims):
    return i2t(sims)[:3], t2i(sims)[:3]


def test_world_is_learnable_from_true_pairs_only():
    w = generate_world(preset("small"))
    train, test = w.split("train"), w.split("test")
    words = [*w.objects, *w.attributes]
    chance_t2i_r1 = 100.0 / test.n_images

    oracle = _recalls(alignment_sims(test, oracle_vectors(w), w.attributes, w.objects))
    learnt = _recalls(alignment_sims(test, fit_word_vectors(train, words), w.attributes, w.objects))
    honest = _recalls(alignment_sims(test, fit_word_vectors(shuffled_pairs(train, 0), words), w.attributes,
                                     w.objects))
    assert oracle[0][0] > 90 and oracle[1][0] > 90
    assert learnt[0][0] > 80 and learnt[1][0] > 80  # chance is 1%
    assert honest[1][0] < 5 * chance_t2i_r1 and honest[0][0] < 5 * chance_t2i_r1
    assert sum(honest[0]) + sum(honest[1]) < 60  # chance rsum ~ 32 for 100 images


def test_retrieval_needs_word_region_binding():
    """With the true concept vectors, a pooled image vector (no alignment) and word-by-word matching
    (no attribute-object binding) both fall well short of pair-to-region alignment."""
    w = generate_world(preset("small"))
    test = w.split("test")
    vectors = oracle_vectors(w)
    aligned = t2i(alignment_sims(test, vectors, w.attributes, w.objects))[0]

    pooled = test.images.mean(axis=1)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    bag = np.stack([sum(vectors[x] for x in c.split() if x in vectors) for c in test.captions])
    bag /= np.linalg.norm(bag, axis=1, keepdims=True)
    global_r1 = t2i(pooled @ bag.T)[0]

    regions = test.images / np.linalg.norm(test.images, axis=-1, keepdims=True)
    unbound = np.zeros((test.n_images, len(test.captions)), dtype=np.float32)
    for j, caption in enumerate(test.captions):
        for word in caption.split():
            if word in vectors:
                unbound[:, j] += (regions @ (vectors[word] / np.linalg.norm(vectors[word]))).max(axis=1)
    unbound_r1 = t2i(unbound)[0]
    assert aligned > global_r1 + 20 and aligned > unbound_r1 + 10


# ------------------------------------------------------------------------------------------ layouts


def test_precomp_reads_back_bit_for_bit(world, tree):
    for data_name, names in layouts.PRECOMP_SPLITS.items():
        for split_name, file_split in names.items():
            s = world.split(split_name)
            p = PrecompSplit(tree / "data", data_name, file_split, require_boxes=True)
            assert p.images.tobytes() == s.images.tobytes()
            assert p.boxes.tobytes() == s.precomp_boxes.tobytes()
            assert p.img_sizes.tobytes() == s.img_sizes.tobytes()
            assert p.captions == s.captions and p.captions_per_image == 5
            assert p.ids == [str(i) for i in s.image_ids]
    test = world.split("test")
    fold = PrecompSplit(tree / "data", "coco_precomp", "test")
    assert fold.n_images == world.config.n_test // 5
    assert fold.images.tobytes() == test.images[: fold.n_images].tobytes()


def test_vocabularies_cover_every_word(world, tree):
    for data_name in layouts.PRECOMP_SPLITS:
        pkl = load_vocab(tree / "vocab" / f"{data_name}_vocab.pkl")
        js = load_vocab(tree / "vocab" / f"{data_name}_vocab.json")
        assert pkl.word2idx == js.word2idx
        assert [pkl.idx2word[i] for i in range(4)] == ["<pad>", "<start>", "<end>", "<unk>"]
        caption_words = {w for s in world.splits.values() for c in s.captions for w in c.split()}
        assert all(pkl(w) != pkl("<unk>") for w in caption_words)
        assert pkl("zebra-unicorn") == 3
    raw = (tree / "vocab" / "f30k_precomp_vocab.pkl").read_bytes()
    assert raw.startswith(b"\x80\x02cvocab\nVocabulary\n")


def test_bert_dir_tokenizes_world_words_and_loads(world, tree):
    tokens = (tree / "bert" / "vocab.txt").read_text().splitlines()
    assert tokens[0] == "[PAD]" and tokens[1] == "[unused0]" and tokens[99] == "[unused98]"
    assert tokens[100:104] == ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] and tokens[104] == "!"
    for lower in (True, False):
        tokenizer = load_bert_tokenizer(tree / "bert", do_lower_case=lower)
        for word in world.words:
            assert tokenizer.tokenize(word) == [word]
            assert tokenizer.convert_tokens_to_ids(word) == tokens.index(word) > 103
    tokenizer = load_bert_tokenizer(tree / "bert")
    assert tokenizer.tokenize("dogx") == ["dog", "##x"]  # unseen words split into pieces, not [UNK]

    state = torch.load(tree / "bert" / "pytorch_model.bin", weights_only=True)
    assert "bert.embeddings.LayerNorm.gamma" in state and "bert.encoder.layer.1.output.LayerNorm.beta" in state
    assert "cls.predictions.transform.LayerNorm.gamma" in state and "cls.seq_relationship.weight" in state
    assert not any(k.endswith("LayerNorm.weight") for k in state)
    config = json.loads((tree / "bert" / "bert_config.json").read_text())
    assert config["vocab_size"] == len(tokens) and config["hidden_size"] == 64
    assert json.loads((tree / "bert" / "config.json").read_text())["model_type"] == "bert"
    model = load_bert_model(tree / "bert")
    ids = torch.tensor([[101, tokens.index("red"), tokens.index("dog"), 102]])
    with torch.no_grad():
        out = model(input_ids=ids).last_hidden_state
    assert out.shape == (1, 4, 64)
    torch.testing.assert_close(model.embeddings.word_embeddings.weight, state["bert.embeddings.word_embeddings.weight"])


def test_uniter_txt_db_reads_back(world, tree):
    tokenizer = load_bert_tokenizer(tree / "bert", do_lower_case=False)
    for spec in layouts.uniter_specs(world):
        db = TxtTokLmdb(tree / "txt_db" / spec.db_name, max_txt_len=-1)
        split = world.split(spec.split)
        rows = range(*spec.images.indices(split.n_images))
        expected_ids = [str(split.sent_ids[j]) for i in rows for j in range(5 * i, 5 * i + 5)]
        assert db.ids == expected_ids
        assert (db.cls_, db.sep, db.mask, db.meta["UNK"]) == (101, 102, 103, 100)
        assert db.v_range == [104, len(tokenizer.get_vocab())]
        for i in rows:
            j = 5 * i
            record = db[str(split.sent_ids[j])]
            assert record["raw"] == split.captions[j] and record["image_id"] == int(split.image_ids[i])
            assert record["img_fname"] == f"{spec.img_db}_{int(split.image_ids[i]):012}.npz"
            assert record["input_ids"] == tokenizer.encode(split.captions[j], add_special_tokens=False)
            assert 100 not in record["input_ids"]  # no [UNK]
            assert record["toked_caption"] == tokenizer.tokenize(split.captions[j])
            assert record["tokens"] == [w for w in split.captions[j].split() if w not in ".,"]
            assert db.txt2img[str(split.sent_ids[j])] == record["img_fname"]
    names = {spec.db_name for spec in layouts.uniter_specs(world)}
    assert names == {"itm_flickr30k_train.db", "itm_flickr30k_val.db", "itm_flickr30k_test.db", "itm_coco_train.db",
                     "itm_coco_restval.db", "itm_coco_val.db", "itm_coco_test.db"}


def test_uniter_img_db_reads_back(world, tree):
    contents = layouts.img_db_contents(world, layouts.uniter_specs(world))
    assert set(contents) == {"flickr30k", "coco_train2014", "coco_val2014"}
    assert len(contents["flickr30k"]) == world.config.n_images
    n_regions = world.config.n_regions
    for img_db, keys in contents.items():
        db = DetectFeatLmdb(tree / "img_db" / img_db, 0.2, 100, 10, 36, compressed=False)
        fixed = DetectFeatLmdb(tree / "img_db" / img_db, -1, 100, 10, n_regions, compressed=False)
        assert len(db) == len(keys)
        for name, i in keys[:6]:
            s = world.split(name)
            fname = layouts.img_fname(img_db, s.image_ids[i])
            nbb = int(s.num_bb(0.2, 10, 100)[i])
            raw = db.get_raw(fname)
            assert db.name2nbb[fname] == nbb
            half = s.features[i, :nbb].astype(np.float16).astype(np.float32)
            assert raw["features"].tobytes() == half.tobytes()
            assert raw["norm_bb"].tobytes() == s.norm_bb()[i, :nbb].astype(np.float16).astype(np.float32).tobytes()
            assert raw["conf"].tobytes() == s.conf[i, :nbb].astype(np.float16).astype(np.float32).tobytes()
            assert raw["soft_labels"].shape == (nbb, 1601)
            feats, pos = db[fname]
            assert feats.shape == (nbb, world.config.feat_dim) and pos.shape == (nbb, 7)
            assert fixed[fname][0].shape == (n_regions, world.config.feat_dim)


def test_vinvl_layout_reads_back(world, tree):
    feats = FeatureTSV(tree / "features" / "features.tsv", feat_dim=world.config.feat_dim + 6)
    preds = PredictionsTSV(tree / "features" / "predictions.tsv")
    assert len(feats) == world.config.n_images
    for split_name, file_split in layouts.VINVL_SPLITS.items():
        s = world.split(split_name)
        captions = load_captions_pt(tree / "coco_ir" / f"{file_split}_captions.pt", captions_per_image=5)
        assert list(captions) == s.image_ids.tolist()
        nbb = s.num_bb(0.2, 10, 100)
        for i, image_id in enumerate(s.image_ids.tolist()):
            assert captions[image_id] == s.captions[5 * i : 5 * i + 5]
            if i < 4:
                n = int(nbb[i])
                row = feats[image_id]
                assert row.tobytes() == np.concatenate([s.features[i, :n], s.norm_bb()[i, :n]], 1).tobytes()
                record = preds.record(image_id)
                assert record.classes == [world.class_names[c] for c in s.region_class[i, :n]]
                assert record.boxes.tobytes() == s.boxes[i, :n].tobytes()
                assert (record.image_w, record.image_h) == tuple(int(v) for v in s.img_sizes[i])
    test_ids = world.split("test").image_ids.tolist()
    assert read_img_keys(tree / "coco_ir" / "test_img_keys.tsv") == test_ids
    assert read_img_keys(tree / "coco_ir" / "test_img_keys_1k.tsv") == test_ids[: len(test_ids) // 5]


def test_tree_readme_and_stamp(world, tree):
    stamp = layouts.read_stamp(tree)
    assert stamp["stamp"] == layouts.config_stamp(world.config, layouts.LAYOUTS)
    assert stamp["config"]["feat_dim"] == world.config.feat_dim
    readme = (tree / "README.txt").read_text()
    for name in ("data/f30k_precomp", "txt_db/", "img_db/", "coco_ir/", "features/", "checkpoint-0132780"):
        assert name in readme


# -------------------------------------------------------------------------------------- checkpoints


def test_tiny_uniter_checkpoint_keys_shapes_and_ties(world, tree):
    state = load_checkpoint(tree / "pretrained" / "uniter-tiny.pt")
    config = json.loads((tree / "pretrained" / "uniter-tiny.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (64, 2, 4)
    shapes = ckpt.uniter_state_dict_shapes(config, world.config.feat_dim, 1601)
    assert list(state) == list(shapes)
    assert {k: tuple(v.shape) for k, v in state.items()} == shapes
    for tied, source in ckpt.UNITER_TIED.items():  # saved once, shared as in the original module
        assert state[tied].data_ptr() == state[source].data_ptr()
    assert torch.equal(state["uniter.embeddings.LayerNorm.weight"], torch.ones(64))
    assert torch.equal(state["itm_output.bias"], torch.zeros(2))
    assert 0.01 < state["uniter.encoder.layer.0.attention.self.query.weight"].std() < 0.03


def test_uniter_base_key_list_matches_the_released_layout():
    shapes = ckpt.uniter_state_dict_shapes(ckpt.UNITER_BASE_CONFIG)
    # 5 text-embedding + 11 image-embedding + 12 x 16 encoder + 2 pooler + 6 MLM + 6 MRFR + 6 MRC + 2 ITM
    assert len(shapes) == 5 + 11 + 12 * 16 + 2 + 6 + 6 + 6 + 2
    expected = {
        "uniter.embeddings.word_embeddings.weight": (28996, 768),
        "uniter.embeddings.position_embeddings.weight": (512, 768),
        "uniter.embeddings.token_type_embeddings.weight": (2, 768),
        "uniter.img_embeddings.img_linear.weight": (768, 2048),
        "uniter.img_embeddings.pos_linear.weight": (768, 7),
        "uniter.img_embeddings.mask_embedding.weight": (2, 2048),
        "uniter.img_embeddings.img_layer_norm.weight": (768,),
        "uniter.img_embeddings.pos_layer_norm.bias": (768,),
        "uniter.img_embeddings.LayerNorm.weight": (768,),
        "uniter.encoder.layer.11.attention.self.value.weight": (768, 768),
        "uniter.encoder.layer.0.attention.output.LayerNorm.bias": (768,),
        "uniter.encoder.layer.5.intermediate.dense.weight": (3072, 768),
        "uniter.encoder.layer.5.output.dense.weight": (768, 3072),
        "uniter.pooler.dense.weight": (768, 768),
        "cls.predictions.bias": (28996,),
        "cls.predictions.decoder.weight": (28996, 768),
        "cls.predictions.transform.LayerNorm.weight": (768,),
        "feat_regress.weight": (768, 2048),
        "feat_regress.bias": (2048,),
        "feat_regress.net.2.weight": (768,),
        "region_classifier.net.3.weight": (1601, 768),
        "itm_output.weight": (2, 768),
    }
    for key, shape in expected.items():
        assert shapes[key] == shape, key
    assert "uniter.encoder.layer.12.attention.self.query.weight" not in shapes
    large = ckpt.uniter_state_dict_shapes(ckpt.UNITER_LARGE_CONFIG)
    assert large["uniter.encoder.layer.23.intermediate.dense.weight"] == (4096, 1024)


def test_tiny_uniter_checkpoint_loads_into_the_shared_uniter_model(world, tree):
    from itr_common.models.uniter import UniterModel

    state = load_checkpoint(tree / "pretrained" / "uniter-tiny.pt")
    config = json.loads((tree / "pretrained" / "uniter-tiny.json").read_text())
    model = UniterModel({**config, "img_dim": world.config.feat_dim})
    backbone = {k.removeprefix("uniter."): v for k, v in state.items() if k.startswith("uniter.")}
    expected = model.state_dict()
    assert set(backbone) == set(expected)
    assert all(tuple(backbone[k].shape) == tuple(v.shape) for k, v in expected.items())


def test_oscar_checkpoint_dir(world, tree):
    directory = tree / "pretrained" / ckpt.OSCAR_CHECKPOINT_NAME
    config = json.loads((directory / "config.json").read_text())
    assert config["img_feature_dim"] == world.config.feat_dim + 6 and config["img_feature_type"] == "frcnn"
    assert config["num_labels"] == 2 and config["use_img_layernorm"] == 1 and config["hidden_size"] == 64
    state = load_checkpoint(directory / "pytorch_model.bin")
    shapes = ckpt.oscar_state_dict_shapes(config)
    assert {k: tuple(v.shape) for k, v in state.items()} == shapes
    for key in ("bert.img_embedding.weight", "bert.LayerNorm.weight", "classifier.weight", "bert.pooler.dense.bias",
                "bert.encoder.layer.1.attention.self.key.weight", "bert.embeddings.LayerNorm.bias"):
        assert key in state
    assert state["bert.img_embedding.weight"].shape == (64, world.config.feat_dim + 6)
    assert (directory / "vocab.txt").read_text() == (tree / "bert" / "vocab.txt").read_text()
    assert json.loads((directory / "special_tokens_map.json").read_text())["cls_token"] == "[CLS]"
    assert json.loads((directory / "added_tokens.json").read_text()) == {}
    args = load_checkpoint(directory / "training_args.bin")
    assert isinstance(args, argparse.Namespace)
    for field in ("do_lower_case", "img_feature_type", "add_od_labels", "od_label_type", "use_img_layernorm",
                  "img_layer_norm_eps", "max_seq_length", "max_img_seq_length"):
        assert hasattr(args, field), field
    assert args.do_lower_case and args.add_od_labels and args.od_label_type == "vg"
    assert args.img_feature_dim == world.config.feat_dim + 6


def test_oscar_base_key_list():
    config = ckpt.oscar_config_dict(30522, 2054)
    shapes = ckpt.oscar_state_dict_shapes(config)
    assert len(shapes) == 5 + 12 * 16 + 2 + 2 + 2 + 2
    assert shapes["bert.img_embedding.weight"] == (768, 2054)
    assert shapes["bert.embeddings.word_embeddings.weight"] == (30522, 768)
    assert shapes["classifier.weight"] == (2, 768)
    assert "bert.LayerNorm.weight" not in ckpt.oscar_state_dict_shapes({**config, "use_img_layernorm": 0})
    # Oscar's hasattr test: a config.json without the key builds no image LayerNorm either
    absent = {k: v for k, v in config.items() if k != "use_img_layernorm"}
    assert "bert.LayerNorm.weight" not in ckpt.oscar_state_dict_shapes(absent)


def test_bert_vocab_tokens_rejects_non_words():
    with pytest.raises(UserError, match="lower-case"):
        ckpt.bert_vocab_tokens(["Dog"])
    with pytest.raises(UserError, match="single words"):
        ckpt.bert_vocab_tokens(["two words"])
    tokens = ckpt.bert_vocab_tokens(["dog", "a", "dog"])
    assert tokens.count("dog") == 1 and tokens.count("a") == 1  # 'a' is also a letter piece: listed once


# --------------------------------------------------------------------------------------------- CLI


def _files(root):
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file() and p.name != "lock.mdb")


def test_cli_end_to_end_idempotent_and_force(tmp_path, capsys, tree):
    out = tmp_path / "tree"
    assert cli.main(["--out", str(out), "--layout", "all", "--size", "tiny"]) == 0
    printed = capsys.readouterr().out
    assert "wrote a 'tiny' world" in printed and "txt_db/itm_flickr30k_train.db" in printed
    for path in ("data/f30k_precomp/train_ims.npy", "data/coco_precomp/testall_caps.txt",
                 "vocab/coco_precomp_vocab.pkl", "bert/pytorch_model.bin", "txt_db/itm_coco_val.db/meta.json",
                 "img_db/flickr30k/nbb_th0.2_max100_min10.json", "pretrained/uniter-tiny.pt",
                 "pretrained/checkpoint-0132780/training_args.bin", "coco_ir/test_img_keys_1k.tsv",
                 "features/imageid2idx.json", "README.txt", "world.json"):
        assert (out / path).exists(), path
    # same seed -> the same bytes in every file (LMDB lock files hold pids)
    assert _files(out) == _files(tree)
    assert all((out / f).read_bytes() == (tree / f).read_bytes() for f in _files(out))
    before = (out / "data/f30k_precomp/train_ims.npy").stat().st_mtime_ns

    assert cli.main(["--out", str(out)]) == 0
    assert "up to date" in capsys.readouterr().out
    assert (out / "data/f30k_precomp/train_ims.npy").stat().st_mtime_ns == before

    with pytest.raises(SystemExit) as exc:
        cli.main(["--out", str(out), "--seed", "5"])
    assert exc.value.code == 2 and "--force" in capsys.readouterr().err
    (out / "mine.txt").write_text("not ours")
    assert cli.main(["--out", str(out), "--seed", "5", "--layout", "precomp", "--force"]) == 0
    capsys.readouterr()
    assert (out / "mine.txt").read_text() == "not ours"  # --force removes only what itr-synth writes
    assert not (out / "txt_db").exists() and layouts.read_stamp(out)["config"]["seed"] == 5


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--layout", "precom"], "did you mean 'precomp'"),
        (["--size", "huge"], "--size"),
        (["--n-test", "0"], "n_test"),
        (["--seeds", "1"], "did you mean '--seed'"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--out", str(tmp_path / "t"), *argv])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_python_dash_m_entry_point(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["itr-synth", "--help"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_module("itr_common.synthetic", run_name="__main__", alter_sys=True)
    assert exc.value.code == 0
    assert re.search(r"usage: itr-synth .*--out", capsys.readouterr().out.replace("\n", " "))
