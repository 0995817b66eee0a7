"""Benchmark: ALADIN's retrieval latency per query for both heads against a VinVL cross-encoder ("almost 90x").

The paper's speed claim compares the time to answer one query over a COCO gallery. Measured here on the
same machine, the same backbone sizes and the same gallery sizes (1K and 5K images, 5 captions each):

- matching head (t2i): encode the query caption (text pass + matching TransformerEncoder), one matrix
  product with the gallery's precomputed image embeddings, top-k;
- alignment head (t2i): encode the query caption (text pass), MrSw against every gallery image's
  precomputed region set (chunked, exhaustive);
- VinVL/Oscar cross-encoder (t2i): the same backbone with its classification head scoring every
  (caption, tags + regions) pair of the gallery, ``softmax(logits)[:, 1]`` (OSCAR's retrieval
  inference); timed on ``--xenc-pairs`` pairs and scaled to the gallery (it is linear in the gallery);
- ratio: cross-encoder latency / matching-head latency (the abstract's "almost 90 times faster";
  the repo's plot uses 0.023 s vs 2.06 s per query);
- encoding throughput (images/s and captions/s through the two passes + matching head), training
  samples/s of the joint config (alignment + distillation, Adam, grad clipping);
- whole-split evaluation (``--eval-images``, 5,000 = COCO 5K x 25K captions): chunked exhaustive MrSw
  scoring (pairs/s, GPU peak memory) and the ranks of both heads under both protocols.

Inputs are random with the stated sizes: captions of ``--txt-len`` tokens, ``--tag-len`` tag tokens and
``--regions`` regions of 2054 values (``--feat-dim``). ``--model tiny`` is the synthetic world's VinVL
(hidden 64, 2 layers); ``--model base`` is VinVL-base (BERT-base, use a GPU).

Run: ``python benchmarks/bench_aladin.py --out bench_out/aladin.json`` (``--model base --device cuda`` on a GPU).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from itr_aladin.losses import alignment_scores
from itr_aladin.model import ALADModel, ImageBatch, TextBatch
from itr_aladin.oscar import OscarConfig
from itr_common.metrics import evaluate_sims

SIZES = {
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128},
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
}


def build(args: argparse.Namespace, device: torch.device) -> ALADModel:
    sizes = SIZES[args.model]
    oscar = OscarConfig(vocab_size=30522, img_feature_dim=args.feat_dim, **sizes)
    config = {
        "model": {"embed-size": sizes["hidden_size"], "text-aggregation": "first", "image-aggregation": "first",
                  "freeze-teran": False, "teran-layers": 0, "tern-layers": 2, "shared-transformer": True,
                  "dropout": 0.1},
        "training": {"lr": 1e-5, "grad-clip": 2.0, "max-violation": True, "loss-type": "alignment-distillation",
                     "loss-weights": [1, 1], "alignment-mode": "MrSw", "distillation-mode": "listnet", "measure": "dot",
                     "margin": 0.2, "bs": args.batch, "scheduler": "steplr", "gamma": 0.1, "step-size": 15},
    }
    torch.manual_seed(0)
    return ALADModel(config, oscar).to(device)


def texts(n: int, args: argparse.Namespace, device: torch.device) -> TextBatch:
    ids = torch.randint(1000, 30000, (n, args.txt_len), device=device)
    ids[:, 0], ids[:, -1] = 101, 102
    ones = torch.ones_like(ids)
    return TextBatch(ids, ones, torch.zeros_like(ids), torch.full((n,), args.txt_len, device=device))


def images(n: int, args: argparse.Namespace, device: torch.device) -> ImageBatch:
    ids = torch.randint(1000, 30000, (n, args.tag_len), device=device)
    ids[:, 0], ids[:, -1] = 100, 102
    types = torch.ones_like(ids)
    types[:, 0] = 0
    mask = torch.ones(n, args.tag_len + args.regions, dtype=torch.long, device=device)
    feats = torch.randn(n, args.regions, args.feat_dim, device=device)
    return ImageBatch(ids, mask, types, feats, torch.full((n,), args.regions, device=device))


def timed(fn, device: torch.device, repeat: int) -> float:
    """Median seconds of ``fn()`` over ``repeat`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


@torch.inference_mode()
def gallery(model: ALADModel, n: int, args: argparse.Namespace, device: torch.device):
    embs, sets = [], []
    for start in range(0, n, args.encode_batch):
        out = model.img_txt_enc.encode_image(images(min(args.encode_batch, n - start), args, device))
        embs.append(out.emb)
        sets.append(out.sets)
    return torch.cat(embs), torch.cat(sets), torch.full((n,), args.regions, device=device)


def latency(model: ALADModel, args: argparse.Namespace, device: torch.device, n_images: int) -> dict[str, float]:
    enc = model.img_txt_enc
    img_emb, img_sets, img_len = gallery(model, n_images, args, device)
    query = texts(1, args, device)

    @torch.inference_mode()
    def matching() -> None:
        cap = enc.encode_text(query)
        (img_emb @ cap.emb.T).squeeze(1).topk(10)

    @torch.inference_mode()
    def alignment() -> None:
        cap = enc.encode_text(query)
        chunk = args.align_chunk
        scores = torch.cat([alignment_scores(img_sets[i : i + chunk], cap.sets, img_len[i : i + chunk], cap.lengths,
                                             "MrSw", (71, 71)) for i in range(0, n_images, chunk)])
        scores.squeeze(1).topk(10)

    pairs = images(args.xenc_batch, args, device)
    cap = texts(args.xenc_batch, args, device)
    xenc_ids = torch.cat([cap.input_ids, pairs.input_ids], 1)
    xenc_types = torch.cat([cap.token_type_ids, pairs.token_type_ids], 1)
    xenc_mask = torch.cat([cap.attention_mask, pairs.attention_mask], 1)
    classifier = model.img_txt_enc.oscar_model

    @torch.inference_mode()
    def cross_block() -> None:
        classifier.match_scores(classifier(xenc_ids, xenc_types, xenc_mask, pairs.img_feats))

    block = timed(cross_block, device, args.repeat)
    n_blocks = -(-args.xenc_pairs // args.xenc_batch)
    per_pair = block / args.xenc_batch
    return {"matching_s": timed(matching, device, args.repeat), "alignment_s": timed(alignment, device, args.repeat),
            "cross_encoder_s": per_pair * n_images, "cross_encoder_pairs_per_s": 1.0 / per_pair,
            "cross_encoder_blocks_timed": n_blocks}


def full_evaluation(model: ALADModel, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """test.py's scoring of a whole split (``--eval-images`` images x 5 captions, random unit sets of the stated
    lengths): both score matrices, chunked MrSw, ranks with ties, the 5K and 1K-fold5 protocols."""
    from itr_aladin.evaluation import EncodedSplit, alignment_sims, matching_sims

    n = args.eval_images
    gen = torch.Generator().manual_seed(0)
    dim = model.img_txt_enc.embed_size

    def unit(*shape: int) -> torch.Tensor:
        return torch.nn.functional.normalize(torch.randn(*shape, generator=gen), dim=-1)

    enc = EncodedSplit(unit(n, dim), unit(n, args.regions, dim), torch.full((n,), args.regions), unit(5 * n, dim),
                       unit(5 * n, args.txt_len, dim), torch.randint(8, args.txt_len + 1, (5 * n,), generator=gen), 5)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    sims = alignment_sims(model, enc, args.eval_image_chunk, args.eval_caption_chunk, device)
    align_s = time.perf_counter() - start
    start = time.perf_counter()
    for protocol in ("coco-5k", "coco-1k-fold5"):
        evaluate_sims(sims, protocol, 5)
        evaluate_sims(matching_sims(enc), protocol, 5)
    rank_s = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return {"images": n, "captions": 5 * n, "alignment_scoring_s": align_s,
            "alignment_pairs_per_s": 5 * n * n / align_s, "ranking_s_both_heads_both_protocols": rank_s,
            "gpu_peak_gib": peak}


def encoding(model: ALADModel, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    enc = model.img_txt_enc
    img, cap = images(args.encode_batch, args, device), texts(args.encode_batch, args, device)
    with torch.inference_mode():
        t_img = timed(lambda: enc.encode_image(img), device, args.repeat)
        t_cap = timed(lambda: enc.encode_text(cap), device, args.repeat)
    return {"images_per_s": args.encode_batch / t_img, "captions_per_s": args.encode_batch / t_cap}


def training(model: ALADModel, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    img, cap = images(args.batch, args, device), texts(args.batch, args, device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss, _ = model(img, cap)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
        optimizer.step()

    seconds = timed(step, device, max(2, args.repeat // 2))
    model.eval()
    return {"samples_per_s": args.batch / seconds, "step_s": seconds}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--model", choices=sorted(SIZES), default="tiny")
    add("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add("--galleries", default="1000,5000", help="gallery sizes in images (COCO 1K, 5K)")
    add("--txt-len", type=int, default=20, help="caption tokens with [CLS]/[SEP] (COCO captions ~ 14 wordpieces)")
    add("--tag-len", type=int, default=20, help="object tag tokens (+ first token and [SEP])")
    add("--regions", type=int, default=34, help="regions per image (the README's --max_img_seq_length 34)")
    add("--feat-dim", type=int, default=2054)
    add("--batch", type=int, default=32, help="training batch (the configs' bs)")
    add("--encode-batch", type=int, default=128)
    add("--align-chunk", type=int, default=500, help="gallery images per MrSw block")
    add("--xenc-batch", type=int, default=128, help="pairs per cross-encoder forward")
    add("--xenc-pairs", type=int, default=128, help="pairs timed for the cross-encoder (scaled to the gallery)")
    add("--repeat", type=int, default=5)
    add("--eval-images", type=int, default=200, help="images of the whole-split evaluation timing (0: skip)")
    add("--eval-image-chunk", type=int, default=32)
    add("--eval-caption-chunk", type=int, default=250)
    add("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    add("--out", default="bench_out/aladin.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = build(args, device).eval()
    record: dict[str, Any] = {"config": {**vars(args), "torch": torch.__version__, "machine": platform.machine(),
                                         "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}}
    record["encoding"] = encoding(model, args, device)
    record["training"] = training(model, args, device)
    print(f"ALADIN bench: model {args.model}, device {device}, regions {args.regions}, caption {args.txt_len} tokens")
    print(f"encoding: {record['encoding']['images_per_s']:.1f} images/s, {record['encoding']['captions_per_s']:.1f} "
          f"captions/s; training {record['training']['samples_per_s']:.1f} samples/s (bs {args.batch})")
    if args.eval_images:
        record["evaluation"] = ev = full_evaluation(model, args, device)
        print(f"evaluation of {ev['images']} images x {ev['captions']} captions: alignment scoring "
              f"{ev['alignment_scoring_s']:.1f} s ({ev['alignment_pairs_per_s']:.0f} pairs/s), ranks "
              f"{ev['ranking_s_both_heads_both_protocols']:.1f} s, GPU peak {ev['gpu_peak_gib']:.2f} GiB")
    record["latency"] = {}
    print(f"{'gallery':>8} {'matching s':>11} {'alignment s':>12} {'cross-enc s':>12} {'x-enc/match':>12} "
          f"{'x-enc/align':>12}")
    for n in (int(g) for g in args.galleries.split(",")):
        lat = latency(model, args, device, n)
        lat["ratio_cross_encoder_over_matching"] = lat["cross_encoder_s"] / lat["matching_s"]
        lat["ratio_cross_encoder_over_alignment"] = lat["cross_encoder_s"] / lat["alignment_s"]
        record["latency"][str(n)] = lat
        print(f"{n:>8} {lat['matching_s']:>11.4f} {lat['alignment_s']:>12.4f} {lat['cross_encoder_s']:>12.3f} "
              f"{lat['ratio_cross_encoder_over_matching']:>11.0f}x {lat['ratio_cross_encoder_over_alignment']:>11.1f}x")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written to {out}")
    return record


if __name__ == "__main__":
    main()
