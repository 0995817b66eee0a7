"""``benchmarks/bench_dime.py`` (run by ``make bench``) at a toy size: it runs, its two scoring schemes
give the same matrix, and it writes the JSON report."""

from __future__ import annotations

from pathlib import Path

from itr_common.testing import run_bench

BENCH = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_dime.py"


def test_bench_runs_and_both_schemes_agree(tmp_path):
    report, saved = run_bench(BENCH, ["--images", "6", "--shard", "4", "--words", "8", "--batch", "4",
                                      "--train-iters", "1"], tmp_path / "dime.json")
    assert saved["eval"]["captions"] == 30
    assert report["eval"]["max_abs_diff"] < 1e-5  # the original calItr scheme and ours: the same matrix
    assert report["eval"]["original_pairs_per_s"] > 0 and report["train"]["samples_per_s"] > 0
