"""``benchmarks/bench_iais.py`` (run by ``make bench``) at a toy size: it runs and writes the JSON report."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from iais_testlib import single_thread

BENCH = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_iais.py"


@pytest.mark.parametrize("iais", ["singular", "none"])
def test_bench_runs_and_reports(tmp_path, iais):
    spec = importlib.util.spec_from_file_location("bench_iais", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "iais.json"
    with single_thread():
        report = bench.main(["--images", "8", "--texts", "2", "--block", "4", "--nbb", "6", "--txt-len", "8",
                             "--negative-size", "7", "--hard-neg-size", "3", "--iais", iais, "--train-iters", "1",
                             "--out", str(out)])
    assert json.loads(out.read_text())["config"]["iais"] == iais
    assert report["evaluation"]["pairs_per_s"] > 0 and report["training"]["iterations_per_s"] > 0
