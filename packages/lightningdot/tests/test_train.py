"""train_itm / eval_itm end to end on the tiny world: outputs, checkpoint layout, exact resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
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

    assert main(eval_argv(world, trained_run / "biencoder.last.pt", tmp_path / "eval", "--splits", "test")) == 0
    printed = capsys.readouterr().out
    assert "image retrieval recall = {1:" in printed and "txt retrieval recall" in printed
    ours = json.loads((tmp_path / "eval" / "retrieval_result_test.json").read_text())
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


def test_resume_after_a_kill_ends_bit_identical(world: Path, tmp_path: Path, monkeypatch):
    import itr_lightningdot.train_itm as train

    full = tmp_path / "full"
    assert train.main(train_argv(world, full, *QUICK)) == 0

    killed = tmp_path / "killed"
    real_loss, calls = train.biencoder_loss, {"n": 0}

    def dying_loss(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 11:  # epoch 1, batch 2; the last state saved is update 9
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train, "biencoder_loss", dying_loss)
    with pytest.raises(KeyboardInterrupt):
        train.run(train.parse_train_args(train_argv(world, killed, *QUICK)))
    assert load_checkpoint(killed / "train_state.pt")["progress"]["updates"] == 9
    monkeypatch.setattr(train, "biencoder_loss", real_loss)
    assert train.main(train_argv(world, killed, *QUICK, "--resume")) == 0
    assert "resumed from" in (killed / "log.txt").read_text()
    a = load_checkpoint(full / "biencoder.last.pt")
    b = load_checkpoint(killed / "biencoder.last.pt")
    for key, value in a["model_dict"].items():
        assert torch.equal(value, b["model_dict"][key]), key
    assert a["scheduler_dict"] == b["scheduler_dict"]


def _exit_code(fn, argv) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        fn(argv)
    return info.value.code


@pytest.mark.parametrize("change, message", [
    (("--train_batch_size", "0"), "train_batch_size"),
    (("--hard_negatives_sampling", "top"), "num_hard_negatives"),
    (("--learning_rate", "-1"), "learning_rate"),
    (("--val_txt_db", "/nonexistent/db"), "val_txt_db"),
    (("--img_checkpoint", "/nonexistent/uniter.pt"), "img_checkpoint"),
    (("--max_txt_len", "500"), "max_txt_len"),
    (("--retrieval_mode", "img_only"), "retrieval_mode"),
    (("--num_train_epocs", "3"), "num_train_epochs"),
])
def test_bad_training_input_exits_2_with_one_line(world: Path, tmp_path: Path, capsys, change, message):
    from itr_lightningdot.train_itm import main

    assert _exit_code(main, train_argv(world, tmp_path / "bad", *change)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "bad" / "biencoder.last.pt").exists()


def test_used_output_dir_needs_resume(trained_run: Path, world: Path, capsys):
    from itr_lightningdot.train_itm import main

    assert _exit_code(main, train_argv(world, trained_run, *QUICK)) == 2
    assert "--resume" in capsys.readouterr().err


def test_bad_eval_input_exits_2(trained_run: Path, world: Path, tmp_path: Path, capsys):
    from itr_lightningdot.eval_itm import main

    wrong_dim = eval_argv(world, trained_run / "biencoder.last.pt", tmp_path / "e", "--project_dim", "8")
    assert _exit_code(main, wrong_dim) == 2
    assert "encode_proj.3.weight: model (8, 128) vs checkpoint (64, 128)" in capsys.readouterr().err
    missing_db = eval_argv(world, trained_run / "biencoder.last.pt", tmp_path / "e", "--test_txt_db", "/no/db")
    assert _exit_code(main, missing_db) == 2
    assert "/no/db" in capsys.readouterr().err


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
