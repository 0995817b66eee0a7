"""Command lines: shipped configs, flags over JSON keys, and one-line errors with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from iais_testlib import PACKAGE_DIR, TINY_CONFIG, data_flags, train_argv

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


def run_main(argv, module="train", capsys=None):
    from itr_iais.inf_itm import main as inf_main
    from itr_iais.train_itm_hard_negatives import main as train_main

    with pytest.raises(SystemExit) as exc:
        (train_main if module == "train" else inf_main)(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return exc.value.code, err[-1] if err else ""


def test_missing_config_exits_2(capsys, tmp_path):
    code, line = run_main(["--config", str(tmp_path / "nope.json")], capsys=capsys)
    assert code == 2 and "nope.json" in line and "not found" in line


def test_unknown_config_key_names_the_closest(capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**json.loads(TINY_CONFIG.read_text()), "negative_sizes": 15}))
    code, line = run_main(["--config", str(bad)], capsys=capsys)
    assert code == 2 and "negative_sizes" in line and "did you mean 'negative_size'" in line


def test_unknown_flag_names_the_closest(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_train_args(["--hard_neg_sise", "3"])
    assert exc.value.code == 2 and "hard_neg_size" in capsys.readouterr().err


def test_bad_iais_value_exits_2(capsys):
    code, line = run_main(["--config", str(TINY_CONFIG), "--IAIS", "both"], capsys=capsys)
    assert code == 2 and "IAIS" in line


def test_missing_db_and_checkpoint_exit_2(capsys, world, tmp_path):
    code, line = run_main(train_argv(world, tmp_path / "o", "--val_txt_db", str(tmp_path / "no.db")), capsys=capsys)
    assert code == 2 and "val_txt_db" in line and "no.db" in line
    code, line = run_main(train_argv(world, tmp_path / "o", checkpoint=tmp_path / "no.pt"), capsys=capsys)
    assert code == 2 and "no.pt" in line


def test_original_docker_paths_fail_on_the_first_missing_db(capsys):
    code, line = run_main(["--config", str(PACKAGE_DIR / "config" / "train-itm-flickr-base-8gpu-hn.json")],
                          capsys=capsys)
    assert code == 2 and "/pretrain/uniter-base.pt" in line


def test_guards_and_non_empty_output_dir(capsys, world, tmp_path):
    code, line = run_main(train_argv(world, tmp_path / "o", "--negative_size", "10"), capsys=capsys)
    assert code == 2 and "multiples of 8" in line
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    code, line = run_main(train_argv(world, busy), capsys=capsys)
    assert code == 2 and "--resume" in line


def test_inference_bad_input_exits_2(capsys, world, tmp_path):
    base = ["--txt_db", str(world / "txt_db" / "itm_flickr30k_test.db"),
            "--img_db", str(world / "img_db" / "flickr30k"),
            "--model_config", str(world / "pretrained" / "uniter-tiny.json"), "--output_dir", str(tmp_path / "o")]
    code, line = run_main([*base, "--checkpoint", str(tmp_path / "missing.pt")], "inf", capsys)
    assert code == 2 and "missing.pt" in line
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    code, line = run_main([*base, "--checkpoint", str(bad)], "inf", capsys)
    assert code == 2 and "bad.pt" in line
    code, line = run_main([*base, "--checkpoint", str(bad), "--train_config", str(tmp_path / "hps.json")], "inf",
                          capsys)
    assert code == 2 and "hps.json" in line


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
