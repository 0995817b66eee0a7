"""Benchmark: DIME cross-attention scoring (evaluation pairs/s, query latency) and training samples/s.

DIME scores every image-caption pair with its routed interaction module, so evaluation cost is linear in
images x captions. Two ways of filling the (n_img, n_cap) score matrix are timed on the same encoded split:

- ``original``: the original scheme, kept here only: ``calItr`` copies both slices of every block of
  ``shard`` images x ``shard`` captions from numpy to the device again, scores it under ``torch.no_grad``
  and writes a float64 numpy matrix; inside the block, its Cross-Modal Refinement and Global-Local
  Guidance cells (``models/Refinement.py``, ``models/Cells.py``) loop over the captions one at a time
  (all images at once), which is emulated by patching those two cells of ours with such loops;
- ``ours``: :func:`itr_dime.evaluation.score_matrix`: captions moved to the device once, each image shard
  once per row of blocks, every cell batched over the whole image x caption block,
  ``torch.inference_mode``, float32 matrix, autocast with ``--fp16``.

Both give the same matrix (the largest difference is printed). Query latency is the time to score one
caption against a Flickr30K (1K images) or COCO (5K images) gallery at the measured pairs/s. Training: one
optimisation step (forward, VSE++ + path-regularisation loss, backward, Adam) on a batch of ``--batch``
pairs with the README's ``--extra_stc 1``; samples/s.

``--model tiny`` is the synthetic world's size (1-layer BERT, embed 32, 8 regions of 32-d features);
``--model base`` the paper's (BERT-base and the original defaults: embed 256, 36 regions of 2048-d
features, 32 tokens, blocks of 2 x 32); use a GPU for that.
Weights are random: throughput does not depend on them.

Run: ``python benchmarks/bench_dime.py --out bench_out/dime.json`` (add ``--model base --fp16`` on a GPU).
"""

from __future__ import annotations

import argparse
import time
from typing import Any
from unittest import mock

import numpy as np
import torch
from transformers import BertConfig, BertModel

from itr_common.bench import device_label, save_report
from itr_dime.attention import cross_attention
from itr_dime.cells import GlobalLocalGuidanceCell, global_local_guidance
from itr_dime.evaluation import EncodedSplit, score_matrix
from itr_dime.losses import dime_loss
from itr_dime.model import DIME
from itr_dime.options import default_options
from itr_dime.pairs import PairContext
from itr_dime.refinement import Refinement

SIZES: dict[str, dict[str, Any]] = {
    "tiny": {
        "bert": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
        "opt": {"img_dim": 32, "embed_size": 32, "hid_IMRC": 64, "hid_router": 32, "num_head_IMRC": 4},
        "regions": 8,
    },
    "base": {
        "bert": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
        "opt": {},  # the original train.py defaults
        "regions": 36,
    },
}


def build_model(size: str, device: torch.device) -> tuple[DIME, argparse.Namespace, int]:
    spec = SIZES[size]
    opt = default_options()
    opt.direction, opt.extra_stc = "i2t", 1
    for key, value in spec["opt"].items():
        setattr(opt, key, value)
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=30522, max_position_embeddings=64, **spec["bert"]))
    return DIME(opt, bert=bert).to(device), opt, spec["regions"]


def random_split(opt: argparse.Namespace, n_img: int, regions: int, words: int) -> EncodedSplit:
    """Encoded embeddings of ``n_img`` images and 5 captions each (what :func:`encode_split` returns)."""
    gen = torch.Generator().manual_seed(0)
    d, n_cap = opt.embed_size, 5 * n_img
    lens = torch.randint(words // 2, words + 1, (n_cap,), generator=gen)
    return EncodedSplit(
        rgn=torch.randn(n_img, regions, d, generator=gen), img=torch.randn(n_img, d, generator=gen),
        wrd=torch.randn(n_cap, words, d, generator=gen), stc=torch.randn(n_cap, d, generator=gen),
        lens=lens, captions_per_image=5,
    )


def refinement_looped_over_captions(self: Refinement, local: torch.Tensor, ctx: PairContext) -> torch.Tensor:
    """The original ``Refinement.forward_i2t`` / ``forward_t2i``: one caption of the block at a time."""
    lens = ctx.stc_lens.tolist()  # the original's cap_lens live on the host
    outs = []
    for j in range(ctx.n_stc):
        query = local[:, j if local.shape[1] > 1 else 0]  # (a, L, d)
        if self.direction == "i2t":
            context = ctx.wrd[j, : lens[j]].unsqueeze(0)  # the caption's words, truncated to its length
        else:
            context = ctx.rgn
        attended, _ = cross_attention(query, context, self.raw_feature_norm, self.lambda_softmax)
        outs.append(self.refine(query, attended).expand(ctx.n_img, -1, -1))
    return torch.stack(outs, dim=1)  # (n_img, n_stc, L, d)


def guidance_looped_over_captions(
    self: GlobalLocalGuidanceCell, x: torch.Tensor, ctx: PairContext
) -> tuple[torch.Tensor, torch.Tensor]:
    """The original ``GlobalLocalGuidanceCell.forward_i2t`` / ``forward_t2i``: one caption at a time."""
    outs = []
    for j in range(ctx.n_stc):
        local = x[:, j if x.shape[1] > 1 else 0]  # (a, L, d)
        guide = ctx.stc[j][None, None, :] if self.direction == "i2t" else ctx.img[:, None, :]
        outs.append(global_local_guidance(local, self.fc_1(local), guide).expand(ctx.n_img, -1, -1))
    return torch.stack(outs, dim=1), self.router(x)


def original_score_matrix(model: DIME, enc: EncodedSplit, shard: int, device: torch.device) -> np.ndarray:
    """The original ``calItr``: every block's slices copied from numpy to the device, float64 output, and
    Cross-Modal Refinement looped over the block's captions."""
    rgn, img, wrd, stc = (t.numpy() for t in (enc.rgn, enc.img, enc.wrd, enc.stc))
    lens = enc.lens
    n_img, n_cap = len(rgn), len(stc)
    d = np.zeros((n_img, n_cap))
    model.eval()
    for i in range(0, n_img, shard):
        for j in range(0, n_cap, shard):
            with (torch.no_grad(), mock.patch.object(Refinement, "forward", refinement_looped_over_captions),
                  mock.patch.object(GlobalLocalGuidanceCell, "forward", guidance_looped_over_captions)):
                block = model.score(
                    torch.from_numpy(rgn[i:i + shard]).to(device), torch.from_numpy(img[i:i + shard]).to(device),
                    torch.from_numpy(wrd[j:j + shard]).to(device), torch.from_numpy(stc[j:j + shard]).to(device),
                    lens[j:j + shard].to(device),
                )
            d[i:i + shard, j:j + shard] = block.cpu().numpy()
    return d


def timed(fn, device: torch.device, repeats: int = 1) -> tuple[float, Any]:
    out = fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats, out


def eval_throughput(model: DIME, opt, regions: int, args, device: torch.device) -> dict[str, Any]:
    enc = random_split(opt, args.images, regions, args.words)
    pairs = enc.n_images * enc.n_captions
    t_orig, d_orig = timed(lambda: original_score_matrix(model, enc, args.shard, device), device)
    t_ours, d_ours = timed(lambda: score_matrix(model, enc, args.shard, device, show_progress=False), device)
    out = {
        "images": enc.n_images, "captions": enc.n_captions, "shard": args.shard,
        "original_pairs_per_s": pairs / t_orig, "ours_pairs_per_s": pairs / t_ours, "speedup": t_orig / t_ours,
        "max_abs_diff": float(np.abs(d_orig - d_ours.numpy()).max()),
    }
    if args.fp16:
        t_amp, d_amp = timed(lambda: score_matrix(model, enc, args.shard, device, fp16=True, show_progress=False),
                             device)
        out["ours_amp_pairs_per_s"] = pairs / t_amp
        out["amp_speedup_over_original"] = t_orig / t_amp
    best = max(out["ours_pairs_per_s"], out.get("ours_amp_pairs_per_s", 0.0))
    out["query_latency_s"] = {"flickr30k_1k_images": 1000 / best, "coco_5k_images": 5000 / best}
    return out


def train_throughput(model: DIME, opt, regions: int, args, device: torch.device) -> dict[str, float]:
    gen = torch.Generator().manual_seed(1)
    b, n_stc = args.batch, args.batch * (1 + opt.extra_stc)
    images = torch.randn(b, regions, opt.img_dim, generator=gen).to(device)
    lengths = torch.randint(args.words // 2, args.words + 1, (n_stc,), generator=gen)
    input_ids = torch.randint(1000, 30000, (n_stc, args.words), generator=gen)
    mask = (torch.arange(args.words)[None] < lengths[:, None]).long()
    input_ids, mask, lengths = input_ids.to(device), mask.to(device), lengths.to(device)
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=opt.learning_rate)
    model.train()

    def step() -> None:
        ctx = torch.autocast(device.type, dtype=torch.float16) if args.fp16 and device.type == "cuda" else None
        with ctx or torch.autocast(device.type, enabled=False):
            out = model(images, input_ids, mask, torch.zeros_like(input_ids), lengths)
        loss = dime_loss(out.scores.float(), out.sim_paths.float(), out.bert.float(), margin=opt.margin,
                         max_violation=opt.max_violation, trade_off=opt.trade_off, batch_size=b).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    seconds, _ = timed(step, device, repeats=args.train_iters)
    return {"batch": b, "captions_per_batch": n_stc, "step_s": seconds, "samples_per_s": b / seconds}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=list(SIZES), default="tiny")
    p.add_argument("--images", type=int, default=100, help="images scored against their 5x captions")
    p.add_argument("--shard", type=int, default=64, help="block side (the original: 2 x --batch_size)")
    p.add_argument("--words", type=int, default=32, help="tokens per caption (--max_words)")
    p.add_argument("--batch", type=int, default=32, help="training batch (pairs)")
    p.add_argument("--train-iters", dest="train_iters", type=int, default=3)
    p.add_argument("--fp16", action="store_true", help="also time autocast scoring and train with it (CUDA)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, opt, regions = build_model(args.model, device)
    result = {
        "benchmark": "dime", "model": args.model, "device": device_label(device), "threads": torch.get_num_threads(),
        "fp16": args.fp16,
        "eval": eval_throughput(model, opt, regions, args, device),
        "train": train_throughput(model, opt, regions, args, device),
    }
    ev, tr = result["eval"], result["train"]
    print(f"DIME ({args.model}, {result['device']}, {result['threads']} threads): "
          f"{ev['images']} images x {ev['captions']} captions, shard {ev['shard']}")
    print(f"  scoring   original calItr {ev['original_pairs_per_s']:,.0f} pairs/s | ours {ev['ours_pairs_per_s']:,.0f} "
          f"pairs/s ({ev['speedup']:.2f}x)" + (f" | ours+amp {ev['ours_amp_pairs_per_s']:,.0f} pairs/s"
                                              if "ours_amp_pairs_per_s" in ev else "")
          + f"; max |diff| {ev['max_abs_diff']:.2e}")
    print(f"  latency   one caption vs 1K images {ev['query_latency_s']['flickr30k_1k_images']:.3f} s, "
          f"vs 5K images {ev['query_latency_s']['coco_5k_images']:.3f} s")
    print(f"  training  batch {tr['batch']} (+{tr['captions_per_batch'] - tr['batch']} extra captions): "
          f"{tr['step_s'] * 1000:.1f} ms/step, {tr['samples_per_s']:,.1f} samples/s")
    save_report(args.out, result)
    return result


if __name__ == "__main__":
    main()
