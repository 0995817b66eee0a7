"""``benchmarks/bench_dime.py`` (run by ``make bench``) at a toy size: it runs, its two scoring schemes
give the same matrix, and it writes the JSON report."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from dime_testlib import single_thread

BENCH = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_dime.py"


def test_bench_runs_and_both_schemes_agree(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_dime", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "dime.json"
    with single_thread():
        report = bench.main(["--images", "6", "--shard", "4", "--words", "8", "--batch", "4", "--train-iters", "1",
                             "--out", str(out)])
    assert json.loads(out.read_text())["eval"]["captions"] == 30
    assert report["eval"]["max_abs_diff"] < 1e-5  # the original calItr scheme and ours: the same matrix
    assert report["eval"]["original_pairs_per_s"] > 0 and report["train"]["samples_per_s"] > 0
