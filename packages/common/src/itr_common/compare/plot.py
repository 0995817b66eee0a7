"""Efficiency against effectiveness: rsum over latency per query (log x), one point per method and variant."""

from __future__ import annotations

import math
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
    if chance_rsum is not None:
        ax.axhline(chance_rsum, color="grey", linestyle="--", linewidth=1, label=f"chance (rsum {chance_rsum:.0f})")
    ax.set_xscale("log")
    low, high = ax.get_ylim()
    xs = [float(r["latency_ms"]) for r in points]
    ys = [float(r["rsum"]) for r in points]
    for r, x, y, label_y in zip(points, xs, ys, label_heights(xs, ys, gap=0.045 * (high - low)), strict=True):
        moved = abs(label_y - y) > 1e-9
        ax.annotate(r["variant"], (x, y), xytext=(x * 1.08, label_y + 0.01 * (high - low)), textcoords="data",
                    fontsize=7, arrowprops={"arrowstyle": "-", "linewidth": 0.5, "color": "grey"} if moved else None)
    # room on the right for the labels of the slowest points, inside the axes
    ax.set_xlim(min(xs) / 1.4, max(xs) * 3.0)
    ax.set_xlabel("latency per query, ms (log scale; evaluation command wall time / queries unless the package "
                  "reports one)", fontsize=8)
    ax.set_ylabel("rsum")
    ax.set_title(_two_lines(title), fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _two_lines(title: str, width: int = 72) -> str:
    """A title too wide for the figure, broken after its first colon (or at the last space that fits)."""
    if len(title) <= width:
        return title
    head, colon, tail = title.partition(": ")
    if colon and len(head) < width:
        return f"{head}:\n{tail}"
    cut = title.rfind(" ", 0, width)
    return title if cut < 0 else f"{title[:cut]}\n{title[cut + 1:]}"


def label_heights(xs: list[float], ys: list[float], gap: float, near_decades: float = 0.3) -> list[float]:
    """Heights for the points' labels so that no two labels of points less than ``near_decades`` apart on the
    log x axis sit closer than ``gap`` (data units) in y.

    Labels are placed from the highest point down; a label that would collide with one already placed moves to
    ``gap`` below it, so a cluster of points (three UNITER-ITM variants at the same latency) reads as a column.
    xs: latencies (> 0); ys: rsums; returns one height per point, in the input order.
    """
    order = sorted(range(len(xs)), key=lambda i: (-ys[i], xs[i]))
    placed: list[tuple[float, float]] = []
    heights = [0.0] * len(xs)
    for i in order:
        x, h = math.log10(xs[i]), ys[i]
        clash = True
        while clash:
            clash = False
            for px, ph in placed:
                # a label exactly one gap away is clear: the tolerance keeps float rounding of ph - gap from
                # counting as a clash again (which would loop forever)
                if abs(px - x) < near_decades and abs(ph - h) < gap * (1 - 1e-9):
                    h, clash = ph - gap, True
                    break
        placed.append((x, h))
        heights[i] = h
    return heights
