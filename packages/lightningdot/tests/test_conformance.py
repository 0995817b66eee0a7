"""The shared conformance kit (``itr_common.testing``) on LightningDOT's commands: bad input exits 2 before any
work, kill + --resume ends bit-identical, checkpoints round-trip by key, console scripts exit 0, SIGTERM speaks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ldot_testlib import CONFIG_DIR, QUICK, dropout_configs, eval_argv, train_argv

from itr_common.testing import (
    check_checkpoint_round_trip,
    check_console_script,
    check_resume_exact,
    check_saved_files,
    check_sigterm_message,
    check_usage_error,
    python_module,
)
from itr_lightningdot.checkpoints import load_biencoder_checkpoint, save_checkpoint
from itr_lightningdot.model import build_biencoder


@pytest.mark.parametrize("change, needles", [
    (("--train_batch_size", "0"), ("train_batch_size", "0")),
    (("--learning_rate", "-1"), ("learning_rate", "a value >= 0", "-1")),
    (("--hard_negatives_sampling", "top"), ("hard_negatives_sampling", "num_hard_negatives")),
    (("--val_txt_db", "/nonexistent/db"), ("val_txt_db", "/nonexistent/db")),
    (("--img_checkpoint", "/nonexistent/uniter.pt"), ("img_checkpoint", "/nonexistent/uniter.pt")),
    (("--max_txt_len", "500"), ("max_txt_len", "512")),
    (("--retrieval_mode", "img_only"), ("retrieval_mode", "img_only")),
    (("--num_train_epocs", "3"), ("num_train_epochs",)),
    (("--caption_score_weight", "0.5"), ("caption_score_weight", "itm_global_file")),
])
def test_bad_training_input_exits_2_before_work(world: Path, tmp_path: Path, change, needles):
    from itr_lightningdot.train_itm import main

    out = tmp_path / "run"
    check_usage_error(main, train_argv(world, out, *change), *needles, untouched=[out])


def test_bad_evaluation_input_exits_2(trained_run: Path, world: Path, tmp_path: Path):
    from itr_lightningdot.eval_itm import main

    out = tmp_path / "eval"
    check_usage_error(main, eval_argv(world, trained_run / "biencoder.last.pt", out, "--project_dim", "8"),
                      "encode_proj.3.weight", "(8, 128)", untouched=[out / "retrieval_result_test.json"])
    check_usage_error(main, eval_argv(world, trained_run / "biencoder.last.pt", out, "--test_txt_db", "/no/db"),
                      "/no/db", untouched=[out / "retrieval_result_test.json"])
    check_usage_error(main, eval_argv(world, tmp_path / "missing.pt", out), "missing.pt")


def test_biencoder_checkpoint_round_trip(tmp_path: Path):
    torch.manual_seed(0)
    model = build_biencoder(CONFIG_DIR / "img_tiny.json", CONFIG_DIR / "bert_tiny.json", 16, 32)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def save(m, path: Path) -> None:
        save_checkpoint(path.parent, m, optimizer, None, epoch=0, cp_name="tmp")
        (path.parent / "biencoder.tmp.pt").rename(path)

    def load(path: Path):
        fresh = build_biencoder(CONFIG_DIR / "img_tiny.json", CONFIG_DIR / "bert_tiny.json", 16, 32)
        load_biencoder_checkpoint(fresh, path)
        return fresh

    check_checkpoint_round_trip(model, save, load, tmp_path, which="model_dict")


@pytest.mark.slow
def test_kill_and_resume_end_bit_identical(world: Path, tmp_path: Path):
    dropout = dropout_configs(tmp_path)  # killed mid-epoch: the resumed dropout masks must be the same

    def command(run: Path, resume: bool) -> list[str]:
        return [*python_module("itr_lightningdot.train_itm"), *train_argv(world, run, *QUICK, *dropout),
                *(["--resume"] * resume)]

    check_resume_exact(command, tmp_path, final="biencoder.last.pt", kill_when="train_state.pt",
                       resume_evidence=r"resumed from .*train_state\.pt",
                       select=lambda state: (state["model_dict"], state["optimizer_dict"], state["scheduler_dict"]))


@pytest.mark.slow
def test_console_scripts_exit_0(trained_run: Path, world: Path, tmp_path: Path):
    check_console_script("lightningdot-eval-itm",
                         eval_argv(world, trained_run / "biencoder.last.pt", tmp_path / "eval", "--splits", "test"))


@pytest.mark.slow
def test_sigterm_during_training_saves_and_says_so(world: Path, tmp_path: Path):
    run = tmp_path / "run"
    command = [*python_module("itr_lightningdot.train_itm"),
               *train_argv(world, run, "--num_train_epochs", "50", "--valid_steps", "1000")]
    outcome = check_sigterm_message(command, when=lambda: (run / "log.txt").is_file()
                                    and "Running training" in (run / "log.txt").read_text())
    line = next(x for x in outcome.stderr.splitlines() if "SIGTERM received: saved" in x)
    assert (run / "train_state.pt").is_file() and f"{run / 'train_state.pt'} at epoch " in line
    assert line.endswith("; continue with --resume")


def test_checkpoints_follow_the_umask_and_leave_no_temporary_files(trained_run):
    """The best and last bi-encoders, the resume state and the results: the mode of any new file under this umask,
    and no ``.tmp`` of an atomic write left behind."""
    check_saved_files(trained_run, ["biencoder.best.pt", "biencoder.last.pt", "train_state.pt", "hps.json",
                                    "retrieval_result_test.json"])
