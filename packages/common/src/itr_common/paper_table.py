"""A package's ``paper_table.yaml`` beside measured recalls: the ``*-reproduce`` commands of DIME and SelfAlign.

``paper_table.yaml`` holds ``{rows: {row: {dataset: {i2t: [R@1, R@5, R@10], t2i: [...]} or null}}}`` with the
datasets ``f30k``, ``coco1k``, ``coco5k`` (:data:`DATASET_KEYS` maps a protocol to its dataset key).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from itr_common.fileio import write_json_atomic
from itr_common.metrics import COCO_5K_PROTOCOL, COCO_FOLD5_PROTOCOL, FLICKR_PROTOCOL, RetrievalResult

PAPER_TABLE = "paper_table.yaml"
DATASET_KEYS = {FLICKR_PROTOCOL: "f30k", COCO_FOLD5_PROTOCOL: "coco1k", COCO_5K_PROTOCOL: "coco5k"}


def load_paper_table(package: str) -> dict[str, Any]:
    """The rows of the ``paper_table.yaml`` shipped with ``package``: ``{row: {dataset: {i2t, t2i} or None}}``."""
    text = resources.files(package).joinpath(PAPER_TABLE).read_text(encoding="utf-8")
    return yaml.safe_load(text)["rows"]


@dataclass
class Comparison:
    """One protocol's measured result and the paper's numbers (None when the paper has no such row)."""

    result: RetrievalResult
    paper: dict[str, list[float]] | None

    def lines(self, row: str) -> list[str]:
        """The measured R@1/5/10 both ways and rsum, the paper's beside them; numbers the table does not hold
        (no row for this dataset, or one direction only) show as '-', never as NaN."""
        measured = self.result
        dataset = DATASET_KEYS[measured.protocol]
        paper = self.paper or {}
        head = f"{row} | protocol {measured.protocol} ({dataset})"
        if not paper:
            head += f" | paper: no {dataset} row in {PAPER_TABLE}"
        out = [head, f"{'':8}{'R@1':>8}{'R@5':>8}{'R@10':>8}   |{'paper R@1':>10}{'R@5':>8}{'R@10':>8}"]
        for direction, values in (("i2t", measured.i2t), ("t2i", measured.t2i)):
            theirs = paper.get(direction)
            cells = [f"{v:{w}.1f}" for v, w in zip(theirs, (10, 8, 8), strict=True)] if theirs else \
                [f"{'-':>{w}}" for w in (10, 8, 8)]
            out.append(f"{direction:8}{values[0]:8.1f}{values[1]:8.1f}{values[2]:8.1f}   |{''.join(cells)}")
        both = paper.get("i2t") and paper.get("t2i")
        paper_rsum = f"{sum(paper['i2t']) + sum(paper['t2i']):26.1f}" if both else f"{'-':>26}"
        out.append(f"{'rsum':8}{measured.rsum:24.1f}   |{paper_rsum}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"measured": self.result.to_dict(), "paper": self.paper}


def compare(results: Sequence[RetrievalResult], table: dict[str, Any], row: str) -> list[Comparison]:
    """Pair each result with the paper's numbers of ``row`` for its protocol's dataset."""
    return [Comparison(r, (table.get(row) or {}).get(DATASET_KEYS[r.protocol])) for r in results]


def report_comparisons(row: str, comparisons: Sequence[Comparison], out: str | Path) -> Path:
    """Print each comparison as a table, write ``{"row", "comparisons"}`` atomically to ``out`` and say where."""
    for comparison in comparisons:
        print("\n".join(comparison.lines(row)))
        print()
    path = write_json_atomic(out, {"row": row, "comparisons": [c.to_dict() for c in comparisons]})
    print(f"comparison written to {path}")
    return path


__all__ = ["DATASET_KEYS", "PAPER_TABLE", "Comparison", "compare", "load_paper_table", "report_comparisons"]
