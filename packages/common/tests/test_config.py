from __future__ import annotations

import argparse
import json

import pytest

from itr_common.config import apply_config, explicit_flags, load_config, parse_with_config
from itr_common.errors import ArgumentParser, UserError


def _parser() -> ArgumentParser:
    """A slice of UNITER/IAIS train_itm.py's options."""
    parser = ArgumentParser()
    parser.add_argument("--config", default=None)
    parser.add_argument("--train_batch_size", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=3e-5)
    parser.add_argument("--fp16", action="store_true")
    parser.add_argument("--lambda_softmax_CMRC", type=float, default=4.0)
    parser.add_argument("-n", "--n_workers", type=int, default=4)
    parser.add_argument("--train_txt_dbs", nargs="+", default=[])
    parser.add_argument("--hard_neg_size", dest="hard_negative_size", type=int, default=31)
    parser.add_argument("--mode", choices=["itm", "itc"], default="itm")
    parser.add_argument("--tasks", nargs="+", choices=["itm", "mlm", "mrfr"], default=["itm"])
    return parser


CONFIG = {"train_batch_size": 32, "learning_rate": 5e-5, "fp16": True, "n_workers": 2,
          "train_txt_dbs": ["/txt/itm_flickr_train.db"], "hard_negative_size": 15}


# --------------------------------------------------------------------------------------------- load_config
def test_load_json_and_yaml(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps(CONFIG))
    (tmp_path / "c.yaml").write_text("train_batch_size: 32\nfp16: true\ntrain_txt_dbs:\n  - /a.db\n")
    (tmp_path / "empty.yml").write_text("")
    assert load_config(tmp_path / "c.json") == CONFIG
    assert load_config(tmp_path / "c.yaml") == {"train_batch_size": 32, "fp16": True, "train_txt_dbs": ["/a.db"]}
    assert load_config(tmp_path / "empty.yml") == {}


def test_load_config_errors_name_file_and_line(tmp_path):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{\n  "a": 1,\n  "b": \n}\n')
    with pytest.raises(UserError, match=r"bad\.json: invalid JSON at line 4, column 1: Expecting value"):
        load_config(bad_json)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("a: 1\nb: [1, 2\nc: 3\n")
    with pytest.raises(UserError, match=r"bad\.yaml: invalid YAML at line 3, column 2:"):
        load_config(bad_yaml)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(UserError, match=r"list\.yaml: expected a mapping of option names to values, found a list"):
        load_config(listing)
    with pytest.raises(UserError, match=r"nope\.json: config file not found"):
        load_config(tmp_path / "nope.json")
    other = tmp_path / "c.toml"
    other.write_text("a = 1")
    with pytest.raises(UserError, match=r"c\.toml: expected a config file ending in .+, found '\.toml'"):
        load_config(other)


# ------------------------------------------------------------------------------------------ explicit_flags
@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], set()),
        (["--train_batch_size", "8"], {"train_batch_size"}),
        (["--train_batch_size=8", "--fp16"], {"train_batch_size", "fp16"}),
        (["-n", "1"], {"n_workers"}),
        (["--lambda_softmax=9"], {"lambda_softmax_CMRC"}),  # DIME README's abbreviation
        (["--hard_neg_size", "7"], {"hard_negative_size"}),  # flag name != dest
        (["--train_txt_dbs", "a", "b", "--config", "c.json"], {"train_txt_dbs", "config"}),
    ],
)
def test_explicit_flags(argv, expected):
    parser = _parser()
    assert explicit_flags(parser, argv) == expected
    assert parser.parse_args([]).train_batch_size == 128  # defaults restored afterwards


def test_explicit_positional():
    parser = argparse.ArgumentParser()
    parser.add_argument("eval_config")
    parser.add_argument("checkpoint", nargs="?", default="best.pt")
    parser.add_argument("--batch_size", type=int, default=400)
    assert explicit_flags(parser, ["eval.json"]) == {"eval_config"}
    assert explicit_flags(parser, ["eval.json", "other.pt", "--batch_size", "3"]) == {
        "eval_config", "checkpoint", "batch_size"}


# -------------------------------------------------------------------------------------------- apply_config
def test_cli_flags_override_config_keys():
    parser = _parser()
    argv = ["--config", "c.json", "--train_batch_size", "8", "--lambda_softmax", "9"]
    args = parser.parse_args(argv)
    merged = apply_config(args, parser, {**CONFIG, "lambda_softmax_CMRC": 1.0}, "c.json", argv=argv)
    assert merged.train_batch_size == 8  # command line wins
    assert merged.lambda_softmax_CMRC == 9.0  # abbreviated flag still wins
    assert merged.learning_rate == 5e-5 and merged.fp16 is True and merged.n_workers == 2
    assert merged.hard_negative_size == 15 and merged.train_txt_dbs == ["/txt/itm_flickr_train.db"]
    assert args.train_batch_size == 8 and args.learning_rate == 3e-5  # input namespace untouched


def test_unknown_key_names_closest_valid_key():
    parser = _parser()
    with pytest.raises(UserError) as err:
        apply_config(parser.parse_args([]), parser, {"train_batchsize": 4}, "c.json", argv=[])
    assert str(err.value) == "c.json: unknown config key 'train_batchsize'; did you mean 'train_batch_size'?"


def test_extra_keys_and_choices():
    parser = _parser()
    datasets = [{"name": "flickr", "db": ["/txt/a.db"], "img": ["/img/flickr"]}]
    merged = apply_config(parser.parse_args([]), parser, {"train_datasets": datasets}, "c.json", argv=[],
                          extra_keys=["train_datasets"])
    assert merged.train_datasets == datasets
    with pytest.raises(UserError, match=r"c\.json: config key 'mode': expected one of 'itm', 'itc', found 'mlm'"):
        apply_config(parser.parse_args([]), parser, {"mode": "mlm"}, "c.json", argv=[])
    assert apply_config(parser.parse_args([]), parser, {"tasks": ["itm", "mlm"]}, "c.json", argv=[]).tasks == [
        "itm", "mlm"]
    with pytest.raises(UserError, match=r"config key 'tasks': expected one of 'itm', 'mlm', 'mrfr', found 'mrc'"):
        apply_config(parser.parse_args([]), parser, {"tasks": ["itm", "mrc"]}, "c.json", argv=[])


def test_parse_with_config_like_uniter(tmp_path):
    path = tmp_path / "train-itm-flickr-base.json"
    path.write_text(json.dumps(CONFIG))
    args = parse_with_config(_parser(), ["--config", str(path), "--n_workers=0"])
    assert not hasattr(args, "config")  # UNITER deletes args.config
    assert args.n_workers == 0 and args.train_batch_size == 32 and args.fp16 is True
    plain = parse_with_config(_parser(), ["--learning_rate", "1e-4"])
    assert plain.learning_rate == 1e-4 and plain.train_batch_size == 128
