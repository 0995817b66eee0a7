"""Benchmark: vectorised i2t/t2i (itr_common.metrics) against the originals' per-query argsort loop.

On a random float32 similarity matrix of N images x k*N captions (default 5,000 x 25,000, 500 MB):

- ours: ``i2t(..., return_ranks=True)`` + ``t2i(..., return_ranks=True)`` (two passes, top-1 included),
  and ``evaluate_sims`` (one pass, both directions, no top-1);
- original style: a Python loop with one ``np.argsort`` per image row and per caption column, written
  the way kuanghuei/SCAN ``evaluation.py`` (and DIME, VSRN, CAMERA, SelfAlign) does it; with
  ``--loop-images L`` it runs on the first L images and their k*L captions and is extrapolated linearly;
- floor: one plain read of the matrix (``sims.max(axis=1)``), the memory-bandwidth bound;
- peak memory: tracemalloc peak of the allocations made during our i2t+t2i call (numpy reports its
  buffers to tracemalloc), the input matrix excluded.

Run: ``python benchmarks/bench_metrics.py --images 5000 --out bench_out/metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from itr_common.metrics import evaluate_sims, i2t, t2i


def random_sims(n_images: int, k: int, seed: int, signal: float) -> np.ndarray:
    """(N, k*N) float32 Gaussian scores with each caption's own image lifted by ``signal``."""
    rng = np.random.default_rng(seed)
    sims = rng.standard_normal((n_images, k * n_images), dtype=np.float32)
    captions = np.arange(k * n_images)
    sims[captions // k, captions] += np.float32(signal)
    return sims


def original_style_loops(sims: np.ndarray, k: int, n_images: int) -> tuple[np.ndarray, ...]:
    """The originals' loops on the first ``n_images`` images (rows) and their k*n_images captions.

    Returns ``(ranks_i2t, top1_i2t, ranks_t2i, top1_t2i)`` as float64 arrays, like the originals.
    """
    ranks_i2t, top1_i2t = np.zeros(n_images), np.zeros(n_images)
    for index in range(n_images):
        inds = np.argsort(sims[index])[::-1]
        rank = 1e20
        for caption in range(k * index, k * index + k):
            position = np.where(inds == caption)[0][0]
            rank = min(rank, position)
        ranks_i2t[index] = rank
        top1_i2t[index] = inds[0]
    by_caption = sims.T
    ranks_t2i, top1_t2i = np.zeros(k * n_images), np.zeros(k * n_images)
    for index in range(n_images):
        for offset in range(k):
            inds = np.argsort(by_caption[k * index + offset])[::-1]
            ranks_t2i[k * index + offset] = np.where(inds == index)[0][0]
            top1_t2i[k * index + offset] = inds[0]
    return ranks_i2t, top1_i2t, ranks_t2i, top1_t2i


def best_time(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Best wall time over ``repeat`` calls and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def peak_extra_bytes(fn: Callable[[], Any]) -> int:
    """tracemalloc peak of what ``fn`` allocates (numpy buffers included)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak - base


def ours_both(sims: np.ndarray, k: int):
    return i2t(sims, return_ranks=True, captions_per_image=k), t2i(sims, return_ranks=True, captions_per_image=k)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000, help="number of images N (captions: k*N)")
    parser.add_argument("--captions_per_image", "--captions-per-image", type=int, default=5)
    parser.add_argument(
        "--loop-images",
        type=int,
        default=0,
        help="time the original-style loop on this many images (and their captions) and extrapolate; 0 = all",
    )
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs for the fast timings")
    parser.add_argument("--signal", type=float, default=2.0, help="lift of the positive scores")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench_out/metrics.json", help="JSON result path")
    args = parser.parse_args(argv)
    if args.images < 1 or args.captions_per_image < 1 or args.repeat < 1 or args.loop_images < 0:
        parser.error("--images, --captions_per_image and --repeat must be positive, --loop-images >= 0")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    n, k = args.images, args.captions_per_image
    loop_images = n if args.loop_images in (0, None) or args.loop_images > n else args.loop_images
    sims = random_sims(n, k, args.seed, args.signal)
    matrix_mb = sims.nbytes / 2**20

    floor_s, _ = best_time(lambda: sims.max(axis=1), args.repeat)
    ours_s, ((m_i2t, (r_i2t, top_i2t)), (m_t2i, (r_t2i, top_t2i))) = best_time(lambda: ours_both(sims, k), args.repeat)
    one_pass_s, result = best_time(lambda: evaluate_sims(sims, "coco-5k", k), args.repeat)
    peak_bytes = peak_extra_bytes(lambda: ours_both(sims, k))

    start = time.perf_counter()
    loop_i2t, loop_top_i2t, loop_t2i, loop_top_t2i = original_style_loops(sims, k, loop_images)
    loop_measured_s = time.perf_counter() - start
    extrapolated = loop_images < n
    loop_s = loop_measured_s * n / loop_images

    n_cap = k * loop_images
    ranks_equal = bool(np.array_equal(loop_i2t, r_i2t[:loop_images]) and np.array_equal(loop_t2i, r_t2i[:n_cap]))
    top1_equal = bool(
        np.array_equal(loop_top_i2t, top_i2t[:loop_images]) and np.array_equal(loop_top_t2i, top_t2i[:n_cap])
    )
    metrics_equal = None
    if not extrapolated:
        ref_i2t = _metrics(loop_i2t)
        ref_t2i = _metrics(loop_t2i)
        metrics_equal = ref_i2t == m_i2t and ref_t2i == m_t2i
    report = {
        "benchmark": "metrics",
        "config": {
            "images": n,
            "captions": k * n,
            "captions_per_image": k,
            "dtype": str(sims.dtype),
            "matrix_mb": round(matrix_mb, 1),
            "seed": args.seed,
            "signal": args.signal,
            "repeat": args.repeat,
        },
        "time_s": {
            "ours_i2t_t2i": ours_s,
            "ours_evaluate_sims_one_pass": one_pass_s,
            "original_loop": loop_s,
            "original_loop_measured": loop_measured_s,
            "bandwidth_floor_max_pass": floor_s,
        },
        "original_loop_images_measured": loop_images,
        "original_loop_extrapolated": extrapolated,
        "speedup_vs_original": loop_s / ours_s,
        "speedup_one_pass_vs_original": loop_s / one_pass_s,
        "ours_over_floor": ours_s / floor_s,
        "ranks_identical": ranks_equal,
        "top1_identical": top1_equal,
        "metrics_identical": metrics_equal,
        "peak_extra_mb": peak_bytes / 2**20,
        "peak_method": "tracemalloc peak during i2t+t2i (numpy buffers), input matrix excluded",
        "metrics": {"i2t": list(m_i2t), "t2i": list(m_t2i), "rsum": result.rsum},
        "machine": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
    }
    print_table(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return report


def _metrics(ranks: np.ndarray) -> tuple[float, ...]:
    """The originals' metric arithmetic, for the identity check."""
    r1 = 100.0 * len(np.where(ranks < 1)[0]) / len(ranks)
    r5 = 100.0 * len(np.where(ranks < 5)[0]) / len(ranks)
    r10 = 100.0 * len(np.where(ranks < 10)[0]) / len(ranks)
    return (r1, r5, r10, float(np.floor(np.median(ranks)) + 1), float(ranks.mean() + 1))


def print_table(report: dict[str, Any]) -> None:
    cfg, t = report["config"], report["time_s"]
    print(
        f"metrics benchmark: {cfg['images']} images x {cfg['captions']} captions, {cfg['dtype']} "
        f"({cfg['matrix_mb']:.0f} MB), {report['machine']['cpus']} CPUs, best of {cfg['repeat']}"
    )
    loop_note = (
        f"measured on {report['original_loop_images_measured']} images + their captions, extrapolated linearly"
        if report["original_loop_extrapolated"]
        else "all queries"
    )
    rows = [
        ("ours: i2t + t2i (ranks, top1)", t["ours_i2t_t2i"], ""),
        ("ours: evaluate_sims (one pass)", t["ours_evaluate_sims_one_pass"], ""),
        ("original-style argsort loop", t["original_loop"], loop_note),
        ("floor: one sims.max(axis=1) pass", t["bandwidth_floor_max_pass"], ""),
    ]
    print(f"{'':36s} {'seconds':>10s}")
    for name, seconds, note in rows:
        print(f"{name:36s} {seconds:10.3f}  {note}")
    print(
        f"speedup vs original loop: {report['speedup_vs_original']:.0f}x (i2t+t2i), "
        f"{report['speedup_one_pass_vs_original']:.0f}x (one pass); ours / floor: {report['ours_over_floor']:.1f}x"
    )
    metrics_note = report["metrics_identical"]
    if metrics_note is None:
        metrics_note = "not checked (the loop ran on a subset; ranks and top1 compared on it)"
    print(
        f"identical to the loop: ranks {report['ranks_identical']}, top1 {report['top1_identical']}, "
        f"metrics {metrics_note}"
    )
    print(f"peak extra memory: {report['peak_extra_mb']:.1f} MB ({report['peak_method']})")
    m = report["metrics"]
    print("i2t: {:.2f} {:.2f} {:.2f} {:.1f} {:.1f}".format(*m["i2t"]))
    print("t2i: {:.2f} {:.2f} {:.2f} {:.1f} {:.1f}".format(*m["t2i"]))


if __name__ == "__main__":
    main()
