"""The conformance kit (itr_common.testing) on a toy training command: each check passes on a
conforming command and fails, naming the problem, on a non-conforming one."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

from itr_common.checkpoint import load_checkpoint, load_state_dict_mapped, save_atomic
from itr_common.errors import exit_status
from itr_common.testing import (
    ConformanceError,
    assert_same_tensors,
    check_checkpoint_round_trip,
    check_console_script,
    check_learns,
    check_resume_exact,
    check_sigterm_message,
    check_two_process_resume_exact,
    check_usage_error,
    edit_checkpoint,
    invoke,
    state_dicts_in,
    stderr_report,
)

TOY = Path(__file__).resolve().parent / "toy_cli.py"
TOY_CMD = [sys.executable, str(TOY)]
TOY_DIST_CMD = [sys.executable, str(TOY.parent / "toy_dist.py")]
sys.path.insert(0, str(TOY.parent))

import toy_cli  # noqa: E402


def test_cli_entry_turns_a_returned_result_into_status_0():
    assert exit_status(None) is None and exit_status(3) == 3 and exit_status({"loss": 1.0}) == 0
    assert exit_status(True) == 0  # a bool is a result, not a status


def test_usage_error_in_process_and_in_a_subprocess(tmp_path):
    out = tmp_path / "run"
    line = check_usage_error(toy_cli.main, ["--out", out, "--lr", "nan"], "--lr", "nan", untouched=[out])
    assert line.startswith("error: ")
    check_usage_error(TOY_CMD, ["--out", out, "--lr", "-1"], "--lr", "-1", untouched=[out])
    check_usage_error(TOY_CMD, ["--out", out, "--stepz", "3"], "--steps", untouched=[out])  # did you mean


def test_usage_error_check_fails_when_the_command_does_work_first(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ConformanceError, match="exit status 2"):
        check_usage_error(toy_cli.main, ["--out", out, "--steps", "2"], "--lr")  # succeeds: status 0
    busy = tmp_path / "busy"
    busy.mkdir()

    def writes_then_fails(argv):
        (busy / "partial.txt").write_text("x")
        return toy_cli.main(argv)

    with pytest.raises(ConformanceError, match="before any work.*partial.txt"):
        check_usage_error(writes_then_fails, ["--out", out, "--lr", "0"], "--lr", untouched=[busy])


@pytest.mark.slow
def test_resume_after_sigterm_is_exact_for_the_toy(tmp_path):
    def command(run: Path, resume: bool) -> list[str]:
        return [*TOY_CMD, "--out", str(run), "--steps", "400", "--step_sleep", "0.004", *(["--resume"] * resume)]

    check = check_resume_exact(command, tmp_path, final="final.pt", kill_when="last.pt",
                               resume_evidence=r"resumed at step \d+", select=lambda s: (s["model"], s["optimizer"]))
    assert check.killed_status == 143
    assert load_checkpoint(check.resumed)["step"] == 400


@pytest.mark.slow
def test_resume_check_catches_a_resume_that_forgets_the_rng(tmp_path):
    def command(run: Path, resume: bool) -> list[str]:
        return [*TOY_CMD, "--out", str(run), "--steps", "200", "--step_sleep", "0.004",
                *(["--resume", "--forget_rng"] * resume)]

    with pytest.raises(ConformanceError, match="final state.*tensors differ"):
        check_resume_exact(command, tmp_path, final="final.pt", kill_when="last.pt", resume_evidence="resumed")


def test_resume_check_catches_a_save_on_signal_that_says_nothing(tmp_path):
    """Status 143 and an exact resume are not enough: the killed run must say what it saved, in the words every
    trainer shares (SaveOnSignal.announce)."""
    def command(run: Path, resume: bool) -> list[str]:
        return [*TOY_CMD, "--out", str(run), "--steps", "400", "--step_sleep", "0.004", "--silent_save",
                *(["--resume"] * resume)]

    with pytest.raises(ConformanceError, match="killed run: expected .SIGTERM received: saved <file> .... on stderr"):
        check_resume_exact(command, tmp_path, final="final.pt", kill_when="last.pt", resume_evidence="resumed")


def _toy_dist(run: Path, resume: bool, *extra: str, always: tuple[str, ...] = ()) -> list[str]:
    return [*TOY_DIST_CMD, "--out", str(run), "--steps", "30", *always, *(["--resume", *extra] if resume else [])]


def _signal_saves(log: Path) -> dict[int, int]:
    """``{rank: step}`` each rank saved on the signal, from the killed run's log."""
    found = re.findall(r"SIGTERM received: saved \S+ at step (\d+) \(rank (\d+)\)", log.read_text())
    return {int(rank): int(step) for step, rank in found}


@pytest.mark.slow
@pytest.mark.dist
@pytest.mark.parametrize("signal_ranks", [None, (1,)], ids=["both", "rank1-only"])
def test_two_process_mid_run_kill_resumes_exactly_for_the_toy(tmp_path, signal_ranks):
    """Killed while stepping (rank 0 sleeps inside its step, rank 1 between steps): the ranks agree at a step
    boundary and save the same step, also when only rank 1 gets the signal; the resume ends bit-identical."""
    sleepy = ("--step_sleep", "0.03", "--pause", "0.1")
    check = check_two_process_resume_exact(
        lambda run, resume: _toy_dist(run, resume, always=sleepy), tmp_path, final="final.pt",
        kill_when="last.rank1.pt", kill_delay_s=0.15, signal_ranks=signal_ranks, rank_files="last.rank1.pt",
        resume_evidence=r"rank 1 resumed at step (1[1-9]|2\d)", select=lambda s: (s["model"], s["optimizer"]))
    saves = _signal_saves(tmp_path / "killed.log")
    assert set(saves) == {0, 1} and saves[0] == saves[1], saves
    assert load_checkpoint(check.resumed)["step"] == 30


@pytest.mark.slow
@pytest.mark.dist
def test_two_process_resume_check_catches_rank_0_rng_on_every_rank(tmp_path):
    with pytest.raises(ConformanceError, match="final state.*tensors differ"):
        check_two_process_resume_exact(
            lambda run, resume: _toy_dist(run, resume, "--rank0_rng"), tmp_path, final="final.pt",
            kill_on_output="pause at step 10", rank_files="last.rank1.pt", resume_evidence="resumed at step 10")


def test_tensor_comparison_names_the_first_difference():
    a = {"model": [{"w": torch.zeros(2)}], "step": 3}
    assert_same_tensors(a, {"model": [{"w": torch.zeros(2)}], "step": 3})
    with pytest.raises(ConformanceError, match=r"model\[0\]\.w: tensors differ \(max abs difference 1\)"):
        assert_same_tensors(a, {"model": [{"w": torch.tensor([0.0, 1.0])}], "step": 3})
    with pytest.raises(ConformanceError, match="missing"):
        assert_same_tensors(a, {"model": [{}], "step": 3})


def test_stderr_report_lifts_a_worker_s_reason_above_torchrun_s_summary():
    stderr = "\n".join(["rank 1 pause at step 20", "terminate called after throwing an instance of 'gloo::IoException'",
                         "  what():  [../gloo/transport/tcp/pair.cc:534] Connection closed by peer", *["x" * 80] * 40,
                         "    exitcode  : -6 (pid: 9704)  (SIGABRT)"])
    report = stderr_report(stderr, 200)
    reasons, tail = report.split("...", 1)
    assert "terminate called" in reasons and "Connection closed by peer" in reasons and "step 20" not in reasons
    assert tail == stderr[-200:]
    assert stderr_report("all fine", 200) == "...all fine"


def _toy_save(model, path):
    save_atomic({"model": model.state_dict(), "epoch": 1}, path)


def _toy_load(path, strict=True):
    model, _ = toy_cli.build(0.1)
    load_state_dict_mapped(model, load_checkpoint(path)["model"], strict=strict, source=str(path))
    return model


def test_checkpoint_round_trip_strict_loader_passes(tmp_path):
    model, _ = toy_cli.build(0.1)
    with torch.no_grad():
        model[0].weight.add_(1.0)  # not the initial weights: the round trip must carry them
    check_checkpoint_round_trip(model, _toy_save, _toy_load, tmp_path)
    assert [w for w, _ in state_dicts_in(load_checkpoint(tmp_path / "ddp.ckpt"))] == ["model"]
    assert all(k.startswith("module.") for k in load_checkpoint(tmp_path / "ddp.ckpt")["model"])


def test_checkpoint_round_trip_catches_a_lenient_loader(tmp_path):
    model, _ = toy_cli.build(0.1)
    with pytest.raises(ConformanceError, match="expected the load to be refused"):
        check_checkpoint_round_trip(model, _toy_save, lambda p: _toy_load(p, strict=False), tmp_path)


def test_edit_checkpoint_drops_and_adds_keys(tmp_path):
    model, _ = toy_cli.build(0.1)
    _toy_save(model, tmp_path / "a.ckpt")
    dropped = edit_checkpoint(tmp_path / "a.ckpt", tmp_path / "b.ckpt", "missing", key="0.bias")
    assert dropped == "0.bias" and "0.bias" not in load_checkpoint(tmp_path / "b.ckpt")["model"]
    added = edit_checkpoint(tmp_path / "a.ckpt", tmp_path / "c.ckpt", "unexpected")
    assert added.endswith("_unexpected") and added in load_checkpoint(tmp_path / "c.ckpt")["model"]


def test_console_script_check_runs_the_installed_entry_point(tmp_path):
    from itr_common.metrics import RetrievalResult

    RetrievalResult((50.0, 80.0, 90.0, 2.0, 3.0), (40.0, 70.0, 80.0, 2.0, 4.0), "1k").write_json(tmp_path / "r.json")
    outcome = check_console_script("itr-results", [str(tmp_path)])
    assert "410.00" in outcome.stdout
    with pytest.raises(ConformanceError, match="not in any installed package"):
        check_console_script("no-such-script-anywhere")


def test_a_main_returning_a_result_exits_0_as_a_script(tmp_path):
    outcome = invoke(TOY_CMD, ["--out", tmp_path / "run", "--steps", "3"])
    assert outcome.code == 0 and "{" not in outcome.stderr, outcome.tail()
    in_process = invoke(toy_cli.main, ["--out", tmp_path / "run2", "--steps", "3"])
    assert in_process.code == 0 and in_process.returned == 0


def test_sigterm_during_startup_prints_a_message_and_exits_143(tmp_path):
    started = tmp_path / "started"
    command = [*TOY_CMD, "--out", str(tmp_path / "run"), "--started", str(started), "--startup_sleep", "60"]
    outcome = check_sigterm_message(command, when=started.exists)
    assert outcome.lines()[-1] == "terminated by SIGTERM"


def test_check_learns_compares_real_and_shuffled_with_chance(tmp_path):
    results = {"real": 250.0, "shuffled": 70.0}

    def fake(world, run):  # a stand-in for a package's train + evaluate
        return {"rsum": results[world.name]}

    worlds = {"real": tmp_path / "real", "shuffled": tmp_path / "shuffled"}
    check = check_learns(fake, worlds, tmp_path / "runs", n_images=50)
    assert round(check.chance, 1) == 62.0 or abs(check.chance - 62) < 2
    results["shuffled"] = 200.0
    with pytest.raises(ConformanceError, match="shuffled-pair rsum"):
        check_learns(fake, worlds, tmp_path / "runs", n_images=50)


def test_check_learns_from_command_lines(tmp_path):
    """cli_train_and_evaluate: train and evaluate commands in subprocesses, the result JSON read back."""
    from itr_common.testing import cli_train_and_evaluate

    write = ("import sys; from itr_common.metrics import RetrievalResult as R; good = sys.argv[1] == 'real'; "
             "v = (60.0, 90.0, 95.0, 1.0, 2.0) if good else (2.0, 10.0, 20.0, 25.0, 25.0); "
             "R(v, v, '1k').write_json(sys.argv[2])")

    def train(world, run):
        return [sys.executable, "-c", "import sys, pathlib; pathlib.Path(sys.argv[1]).mkdir(parents=True)", str(run)]

    def evaluate(world, run):
        return [sys.executable, "-c", write, world.name, str(run / "result.json")]

    run = cli_train_and_evaluate(train, evaluate, lambda run: run / "result.json")
    worlds = {"real": tmp_path / "real", "shuffled": tmp_path / "shuffled"}
    check = check_learns(run, worlds, tmp_path / "runs", n_images=50)
    assert check.real == 490.0 and check.shuffled == 64.0


def test_save_with_best_and_the_saved_files_check(tmp_path):
    """save_with_best writes the checkpoint and a copy with the umask's mode; check_saved_files catches a 0600 copy
    (what SelfAlign's mkstemp copy made), a missing file and a leftover temporary file."""
    import os

    from itr_common.checkpoint import save_with_best
    from itr_common.testing import check_saved_files

    state = {"w": torch.arange(4.0)}
    written = []
    path = save_with_best(state, True, tmp_path, save=lambda obj, p: written.append(save_atomic(obj, p)))
    assert path == tmp_path / "checkpoint.pth.tar" and written == [path]
    assert_same_tensors(state, load_checkpoint(tmp_path / "model_best.pth.tar"))
    check_saved_files(tmp_path, ["checkpoint.pth.tar", "model_best.pth.tar"])

    save_with_best({"w": torch.zeros(4)}, False, tmp_path)  # not the best: the copy stays the earlier one
    assert_same_tensors(state, load_checkpoint(tmp_path / "model_best.pth.tar"))

    os.chmod(tmp_path / "model_best.pth.tar", 0o600)
    with pytest.raises(ConformanceError, match=r"model_best.pth.tar': '0o600'"):
        check_saved_files(tmp_path, ["checkpoint.pth.tar", "model_best.pth.tar"])
    with pytest.raises(ConformanceError, match="'last.pth.tar': 'missing'"):
        check_saved_files(tmp_path, ["checkpoint.pth.tar", "last.pth.tar"])
    (tmp_path / ".checkpoint.pth.tar.x.tmp").write_bytes(b"")
    with pytest.raises(ConformanceError, match="no temporary files"):
        check_saved_files(tmp_path, ["checkpoint.pth.tar"])


PACKAGES_ROOT = Path(__file__).resolve().parents[2]
PAPER_PACKAGES = sorted(p.name for p in PACKAGES_ROOT.iterdir() if (p / "tests").is_dir() and p.name != "common")
"""Every paper package of this checkout (a new one is held to the kit as soon as it has tests)."""


def test_the_five_paper_packages_are_found():
    assert PAPER_PACKAGES == ["aladin", "dime", "iais", "lightningdot", "selfalign"]


@pytest.mark.parametrize("package", PAPER_PACKAGES)
def test_every_paper_package_runs_every_check_of_the_kit(package):
    """What every package must prove the same way is proved by each: its tests call every ``check_*`` of the kit
    (learns, kill + resume in one and two processes, checkpoint keys, saved files, bad input, SIGTERM, scripts)."""
    from itr_common.testing import conformance

    source = "\n".join(p.read_text(encoding="utf-8") for p in sorted((PACKAGES_ROOT / package / "tests").glob("*.py")))
    checks = [name for name in conformance.__all__ if name.startswith("check_")]
    missing = [name for name in checks if not re.search(rf"\b{name}\(", source)]
    assert not missing, f"{package}/tests never calls {missing}"
