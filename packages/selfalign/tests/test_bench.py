"""``benchmarks/bench_selfalign.py`` (run by ``make bench``) at toy size: it runs and writes its JSON report."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_selfalign.py"


def test_bench_runs_and_reports_every_variant(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_selfalign", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "selfalign.json"
    with_dime = importlib.util.find_spec("itr_dime") is not None  # the comparison needs itr-dime installed
    report = bench.main(["--batch", "4", "--encode-batch", "8", "--train-iters", "1", "--repeats", "2",
                         "--dime-images", "3", "--dime-shard", "4", "--threads", "1", "--out", str(out),
                         *([] if with_dime else ["--skip-dime"])])
    assert json.loads(out.read_text())["benchmark"] == "selfalign"
    assert set(report["variants"]) == {"CAMERA", "CAMERA+SelfAlign", "VSRN", "VSRN+SelfAlign"}
    latency = report["variants"]["VSRN+SelfAlign"]["latency_s"]
    assert latency["coco_5k_images"] > 0 and latency["scoring_only"]["coco_5k_images"] > 0
    if with_dime:
        assert latency["dime_over_selfalign"]["coco_5k_images"] > 0
    assert all(v["train"]["samples_per_s"] > 0 for v in report["variants"].values())
