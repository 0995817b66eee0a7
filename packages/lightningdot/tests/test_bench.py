"""``benchmarks/bench_lightningdot.py`` (run by ``make bench``) at a toy size: it runs and writes its report."""

from __future__ import annotations

from pathlib import Path

from itr_common.testing import run_bench

BENCH = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_lightningdot.py"


def test_bench_runs_and_reports(tmp_path):
    report, saved = run_bench(BENCH, ["--sizes", "300", "--dim", "32", "--queries", "5", "--hnsw-orig-max", "300",
                                      "--img-dim", "16", "--nbb", "4", "--txt-len", "6", "--pair-batch", "4",
                                      "--repeat", "1", "--train-batch", "4", "--train-iters", "1",
                                      "--project-dim", "16"], tmp_path / "lightningdot.json")
    row = saved["retrieval"][0]
    assert row["n"] == 300 and row["faiss_flat_ip"]["recall_at_10"] == 1.0
    assert {"torch_brute_force", "faiss_hnsw_original", "faiss_hnsw_ours"} <= set(row)
    assert report["end_to_end"]["by_gallery_size"]["300"]["speedup"] > 0
    assert report["training"]["samples_per_s"] > 0
