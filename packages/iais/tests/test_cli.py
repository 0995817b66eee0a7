"""Command lines: shipped configs, flags over JSON keys, and one-line errors with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from iais_testlib import PACKAGE_DIR, TINY_CONFIG, data_flags, train_argv

from itr_common.testing import check_usage_error
from itr_iais.options import parse_train_args

ORIGINAL_CONFIGS = [f"train-itm-{data}-{size}-{gpus}-hn.json" for data in ("flickr", "coco")
                    for size in ("base", "large") for gpus in ("8gpu", "16gpu")]


@pytest.mark.parametrize("name", ORIGINAL_CONFIGS)
def test_shipped_original_configs_parse_with_their_values(name):
    args = parse_train_args(["--config", str(PACKAGE_DIR / "config" / name)])
    raw = json.loads((PACKAGE_DIR / "config" / name).read_text())
    for key, value in raw.items():
        assert getattr(args, key) == value, key
    assert args.negative_size == 399 and args.hard_neg_size == 31 and args.betas == [0.9, 0.98]
    assert args.checkpoint.startswith("/pretrain/uniter-") and args.IAIS is False


def test_command_line_overrides_config_and_iais_choice():
    args = parse_train_args(["--config", str(PACKAGE_DIR / "config" / "train-itm-coco-base-8gpu-hn.json"),
                             "--IAIS", "distributed", "--learning_rate", "1e-5", "--betas", "0.8", "0.9"])
    assert args.IAIS == "distributed" and args.learning_rate == 1e-5 and args.betas == [0.8, 0.9]
    assert args.train_txt_dbs == ["/txt/itm_coco_train.db", "/txt/itm_coco_restval.db"]


def test_readme_jgon_typo_resolves_with_a_notice(capsys):
    args = parse_train_args(["--config", "config/train-itm-flickr-base-8gpu-hn.jgon"])
    assert "notice:" in capsys.readouterr().err
    assert args.val_txt_db == "/txt/itm_flickr30k_val.db"


def _train_main():
    from itr_iais.train_itm_hard_negatives import main

    return main


def _inf_main():
    from itr_iais.inf_itm import main

    return main


def test_missing_config_exits_2(tmp_path):
    check_usage_error(_train_main(), ["--config", str(tmp_path / "nope.json")], "nope.json", "not found")


def test_unknown_config_key_names_the_closest(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**json.loads(TINY_CONFIG.read_text()), "negative_sizes": 15}))
    check_usage_error(_train_main(), ["--config", str(bad)], "negative_sizes", "did you mean 'negative_size'")


def test_unknown_flag_names_the_closest():
    check_usage_error(parse_train_args, ["--hard_neg_sise", "3"], "hard_neg_size")


def test_bad_iais_value_exits_2():
    check_usage_error(_train_main(), ["--config", str(TINY_CONFIG), "--IAIS", "both"], "IAIS")


@pytest.mark.parametrize(("key", "value", "needles"), [
    ("fp16", "no", ["config key 'fp16'", "expected true or false", "'no' (a string)"]),
    ("learning_rate", float("nan"), ["config key 'learning_rate'", "finite number", "nan"]),
    ("learning_rate", "2e-4", ["config key 'learning_rate'", "'2e-4' (a string)"]),
    ("valid_steps", 2.5, ["config key 'valid_steps'", "expected an integer", "2.5"]),
    ("train_batch_size", "2", ["config key 'train_batch_size'", "'2' (a string)"]),
    ("betas", [0.9, "0.98"], ["config key 'betas'", "list of finite numbers"]),
    ("learning_rate", -1, ["--learning_rate", "> 0", "-1"]),
    ("n_workers", -1, ["--n_workers", ">= 0", "-1"]),
    ("dropout", 1.0, ["--dropout", "[0, 1)", "1.0"]),
    ("grad_norm", 0, ["--grad_norm", "-1 or a finite number > 0", "found 0"]),
    ("optim", "sgd", ["config key 'optim'", "'sgd'"]),
])
def test_config_values_typed_and_range_checked_before_any_work(world, tmp_path, key, value, needles):
    """Issue 9: "fp16": "no" trained as true, NaN learning rate exited 0, 2.5 steps were accepted."""
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({**json.loads(TINY_CONFIG.read_text()), key: value}))
    out = tmp_path / "o"
    argv = ["--config", str(config), *data_flags(world), "--output_dir", str(out)]
    check_usage_error(_train_main(), argv, *needles, untouched=[out])


@pytest.mark.parametrize(("flags", "needles"), [
    (["--learning_rate", "nan"], ["--learning_rate", "nan"]),
    (["--valid_steps", "2.5"], ["--valid_steps", "2.5"]),
    (["--n_workers", "-1"], ["--n_workers", "-1"]),
    (["--conf_th", "1.5"], ["--conf_th", "-1 or", "1.5"]),
    (["--min_bb", "50", "--max_bb", "20"], ["--min_bb", "--max_bb 20", "50"]),
    # the released configs' 399 negatives on a smaller training set: refused up front, not at the first group
    (["--negative_size", "399", "--hard_neg_size", "31"], ["negative_size", "at most 47", "pool of 48 images", "399"]),
])
def test_bad_flags_exit_2_before_any_work(world, tmp_path, flags, needles):
    out = tmp_path / "o"
    check_usage_error(_train_main(), train_argv(world, out, *flags), *needles, untouched=[out])


def test_missing_db_and_checkpoint_exit_2(world, tmp_path):
    out = tmp_path / "o"
    check_usage_error(_train_main(), train_argv(world, out, "--val_txt_db", str(tmp_path / "no.db")),
                      "val_txt_db", "no.db", untouched=[out])
    check_usage_error(_train_main(), train_argv(world, out, checkpoint=tmp_path / "no.pt"), "no.pt", untouched=[out])


def test_original_docker_paths_fail_on_the_first_missing_db():
    check_usage_error(_train_main(), ["--config", str(PACKAGE_DIR / "config" / "train-itm-flickr-base-8gpu-hn.json")],
                      "/pretrain/uniter-base.pt", allow_notices=True)


def test_guards_and_non_empty_output_dir(world, tmp_path):
    check_usage_error(_train_main(), train_argv(world, tmp_path / "o", "--negative_size", "10"), "multiples of 8",
                      untouched=[tmp_path / "o"])
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    check_usage_error(_train_main(), train_argv(world, busy), "--resume", untouched=[busy])


def test_unwritable_output_dir_is_refused_before_any_work(world, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    check_usage_error(_train_main(), train_argv(world, blocker / "out"), "--output_dir", "a_file",
                      untouched=[blocker])


def test_inference_bad_input_exits_2(world, tmp_path):
    out = tmp_path / "o"
    base = ["--txt_db", str(world / "txt_db" / "itm_flickr30k_test.db"),
            "--img_db", str(world / "img_db" / "flickr30k"),
            "--model_config", str(world / "pretrained" / "uniter-tiny.json"), "--output_dir", str(out)]
    main = _inf_main()
    check_usage_error(main, [*base, "--checkpoint", str(tmp_path / "missing.pt")], "missing.pt", untouched=[out])
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    check_usage_error(main, [*base, "--checkpoint", str(bad)], "bad.pt", untouched=[out])
    check_usage_error(main, [*base, "--checkpoint", str(bad), "--train_config", str(tmp_path / "hps.json")],
                      "hps.json", untouched=[out])
    good = str(world / "pretrained" / "uniter-tiny.pt")
    check_usage_error(main, [*base, "--checkpoint", good, "--batch_size", "0"], "--batch_size", untouched=[out])
    check_usage_error(main, [*base, "--checkpoint", good, "--n_workers", "-1"], "--n_workers", untouched=[out])
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    argv = [*base[:-1], str(blocker / "o"), "--checkpoint", good]
    check_usage_error(main, argv, "--output_dir", "a_file", untouched=[blocker])


def test_shim_and_module_entry_points(world):
    out = subprocess.run([sys.executable, "train_itm_hard_negatives.py", "--help"], cwd=PACKAGE_DIR,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "--IAIS" in out.stdout and "--config" in out.stdout
    out = subprocess.run([sys.executable, "-m", "itr_iais.inf_itm", "--txt_db", "/nonexistent"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1


def test_data_flags_cover_every_path_key():
    keys = {flag[2:] for flag in data_flags(Path("/w")) if flag.startswith("--")}
    raw = json.loads(TINY_CONFIG.read_text())
    wanted = {k for k in raw if k.endswith(("_db", "_dbs")) or k in ("model_config", "checkpoint")}
    assert wanted - {"compressed_db"} == keys
