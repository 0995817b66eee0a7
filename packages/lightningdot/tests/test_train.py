"""train_itm / eval_itm end to end on the tiny world: outputs, checkpoint layout, exact resume, bad input."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from ldot_testlib import QUICK, eval_argv, train_argv

from itr_common.checkpoint import load_checkpoint
from itr_lightningdot.checkpoints import CHECKPOINT_STATE_KEYS


def test_outputs_and_checkpoint_state_layout(trained_run: Path):
    names = {p.name for p in trained_run.iterdir()}
    assert {"biencoder.best.pt", "biencoder.last.pt", "train_state.pt", "hps.json", "log.txt",
            "retrieval_result_test.json"} <= names
    state = load_checkpoint(trained_run / "biencoder.last.pt")
    assert tuple(state) == CHECKPOINT_STATE_KEYS
    assert state["epoch"] == 1 and state["offset"] == 0 and state["encoder_params"] is None
    assert any(k.startswith("img_model.bert.") for k in state["model_dict"])
    assert state["scheduler_dict"]["last_epoch"] == 16
    result = json.loads((trained_run / "retrieval_result_test.json").read_text())
    assert result["n_images"] == 20 and result["n_captions"] == 100
    log = (trained_run / "log.txt").read_text()
    assert "image retrieval recall" in log and "Running training" in log


def test_eval_itm_matches_the_training_test_numbers(trained_run: Path, world: Path, tmp_path: Path, capsys):
    from itr_lightningdot.eval_itm import main

    start = time.perf_counter()
    assert main(eval_argv(world, trained_run / "biencoder.last.pt", tmp_path / "eval", "--splits", "test")) == 0
    wall = time.perf_counter() - start
    printed = capsys.readouterr().out
    assert "image retrieval recall = {1:" in printed and "txt retrieval recall" in printed
    ours = json.loads((tmp_path / "eval" / "retrieval_result_test.json").read_text())
    extras = ours["extras"]  # encode + index + search, model building and checkpoint loading excluded
    assert extras["latency_ms_per_query"] > 0 and 0 < extras["compute_s"] < wall
    assert extras["compute_s"] == pytest.approx(extras["encode_s"] + extras["search_s"])
    assert extras["latency_ms_per_query"] == pytest.approx(1000 * extras["compute_s"] / 120)
    trained = json.loads((trained_run / "retrieval_result_test.json").read_text())
    for key in ("i2t", "t2i"):
        assert ours[key] == pytest.approx(trained[key])


def test_eval_itm_hnsw_gives_the_same_recall_on_a_small_gallery(trained_run: Path, world: Path, tmp_path: Path):
    from itr_lightningdot.eval_itm import main

    flat = tmp_path / "flat"
    hnsw = tmp_path / "hnsw"
    checkpoint = trained_run / "biencoder.last.pt"
    assert main(eval_argv(world, checkpoint, flat, "--splits", "test")) == 0
    assert main(eval_argv(world, checkpoint, hnsw, "--splits", "test", "--hnsw_index")) == 0
    a = json.loads((flat / "retrieval_result_test.json").read_text())
    b = json.loads((hnsw / "retrieval_result_test.json").read_text())
    assert a["i2t"] == pytest.approx(b["i2t"]) and a["t2i"] == pytest.approx(b["t2i"])
    assert b["extras"]["index"] == "hnsw"


def test_used_output_dir_needs_resume(trained_run: Path, world: Path):
    from itr_common.testing import check_usage_error
    from itr_lightningdot.train_itm import main

    check_usage_error(main, train_argv(world, trained_run, *QUICK), "output_dir", "--resume",
                      untouched=[trained_run / "biencoder.last.pt"])


def test_reproduce_prints_measured_beside_the_readme_rows(trained_run: Path, world: Path, tmp_path: Path, capsys):
    from ldot_testlib import CONFIG_DIR, TINY_EVAL

    from itr_lightningdot.reproduce import main

    txt, img = world / "txt_db", world / "img_db" / "flickr30k"
    assert main(["--checkpoint", str(trained_run / "biencoder.last.pt"), "--eval_config", str(TINY_EVAL),
                 "--output_dir", str(tmp_path / "repro"), "--", "--test_txt_db", str(txt / "itm_flickr30k_test.db"),
                 "--test_img_db", str(img), "--txt_model_config", str(CONFIG_DIR / "bert_tiny.json"),
                 "--img_model_config", str(CONFIG_DIR / "img_tiny.json")]) == 0
    out = capsys.readouterr().out
    assert "measured" in out and "paper: flickr-ft" in out and "83.90" in out
    assert (tmp_path / "repro" / "retrieval_result_test.json").is_file()
