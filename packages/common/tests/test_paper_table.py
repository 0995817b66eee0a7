"""itr_common.paper_table: measured recalls printed beside the paper's, and '-' where the table has no number."""

from __future__ import annotations

import json

import numpy as np

from itr_common.metrics import evaluate_sims
from itr_common.paper_table import compare, report_comparisons


def _result():
    sims = np.kron(np.eye(4), np.ones((1, 5)))  # every query's positive first: all recalls 100
    return evaluate_sims(sims, "1k")


def test_a_full_row_is_printed_beside_the_measured_one():
    table = {"DIME": {"f30k": {"i2t": [81.0, 95.9, 98.4], "t2i": [63.6, 88.1, 93.0]}}}
    (comparison,) = compare([_result()], table, "DIME")
    lines = comparison.lines("DIME")
    assert lines[0] == "DIME | protocol 1k (f30k)"
    assert lines[2].split() == ["i2t", "100.0", "100.0", "100.0", "|", "81.0", "95.9", "98.4"]
    assert lines[4].split() == ["rsum", "600.0", "|", "520.0"]


def test_missing_numbers_show_as_dashes_not_nan(tmp_path, capsys):
    """A dataset the table has no row for said 'nan' in every paper column; a row holding one direction only
    (IAIS's listing has i2t alone) crashed on the missing one."""
    table = {"IAIS": {"f30k": {"i2t": [67.8, 89.7, 94.5], "t2i": None}}, "SelfAlign": {"f30k": None}}
    (partial,) = compare([_result()], table, "IAIS")
    lines = partial.lines("IAIS")
    assert lines[2].split()[-3:] == ["67.8", "89.7", "94.5"]
    assert lines[3].split()[-4:] == ["|", "-", "-", "-"] and lines[4].split() == ["rsum", "600.0", "|", "-"]
    (none,) = compare([_result()], table, "SelfAlign")
    out = report_comparisons("SelfAlign", [none], tmp_path / "c.json")
    printed = capsys.readouterr().out
    assert "paper: no f30k row in paper_table.yaml" in printed and "nan" not in printed
    assert json.loads(out.read_text())["comparisons"][0]["paper"] is None
