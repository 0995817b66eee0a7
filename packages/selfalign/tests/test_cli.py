"""The original command lines: every flag with its default, the README commands, the evaluation protocols
(F30K 1K, COCO 1K fold5, COCO 5K) with JSON output, console scripts, and bad input -> one line, status 2."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from selfalign_testlib import PYTHON, VARIANT_DIRS, python_env, train_argv

from itr_common.testing import check_console_script, check_usage_error
from itr_selfalign.evaluate_models import evaluate
from itr_selfalign.options import default_options, parse_train_args
from itr_selfalign.train import main_camera, main_vsrn

CAMERA_DEFAULTS = dict(data_path="./scan_data", data_name="f30k_precomp", margin=0.2, num_epochs=30, batch_size=128,
                       embed_size=2048, grad_clip=2.0, learning_rate=1e-4, lr_update=10, lr_decay_gamma=0.1, workers=1,
                       log_step=10, val_step=500, logger_name="runs/runX", resume="", max_violation=True, img_dim=2048,
                       bert_path="./uncased_L-12_H-768_A-12/", max_words=32, drop=0.0, head=64, smry_k=12,
                       smry_lamda=0.01, ctx_fc_relu=1, local_clu_num=1024, v5_tao=0.7, v6_tao=0.7, local_tea="CRS")
VSRN_DEFAULTS = dict(data_path="./scan_data", data_name="f30k_precomp", vocab_path="./vocab/", margin=0.2,
                     num_epochs=30, batch_size=128, word_dim=300, embed_size=2048, grad_clip=2.0, crop_size=224,
                     num_layers=1, learning_rate=2e-4, lr_update=10, workers=10, log_step=10, val_step=500,
                     logger_name="runs/runX", resume="", max_violation=True, img_dim=2048, finetune=False,
                     cnn_type="vgg19", use_restval=False, measure="cosine", use_abs=False, no_imgnorm=False,
                     reset_train=False, dim_vid=2048, dim_hidden=512, bidirectional=0, input_dropout_p=0.2,
                     rnn_type="gru", rnn_dropout_p=0.5, dim_word=300, max_len=60, iters_per_epoch=0,
                     local_clu_num=1024, ctx_relu=1, v5_tao=0.7, v6_tao=0.7, exp_sim=0.5)


@pytest.mark.parametrize(("variant", "defaults"), [("camera", CAMERA_DEFAULTS), ("vsrn", VSRN_DEFAULTS)])
def test_every_original_flag_with_its_default(variant, defaults):
    opt = vars(default_options(variant))
    assert {k: opt[k] for k in defaults} == defaults
    assert opt["selfalign"] == 1 and opt["seed"] == 1024  # added: the switch, the original's fixed seed


def test_max_violation_both_spellings_and_bert_path_without_slash():
    assert parse_train_args("camera", ["--max_violation"]).max_violation is True  # CAMERA/VSRN READMEs
    assert parse_train_args("camera", ["--max_violation", "False"]).max_violation is False
    opt = parse_train_args("camera", ["--bert_path", "/x/bert"])
    assert opt.vocab_file == "/x/bert/vocab.txt" and opt.bert_config_file == "/x/bert/bert_config.json"


def test_unknown_flag_names_the_closest():
    check_usage_error(main_vsrn, ["--ctx_fc_relu", "1"], "ctx_relu")


def _copy_world(world: Path, tmp_path: Path) -> Path:
    out = tmp_path / "w"
    shutil.copytree(world, out)
    return out


def test_bad_inputs_exit_2_before_any_work(world, tmp_path):
    w = _copy_world(world, tmp_path)
    run = tmp_path / "run"
    data = w / "data" / "f30k_precomp"
    # CAMERA without boxes
    (data / "dev_boxes.npy").rename(data / "dev_boxes.bak")
    check_usage_error(main_camera, train_argv("camera", w, run), "dev_boxes.npy", untouched=[run])
    (data / "dev_boxes.bak").rename(data / "dev_boxes.npy")
    # a vocabulary pickle that is not a vocabulary (and would run code if unpickled naively)
    vocab = w / "vocab" / "f30k_precomp_vocab.pkl"
    good = vocab.read_bytes()
    vocab.write_bytes(pickle.dumps(shutil.rmtree))
    check_usage_error(main_vsrn, train_argv("vsrn", w, run), "f30k_precomp_vocab.pkl", untouched=[run])
    vocab.write_bytes(good)
    # captions per image not matching
    caps = data / "train_caps.txt"
    lines = caps.read_text().splitlines()
    caps.write_text("\n".join(lines[:-1]) + "\n")
    check_usage_error(main_vsrn, train_argv("vsrn", w, run), "train_caps.txt", untouched=[run])
    caps.write_text("\n".join(lines) + "\n")
    # NaN features
    ims = np.load(data / "dev_ims.npy")
    ims[3, 0, 0] = np.nan
    np.save(data / "dev_ims.npy", ims)
    check_usage_error(main_camera, train_argv("camera", w, run), "dev_ims.npy", "NaN", untouched=[run])
    # flag values
    check_usage_error(main_camera, [*train_argv("camera", world, run), "--head", "5"], "--head", "5",
                      untouched=[run])
    check_usage_error(main_vsrn, [*train_argv("vsrn", world, run), "--img_dim", "64"], "--img_dim", "64",
                      untouched=[run])
    check_usage_error(main_vsrn, [*train_argv("vsrn", world, run), "--v5_tao", "0"], "--v5_tao", untouched=[run])


def test_other_variant_checkpoint_and_unwritable_output_exit_2(trained, world, tmp_path):
    from itr_selfalign.evaluate_models import main_camera as eval_camera
    from itr_selfalign.evaluate_models import main_vsrn as eval_vsrn

    out = tmp_path / "r.json"
    check_usage_error(eval_vsrn, ["--model_path", str(trained["camera1"]), "--out", str(out)],
                      "expected a VSRN checkpoint", untouched=[out])
    run = tmp_path / "r"
    check_usage_error(main_camera, [*train_argv("camera", world, run), "--resume", str(trained["vsrn1"])],
                      "expected a CAMERA checkpoint", untouched=[run])
    blocker = tmp_path / "file"
    blocker.write_text("x")
    check_usage_error(eval_camera, ["--model_path", str(trained["camera1"]), "--out", str(blocker / "r.json")],
                      "--out")


@pytest.mark.parametrize("name", ["camera1", "vsrn1", "vsrn0"])
def test_evaluation_protocols(trained, world, name):
    variant = name[:-1]
    one_k = evaluate(variant, str(trained[name]), str(world / "data"), split="testall", fold5=True)
    five_k = evaluate(variant, str(trained[name]), str(world / "data"), split="testall")
    assert one_k.protocol == "coco-1k-fold5" and len(one_k.folds) == 5 and five_k.protocol == "coco-5k"
    assert five_k.n_images == 20 and one_k.n_images == 20
    for result in (one_k, five_k):
        assert result.rsum == pytest.approx(sum(result.i2t[:3]) + sum(result.t2i[:3]))
    f30k = evaluate(variant, str(trained[name]), str(world / "data"), split="test", data_name="f30k_precomp")
    assert f30k.protocol == "1k" and f30k.extras["selfalign"] == int(name[-1])


@pytest.mark.parametrize("variant", ["camera", "vsrn"])
def test_evaluate_models_script_and_console_script(trained, world, tmp_path, variant):
    ckpt = trained[f"{variant}1"]
    out = tmp_path / "r.json"
    before = set(VARIANT_DIRS[variant].iterdir())
    done = subprocess.run([PYTHON, "evaluate_models.py", "--model_path", str(ckpt), "--data_path", str(world / "data"),
                           "--split", "testall", "--fold5"], cwd=VARIANT_DIRS[variant],
                          env=python_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "coco-1k-fold5" in done.stdout and "rsum" in done.stdout
    assert set(VARIANT_DIRS[variant].iterdir()) == before  # the default result goes beside the checkpoint
    record = json.loads((ckpt.parent / f"selfalign_{variant}_result_coco-1k-fold5.json").read_text())
    assert record["protocol"] == "coco-1k-fold5" and record["extras"]["latency_ms_per_query"] > 0
    start = time.perf_counter()
    check_console_script(f"selfalign-{variant}-evaluate", ["--model_path", str(ckpt), "--split", "testall",
                                                            "--out", str(out)])
    wall = time.perf_counter() - start
    record = json.loads(out.read_text())
    assert record["protocol"] == "coco-5k"
    # encode + rank time (process start and model loading excluded), spread over 20 images + 100 captions
    extras = record["extras"]
    assert extras["latency_ms_per_query"] > 0 and 0 < extras["compute_s"] < wall
    assert extras["latency_ms_per_query"] == pytest.approx(1000 * extras["compute_s"] / 120)


def test_reproduce_prints_measured_beside_paper(trained, world, tmp_path, capsys):
    from itr_selfalign.reproduce import load_paper_table, run

    table = load_paper_table()
    assert table["CAMERA"]["f30k"]["i2t"] == [76.5, 95.1, 97.2] and table["CAMERA+SelfAlign"]["f30k"] is None
    comparisons = run(["--model_path", str(trained["vsrn0"]), "--data_path", str(world / "data"),
                       "--out", str(tmp_path / "c.json")])
    assert [c.result.protocol for c in comparisons] == ["coco-1k-fold5", "coco-5k"]
    assert comparisons[0].paper == table["VSRN"]["coco1k"]
    out = capsys.readouterr().out
    assert "VSRN | protocol coco-1k-fold5 (coco1k)" in out and "paper R@1" in out
    assert json.loads((tmp_path / "c.json").read_text())["row"] == "VSRN"


def test_paper_table_rows_name_their_source():
    """Every row and dataset says where its numbers come from; rows nobody could read stay null."""
    from importlib import resources

    import yaml

    doc = yaml.safe_load(resources.files("itr_selfalign").joinpath("paper_table.yaml").read_text(encoding="utf-8"))
    rows, sources = doc["rows"], doc["row_sources"]
    assert set(sources) == set(rows) == {"CAMERA", "VSRN", "CAMERA+SelfAlign", "VSRN+SelfAlign"}
    for row, by_dataset in sources.items():
        assert set(by_dataset) == {"f30k", "coco1k", "coco5k"}
        for dataset, source in by_dataset.items():
            value = rows[row].get(dataset)
            # a number is never labelled "not found", a missing row always is or names why
            assert (value is None) == (source in ("not found", "not in the shared table")), (row, dataset)
            assert not source.startswith("verified") or value is not None
    assert rows["VSRN"]["coco1k"] == {"i2t": [74.0, 94.3, 97.8], "t2i": [60.8, 88.4, 94.1]}
    assert all(v is None for v in rows["VSRN+SelfAlign"].values())
    assert doc["rsum_gain_percent"] == {"f30k": 9.1, "coco1k": 4.2, "coco5k": 6.6}


@pytest.mark.parametrize("module", ["itr_selfalign.train", "itr_selfalign.evaluate_models"])
def test_python_m_entry_points(module):
    for variant in ("camera", "vsrn"):
        done = subprocess.run([PYTHON, "-m", module, variant, "--help"], env=python_env(), capture_output=True,
                              text=True)
        assert done.returncode == 0 and "--data_path" in done.stdout, done.stderr


@pytest.mark.parametrize(("variant", "flag", "value"), [
    ("camera", "--drop", "1.5"), ("camera", "--lr_decay_gamma", "0"), ("camera", "--ctx_fc_relu", "2"),
    ("camera", "--margin", "nan"), ("vsrn", "--rnn_type", "lstm"), ("vsrn", "--bidirectional", "3"),
    ("vsrn", "--eval_chunk", "-1"), ("vsrn", "--max_violation", "maybe")])
def test_flag_values_are_checked(variant, flag, value):
    check_usage_error(main_camera if variant == "camera" else main_vsrn, [flag, value], flag, value)
