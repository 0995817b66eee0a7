"""Efficiency against effectiveness: rsum over latency per query (log x), one point per method and variant."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_rows(rows: list[dict[str, Any]], path: str | Path, title: str,
              chance_rsum: float | None = None) -> Path | None:
    """Write the PNG; rows without rsum or latency are left out (they are in the table). None if no point.

    A row with ``rsum_sd`` (a ``--seeds`` table: rsum is the mean over the seeds) gets an error bar of one sd.
    """
    points = [r for r in rows if isinstance(r.get("rsum"), float | int) and isinstance(r.get("latency_ms"), float | int)
              and r["latency_ms"] > 0]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    methods = sorted({r["method"] for r in points}, key=[r["method"] for r in points].index)
    markers = "osD^vP*X"
    for i, method in enumerate(methods):
        mine = [r for r in points if r["method"] == method]
        dots = ax.scatter([r["latency_ms"] for r in mine], [r["rsum"] for r in mine],
                          marker=markers[i % len(markers)], s=50, label=method)
        spread = [r for r in mine if isinstance(r.get("rsum_sd"), float | int)]
        if spread:
            ax.errorbar([r["latency_ms"] for r in spread], [r["rsum"] for r in spread],
                        yerr=[r["rsum_sd"] for r in spread], fmt="none", capsize=3, linewidth=1,
                        ecolor=dots.get_facecolor()[0])
        for r in mine:
            ax.annotate(r["variant"], (r["latency_ms"], r["rsum"]), textcoords="offset points", xytext=(4, 3),
                        fontsize=7)
    if chance_rsum is not None:
        ax.axhline(chance_rsum, color="grey", linestyle="--", linewidth=1, label=f"chance (rsum {chance_rsum:.0f})")
    ax.set_xscale("log")
    ax.set_xlabel("latency per query, ms (log scale; evaluation command wall time / queries unless the package "
                  "reports one)", fontsize=8)
    ax.set_ylabel("rsum")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
