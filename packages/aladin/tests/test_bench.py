"""``benchmarks/bench_aladin.py`` (run by ``make bench``) at a toy size: it runs and writes its JSON report."""

from __future__ import annotations

from pathlib import Path

from itr_common.testing import run_bench

BENCH = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_aladin.py"


def test_bench_runs_and_reports(tmp_path):
    report, saved = run_bench(BENCH, ["--galleries", "20", "--regions", "6", "--feat-dim", "16", "--txt-len", "8",
                                      "--tag-len", "6", "--batch", "4", "--encode-batch", "8", "--xenc-batch", "8",
                                      "--xenc-pairs", "8", "--repeat", "1", "--eval-images", "10"], tmp_path / "a.json")
    assert saved["config"]["model"] == "tiny"
    lat = report["latency"]["20"]
    assert lat["matching_s"] > 0 and lat["alignment_s"] > 0 and lat["cross_encoder_s"] > 0
    assert report["evaluation"]["alignment_pairs_per_s"] > 0
    assert report["encoding"]["images_per_s"] > 0 and report["training"]["samples_per_s"] > 0
