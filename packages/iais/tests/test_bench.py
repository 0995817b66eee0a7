"""``benchmarks/bench_iais.py`` (run by ``make bench``) at a toy size: it runs and writes the JSON report."""

from __future__ import annotations

from pathlib import Path

import pytest

from itr_common.testing import run_bench

BENCH = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_iais.py"


@pytest.mark.parametrize("iais", ["singular", "none"])
def test_bench_runs_and_reports(tmp_path, iais):
    report, saved = run_bench(BENCH, ["--images", "8", "--texts", "2", "--block", "4", "--nbb", "6", "--txt-len", "8",
                                      "--negative-size", "7", "--hard-neg-size", "3", "--iais", iais,
                                      "--train-iters", "1"], tmp_path / "iais.json")
    assert saved["config"]["iais"] == iais
    assert report["evaluation"]["pairs_per_s"] > 0 and report["training"]["iterations_per_s"] > 0
