"""itr_common.validation: types and ranges with one line naming key, value and expectation; config value
types against the options they set; device; writable outputs; feature sizes."""

from __future__ import annotations

import argparse
import json
import math

import pytest

from itr_common.config import parse_with_config
from itr_common.errors import ArgumentParser, UserError
from itr_common.validation import (
    boolean,
    check_device,
    check_options,
    check_same_size,
    check_value,
    choice,
    describe_value,
    integer,
    number,
    require_writable,
)


@pytest.mark.parametrize(("value", "check", "message"), [
    (math.nan, number(above=0), "--lr: expected a finite number > 0, found nan"),
    (-1.0, number(above=0), "--lr: expected a finite number > 0, found -1.0"),
    (math.inf, number(low=0), "--lr: expected a finite number >= 0, found inf"),
    (2.5, integer(1), "--lr: expected an integer >= 1, found 2.5"),
    ("3", integer(1), "--lr: expected an integer >= 1, found '3' (a string)"),
    (True, integer(), "--lr: expected an integer, found true"),
    ("no", boolean(), "--lr: expected true or false, found 'no' (a string)"),
    (1, boolean(), "--lr: expected true or false, found 1"),
    (1.0, number(0, below=1), "--lr: expected a finite number in [0, 1), found 1.0"),
    ("x", choice("a", "b"), "--lr: expected one of 'a', 'b', found 'x' (a string)"),
    (None, integer(0), "--lr: expected an integer >= 0, found null"),
])
def test_check_value_names_key_value_and_expectation(value, check, message):
    with pytest.raises(UserError) as err:
        check_value("--lr", value, check)
    assert str(err.value) == message


def test_accepted_values_pass():
    assert check_value("k", 3, integer(1)) == 3 and check_value("k", 0.5, number(above=0, below=1)) == 0.5
    assert check_value("k", None, integer(1, optional=True)) is None and check_value("k", 2, number()) == 2
    check_options({"a": 1, "b": False}, {"a": integer(0), "b": boolean()})
    check_options(argparse.Namespace(a=[0.9, 0.98]), {"a": number(0, below=1, many=True)})
    assert describe_value([1, 2]) == "[1, 2]"


def _parser():
    p = ArgumentParser(prog="x")
    p.add_argument("--config")
    p.add_argument("--fp16", action="store_true")
    p.add_argument("--learning_rate", type=float, default=3e-5)
    p.add_argument("--valid_steps", type=int, default=1000)
    p.add_argument("--betas", type=float, nargs="+", default=[0.9, 0.98])
    p.add_argument("--train_txt_dbs", nargs="+", default=None)
    p.add_argument("--checkpoint", default=None)
    return p


@pytest.mark.parametrize(("key", "value", "needle"), [
    ("fp16", "no", "config key 'fp16': expected true or false, found 'no' (a string)"),
    ("learning_rate", math.nan, "config key 'learning_rate': expected a finite number, found nan"),
    ("learning_rate", "1e-4", "config key 'learning_rate': expected a finite number, found '1e-4' (a string)"),
    ("valid_steps", 2.5, "config key 'valid_steps': expected an integer, found 2.5"),
    ("valid_steps", "100", "config key 'valid_steps': expected an integer, found '100' (a string)"),
    ("betas", [0.9, "x"], "config key 'betas': expected a list of finite numbers, found [0.9, 'x']"),
    ("checkpoint", 3, "config key 'checkpoint': expected a string or null, found 3"),
])
def test_config_values_of_the_wrong_type_are_refused(tmp_path, key, value, needle):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({key: value}))
    with pytest.raises(UserError) as err:
        parse_with_config(_parser(), ["--config", str(path)])
    assert str(err.value) == f"{path}: {needle}"


def test_config_values_of_the_right_type_pass(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"fp16": False, "learning_rate": 1, "valid_steps": 5, "betas": [0.9, 0.99],
                                "train_txt_dbs": ["/a", "/b"], "checkpoint": None}))
    args = parse_with_config(_parser(), ["--config", str(path)])
    assert args.learning_rate == 1 and args.betas == [0.9, 0.99] and args.train_txt_dbs == ["/a", "/b"]


def test_device_without_a_gpu_is_one_line():
    import torch

    check_device(None)
    check_device("cpu")
    with pytest.raises(UserError, match="--device: expected cpu, cuda or cuda:N, found 'gpu0'"):
        check_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match=r"--device: expected cpu \(no CUDA GPU is available here\), found 'cuda'"):
            check_device("cuda")
    if torch.cuda.is_available():
        with pytest.raises(UserError, match="--device: expected cuda:0"):
            check_device("cuda:99")


def test_require_writable_probes_without_leaving_anything(tmp_path):
    before = sorted(tmp_path.iterdir())
    assert require_writable(tmp_path / "new" / "deeper", "--output_dir") == tmp_path / "new" / "deeper"
    require_writable(tmp_path / "out.json", "--out", kind="file")
    assert sorted(tmp_path.iterdir()) == before  # no folder created, no probe left
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match=r"--output_dir .*file/run: cannot be created, .*file is a file"):
        require_writable(blocker / "run", "--output_dir")
    with pytest.raises(UserError, match="expected a directory, found a file"):
        require_writable(blocker, "--output_dir")
    with pytest.raises(UserError, match="expected a file path, found a directory"):
        require_writable(tmp_path, "--out", kind="file")
    with pytest.raises(UserError, match="not writable"):
        require_writable("/proc/1/nope", "--out", kind="file")


def test_feature_sizes_must_agree():
    assert check_same_size({"train": 32, "dev": 32, "checkpoint": None}) == 32
    with pytest.raises(UserError) as err:
        check_same_size({"train (a.npy)": 32, "dev (b.npy)": 16, "checkpoint img_dim": 32})
    assert str(err.value) == ("region feature size: expected the same in every split and the checkpoint, found "
                              "train (a.npy) 32, dev (b.npy) 16, checkpoint img_dim 32")


def test_yaml_exponent_numbers_are_numbers(tmp_path):
    """PyYAML (YAML 1.1) reads ``1e-4`` as a string; configs read it as the number JSON and YAML 1.2 give."""
    from itr_common.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text('learning_rate: 1e-4\nsteps: 3e5\nquoted: "1e-4"\nname: abc\n')
    assert load_config(path) == {"learning_rate": 1e-4, "steps": 3e5, "quoted": "1e-4", "name": "abc"}


def test_require_writable_detects_a_full_filesystem(tmp_path):
    """Issue 9: a full output location failed only after all the scoring; the probe writes a byte first."""
    import subprocess

    mount = tmp_path / "full"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        with open(mount / "fill", "wb") as handle, pytest.raises(OSError):
            handle.write(b"\0" * 65536)
            handle.flush()
        with pytest.raises(UserError, match=r"--output_dir .*: not writable \(.*No space left on device\)"):
            require_writable(mount / "out", "--output_dir")
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)
