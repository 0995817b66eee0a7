"""Benchmark: IAIS / UNITER cross-encoder throughput (evaluation pairs/s, training samples/s, query latency).

A cross-encoder scores every (caption, image) pair with a full transformer pass, so retrieval cost is
linear in the gallery: this is the cost LightningDOT's "thousands of times faster" claim is about.

- evaluation: ``score_matrix`` (one text against blocks of ``--block`` images, the original's 400),
  inference mode, AMP when ``--fp16``; pairs/s over ``--texts`` captions x ``--images`` images;
- query latency: seconds to score one caption against every image of a Flickr30K (1K) and COCO (5K)
  test gallery, from the measured pairs/s;
- training: one hard-negative iteration (an image-sampled and a text-sampled group: ``negative_size
  + 1`` pairs scored without gradients, ``hard_neg_size + 1`` trained) with the IAIS loss;
  reported as groups/s, pairs scored/s and trained pairs/s.

Inputs are random region features and token ids with the stated sizes (``--txt-len`` tokens with
[CLS]/[SEP], ``--nbb`` regions), so no data is needed. ``--model tiny`` is the synthetic world's
UNITER (hidden 64, 2 layers), ``base`` / ``large`` the paper's sizes (use a GPU for those).

Run: ``python benchmarks/bench_iais.py --out bench_out/iais.json`` (add ``--model base --fp16`` on a GPU).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import torch

from itr_common.amp import Amp, AmpConfig
from itr_common.bench import device_label
from itr_common.models.uniter import UniterConfig
from itr_iais.data import compact_attn_masks, get_gather_index, iais_layout_masks, pair_layout
from itr_iais.model import UniterForImageTextRetrievalHardNeg, batch_to
from itr_iais.optim import build_optimizer

SIZES = {
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128},
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    "large": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096},
}


def build_model(size: str, img_dim: int, device: torch.device) -> UniterForImageTextRetrievalHardNeg:
    config = UniterConfig(vocab_size=28996, img_dim=img_dim, **SIZES[size])
    return UniterForImageTextRetrievalHardNeg(config, hard_size=31).to(device)


def eval_throughput(model, args, device, autocast) -> dict[str, float]:
    """Score ``texts`` captions against ``images`` images in blocks; pairs/s."""
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(args.images, args.nbb, args.img_dim, generator=gen)
    pos = torch.rand(args.images, args.nbb, 7, generator=gen)
    texts = torch.randint(1000, 28000, (args.texts, args.txt_len), generator=gen)
    model.eval()

    def run() -> None:
        with torch.inference_mode():
            for start in range(0, args.images, args.block):
                n = min(args.block, args.images - start)
                block = {"img_feat": feats[start:start + n].to(device), "img_pos_feat": pos[start:start + n].to(device),
                         **batch_to(pair_layout(args.txt_len, [args.nbb] * n), device),
                         "position_ids": torch.arange(args.txt_len, device=device).unsqueeze(0)}
                for row in range(args.texts):
                    block["input_ids"] = texts[row].to(device).unsqueeze(0).expand(n, -1)
                    with autocast():
                        model.score(block)
        if device.type == "cuda":
            torch.cuda.synchronize()

    run()  # warm-up
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    pairs_per_s = args.texts * args.images / seconds
    return {"pairs_per_s": pairs_per_s, "seconds": seconds,
            "query_latency_s_flickr_1k": 1000 / pairs_per_s, "query_latency_s_coco_5k": 5000 / pairs_per_s,
            "full_eval_s_flickr_1k_x_5k": 1000 * 5000 / pairs_per_s,
            "full_eval_s_coco_5k_x_25k": 5000 * 25000 / pairs_per_s}


def random_group(args, gen, iais: bool, sample_from: str) -> dict[str, Any]:
    """A hard-negative group of ``negative_size + 1`` pairs: one caption x n images (``sample_from="t"``,
    images sampled for a text) or n captions x one image (``"i"``), in the IAIS or the compact layout."""
    n, tl = args.negative_size + 1, args.txt_len
    n_txt, n_img = (1, n) if sample_from == "t" else (n, 1)
    batch = {"input_ids": torch.randint(1000, 28000, (n_txt, tl), generator=gen),
             "position_ids": torch.arange(tl).unsqueeze(0),
             "img_feat": torch.randn(n_img, args.nbb, args.img_dim, generator=gen),
             "img_pos_feat": torch.rand(n_img, args.nbb, 7, generator=gen)}
    txt_lens, num_bbs = [tl] * n, [args.nbb] * n
    if iais:
        batch["attn_masks"], batch["txt_attn_masks"], batch["img_attn_masks"] = iais_layout_masks(txt_lens, num_bbs)
    else:
        batch["attn_masks"] = compact_attn_masks(txt_lens, num_bbs)
        batch["gather_index"] = get_gather_index(txt_lens, num_bbs, tl, batch["attn_masks"].size(1))
    return batch


def train_throughput(model, args, device, amp: Amp) -> dict[str, float]:
    """Iterations (an image-sampled + a text-sampled group) per second with IAIS singular."""
    gen = torch.Generator().manual_seed(1)
    iais = args.iais != "none"
    groups = [(batch_to(random_group(args, gen, iais, side), device), side) for side in ("i", "t")]
    model.hard_size = args.hard_neg_size
    model.train()
    optimizer = build_optimizer(model, "adamw", 5e-5, (0.9, 0.98), 0.01)

    def iteration() -> None:
        for batch, side in groups:
            mode = f"{'V' if side == 'i' else 'L'}-{args.iais}" if iais else None
            with amp.autocast():
                out = model(dict(batch), sample_from=side, iais=mode)
            loss = out.rank_loss.float().mean() + (out.iais.float() if out.iais is not None else 0.0)
            amp.backward(loss)
        amp.step(optimizer, max_grad_norm=2.0)
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()

    iteration()  # warm-up
    start = time.perf_counter()
    for _ in range(args.train_iters):
        iteration()
    seconds = time.perf_counter() - start
    per_s = args.train_iters / seconds
    return {"iterations_per_s": per_s, "groups_per_s": 2 * per_s,
            "pairs_scored_per_s": 2 * per_s * (args.negative_size + 1),
            "pairs_trained_per_s": 2 * per_s * (args.hard_neg_size + 1)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=list(SIZES), default="tiny")
    p.add_argument("--img-dim", dest="img_dim", type=int, default=None, help="default: 32 tiny, 2048 otherwise")
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--texts", type=int, default=20)
    p.add_argument("--block", type=int, default=400)
    p.add_argument("--txt-len", dest="txt_len", type=int, default=22)
    p.add_argument("--nbb", type=int, default=36)
    p.add_argument("--negative-size", dest="negative_size", type=int, default=399)
    p.add_argument("--hard-neg-size", dest="hard_neg_size", type=int, default=31)
    p.add_argument("--iais", choices=["singular", "distributed", "none"], default="singular")
    p.add_argument("--train-iters", dest="train_iters", type=int, default=3)
    p.add_argument("--fp16", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    args.img_dim = args.img_dim or (32 if args.model == "tiny" else 2048)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp = Amp(AmpConfig.from_original(fp16=args.fp16, device=device))
    torch.manual_seed(0)
    model = build_model(args.model, args.img_dim, device)
    autocast = amp.autocast if amp.enabled else contextlib.nullcontext
    evaluation = eval_throughput(model, args, device, autocast)
    training = train_throughput(model, args, device, amp)
    report = {
        "benchmark": "iais",
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "device": device_label(device),
        "torch_threads": torch.get_num_threads(),
        "evaluation": evaluation,
        "training": training,
    }
    print(f"IAIS/UNITER-{args.model} on {report['device']} (fp16={args.fp16}, {args.txt_len} tokens, {args.nbb} "
          f"regions, blocks of {args.block} images)")
    print(f"  evaluation: {evaluation['pairs_per_s']:.0f} pairs/s; one caption vs 1K images "
          f"{evaluation['query_latency_s_flickr_1k']:.3f} s, "
          f"vs 5K images {evaluation['query_latency_s_coco_5k']:.3f} s; "
          f"full COCO 5K x 25K {evaluation['full_eval_s_coco_5k_x_25k'] / 3600:.1f} h")
    print(f"  training ({args.iais}, {args.negative_size}+1 scored, {args.hard_neg_size}+1 trained per group): "
          f"{training['iterations_per_s']:.2f} it/s = {training['pairs_trained_per_s']:.0f} trained pairs/s, "
          f"{training['pairs_scored_per_s']:.0f} scored pairs/s")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
