"""The ``--seeds N`` table: each row's recalls as the mean over N training seeds on one world, the rsum's spread,
and the paired differences between the variants of a method (same seed, same world).

One seed on a tiny world cannot tell two variants apart: the same code gave CAMERA 191 -> +SelfAlign 242 on one
machine and 244 -> 178 on another. Over several seeds the table says how far each rsum moves with the seed
alone, and whether a variant's gain over its method's first row holds seed by seed. The test split stays the
same for every seed, so its own sampling error (:func:`~itr_common.compare.table.chance_band`) is not in the
spread.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from itr_common.compare import table
from itr_common.compare.table import COLUMNS, chance_columns, fmt_cell, status_cell

MEAN_KEYS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum", "train_s", "eval_s",
             "latency_ms")
SEED_COLUMNS = [*COLUMNS, "n_seeds", "n_ok", "rsum_sd", "rsum_min", "rsum_max", "rsum_per_seed"]
DIFF_COLUMNS = ["method", "variant", "against", "n", "mean", "sd", "se", "higher", "per_seed"]


def _finished(row: dict[str, Any]) -> bool:
    return row.get("status") == "ok" and isinstance(row.get("rsum"), int | float)


def _sd(values: list[float]) -> float | None:
    """Sample standard deviation (n - 1), None under two values."""
    return statistics.stdev(values) if len(values) >= 2 else None


def aggregate(per_seed: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per (method, variant) from the seeds' tables (:func:`~itr_common.compare.table.build_rows` of
    each seed, rows in the same order).

    Numbers are means over the seeds whose row finished (``n_ok`` of ``n_seeds``); ``rsum_sd`` is their sample
    standard deviation, ``rsum_per_seed`` every seed's rsum (None where it did not finish). ``status`` is ``ok``
    when every seed finished, else it names each seed that did not and why.
    """
    if not per_seed:
        return []
    keys = [(r["method"], r["variant"]) for r in per_seed[0]]
    for k, rows in enumerate(per_seed):
        if [(r["method"], r["variant"]) for r in rows] != keys:
            raise ValueError(f"seed {k}: expected the rows of seed 0 in the same order")
    out = []
    for i, (method, variant) in enumerate(keys):
        runs = [rows[i] for rows in per_seed]
        done = [r for r in runs if _finished(r)]
        row: dict[str, Any] = {c: None for c in SEED_COLUMNS}
        row.update(method=method, variant=variant, n_seeds=len(runs), n_ok=len(done),
                   rsum_per_seed=[r["rsum"] if _finished(r) else None for r in runs])
        failed = [f"seed {k}: {r.get('status')}" for k, r in enumerate(runs) if not _finished(r)]
        row["status"] = "ok" if not failed else f"{len(done)}/{len(runs)} seeds ok; " + "; ".join(failed)
        for key in MEAN_KEYS:
            values = [float(r[key]) for r in (done or runs) if isinstance(r.get(key), int | float)]
            row[key] = statistics.fmean(values) if values else None
        first = (done or runs)[0]
        row.update({k: first.get(k) for k in ("params", "n_images", "n_captions", "protocol", "latency_source")})
        if done:
            rsums = [float(r["rsum"]) for r in done]
            row.update(rsum_sd=_sd(rsums), rsum_min=min(rsums), rsum_max=max(rsums))
            if row["n_images"] and row["n_captions"] and row["n_captions"] % row["n_images"] == 0:
                row.update(chance_columns(row["rsum"], row["n_images"], row["n_captions"] // row["n_images"]))
        out.append(row)
    return out


def paired_differences(per_seed: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """For each method with several variants, each later variant's rsum minus the method's first variant's, seed
    by seed (only seeds where both finished): mean, sample sd, standard error of the mean, how many seeds were
    higher, and the per-seed differences."""
    if not per_seed:
        return []
    keys = [(r["method"], r["variant"]) for r in per_seed[0]]
    first: dict[str, int] = {}
    diffs = []
    for i, (method, variant) in enumerate(keys):
        if method not in first:
            first[method] = i
            continue
        base = first[method]
        pairs = [(rows[i], rows[base]) for rows in per_seed]
        values = [float(a["rsum"]) - float(b["rsum"]) for a, b in pairs if _finished(a) and _finished(b)]
        sd = _sd(values)
        diffs.append({"method": method, "variant": variant, "against": keys[base][1], "n": len(values),
                      "mean": statistics.fmean(values) if values else None, "sd": sd,
                      "se": sd / math.sqrt(len(values)) if sd is not None else None,
                      "higher": sum(v > 0 for v in values), "per_seed": values})
    return diffs


def _pm(mean: Any, sd: Any) -> str:
    return fmt_cell(mean) if sd is None else f"{fmt_cell(mean)} ± {fmt_cell(sd)}"


def to_markdown(rows: list[dict[str, Any]], diffs: list[dict[str, Any]], title: str | None = None) -> str:
    """The mean table (rsum as mean ± sd, then every seed's rsum) and the paired differences below it."""
    n = max((r["n_seeds"] for r in rows), default=0)
    head = ["method", "variant", "i2t R@1", "R@5", "R@10", "t2i R@1", "R@5", "R@10", "rsum (mean ± sd)",
            "rsum per seed", "train s", "eval s", "ms/query", "params", "status"]
    lines = [f"**{title}**", ""] if title else []
    lines += [f"Recalls and times are means over {n} training seeds (sd: sample standard deviation over the seeds).",
              "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        per_seed = " / ".join(fmt_cell(v) for v in r["rsum_per_seed"])
        cells = [r["method"], r["variant"], *(fmt_cell(r[k]) for k in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1",
                                                                        "t2i_r5", "t2i_r10")),
                 _pm(r["rsum"], r["rsum_sd"]), per_seed, fmt_cell(r["train_s"], 0), fmt_cell(r["eval_s"], 1),
                 fmt_cell(r["latency_ms"], 2), fmt_cell(r["params"]), status_cell(r)]
        lines.append("| " + " | ".join(cells) + " |")
    if diffs:
        lines += ["", "Paired differences of rsum (same seed, same world; se: standard error of the mean):", "",
                  "| method | variant | minus | mean ± sd | se | higher on | per seed |",
                  "|---|---|---|---|---|---|---|"]
        for d in diffs:
            per_seed = " / ".join(f"{v:+.1f}" for v in d["per_seed"]) or "-"
            mean = "-" if d["mean"] is None else f"{d['mean']:+.1f}"
            mean += "" if d["sd"] is None else f" ± {d['sd']:.1f}"
            lines.append(f"| {d['method']} | {d['variant']} | {d['against']} | {mean} | {fmt_cell(d['se'])} | "
                         f"{d['higher']} of {d['n']} seeds | {per_seed} |")
    return "\n".join(lines)


def to_csv(rows: list[dict[str, Any]]) -> str:
    """The mean table; ``rsum_per_seed`` as ``;``-separated values (empty where a seed did not finish)."""
    return table.to_csv(rows, SEED_COLUMNS)
