"""Training and inference end to end on the tiny world: outputs, checkpoint format, resume, SIGTERM."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import torch
from iais_testlib import QUICK, train_argv, train_command

from itr_common.checkpoint import load_checkpoint
from itr_common.models.uniter import UniterConfig
from itr_common.testing import check_resume_exact, check_sigterm_message, check_usage_error
from itr_iais.evaluate import ORIGINAL_KEYS
from itr_iais.model import UniterForImageTextRetrievalHardNeg
from itr_iais.options import parse_train_args
from itr_iais.results_io import load_results


def test_outputs_follow_the_original_layout(trained_run: Path):
    log, ckpt = trained_run / "log", trained_run / "ckpt"
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "model_step_2.pt", "model_step_4.pt", "model_step_4_final.pt", "train_state_2.pt", "train_state_4.pt"]
    hps = json.loads((log / "hps.json").read_text())
    assert hps["IAIS"] == "singular" and hps["negative_size"] == 15 and hps["hard_neg_size"] == 7
    assert json.loads((log / "model.json").read_text())["hidden_size"] == 64
    assert "Running training" in (log / "log.txt").read_text()
    assert any(p.name.startswith("events.out.tfevents") for p in log.iterdir())
    scores = json.loads((trained_run / "results_test" / "scores.json").read_text())
    assert list(scores) == list(ORIGINAL_KEYS)
    result = json.loads((trained_run / "results_test" / "retrieval_result.json").read_text())
    assert result["protocol"] == "f30k" and result["n_images"] == 20 and result["n_captions"] == 100


def test_checkpoint_is_a_plain_state_dict_with_original_keys(trained_run: Path, world: Path):
    state = load_checkpoint(trained_run / "ckpt" / "model_step_4.pt")
    config = UniterConfig.from_json_file(world / "pretrained" / "uniter-tiny.json", img_dim=32)
    model = UniterForImageTextRetrievalHardNeg(config)
    assert list(state) == list(model.state_dict())  # same names, same order
    model.load_state_dict(state, strict=True)
    # as the original's aliasing leaves it: itm_output row 1 equals the trained ranking head
    assert torch.equal(state["itm_output.weight"][1], state["rank_output.weight"][0])
    train_state = load_checkpoint(trained_run / "ckpt" / "train_state_4.pt")
    assert train_state["step"] == 4 and "optimizer" in train_state and "rng" in train_state


def test_inference_writes_original_files_and_matches_training_eval(trained_run: Path, world: Path, tmp_path: Path):
    from itr_iais.inf_itm import main

    out = tmp_path / "inf"
    argv = ["--txt_db", str(world / "txt_db" / "itm_flickr30k_test.db"),
            "--img_db", str(world / "img_db" / "flickr30k"),
            "--checkpoint", str(trained_run / "ckpt" / "model_step_4_final.pt"),
            "--model_config", str(world / "pretrained" / "uniter-tiny.json"), "--output_dir", str(out),
            "--train_config", str(trained_run / "log" / "hps.json"), "--batch_size", "7"]
    assert main(argv) == 0
    assert {p.name for p in out.iterdir()} >= {"config.json", "results.bin", "results.npz", "scores.json",
                                               "retrieval_result.json"}
    assert json.loads((out / "config.json").read_text())["batch_size"] == 7
    scores = json.loads((out / "scores.json").read_text())
    trained = json.loads((trained_run / "results_test" / "scores.json").read_text())
    assert scores == pytest.approx(trained, abs=1e-9)  # same weights, blocks of 7 vs 16 images
    matrix, txt_ids, img_ids = load_results(out / "results.bin")  # restricted unpickler
    safe = load_results(out)  # results.npz
    assert matrix.shape == (100, 20) and torch.allclose(matrix, safe[0]) and txt_ids == safe[1] and img_ids == safe[2]


def test_resume_continues_from_the_last_train_state(trained_run: Path, world: Path, tmp_path: Path, capsys):
    from itr_iais.train_itm_hard_negatives import main

    out = tmp_path / "resumed"
    out.mkdir()
    (out / "ckpt").mkdir()
    for name in ("model_step_2.pt", "train_state_2.pt"):  # a run killed after update 2
        (out / "ckpt" / name).write_bytes((trained_run / "ckpt" / name).read_bytes())
    assert main(train_argv(world, out, *QUICK, "--IAIS", "singular", "--resume")) == 0
    assert "resumed from" in (out / "log" / "log.txt").read_text()
    assert (out / "ckpt" / "model_step_4.pt").is_file() and (out / "ckpt" / "model_step_4_final.pt").is_file()
    assert json.loads((out / "ckpt" / "..").joinpath("log", "hps.json").read_text())["resume"] is True


def test_the_last_update_is_saved_before_the_final_evaluations(world: Path, tmp_path: Path):
    """5 updates with validations at 2 and 4: update 5's train state is written before the final validation and
    test evaluation, so a run killed during them (torchrun SIGKILLs after its grace period) resumes with the
    evaluations only: the same final weights and the same test scores, no update trained again."""
    from itr_iais.train_itm_hard_negatives import main

    flags = ("--num_train_steps", "5", "--valid_steps", "2", "--train_batch_size", "1", "--warmup_steps", "1")
    full = tmp_path / "full"
    assert main(train_argv(world, full, *flags)) == 0
    ckpt = full / "ckpt"
    assert sorted(p.name for p in ckpt.glob("train_state_*.pt")) == [
        "train_state_2.pt", "train_state_4.pt", "train_state_5.pt"]
    killed = tmp_path / "killed"  # what a kill during the final evaluations leaves
    (killed / "ckpt").mkdir(parents=True)
    for name in ("model_step_5.pt", "train_state_5.pt"):
        (killed / "ckpt" / name).write_bytes((ckpt / name).read_bytes())
    assert main(train_argv(world, killed, *flags, "--resume")) == 0
    log = (killed / "log" / "log.txt").read_text()
    assert "at update 5" in log and "Running training" in log
    assert sorted(p.name for p in (killed / "ckpt").iterdir()) == [
        "model_step_5.pt", "model_step_5_final.pt", "train_state_5.pt"]  # nothing trained, nothing saved again
    final, resumed = (load_checkpoint(run / "ckpt" / "model_step_5_final.pt") for run in (full, killed))
    assert all(torch.equal(final[k], resumed[k]) for k in final)
    scores = [json.loads((run / "results_test" / "scores.json").read_text()) for run in (full, killed)]
    assert scores[0] == scores[1]


@pytest.mark.slow
def test_kill_and_resume_ends_with_the_same_weights(world: Path, tmp_path: Path):
    """Issue 9: ``train_itm_hard_negatives.py`` killed by SIGTERM (while gradients are being accumulated,
    after its first checkpoint) and resumed ends with the same weights, bit for bit, as the run left alone:
    the negatives, both group streams' order and position, the RNG and the accumulation restart exactly."""
    flags = ("--num_train_steps", "24", "--valid_steps", "6", "--train_batch_size", "2", "--warmup_steps", "2",
             "--IAIS", "singular")

    def command(run: Path, resume: bool) -> list[str]:
        return train_command(world, run, *flags, *(["--resume"] if resume else []))

    check = check_resume_exact(command, tmp_path, final="ckpt/model_step_24_final.pt",
                               kill_when="ckpt/train_state_6.pt", resume_evidence=r"resumed from .* at update \d+")
    assert check.killed_status == 143
    killed_states = sorted((tmp_path / "killed" / "ckpt").glob("train_state_*.pt"))
    assert len(killed_states) >= 2  # the periodic one and the one saved on SIGTERM (or a later periodic one)


@pytest.mark.slow
def test_sigterm_during_startup_says_so_and_leaves_nothing(world: Path, tmp_path: Path):
    out = tmp_path / "killed"
    command = train_command(world, out, "--num_train_steps", "100000", "--valid_steps", "100000")
    outcome = check_sigterm_message(command, when=(out / "log" / "log.txt").exists)
    assert outcome.code == 143
    if "terminated by SIGTERM" in outcome.stderr:  # before the first checkpoint: nothing blocks a rerun
        assert not out.exists() or not any(out.iterdir()), sorted(p.name for p in out.rglob("*"))
    else:  # the training loop was reached: it saved a checkpoint to --resume from
        assert list((out / "ckpt").glob("train_state_*.pt"))


@pytest.mark.slow
def test_sigterm_during_training_saves_and_says_so(world: Path, tmp_path: Path):
    """SIGTERM in the training loop (after the checkpoint at update 2): the update boundary is saved and one line
    names the signal, the file and --resume (the save used to be silent: status 143 and nothing said)."""
    out = tmp_path / "killed"
    command = train_command(world, out, "--num_train_steps", "100000", "--valid_steps", "2")
    outcome = check_sigterm_message(command, when=(out / "ckpt" / "train_state_2.pt").exists)
    line = next(x for x in outcome.stderr.splitlines() if "SIGTERM received: saved" in x)
    step = int(re.search(r"at update (\d+)", line).group(1))
    assert f"train_state_{step}.pt" in line and "continue with --resume" in line
    assert (out / "ckpt" / f"train_state_{step}.pt").is_file()


def test_a_run_failing_before_its_first_checkpoint_leaves_nothing(world: Path, tmp_path: Path, monkeypatch):
    """Issue 9: a failed run left output_dir/log/ behind and the next plain run was refused as not empty."""
    from itr_iais import train_itm_hard_negatives as tr

    def explode(self, *args, **kwargs):
        raise RuntimeError("out of memory (simulated)")

    out = tmp_path / "out"
    monkeypatch.setattr(tr.Trainer, "group_loss", explode)
    with pytest.raises(RuntimeError, match="simulated"):
        tr.run(parse_train_args(train_argv(world, out, *QUICK)))
    assert not out.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(RuntimeError, match="simulated"):
        tr.run(parse_train_args(train_argv(world, existing, *QUICK)))
    assert existing.is_dir() and not any(existing.iterdir())  # created before the run: kept, emptied of its files
    monkeypatch.undo()
    assert tr.main(train_argv(world, out, *QUICK)) == 0  # the plain rerun is not refused


def test_val_img_db_of_another_feature_size_is_refused_at_start(world: Path, tmp_path: Path):
    """Issue 9: features of another size in the dev split crashed at the first validation (after an epoch)."""
    from itr_common.synthetic import generate_world, preset, write_world
    from itr_iais.train_itm_hard_negatives import main

    other = tmp_path / "world16"
    write_world(generate_world(preset("tiny", feat_dim=16)), other, layouts=("uniter",))
    img16 = other / "img_db" / "flickr30k"
    out = tmp_path / "o"
    check_usage_error(main, train_argv(world, out, "--val_img_db", str(img16)), "region feature size",
                      f"val_img_db {img16} 16", "train_img_dbs", "32", untouched=[out])


def test_reproduce_prints_measured_beside_paper(trained_run: Path, world: Path, tmp_path: Path, capsys):
    from itr_iais.reproduce import main

    start = time.perf_counter()
    assert main(["--checkpoint", str(trained_run / "ckpt" / "model_step_4_final.pt"), "--data_root", str(world),
                 "--model_config", str(world / "pretrained" / "uniter-tiny.json"),
                 "--output_dir", str(tmp_path / "repro")]) == 0
    wall = time.perf_counter() - start
    out = capsys.readouterr().out
    assert "measured" in out and "88.30" in out and "unverified" in out
    extras = json.loads((tmp_path / "repro" / "retrieval_result.json").read_text())["extras"]
    # inf_itm's own scoring time (model loaded, dbs open), spread over the 20 + 100 queries
    assert extras["latency_ms_per_query"] > 0 and 0 < extras["compute_s"] < wall
    assert extras["latency_ms_per_query"] == pytest.approx(1000 * extras["compute_s"] / 120)


def test_pretrain_itm_writes_a_uniter_base_style_checkpoint(world: Path, tmp_path: Path):
    from itr_iais.pretrain_itm import main

    out = tmp_path / "itm.pt"
    assert main(["--txt_db", str(world / "txt_db" / "itm_flickr30k_train.db"),
                 "--img_db", str(world / "img_db" / "flickr30k"),
                 "--model_config", str(world / "pretrained" / "uniter-tiny.json"), "--output", str(out),
                 "--num_train_steps", "3", "--train_batch_size", "4"]) == 0
    state = load_checkpoint(out)
    reference = load_checkpoint(world / "pretrained" / "uniter-tiny.pt")
    heads = ("cls.", "feat_regress.", "region_classifier.")
    assert set(state) == {k for k in reference if not k.startswith(heads)}
    assert all(state[k].shape == reference[k].shape for k in state)
