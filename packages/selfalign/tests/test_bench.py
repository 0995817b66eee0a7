"""``benchmarks/bench_selfalign.py`` (run by ``make bench``) at toy size: it runs and writes its JSON report."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from itr_common.testing import run_bench

BENCH = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_selfalign.py"


def test_bench_runs_and_reports_every_variant(tmp_path):
    with_dime = importlib.util.find_spec("itr_dime") is not None  # the comparison needs itr-dime installed
    report, saved = run_bench(BENCH, ["--batch", "4", "--encode-batch", "8", "--train-iters", "1", "--repeats", "2",
                                      "--dime-images", "3", "--dime-shard", "4", "--threads", "1",
                                      *([] if with_dime else ["--skip-dime"])], tmp_path / "selfalign.json")
    assert saved["benchmark"] == "selfalign"
    assert set(report["variants"]) == {"CAMERA", "CAMERA+SelfAlign", "VSRN", "VSRN+SelfAlign"}
    latency = report["variants"]["VSRN+SelfAlign"]["latency_s"]
    assert latency["coco_5k_images"] > 0 and latency["scoring_only"]["coco_5k_images"] > 0
    if with_dime:
        assert latency["dime_over_selfalign"]["coco_5k_images"] > 0
    assert all(v["train"]["samples_per_s"] > 0 for v in report["variants"].values())
