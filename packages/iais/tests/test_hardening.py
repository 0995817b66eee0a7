"""Issue 9 on IAIS inference and checkpoints: strict loading naming keys (documented exceptions logged),
the result set written atomically, feature sizes checked against the checkpoint, console scripts exit 0."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import pytest
import torch
from iais_testlib import train_argv

from itr_common.checkpoint import load_checkpoint, save_atomic
from itr_common.testing import (
    check_checkpoint_round_trip,
    check_console_script,
    check_saved_files,
    check_usage_error,
    edit_checkpoint,
    tree_listing,
)
from itr_iais.inf_itm import load_model
from itr_iais.train_itm_hard_negatives import model_state_dict


def _inf_argv(world: Path, checkpoint: Path, out: Path, *extra: str) -> list[str]:
    return ["--txt_db", str(world / "txt_db" / "itm_flickr30k_test.db"),
            "--img_db", str(world / "img_db" / "flickr30k"),
            "--checkpoint", str(checkpoint), "--model_config", str(world / "pretrained" / "uniter-tiny.json"),
            "--output_dir", str(out), "--batch_size", "7", *extra]


def _opts(world: Path, checkpoint: Path) -> argparse.Namespace:
    return argparse.Namespace(checkpoint=str(checkpoint), model_config=str(world / "pretrained" / "uniter-tiny.json"),
                              img_db=str(world / "img_db" / "flickr30k"))


def test_fine_tuned_checkpoint_round_trip_and_strict_keys(trained_run: Path, world: Path, tmp_path: Path):
    """save -> inf_itm's load gives the same tensors; a dropped encoder weight or an unrelated key is refused
    by name (the original scored such a checkpoint with random weights and exited 0); module. loads."""
    model = load_model(_opts(world, trained_run / "ckpt" / "model_step_4.pt"), torch.device("cpu"))

    def save(module, path):
        save_atomic(model_state_dict(module), path)

    check_checkpoint_round_trip(model, save, lambda path: load_model(_opts(world, path), torch.device("cpu")),
                                tmp_path, drop_key="uniter.encoder.layer.0.attention.self.query.weight")


def test_inference_refuses_a_checkpoint_without_encoder_weights(trained_run: Path, world: Path, tmp_path: Path):
    from itr_iais.inf_itm import main

    bad = tmp_path / "no_encoder.pt"
    state = load_checkpoint(trained_run / "ckpt" / "model_step_4.pt")
    save_atomic({k: v for k, v in state.items() if not k.startswith("uniter.encoder.")}, bad)
    out = tmp_path / "out"
    check_usage_error(main, _inf_argv(world, bad, out), "no_encoder.pt", "missing",
                      "uniter.encoder.layer.0.", untouched=[out])


def test_zero_shot_pretrained_checkpoint_is_the_documented_exception(world: Path, tmp_path: Path, caplog):
    """uniter-tiny.pt (a pre-trained UNITER) has no rank_output and carries pre-training heads: both are
    allowed, as the original, and named in the log."""
    with caplog.at_level(logging.INFO):
        model = load_model(_opts(world, world / "pretrained" / "uniter-tiny.pt"), torch.device("cpu"))
    state = load_checkpoint(world / "pretrained" / "uniter-tiny.pt")
    assert torch.equal(model.rank_output.weight, state["itm_output.weight"][1:])
    assert "keys missing (left as initialised), a pre-trained UNITER has no ranking head" in caplog.text
    assert "rank_output.weight, rank_output.bias" in caplog.text
    assert "ignoring pre-training heads cls, feat_regress, region_classifier" in caplog.text


def test_ddp_prefixed_pretrained_checkpoint_loads(world: Path, tmp_path: Path):
    prefixed = tmp_path / "ddp.pt"
    edit_checkpoint(world / "pretrained" / "uniter-tiny.pt", prefixed, "module")
    a = load_model(_opts(world, world / "pretrained" / "uniter-tiny.pt"), torch.device("cpu"))
    b = load_model(_opts(world, prefixed), torch.device("cpu"))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_img_db_of_another_size_than_the_checkpoint_is_refused(trained_run: Path, tmp_path: Path, world: Path):
    from itr_common.synthetic import generate_world, preset, write_world
    from itr_iais.inf_itm import main

    other = tmp_path / "world16"
    write_world(generate_world(preset("tiny", feat_dim=16)), other, layouts=("uniter",))
    out = tmp_path / "out"
    argv = _inf_argv(world, trained_run / "ckpt" / "model_step_4.pt", out)
    argv[argv.index("--img_db") + 1] = str(other / "img_db" / "flickr30k")
    check_usage_error(main, argv, "region feature size", "16", "(img_dim) 32", untouched=[out])


def test_result_set_is_replaced_whole_or_not_at_all(trained_run: Path, world: Path, tmp_path: Path, monkeypatch):
    """Issue 9: inf_itm wrote config.json/scores.json non-atomically and could leave a stray temp file and a
    mix of old and new files. A failure while writing the new set leaves the old set untouched, nothing else."""
    from itr_iais import inf_itm

    out = tmp_path / "out"
    start = time.perf_counter()
    assert inf_itm.main(_inf_argv(world, trained_run / "ckpt" / "model_step_4.pt", out)) == 0
    wall = time.perf_counter() - start
    extras = json.loads((out / "retrieval_result.json").read_text())["extras"]
    # the scoring of every pair only (model loading and db opening excluded), per query of both directions
    assert extras["latency_ms_per_query"] > 0 and 0 < extras["compute_s"] < wall
    names = sorted(p.name for p in out.iterdir())
    assert names == ["config.json", "results.bin", "results.npz", "retrieval_result.json", "scores.json"]
    before = tree_listing(out)
    old = {name: (out / name).read_bytes() for name in names}

    def full_disk(self, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(inf_itm.RetrievalResult, "write_json", full_disk)
    with pytest.raises(OSError, match="No space left"):
        inf_itm.main(_inf_argv(world, trained_run / "ckpt" / "model_step_4.pt", out, "--batch_size", "5"))
    assert tree_listing(out) == before and {n: (out / n).read_bytes() for n in names} == old
    monkeypatch.undo()
    assert inf_itm.main(_inf_argv(world, trained_run / "ckpt" / "model_step_4.pt", out, "--batch_size", "5")) == 0
    assert json.loads((out / "config.json").read_text())["batch_size"] == 5
    assert sorted(p.name for p in out.iterdir()) == names  # no staging folder or temp file left


@pytest.mark.slow
def test_console_scripts_exit_0_through_the_installed_entry_points(world: Path, tmp_path: Path):
    """``iais-train-itm``, ``iais-inf-itm`` and ``iais-reproduce`` as a user runs them: status 0, no repr."""
    run = tmp_path / "run"
    check_console_script("iais-train-itm", train_argv(world, run, "--num_train_steps", "2", "--valid_steps", "2",
                                                      "--train_batch_size", "1", "--warmup_steps", "1"))
    final = run / "ckpt" / "model_step_2_final.pt"
    out = check_console_script("iais-inf-itm", _inf_argv(world, final, tmp_path / "inf"))
    assert "image retrieval R1" in out.stdout and (tmp_path / "inf" / "scores.json").is_file()
    out = check_console_script("iais-reproduce", ["--checkpoint", str(final), "--data_root", str(world),
                                                  "--model_config", str(world / "pretrained" / "uniter-tiny.json"),
                                                  "--output_dir", str(tmp_path / "repro")])
    assert "measured" in out.stdout


def test_a_training_state_given_as_checkpoint_is_one_line(trained_run: Path, world: Path, tmp_path: Path):
    """Issue 9: a checkpoint holding something else than a UNITER state dict gave a traceback."""
    from itr_iais.inf_itm import main

    out = tmp_path / "out"
    check_usage_error(main, _inf_argv(world, trained_run / "ckpt" / "train_state_4.pt", out), "train_state_4.pt",
                      "expected a state dict of tensors", untouched=[out])


def test_checkpoints_follow_the_umask_and_leave_no_temporary_files(trained_run):
    """Every file the training writes is readable as any new file under this umask (none through a 0600
    ``mkstemp`` copy) and no atomic write leaves its ``.tmp`` behind."""
    check_saved_files(trained_run / "ckpt", ["model_step_2.pt", "train_state_2.pt", "model_step_4.pt",
                                             "train_state_4.pt", "model_step_4_final.pt"])
    check_saved_files(trained_run / "results_test", ["scores.json", "retrieval_result.json"])
    check_saved_files(trained_run / "log", ["hps.json", "model.json", "log.txt"])
