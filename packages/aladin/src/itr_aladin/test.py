"""``alad/test.py``: both heads of an ALADIN checkpoint on COCO 1K / 5K (mesnico/ALADIN), the README's command::

    cd alad
    python test.py --data_dir <data-folder>/coco_ir --img_feat_file <features-folder>/features.tsv \\
        --eval_model_dir <checkpoint-target-folder>/checkpoint-0132780 --max_seq_length 50 \\
        --max_img_seq_length 34 --eval_img_keys_file test_img_keys_1k.tsv --load_checkpoint <checkpoint.pth.tar>

The config comes from the checkpoint (``checkpoint['config']``), its loss-type forced to
'alignment-distillation' so that both heads are built. With ``test_img_keys_1k.tsv`` the single 1K subset
is evaluated (protocol ``1k``, what the original reports as 1K); with ``test_img_keys.tsv`` (or no keys
file) the 5K split (``coco-5k``) and the mean of its five 1K folds (``coco-1k-fold5``). Results go to
``--out`` (JSON; default ``aladin_test_results.json`` beside the checkpoint) and one line per head and
protocol on stdout. Each head's record carries its own latency (``extras.compute_s``,
``extras.latency_ms_per_query``): the shared encoding plus that head's scoring and ranking.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from itr_aladin.config import both_heads_config, validate_config
from itr_aladin.data import open_split
from itr_aladin.evaluation import PROTOCOL_LABELS, encode_split, evaluate_heads, format_row, protocols_for
from itr_aladin.model import ALADModel
from itr_aladin.options import check_lengths, parse_test_args, restore_training_settings, use_checkpoint_feature_dim
from itr_aladin.oscar import OscarConfig, check_vocab
from itr_aladin.train import read_aladin_checkpoint
from itr_common.errors import cli_entry, fail
from itr_common.fileio import write_json_atomic
from itr_common.logging import setup_logging
from itr_common.metrics import RetrievalResult
from itr_common.text import load_bert_tokenizer
from itr_common.validation import require_writable

logger = logging.getLogger("itr_aladin.test")
LOSS_ONLY_PREFIXES = ("losses_weights.", "distillation_loss.")
DEFAULT_OUT_NAME = "aladin_test_results.json"


def load_model(args: argparse.Namespace, device: torch.device | str = "cpu") -> tuple[ALADModel, dict[str, Any]]:
    """The checkpoint's model with both heads (loss-only parameters skipped, logged by name)."""
    state = read_aladin_checkpoint(args.load_checkpoint)
    if "config" not in state:
        fail(f"{args.load_checkpoint}: expected the training 'config' in the checkpoint, found keys {sorted(state)}")
    config = both_heads_config(validate_config(state["config"], f"{args.load_checkpoint}: config"))
    oscar_config = OscarConfig.from_dir(args.eval_model_dir)
    check_vocab(args.eval_model_dir, oscar_config)
    check_lengths(args, oscar_config)
    model = ALADModel(config, oscar_config)
    weights = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state["model"].items()}
    skipped = sorted(k for k in weights if k.startswith(LOSS_ONLY_PREFIXES))
    if skipped:
        logger.info("%s: loss-only parameters not used for testing: %s", args.load_checkpoint, ", ".join(skipped))
    kept = {k: v for k, v in weights.items() if k not in skipped}
    kept.update({k: v for k, v in model.state_dict().items() if k.startswith(LOSS_ONLY_PREFIXES)})
    model.load_aladin_state_dict(kept, strict=True, source=args.load_checkpoint)
    return model.to(device).eval(), config


def default_out(checkpoint: str) -> str:
    """``--out``'s default: ``aladin_test_results.json`` beside the tested checkpoint (not the working folder)."""
    return str(Path(checkpoint).parent / DEFAULT_OUT_NAME)


def evaluate(args: argparse.Namespace) -> dict[str, dict[str, RetrievalResult]]:
    """Both heads on ``--test_split`` ('test'); returns ``{head: {protocol: result}}`` and writes ``--out``."""
    args.do_test = args.do_eval = True
    notes: list[str] = []
    args = restore_training_settings(args, notes)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.no_cuda else "cpu"))
    model, config = load_model(args, device)
    use_checkpoint_feature_dim(args, model.img_txt_enc.oscar_model.config, notes)
    tokenizer = load_bert_tokenizer(args.eval_model_dir, do_lower_case=True)
    data = open_split(args, args.test_split, is_train=False)
    args.out = args.out or default_out(args.load_checkpoint)
    out = require_writable(args.out, "--out", kind="file")
    for note in notes:
        logger.warning("%s", note)
    t0 = time.perf_counter()
    enc = encode_split(model, data, tokenizer, args.max_seq_length, args.max_img_seq_length,
                       config["training"]["bs"], args.num_workers, device)
    protocols = protocols_for(data.num_images, args.eval_img_keys_file)
    extras = {"checkpoint": str(args.load_checkpoint), "split": args.test_split,
              "keys_file": args.eval_img_keys_file or "(all images of the split)"}
    results = evaluate_heads(model, enc, protocols, device=device, extras=extras)
    elapsed = time.perf_counter() - t0
    for protocol in protocols:
        print(f"== {PROTOCOL_LABELS[protocol]}")
        for head in results:
            print(format_row(head, protocol, results[head][protocol]))
    record = {"checkpoint": str(args.load_checkpoint), "n_images": data.num_images, "time_s": elapsed,
              "encode_s": enc.seconds,
              "results": {head: {p: r.to_dict() for p, r in by_protocol.items()}
                          for head, by_protocol in results.items()}}
    write_json_atomic(out, record)
    print(f"results written to {out}")
    return results


@cli_entry
def main(argv: Sequence[str] | None = None) -> None:
    """``aladin-test`` / ``python test.py`` / ``python -m itr_aladin.test``."""
    setup_logging()
    evaluate(parse_test_args(argv))


if __name__ == "__main__":
    main()
