"""Benchmark: SelfAlign's retrieval latency against DIME's cross-attention scoring, encoding and training speed.

SelfAlign keeps independent encoders: a gallery is encoded once, and a text query is scored against every
image by one matrix product (CAMERA: (N*12, E) @ (E,), then the max over the 12 views; VSRN: (N, E) @ (E,)).
DIME scores every image-caption pair with its routed interaction network. Measured on the same machine:

- ``latency``: one caption query against 1K (Flickr30K) and 5K (COCO) image embeddings, SelfAlign measured
  directly (median over repeats, query embedding included: the caption encoder's forward for one caption);
  DIME as ``images / pairs_per_s`` of :func:`itr_dime.evaluation.score_matrix` on a block of encoded pairs
  (text encoding excluded, in DIME's favour); the ratio DIME / SelfAlign is the paper's speed claim;
- ``encode``: images/s and captions/s of each variant's encoders (eval mode);
- ``train``: samples/s of one optimisation step (forward, the variant's losses, backward, Adam) for CAMERA,
  CAMERA+SelfAlign, VSRN and VSRN+SelfAlign.

``--model tiny``: the synthetic world's sizes (embed 32, 1-layer BERT hidden 32, 12 regions of 32-d);
``--model base``: the papers' (embed 2048, BERT-base, 36 regions of 2048-d, vocab 8481; DIME embed 256). Weights
are random: speed does not depend on them. Run: ``python benchmarks/bench_selfalign.py --out bench_out/selfalign.json``
(``--model base`` on a GPU).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from transformers import BertConfig, BertModel

from itr_common.bench import device_label, save_report
from itr_selfalign.camera import CameraModel
from itr_selfalign.data import CameraBatch, VsrnBatch
from itr_selfalign.evaluation import score_matrix
from itr_selfalign.options import default_options
from itr_selfalign.vsrn import VsrnModel

SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"bert": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
             "opt": {"img_dim": 32, "embed_size": 32, "head": 4, "smry_k": 12, "local_clu_num": 16, "word_dim": 16,
                     "dim_vid": 32, "dim_hidden": 16, "dim_word": 16},
             "regions": 12, "vocab": 50},
    "base": {"bert": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                      "intermediate_size": 3072},
             "opt": {}, "regions": 36, "vocab": 8481},
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_time(fn, device: torch.device, repeats: int) -> float:
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def build(variant: str, selfalign: int, size: str, device: torch.device):
    spec = SIZES[size]
    opt = default_options(variant)
    opt.selfalign = selfalign
    for key, value in spec["opt"].items():
        setattr(opt, key, value)
    torch.manual_seed(0)
    if variant == "camera":
        bert = BertModel(BertConfig(vocab_size=30522, max_position_embeddings=64, **spec["bert"]))
        return CameraModel(opt, bert).to(device), opt
    opt.vocab_size = spec["vocab"]
    return VsrnModel(opt).to(device), opt


def random_batch(variant: str, opt, n: int, regions: int, device: torch.device, words: int = 32):
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(n, regions, opt.img_dim, generator=gen)
    lengths = torch.randint(words // 2, words + 1, (n,), generator=gen).sort(descending=True).values
    ids = torch.arange(n)
    if variant == "camera":
        xy = torch.rand(n, regions, 2, generator=gen) * 300
        boxes = torch.cat([xy, xy + 20 + torch.rand(n, regions, 2, generator=gen) * 200], dim=-1)
        sizes = torch.tensor([[640.0, 480.0]]).expand(n, 2).contiguous()
        input_ids = torch.randint(1000, 30000, (n, opt.max_words), generator=gen)
        mask = (torch.arange(opt.max_words)[None] < lengths.clamp(max=opt.max_words)[:, None]).long()
        return CameraBatch(images, boxes, sizes, input_ids * mask, mask, torch.zeros_like(input_ids),
                           mask.sum(1), ids).to(device)
    captions = torch.randint(4, opt.vocab_size, (n, int(lengths.max())), generator=gen)
    captions = captions * (torch.arange(captions.shape[1])[None] < lengths[:, None])
    labels = torch.zeros(n, opt.max_len + 1, dtype=torch.long)
    labels[:, : captions.shape[1]] = captions[:, : opt.max_len + 1]
    masks = (labels > 0).float()
    return VsrnBatch(images, captions, lengths, ids, labels, masks).to(device)


@torch.inference_mode()
def encode(model, variant: str, batch) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    if variant == "camera":
        return (model.encode_images(batch.images, batch.boxes, batch.sizes),
                model.encode_captions(batch.input_ids, batch.attention_mask, batch.token_type_ids))
    return model.encode_images(batch.images), model.encode_captions(batch.captions, batch.lengths)


def selfalign_latency(model, variant: str, opt, regions: int, args, device: torch.device) -> dict[str, Any]:
    """One text query (encoded, then scored) against galleries of 1K and 5K encoded images."""
    batch = random_batch(variant, opt, args.encode_batch, regions, device)
    img, _ = encode(model, variant, batch)
    one = random_batch(variant, opt, 1, regions, device)
    out: dict[str, Any] = {"embedding_dim": int(img.shape[-1]), "views": int(img.shape[1]), "scoring_only": {}}
    cap = encode_caption(model, variant, one)
    for name, n in (("flickr30k_1k_images", 1000), ("coco_5k_images", 5000)):
        gallery = img.repeat((n + img.shape[0] - 1) // img.shape[0], 1, 1)[:n].contiguous()

        @torch.inference_mode()
        def query(gallery=gallery):
            return score_matrix(gallery, encode_caption(model, variant, one)).squeeze(1).topk(10).indices

        @torch.inference_mode()
        def scoring(gallery=gallery):
            return score_matrix(gallery, cap).squeeze(1).topk(10).indices

        out[name] = median_time(query, device, args.repeats)
        out["scoring_only"][name] = median_time(scoring, device, args.repeats)
    return out


@torch.inference_mode()
def encode_caption(model, variant: str, batch) -> torch.Tensor:
    if variant == "camera":
        return model.encode_captions(batch.input_ids, batch.attention_mask, batch.token_type_ids)
    return model.encode_captions(batch.captions, batch.lengths)


def encode_throughput(model, variant: str, opt, regions: int, args, device: torch.device) -> dict[str, float]:
    batch = random_batch(variant, opt, args.encode_batch, regions, device)
    model.eval()
    t_img = median_time(lambda: encode(model, variant, batch)[0], device, 3)
    t_cap = median_time(lambda: encode_caption(model, variant, batch), device, 3)
    n = args.encode_batch
    return {"images_per_s": n / t_img, "captions_per_s": n / t_cap}


def train_throughput(model, variant: str, opt, regions: int, args, device: torch.device) -> dict[str, float]:
    batch = random_batch(variant, opt, args.batch, regions, device)
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=1e-4)

    def step() -> None:
        model.train()
        losses = model(batch)
        optimizer.zero_grad(set_to_none=True)
        losses.total.backward()
        optimizer.step()

    seconds = median_time(step, device, args.train_iters)
    return {"batch": args.batch, "step_s": seconds, "samples_per_s": args.batch / seconds}


def dime_latency(args, device: torch.device) -> dict[str, Any]:
    """DIME's cross-attention scoring on the same machine: pairs/s of score_matrix, as latency per query."""
    path = Path(__file__).resolve().parent / "bench_dime.py"
    spec = importlib.util.spec_from_file_location("bench_dime", path)
    bench_dime = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_dime)
    from itr_dime.evaluation import score_matrix as dime_score_matrix

    model, opt, regions = bench_dime.build_model(args.model, device)
    model.eval()
    enc = bench_dime.random_split(opt, args.dime_images, regions, 32)
    seconds = median_time(lambda: dime_score_matrix(model, enc, args.dime_shard, device, show_progress=False),
                          device, 1)
    pairs_per_s = enc.n_images * enc.n_captions / seconds
    return {"pairs_per_s": pairs_per_s, "images": enc.n_images, "captions": enc.n_captions,
            "flickr30k_1k_images": 1000 / pairs_per_s, "coco_5k_images": 5000 / pairs_per_s}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=list(SIZES), default="tiny")
    p.add_argument("--batch", type=int, default=32, help="training batch (pairs)")
    p.add_argument("--encode-batch", dest="encode_batch", type=int, default=128)
    p.add_argument("--train-iters", dest="train_iters", type=int, default=3)
    p.add_argument("--repeats", type=int, default=20, help="timed repeats of one query")
    p.add_argument("--dime-images", dest="dime_images", type=int, default=40, help="images of DIME's timed block")
    p.add_argument("--dime-shard", dest="dime_shard", type=int, default=64)
    p.add_argument("--skip-dime", dest="skip_dime", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    spec = SIZES[args.model]
    result: dict[str, Any] = {
        "benchmark": "selfalign", "model": args.model, "threads": torch.get_num_threads(),
        "device": device_label(device),
        "variants": {},
    }
    for variant in ("camera", "vsrn"):
        for selfalign in (0, 1):
            name = ("CAMERA" if variant == "camera" else "VSRN") + ("+SelfAlign" if selfalign else "")
            model, opt = build(variant, selfalign, args.model, device)
            entry = {"train": train_throughput(model, variant, opt, spec["regions"], args, device),
                     "encode": encode_throughput(model, variant, opt, spec["regions"], args, device)}
            if selfalign:
                entry["latency_s"] = selfalign_latency(model, variant, opt, spec["regions"], args, device)
            result["variants"][name] = entry
            del model
    if not args.skip_dime:
        dime = dime_latency(args, device)
        result["dime"] = dime
        for name in ("CAMERA+SelfAlign", "VSRN+SelfAlign"):
            lat = result["variants"][name]["latency_s"]
            keys = ("flickr30k_1k_images", "coco_5k_images")
            lat["dime_over_selfalign"] = {k: dime[k] / lat[k] for k in keys}
            lat["dime_over_selfalign_scoring_only"] = {k: dime[k] / lat["scoring_only"][k] for k in keys}
    print(f"SelfAlign ({args.model}, {result['device']}, {result['threads']} threads)")
    for name, entry in result["variants"].items():
        tr, en = entry["train"], entry["encode"]
        line = (f"  {name:17} train {tr['samples_per_s']:8.1f} samples/s | encode {en['images_per_s']:8.1f} img/s "
                f"{en['captions_per_s']:8.1f} cap/s")
        if "latency_s" in entry:
            lat = entry["latency_s"]
            line += (f" | query vs 1K {lat['flickr30k_1k_images'] * 1e3:.2f} ms, "
                     f"vs 5K {lat['coco_5k_images'] * 1e3:.2f} ms")
            if "dime_over_selfalign" in lat:
                ratio = lat["dime_over_selfalign"]
                line += f" (DIME {ratio['flickr30k_1k_images']:.0f}x / {ratio['coco_5k_images']:.0f}x slower)"
        print(line)
    if "dime" in result:
        d = result["dime"]
        print(f"  DIME cross-attention: {d['pairs_per_s']:,.0f} pairs/s -> query vs 1K "
              f"{d['flickr30k_1k_images']:.3f} s, vs 5K {d['coco_5k_images']:.3f} s")
    save_report(args.out, result)
    return result


if __name__ == "__main__":
    main()
