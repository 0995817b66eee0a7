"""Benchmark: LightningDOT retrieval speed, the paper's claim ("600-2000x faster than UNITER").

- retrieval: one query at a time against a gallery of N vectors of ``--dim`` (768) floats, N in
  ``--sizes`` (1K and 25K by default; ``--full`` adds 100K and 1M): brute-force torch (``q @ G.T`` + topk),
  faiss flat inner product (the default index), HNSW with the original's parameters (M = store_n 512,
  efConstruction 200, efSearch 128; up to ``--hnsw-orig-max`` vectors, 1K by default: its build is slow) and ours
  (M 32, same ef), and an IVF-flat inner-product index (ours, 4 sqrt(N) lists, nprobe 32). Per method:
  build seconds, index bytes, query latency p50 / p99 (ms), queries/s,
  and recall@10 against the exact top 10.
- end to end: the bi-encoder answers a text query with one text-tower pass + a search (+ re-ranking
  its top M with the UNITER cross-encoder); UNITER alone scores every (query, image) pair. The ratio of
  the two costs at the same gallery size is the README's speed-up. Model sizes: ``--model tiny`` (the
  synthetic world's, default) or ``base`` (the paper's; use a GPU).
- training: bi-encoder samples/s (in-batch NLL, both towers, ``--train-batch`` pairs).

Gallery vectors are synthetic embeddings (1,000 Gaussian clusters, per-row scale: unnormalised, as the
dot-product embeddings); each query lies near a random gallery item. Uniform random vectors in 768-d have
no neighbourhood structure at all, which no approximate index can exploit.
Run: ``python benchmarks/bench_lightningdot.py --out bench_out/lightningdot.json`` (``--full`` for 1M).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from itr_common.models.uniter import UniterConfig, UniterForImageTextRetrieval
from itr_lightningdot.data import _text_inputs, image_batch
from itr_lightningdot.indexer import DenseFlatIndexer, DenseHNSWFlatIndexer, DenseIVFFlatIndexer, _faiss
from itr_lightningdot.losses import biencoder_loss
from itr_lightningdot.model import BertEncoder, BiEncoder, UniterEncoder

SIZES = {
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128},
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
}
ORIGINAL_HNSW = {"store_n": 512, "ef_search": 128, "ef_construction": 200}
OUR_HNSW = {"store_n": 32, "ef_search": 128, "ef_construction": 200}


def percentiles(times_s: list[float]) -> dict[str, float]:
    arr = np.asarray(times_s) * 1000
    return {"p50_ms": float(np.percentile(arr, 50)), "p99_ms": float(np.percentile(arr, 99)),
            "queries_per_s": float(len(arr) / (arr.sum() / 1000))}


def gallery(n: int, dim: int, seed: int = 0, clusters: int = 1000) -> np.ndarray:
    """Embedding-like vectors: ``clusters`` Gaussian centres, each point its centre plus smaller noise,
    with a per-row scale (unnormalised, as the bi-encoder's dot-product embeddings)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, 100_000):
        m = min(100_000, n - s)
        points = centres[rng.integers(0, clusters, m)] + 0.7 * rng.standard_normal((m, dim), dtype=np.float32)
        out[s:s + m] = points * rng.uniform(0.8, 1.2, (m, 1)).astype(np.float32)
    return out


def queries_near(data: np.ndarray, q: int, seed: int = 1) -> np.ndarray:
    """Queries next to random gallery items (a caption near its image), noise as large as the spread."""
    rng = np.random.default_rng(seed)
    picks = data[rng.integers(0, len(data), q)]
    return (picks + 0.7 * rng.standard_normal(picks.shape, dtype=np.float32)).astype(np.float32)


def bench_size(n: int, args: argparse.Namespace) -> dict[str, Any]:
    data = gallery(n, args.dim)
    queries = queries_near(data, args.queries)
    exact = np.argsort(-(queries @ data.T), axis=1)[:, :10] if n <= 200_000 else None
    out: dict[str, Any] = {"n": n}

    tensor = torch.from_numpy(data)
    times = []
    top_torch = []
    for q in queries:
        start = time.perf_counter()
        scores = tensor @ torch.from_numpy(q)
        top = torch.topk(scores, 10).indices
        times.append(time.perf_counter() - start)
        top_torch.append(top.numpy())
    if exact is None:
        exact = np.stack(top_torch)
    out["torch_brute_force"] = {"build_s": 0.0, "bytes": int(data.nbytes), **percentiles(times)}

    methods = [("faiss_flat_ip", lambda: DenseFlatIndexer(args.dim))]
    if n <= args.hnsw_orig_max:
        methods.append(("faiss_hnsw_original", lambda: DenseHNSWFlatIndexer(args.dim, **ORIGINAL_HNSW)))
    if args.hnsw_max is None or n <= args.hnsw_max:
        methods.append(("faiss_hnsw_ours", lambda: DenseHNSWFlatIndexer(args.dim, **OUR_HNSW)))
    if n >= 10 * args.ivf_min_per_list:
        methods.append(("faiss_ivf_flat_ip", lambda: DenseIVFFlatIndexer(args.dim, nprobe=args.ivf_nprobe)))
    if args.methods:
        methods = [(name, make) for name, make in methods if name in args.methods]
    faiss = _faiss()
    for name, make in methods:
        index = make()
        start = time.perf_counter()
        index.index_vectors(data)
        build = time.perf_counter() - start
        size = int(faiss.serialize_index(index.index).nbytes)
        index.search(queries[:1], 10)
        times, found = [], []
        for q in queries:
            start = time.perf_counter()
            _, rows = index.search(q[None], 10)
            times.append(time.perf_counter() - start)
            found.append(rows[0])
        recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact)]))
        out[name] = {"build_s": build, "bytes": size, "recall_at_10": recall, **percentiles(times)}
        del index
    return out


def tiny_biencoder(size: str, img_dim: int, project_dim: int) -> BiEncoder:
    from transformers import BertConfig, BertModel

    sizes = SIZES[size]
    bert_config = BertConfig(vocab_size=28996, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **sizes)
    bert_config._attn_implementation = "sdpa"
    img = UniterEncoder(UniterConfig(vocab_size=28996, img_dim=img_dim, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0, **sizes), project_dim)
    return BiEncoder(img, BertEncoder(BertModel(bert_config), project_dim))


def end_to_end(args: argparse.Namespace, device: torch.device, search_ms: dict[int, float]) -> dict[str, Any]:
    """Seconds per text query: bi-encoder (+ re-rank top M) vs UNITER on every pair, per gallery size."""
    torch.manual_seed(0)
    model = tiny_biencoder(args.model, args.img_dim, args.project_dim).to(device).eval()
    uniter = UniterForImageTextRetrieval(UniterConfig(vocab_size=28996, img_dim=args.img_dim,
                                                      **SIZES[args.model])).to(device).eval()
    gen = torch.Generator().manual_seed(0)
    text = torch.cat([torch.tensor([101]), torch.randint(1000, 28000, (args.txt_len - 2,), generator=gen),
                      torch.tensor([102])])
    feats = torch.randn(args.pair_batch, args.nbb, args.img_dim, generator=gen)
    pos = torch.rand(args.pair_batch, args.nbb, 7, generator=gen)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    with torch.inference_mode():
        inputs = {k: v.to(device) for k, v in _text_inputs([text]).items()}
        model.encode_text(inputs)
        sync()
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            model.encode_text(inputs)
            sync()
            times.append(time.perf_counter() - start)
        encode_s = float(np.median(times))
        ids = text.unsqueeze(0).expand(args.pair_batch, -1).to(device)
        attn = torch.ones(args.pair_batch, text.numel() + args.nbb, dtype=torch.long, device=device)
        fd, pd = feats.to(device), pos.to(device)
        position = torch.arange(text.numel(), device=device)[None]
        uniter(ids, position, fd, pd, attn)
        sync()
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            uniter(ids, position, fd, pd, attn)
            sync()
            times.append(time.perf_counter() - start)
        pair_s = float(np.median(times)) / args.pair_batch
        img = image_batch(list(feats[:8]), list(pos[:8]))
        model.encode_image({k: (v.to(device) if torch.is_tensor(v) else v) for k, v in img.items()})
        sync()
        start = time.perf_counter()
        for _ in range(args.repeat):
            model.encode_image({k: (v.to(device) if torch.is_tensor(v) else v) for k, v in img.items()})
        sync()
        img_encode_s = (time.perf_counter() - start) / args.repeat / 8
    rows = {}
    for n, ms in search_ms.items():
        uniter_s = n * pair_s
        bi_s = encode_s + ms / 1000
        rows[str(n)] = {"bi_encoder_s": bi_s, "uniter_all_pairs_s": uniter_s, "speedup": uniter_s / bi_s,
                        **{f"rerank_top{m}_s": bi_s + m * pair_s for m in args.rerank_m},
                        **{f"speedup_rerank_top{m}": uniter_s / (bi_s + m * pair_s) for m in args.rerank_m},
                        "gallery_embedding_once_s": n * img_encode_s}
    return {"model": args.model, "text_encode_ms": encode_s * 1000, "uniter_pair_ms": pair_s * 1000,
            "image_encode_ms": img_encode_s * 1000, "by_gallery_size": rows}


def training(args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    torch.manual_seed(0)
    model = tiny_biencoder(args.model, args.img_dim, args.project_dim).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    gen = torch.Generator().manual_seed(1)
    texts = [torch.cat([torch.tensor([101]), torch.randint(1000, 28000, (args.txt_len - 2,), generator=gen),
                        torch.tensor([102])]) for _ in range(args.train_batch)]
    batch = {"txts": _text_inputs(texts),
             "imgs": image_batch(list(torch.randn(args.train_batch, args.nbb, args.img_dim, generator=gen)),
                                 list(torch.rand(args.train_batch, args.nbb, 7, generator=gen)))}
    batch = {k: {kk: (vv.to(device) if torch.is_tensor(vv) else vv) for kk, vv in v.items()} for k, v in batch.items()}

    def step() -> None:
        out = model(batch)
        biencoder_loss(out.txt, out.img, None, args.train_batch, gather=False).loss.backward()
        opt.step()
        opt.zero_grad()

    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.train_iters):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return {"batch": args.train_batch, "steps_per_s": args.train_iters / elapsed,
            "samples_per_s": args.train_iters * args.train_batch / elapsed}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench_out/lightningdot.json")
    p.add_argument("--full", action="store_true", help="gallery sizes 1K, 25K, 100K and 1M")
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="gallery sizes (default 1000 25000)")
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--hnsw-orig-max", type=int, default=None,
                   help="largest gallery for the M=512 HNSW build (default 1000; 100000 with --full)")
    p.add_argument("--hnsw-max", type=int, default=None, help="largest gallery for our HNSW (default 100000)")
    p.add_argument("--ivf-nprobe", type=int, default=32, help="IVF lists scanned per query")
    p.add_argument("--ivf-min-per-list", type=int, default=39, help="IVF only for galleries of 10x this or more")
    p.add_argument("--methods", nargs="+", default=None, help="only these index methods (names as reported)")
    p.add_argument("--threads", type=int, default=0, help="faiss / torch threads (0: library default)")
    p.add_argument("--model", choices=sorted(SIZES), default="tiny")
    p.add_argument("--img-dim", type=int, default=2048)
    p.add_argument("--project-dim", type=int, default=768)
    p.add_argument("--nbb", type=int, default=36)
    p.add_argument("--txt-len", type=int, default=22)
    p.add_argument("--pair-batch", type=int, default=50, help="UNITER pairs per forward when timing a pair")
    p.add_argument("--rerank-m", type=int, nargs="+", default=[10, 100])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--train-batch", type=int, default=32)
    p.add_argument("--train-iters", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    sizes = args.sizes or ([1000, 25000, 100000, 1000000] if args.full else [1000, 25000])
    if args.hnsw_orig_max is None:
        args.hnsw_orig_max = 100000 if args.full else 1000
    if args.hnsw_max is None:
        args.hnsw_max = 100000  # an M=32 build over 1M vectors takes hours on a few cores
    if args.threads > 0:
        _faiss().omp_set_num_threads(args.threads)
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    retrieval = [bench_size(n, args) for n in sizes]
    for row in retrieval:
        print(f"gallery {row['n']:>8,}: " + "; ".join(
            f"{name} p50 {v['p50_ms']:.3f} ms p99 {v['p99_ms']:.3f} ms {v['queries_per_s']:.0f} q/s"
            + (f" R@10 {v['recall_at_10']:.3f}" if "recall_at_10" in v else "")
            + (f" build {v['build_s']:.1f} s" if v["build_s"] else "")
            for name, v in row.items() if name != "n"))
    search_ms = {row["n"]: row["faiss_flat_ip"]["p50_ms"] for row in retrieval}
    e2e = end_to_end(args, device, search_ms)
    for n, row in e2e["by_gallery_size"].items():
        print(f"end to end ({args.model}), gallery {int(n):,}: bi-encoder {row['bi_encoder_s'] * 1000:.2f} ms, "
              f"UNITER all pairs {row['uniter_all_pairs_s']:.2f} s, speed-up {row['speedup']:.0f}x; "
              + ", ".join(f"+re-rank top {m}: {row[f'speedup_rerank_top{m}']:.0f}x" for m in args.rerank_m))
    train = training(args, device)
    print(f"training ({args.model}): {train['samples_per_s']:.1f} samples/s (batch {train['batch']})")
    report = {"config": {**vars(args), "sizes": sizes}, "machine": {"platform": platform.platform(),
              "torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads()},
              "retrieval": retrieval, "end_to_end": e2e, "training": train}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
