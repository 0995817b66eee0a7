"""Training-loop details of the originals: the CAMERA+SelfAlign prototypes stay frozen (only renormalised) during
epoch 0 and move afterwards, the VSRN variant's move from the first step; a resume must match --selfalign; SIGTERM
as the run starts exits 143 with a message."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from selfalign_testlib import PYTHON, VARIANT_DIRS, train_argv

import itr_selfalign.losses
from itr_common.checkpoint import load_checkpoint
from itr_common.testing import check_sigterm_message, check_usage_error
from itr_selfalign.models import build_model, read_vocab
from itr_selfalign.options import parse_train_args
from itr_selfalign.train import main_camera, run


def _initial_prototypes(variant, opt):
    torch.manual_seed(opt.seed)  # what the trainer does right before building the model
    if variant == "vsrn":
        opt.vocab_size = len(read_vocab(opt))
    return build_model(variant, opt).region_loss.v_prototypes.weight.detach().clone()


def test_camera_prototypes_frozen_in_epoch_0_only(world, tmp_path):
    for variant, epochs in (("camera", "1"), ("camera", "2"), ("vsrn", "1")):
        out = tmp_path / f"{variant}{epochs}"
        opt = parse_train_args(variant, train_argv(variant, world, out, "--num_epochs", epochs, "--batch_size", "16",
                                                   "--learning_rate", "1e-3"))
        initial = _initial_prototypes(variant, parse_train_args(variant, train_argv(variant, world, out)))
        run(variant, opt)
        saved = load_checkpoint(out / "checkpoint.pth.tar")["model"][2]["v_prototypes.weight"]
        frozen = torch.allclose(saved, F.normalize(initial, dim=1), atol=1e-6)
        assert frozen == (variant == "camera" and epochs == "1"), (variant, epochs)


def test_resume_must_match_the_selfalign_switch(world, tmp_path):
    out = tmp_path / "base"
    run("camera", parse_train_args("camera", train_argv("camera", world, out, "--num_epochs", "1", "--batch_size",
                                                        "32", "--selfalign", "0")))
    again = tmp_path / "again"
    check_usage_error(main_camera, [*train_argv("camera", world, again), "--resume", str(out / "checkpoint.pth.tar")],
                      "--selfalign 1", "base", untouched=[again])


def test_sum_violation_epochs_warm_up_both_variants(world, tmp_path, monkeypatch):
    seen: list[bool] = []
    loss = itr_selfalign.losses.contrastive_loss

    def recording(scores, margin, max_violation):
        seen.append(max_violation)
        return loss(scores, margin, max_violation)

    monkeypatch.setattr(itr_selfalign.losses, "contrastive_loss", recording)
    for variant in ("camera", "vsrn"):
        seen.clear()
        run(variant, parse_train_args(variant, train_argv(variant, world, tmp_path / variant, "--num_epochs", "2",
                                                          "--batch_size", "48", "--sum_violation_epochs", "1")))
        half = len(seen) // 2
        assert half > 0 and seen == [False] * half + [True] * half, variant


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["camera", "vsrn"])
def test_sigterm_as_the_run_starts_exits_143_with_a_message(world, tmp_path, variant):
    """SIGTERM as soon as the run folder exists: status 143 and a line naming the signal, never a silent -15 or a
    traceback; once the training loop is reached (where it usually lands) the line names the checkpoint it saved,
    which exists, so ``--resume`` has something to continue from."""
    run = tmp_path / "run"
    command = [PYTHON, "train.py", *train_argv(variant, world, run, "--num_epochs", "1")]
    outcome = check_sigterm_message(command, when=run.exists, cwd=VARIANT_DIRS[variant])
    assert "Traceback" not in outcome.stderr
    if "SIGTERM received: saved" in outcome.stderr:
        assert (run / "checkpoint.pth.tar").is_file()
    else:  # before the training loop
        assert "terminated by SIGTERM" in outcome.stderr, outcome.stderr[-1000:]
