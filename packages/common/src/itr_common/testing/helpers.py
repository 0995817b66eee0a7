"""Small helpers the packages' tests share (no pytest needed): a tiny random BERT, the UNITER-layout data flags
of a synthetic world, and a benchmark script run at toy size."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from itr_common.testing.conformance import single_thread


def tiny_bert(hidden: int = 12, seed: int = 0) -> torch.nn.Module:
    """A random 1-layer Hugging Face BertModel (vocab 40, hidden ``hidden``), seeded, in eval mode."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=40, hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=32)
    return BertModel(config).eval()


def uniter_db_flags(world: Path) -> list[str]:
    """``--{train,val,test}_{txt,img}_db(s)`` of a synthetic world's UNITER layout (Flickr30K-like, absolute)."""
    txt, img = world / "txt_db", world / "img_db" / "flickr30k"
    return [
        "--train_txt_dbs", str(txt / "itm_flickr30k_train.db"),
        "--train_img_dbs", str(img),
        "--val_txt_db", str(txt / "itm_flickr30k_val.db"),
        "--val_img_db", str(img),
        "--test_txt_db", str(txt / "itm_flickr30k_test.db"),
        "--test_img_db", str(img),
    ]


def run_bench(script: Path, argv: Sequence[str], out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load ``benchmarks/bench_<pkg>.py`` as a module and run its ``main([*argv, "--out", out])`` on one torch
    thread; returns ``(the report main returned, the JSON it wrote to out)``."""
    spec = importlib.util.spec_from_file_location(script.stem, script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    with single_thread():
        report = bench.main([*argv, "--out", str(out)])
    return report, json.loads(out.read_text())


__all__ = ["run_bench", "tiny_bert", "uniter_db_flags"]
