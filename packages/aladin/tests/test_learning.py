"""It learns (README commands, tiny configs, synthetic world with a 50-image test gallery): the alignment head
far above chance on real pairs and near chance on shuffled ones; the matching head fine-tuned with the
triplet loss and with ListNet distillation from that alignment head; the joint alignment + distillation
config; and the distilled matching head agrees more with the alignment head's rankings than the
triplet-only one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from aladin_testlib import eval_argv, train_argv

from itr_common.metrics import chance_recalls
from itr_common.testing import check_learns

N_TEST = 50
CHANCE = chance_recalls(N_TEST)["rsum"]  # 62.3; its spread on 50 images is about 13
EPOCHS = 10


def _train(world: Path, run: Path, config: str, *extra: str) -> Path:
    from itr_aladin.train import train

    train(train_argv(world, run, config, *extra, epochs=EPOCHS))
    return run / "model_best_rsum.pth.tar"


def _test(world: Path, checkpoint: Path) -> dict:
    from itr_aladin.options import parse_test_args
    from itr_aladin.test import evaluate

    results = evaluate(parse_test_args(eval_argv(world, checkpoint, checkpoint.parent / "test.json")))
    return {head: by_protocol["coco-5k"] for head, by_protocol in results.items()}


@pytest.fixture(scope="module")
def worlds(honesty_worlds_factory):
    return honesty_worlds_factory(("vinvl",), n_test=N_TEST)


@pytest.fixture(scope="module")
def teacher(worlds, tmp_path_factory) -> Path:
    """The alignment head trained on real pairs (alad-alignment-triplet, tiny)."""
    return _train(worlds["real"], tmp_path_factory.mktemp("teacher"), "alad-alignment-triplet")


@pytest.mark.slow
def test_alignment_head_learns_real_pairs_not_shuffled(worlds, teacher, tmp_path):
    def train_and_evaluate(world: Path, run: Path):
        checkpoint = teacher if world == worlds["real"] else _train(world, run, "alad-alignment-triplet")
        return _test(world, checkpoint)["alignment"]

    check_learns(train_and_evaluate, worlds, tmp_path, n_images=N_TEST, min_gain=120, max_shuffled_gain=40)


@pytest.mark.slow
def test_matching_head_triplet_and_distillation_and_agreement(worlds, teacher, tmp_path):
    from itr_aladin.evaluation import alignment_sims, encode_split, matching_sims, ranking_agreement
    from itr_aladin.options import parse_test_args
    from itr_aladin.test import load_model
    from itr_common.data.vinvl_tsv import VinVLRetrievalSplit
    from itr_common.text import load_bert_tokenizer

    world = worlds["real"]
    runs = {name: _train(world, tmp_path / name, config, "--load-teacher-model", str(teacher))
            for name, config in (("triplet", "alad-matching-triplet-finetune"),
                                 ("distill", "alad-matching-distill-finetune"))}
    agreement = {}
    for name, checkpoint in runs.items():
        matching = _test(world, checkpoint)["matching"]
        print(f"{name}: {matching.table()}")
        assert matching.rsum > CHANCE + (100 if name == "triplet" else 50), matching.table()
        args = parse_test_args(eval_argv(world, checkpoint, tmp_path / "x.json"))
        args.add_od_labels, args.img_feature_dim = True, 38
        model, _ = load_model(args)
        data = VinVLRetrievalSplit.open(args.data_dir, args.img_feat_file, "test", feat_dim=38)
        enc = encode_split(model, data, load_bert_tokenizer(args.eval_model_dir), 50, 34, 16)
        with torch.no_grad():
            agreement[name] = ranking_agreement(matching_sims(enc), alignment_sims(model, enc))
    print(agreement)
    assert agreement["distill"]["listnet"] < agreement["triplet"]["listnet"]
    assert agreement["distill"]["top10_i2t"] > agreement["triplet"]["top10_i2t"]


@pytest.mark.slow
def test_joint_alignment_and_distillation(worlds, tmp_path):
    results = _test(worlds["real"], _train(worlds["real"], tmp_path / "joint", "alad-alignment-and-matching-distill"))
    print({head: r.table() for head, r in results.items()})
    assert results["alignment"].rsum > CHANCE + 100
    assert results["matching"].rsum > CHANCE + 20
