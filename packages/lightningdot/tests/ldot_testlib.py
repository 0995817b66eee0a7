"""Shared helpers of the LightningDOT tests: the package folder and the tiny training command line."""

from __future__ import annotations

import json
from pathlib import Path

from itr_common.testing import uniter_db_flags

PACKAGE_DIR = Path(__file__).resolve().parents[1]
CONFIG_DIR = PACKAGE_DIR / "config"
TINY_FT = CONFIG_DIR / "flickr30k_ft_tiny_config.json"
TINY_EVAL = CONFIG_DIR / "flickr30k_eval_tiny_config.json"


def data_flags(world: Path) -> list[str]:
    """Overrides pointing the tiny configs at ``world`` (absolute paths): the shared UNITER db flags + the towers."""
    return [
        *uniter_db_flags(world),
        "--img_checkpoint", str(world / "pretrained" / "uniter-tiny.pt"),
        "--txt_checkpoint", str(world / "bert" / "pytorch_model.bin"),
        "--txt_model_config", str(CONFIG_DIR / "bert_tiny.json"),
        "--img_model_config", str(CONFIG_DIR / "img_tiny.json"),
    ]


def train_argv(world: Path, out: Path, *extra: str) -> list[str]:
    return ["--config", str(TINY_FT), *data_flags(world), "--output_dir", str(out), *extra]


def eval_argv(world: Path, checkpoint: Path, out: Path, *extra: str) -> list[str]:
    txt, img = world / "txt_db", world / "img_db" / "flickr30k"
    return [str(TINY_EVAL), str(checkpoint), "--val_txt_db", str(txt / "itm_flickr30k_val.db"),
            "--val_img_db", str(img), "--test_txt_db", str(txt / "itm_flickr30k_test.db"), "--test_img_db", str(img),
            "--txt_model_config", str(CONFIG_DIR / "bert_tiny.json"),
            "--img_model_config", str(CONFIG_DIR / "img_tiny.json"), "--output_dir", str(out), *extra]


QUICK = ("--num_train_epochs", "2", "--train_batch_size", "32", "--valid_steps", "3")
"""Two epochs of 8 batches (240 captions / 32), a resume state every 3 updates."""


def dropout_configs(folder: Path, p: float = 0.1) -> list[str]:
    """Flags for the tiny towers with dropout ``p`` (their configs have none), written into ``folder``: a resume
    must then restore each process's RNG to draw the masks of the uninterrupted run."""
    flags = []
    for flag, name in (("--txt_model_config", "bert_tiny.json"), ("--img_model_config", "img_tiny.json")):
        config = json.loads((CONFIG_DIR / name).read_text())
        config.update(hidden_dropout_prob=p, attention_probs_dropout_prob=p)
        (folder / name).write_text(json.dumps(config))
        flags += [flag, str(folder / name)]
    return flags


def pretrain_argv(world: Path, out: Path, *extra: str) -> list[str]:
    """``pretrain.py`` arguments: the tiny pre-training config on ``world``, its four tasks on Flickr captions."""
    txt, img = world / "txt_db", world / "img_db" / "flickr30k"
    train = [{"name": "flickr_cap", "db": [str(txt / "itm_flickr30k_train.db")], "img": [str(img)],
              "tasks": ["itm", "mlm", "mrfr", "mrckl"], "mix_ratio": [16, 8, 4, 4]}]
    val = [{"name": "flickr_cap", "db": [str(txt / "itm_flickr30k_val.db")], "img": [str(img)],
            "tasks": ["itm", "mlm", "mrfr", "mrckl"]}]
    return ["--config", str(CONFIG_DIR / "pretrain-tiny.json"), "--output_dir", str(out),
            "--train_datasets", json.dumps(train), "--val_datasets", json.dumps(val),
            "--img_checkpoint", str(world / "pretrained" / "uniter-tiny.pt"),
            "--txt_checkpoint", str(world / "bert" / "pytorch_model.bin"),
            "--txt_model_config", str(CONFIG_DIR / "bert_tiny.json"),
            "--img_model_config", str(CONFIG_DIR / "img_tiny.json"), *extra]
