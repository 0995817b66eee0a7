"""``benchmarks/bench_iais.py`` (run by ``make bench``) at a toy size: it runs and writes the JSON report."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_iais.py"


@pytest.mark.parametrize("iais", ["singular", "none"])
def test_bench_runs_and_reports(tmp_path, iais):
    spec = importlib.util.spec_from_file_location("bench_iais", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "iais.json"
    threads = torch.get_num_threads()  # --threads sets the process-wide count: put it back afterwards
    try:
        report = bench.main(["--images", "8", "--texts", "2", "--block", "4", "--nbb", "6", "--txt-len", "8",
                             "--negative-size", "7", "--hard-neg-size", "3", "--iais", iais, "--train-iters", "1",
                             "--threads", "1", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert json.loads(out.read_text())["config"]["iais"] == iais
    assert report["evaluation"]["pairs_per_s"] > 0 and report["training"]["iterations_per_s"] > 0
