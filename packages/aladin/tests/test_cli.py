"""The README's commands end to end (in-process and as console scripts), the labelled protocols, bad input
(exit 2, one line, nothing written) and --resume after a kill."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from aladin_testlib import ALAD_DIR, PYTHON, config_path, data_flags, eval_argv, train_argv

from itr_aladin.test import main as run_test_py
from itr_aladin.train import main as run_train_py
from itr_common.testing import (
    check_console_script,
    check_resume_exact,
    check_saved_files,
    check_sigterm_message,
    check_usage_error,
    invoke,
)


def test_test_py_labels_both_heads_and_protocols(world, trained, tmp_path):
    out5k = tmp_path / "5k.json"
    start = time.perf_counter()
    run_test_py(eval_argv(world, trained, out5k))
    wall = time.perf_counter() - start
    record = json.loads(out5k.read_text())
    assert set(record["results"]) == {"matching", "alignment"}
    for head in ("matching", "alignment"):
        assert set(record["results"][head]) == {"coco-5k", "coco-1k-fold5"}
        assert record["results"][head]["coco-5k"]["n_images"] == 20
        assert "5K" in record["results"][head]["coco-5k"]["extras"]["protocol_label"]
        for result in record["results"][head].values():
            # each head's own latency: the shared encoding plus its scoring and ranking, loading excluded
            extras = result["extras"]
            assert extras["latency_ms_per_query"] > 0 and record["encode_s"] < extras["compute_s"] < wall
            assert extras["latency_ms_per_query"] == pytest.approx(1000 * extras["compute_s"] / 120)
    # without --out the JSON goes beside the checkpoint, not into the working folder
    default = trained.parent / "aladin_test_results.json"
    argv = eval_argv(world, trained, default, keys="test_img_keys_1k.tsv")
    run_test_py(argv[: argv.index("--out")])
    one_k = json.loads(default.read_text())["results"]["alignment"]["1k"]
    default.unlink()
    assert one_k["n_images"] == 4 and "test_img_keys_1k" in one_k["extras"]["protocol_label"]
    assert not (Path.cwd() / "aladin_test_results.json").exists()


def test_checkpoint_holds_the_original_keys(trained):
    from itr_aladin.train import read_aladin_checkpoint

    state = read_aladin_checkpoint(trained)
    assert {"epoch", "model", "optimizer", "scheduler", "opt", "config", "Eiters"} <= set(state)
    assert state["config"]["training"]["loss-type"] == "alignment-distillation"


@pytest.mark.slow
def test_console_script_and_original_script_name(world, trained, tmp_path):
    check_console_script("aladin-test", eval_argv(world, trained, tmp_path / "cs.json"))
    assert (tmp_path / "cs.json").is_file()
    check_console_script("aladin-train", ["--help"])
    assert (ALAD_DIR / "train.py").is_file() and (ALAD_DIR / "test.py").is_file()


@pytest.fixture
def world_copy(world, tmp_path) -> Path:
    target = tmp_path / "world"
    shutil.copytree(world, target)
    return target


def _first_train_row(world: Path) -> tuple[Path, int]:
    import torch

    first = next(iter(torch.load(world / "coco_ir" / "train_captions.pt")))
    mapping = json.loads((world / "features" / "imageid2idx.json").read_text())
    return world / "features" / "features.tsv", mapping[str(first)]


def _edit_row(path: Path, row: int, edit) -> None:
    lines = path.read_bytes().split(b"\n")
    fields = lines[row].split(b"\t")
    new = edit(fields)
    assert len(b"\t".join(new)) == len(lines[row])  # same length: the .lineidx stays valid
    lines[row] = b"\t".join(new)
    path.write_bytes(b"\n".join(lines))


def _bad_train(world: Path, run: Path, *needles: str, config: str = "alad-alignment-triplet", extra=()):
    return check_usage_error(run_train_py, train_argv(world, run, config, *extra), *needles, untouched=[run],
                             allow_notices=True)


def test_bad_base64_row(world_copy, tmp_path):
    tsv, row = _first_train_row(world_copy)
    _edit_row(tsv, row, lambda f: [f[0], f[1], b"!" + f[2][1:]])
    _bad_train(world_copy, tmp_path / "run", "features.tsv", f"row {row}", "base64")


def test_wrong_number_of_floats(world_copy, tmp_path):
    tsv, row = _first_train_row(world_copy)
    _edit_row(tsv, row, lambda f: [f[0], str(int(f[1]) - 1).encode().rjust(len(f[1]), b"0"), f[2]])
    _bad_train(world_copy, tmp_path / "run", "features.tsv", f"row {row}", "float32")


def test_lineidx_not_matching_the_tsv(world_copy, tmp_path):
    idx = world_copy / "features" / "features.lineidx"
    offsets = idx.read_text().split()
    offsets[1] = str(int(offsets[1]) + 3)
    idx.write_text("\n".join(offsets) + "\n")
    _bad_train(world_copy, tmp_path / "run", "features")


def test_image_missing_from_imageid2idx(world_copy, tmp_path):
    path = world_copy / "features" / "imageid2idx.json"
    mapping = json.loads(path.read_text())
    import torch

    first = next(iter(torch.load(world_copy / "coco_ir" / "train_captions.pt")))
    del mapping[str(first)]
    path.write_text(json.dumps(mapping))
    _bad_train(world_copy, tmp_path / "run", "imageid2idx.json", str(first))


def test_yaml_unknown_key(world, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(config_path("alad-alignment-triplet").read_text().replace("grad-clip", "grad-clipping"))
    argv = [*data_flags(world), "--config", str(bad), "--logger_name", str(tmp_path / "run")]
    check_usage_error(run_train_py, argv, "grad-clipping", "did you mean 'grad-clip'", untouched=[tmp_path / "run"],
                      allow_notices=True)


def test_embed_size_other_than_the_backbone_is_one_line_before_any_work(world, tmp_path):
    # a full-size config (embed-size 768) on the tiny backbone (hidden 64): refused before --logger_name is made
    run = tmp_path / "run"
    argv = [*data_flags(world), "--config", str(config_path("alad-alignment-triplet", tiny=False)), "--logger_name",
            str(run)]
    check_usage_error(run_train_py, argv, "embed-size", "hidden size 64", untouched=[run])


def test_max_seq_length_beyond_the_position_table(world, trained, tmp_path):
    run = tmp_path / "run"
    _bad_train(world, run, "--max_seq_length", "max_position_embeddings", extra=["--max_seq_length", "600"])
    check_usage_error(run_test_py, [*eval_argv(world, trained, tmp_path / "o" / "r.json"),
                                    "--max_seq_length", "513"], "--max_seq_length", untouched=[tmp_path / "o"])


def test_resume_from_a_file_that_is_not_a_checkpoint_before_any_work(world, tmp_path):
    junk = tmp_path / "junk.pth.tar"
    junk.write_bytes(b"not a checkpoint")
    run = tmp_path / "run"
    check_usage_error(run_train_py, train_argv(world, run, "alad-alignment-triplet", "--resume", str(junk)),
                      "junk.pth.tar", untouched=[run])


def test_checkpoint_dir_without_config_json(world_copy, tmp_path):
    (world_copy / "pretrained" / "checkpoint-0132780" / "config.json").unlink()
    _bad_train(world_copy, tmp_path / "run", "config.json")


def test_test_py_bad_checkpoint(world, tmp_path):
    junk = tmp_path / "junk.pth.tar"
    junk.write_bytes(b"not a checkpoint")
    check_usage_error(run_test_py, eval_argv(world, junk, tmp_path / "o.json"), "junk.pth.tar", allow_notices=True)


@pytest.mark.slow
def test_resume_after_sigterm_is_exact(world, tmp_path):
    def command(run: Path, resume: bool) -> list[str]:
        argv = train_argv(world, run, "alad-alignment-and-matching-distill", "--val_step", "4", epochs=1)
        if resume:
            argv += ["--resume", str(run / "checkpoint.pth.tar")]
        return [PYTHON, str(ALAD_DIR / "train.py"), *argv]

    check_resume_exact(command, tmp_path, final="checkpoint.pth.tar", kill_when="checkpoint.pth.tar",
                       resume_evidence=r"loaded checkpoint .* \(epoch \d+, batch \d+\)", cwd=ALAD_DIR,
                       select=lambda state: {"model": state["model"], "optimizer": state["optimizer"]})


@pytest.mark.slow
def test_sigterm_in_training_saves_and_names_the_signal(world, tmp_path):
    run = tmp_path / "run"
    argv = train_argv(world, run, "alad-alignment-triplet", "--log_step", "1", epochs=3)
    outcome = check_sigterm_message([PYTHON, str(ALAD_DIR / "train.py"), *argv], cwd=ALAD_DIR,
                                    when=lambda: (run / "checkpoint.pth.tar").exists())
    assert "SIGTERM received: saved" in outcome.stderr and "continue with --resume" in outcome.stderr


def test_reproduce_prints_both_heads_beside_the_paper(world, trained, tmp_path, capsys):
    from itr_aladin.reproduce import main as reproduce

    out = tmp_path / "rep.json"
    reproduce([*data_flags(world), "--load_checkpoint", str(trained), "--out", str(out)])
    record = json.loads(out.read_text())
    assert set(record) == {f"{h}/{p}" for h in ("matching", "alignment") for p in ("1k", "coco-5k", "coco-1k-fold5")}
    assert record["matching/coco-5k"]["paper"] == {"i2t": [64.9, 88.6, 94.5], "t2i": [51.3, 79.2, 87.5]}
    printed = capsys.readouterr().out
    assert "paper (unverified)   64.9   88.6   94.5" in printed
    # rows the table does not hold (every 1K one) show dashes, never NaN
    assert "paper (unverified)      -      -      -" in printed and "nan" not in printed


def test_reinitialize_scheduler_restarts_steplr_from_the_yaml(world, trained, tmp_path):
    """--resume keeps the saved StepLR; with --reinitialize-scheduler its base lr is the YAML's again."""
    import torch

    from itr_aladin.options import parse_train_args
    from itr_aladin.train import Trainer, read_aladin_checkpoint
    from itr_common.dist import init_distributed

    state = read_aladin_checkpoint(trained)
    state["scheduler"]["base_lrs"] = [0.123]
    edited = tmp_path / "edited.pth.tar"
    torch.save(state, edited)
    dist = init_distributed(device="cpu")
    kept = Trainer(parse_train_args(train_argv(world, tmp_path / "a", "alad-alignment-and-matching-distill",
                                               "--resume", str(edited))), dist)
    fresh = Trainer(parse_train_args(train_argv(world, tmp_path / "b", "alad-alignment-and-matching-distill",
                                                "--resume", str(edited), "--reinitialize-scheduler")), dist)
    assert kept.scheduler.base_lrs == [0.123]
    assert fresh.scheduler.base_lrs == [pytest.approx(3e-4)]
    assert kept.start == fresh.start == (1, 0) and kept.model.Eiters == state["Eiters"]


def test_bad_row_found_by_a_loader_worker_is_one_line(world_copy, tmp_path):
    """A bad row that only a DataLoader worker reads (not the first image of a split) still ends in one line."""
    import torch

    keys = list(torch.load(world_copy / "coco_ir" / "train_captions.pt"))
    mapping = json.loads((world_copy / "features" / "imageid2idx.json").read_text())
    row = mapping[str(keys[5])]
    _edit_row(world_copy / "features" / "features.tsv", row, lambda f: [f[0], f[1], b"!" + f[2][1:]])
    argv = train_argv(world_copy, tmp_path / "run", "alad-alignment-triplet")
    argv[argv.index("--num_workers") + 1] = "1"
    outcome = invoke(run_train_py, argv)
    assert outcome.code == 2 and "Traceback" not in outcome.stderr, outcome.tail()
    last = outcome.lines()[-1]
    assert last.startswith("error: ") and f"row {row}" in last and "base64" in last


def test_checkpoint_round_trip_and_refusals(world, trained, tmp_path):
    """test.py's loader: same tensors back; a missing or an unexpected key refused by name; DDP's module. stripped."""
    import torch

    from itr_aladin.options import parse_test_args
    from itr_aladin.test import load_model
    from itr_aladin.train import read_aladin_checkpoint
    from itr_common.testing import check_checkpoint_round_trip

    config = read_aladin_checkpoint(trained)["config"]

    def load(path: Path):
        args = parse_test_args(eval_argv(world, path, tmp_path / "o.json"))
        return load_model(args)[0]

    def save(model, path: Path) -> None:
        torch.save({"model": model.state_dict(), "config": config, "epoch": 1, "Eiters": 1}, path)

    check_checkpoint_round_trip(load(trained), save, load, tmp_path / "rt", which="model")


def test_test_py_skips_loss_only_parameters(world, trained, tmp_path):
    """A checkpoint trained with 'auto' weights and 'mse' distillation (losses_weights.*, distillation_loss.wb)."""
    import torch

    from itr_aladin.model import ALADModel
    from itr_aladin.options import parse_test_args
    from itr_aladin.oscar import OscarConfig
    from itr_aladin.test import load_model
    from itr_aladin.train import read_aladin_checkpoint

    state = read_aladin_checkpoint(trained)
    config = state["config"]
    config["training"].update({"loss-weights": "auto", "distillation-mode": "mse"})
    model = ALADModel(config, OscarConfig.from_dir(world / "pretrained" / "checkpoint-0132780"))
    model.load_aladin_state_dict(state["model"], strict=False, source="trained")  # wb and the weights are new
    assert {"losses_weights.alignment", "distillation_loss.wb"} <= set(model.state_dict())
    path = tmp_path / "auto_mse.pth.tar"
    torch.save({**state, "model": model.state_dict(), "config": config}, path)
    loaded, _ = load_model(parse_test_args(eval_argv(world, path, tmp_path / "o.json")))
    key = "img_txt_enc.final_projection_net.layers.0.linear1.weight"
    torch.testing.assert_close(loaded.state_dict()[key], model.state_dict()[key])


def test_selection_sums_both_heads_when_the_alignment_head_trains(world, tmp_path):
    from itr_aladin.evaluation import full_rsum
    from itr_aladin.train import read_aladin_checkpoint, train

    joint = train(train_argv(world, tmp_path / "joint", "alad-alignment-and-matching-distill"))
    heads = joint.last_validation
    assert set(heads) == {"matching", "alignment"}
    assert joint.best_rsum == pytest.approx(full_rsum(heads["matching"]) + full_rsum(heads["alignment"]))
    assert read_aladin_checkpoint(tmp_path / "joint" / "model_best_rsum.pth.tar")["best_rsum"] == joint.best_rsum
    matching = train(train_argv(world, tmp_path / "matching", "alad-matching-triplet-e2e"))
    assert set(matching.last_validation) == {"matching"}
    assert matching.best_rsum == pytest.approx(full_rsum(matching.last_validation["matching"]))


def test_paper_table_rows_name_their_source():
    """The only numbers are a Papers-with-Code listing, labelled so; per-head rows nobody could read stay null."""
    from itr_aladin.reproduce import load_paper_table

    doc = load_paper_table()
    rows, sources = doc["rows"], doc["row_sources"]
    assert doc["verified"] is False and set(sources) == set(rows) == {"ALADIN-matching", "ALADIN-alignment"}
    for row, by_dataset in sources.items():
        for dataset, source in by_dataset.items():
            assert (rows[row][dataset] is None) == (source == "not found"), (row, dataset)
    assert rows["ALADIN-matching"]["coco5k"] == {"i2t": [64.9, 88.6, 94.5], "t2i": [51.3, 79.2, 87.5]}
    assert "papers-with-code" in sources["ALADIN-matching"]["coco5k"]
    assert rows["ALADIN-alignment"] == {"coco5k": None, "coco1k": None}
    # the listed row's t2i rsum matches neither head's rsum in the repo's plot script: its head is unknown
    listed_t2i_rsum = round(sum(rows["ALADIN-matching"]["coco5k"]["t2i"]), 1)
    assert listed_t2i_rsum == 218.0 and listed_t2i_rsum not in doc["plot_t2i_rsum_5k"].values()


def test_checkpoints_follow_the_umask_and_leave_no_temporary_files(trained):
    """``checkpoint.pth.tar`` and ``model_best_rsum.pth.tar``: the mode of any new file under this umask, and no
    ``.tmp`` of an atomic write left behind."""
    check_saved_files(trained.parent, ["checkpoint.pth.tar", "model_best_rsum.pth.tar"])
