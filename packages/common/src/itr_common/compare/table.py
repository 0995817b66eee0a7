"""The reproduce table: one row per (method, variant) from the result JSONs and the run records.

A run record (``records.json``, written by the driver) holds, per row: ``status`` (``ok``, ``failed: ...``,
``skipped: ...``, ``missing``), ``result`` (a RetrievalResult JSON path, ``file.json#head/protocol`` for a
nested record such as ALADIN's test output), ``train_s``, ``eval_s`` and ``checkpoint``. A row whose JSON is
absent or unreadable is reported as such, never dropped.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from itr_common.errors import UserError
from itr_common.metrics import RetrievalResult

COLUMNS = ["method", "variant", "status", "i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum",
           "train_s", "eval_s", "latency_ms", "latency_source", "params", "n_images", "n_captions", "protocol"]
LATENCY_KEYS = ("latency_ms_per_query", "ms_per_query", "latency_ms")


def load_result(ref: str) -> RetrievalResult:
    """A RetrievalResult from ``path`` or ``path#key/key`` (a record nested in a larger JSON)."""
    path, _, keys = ref.partition("#")
    data: Any = json.loads(Path(path).read_text())
    for key in filter(None, keys.split("/")):
        if isinstance(data, list):
            data = data[int(key)]
        elif isinstance(data, dict) and "results" in data and key not in data:
            data = data["results"][key]
        else:
            data = data[key]
    return RetrievalResult.from_dict(data, source=ref)


def count_params(path: str | list[str] | None) -> int | None:
    """Tensor elements of the model state dict in a checkpoint file (None when it cannot be read).

    A list of files (an ensemble, or a retriever and its re-ranker) counts the sum, or None if any is unreadable.
    """
    if isinstance(path, list):
        counts = [count_params(p) for p in path]
        return None if not counts or None in counts else sum(counts)
    if not path or not Path(path).is_file():
        return None
    try:
        import torch

        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - a count is optional; the table says '-'
        return None
    for key in ("model", "model_dict", "state_dict", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if isinstance(obj, dict) and isinstance(obj.get("model"), list):  # SCAN-style [img_enc, txt_enc, ...]
        obj = {f"{i}.{k}": v for i, part in enumerate(obj["model"]) if isinstance(part, dict) for k, v in part.items()}
    if not isinstance(obj, dict):
        return None
    total = sum(int(v.numel()) for v in obj.values() if hasattr(v, "numel"))
    return total or None


def build_rows(records: list[dict[str, Any]], params: bool = True) -> list[dict[str, Any]]:
    """One table row per record; metrics from its result JSON when the run finished."""
    rows = []
    for rec in records:
        row: dict[str, Any] = {c: None for c in COLUMNS}
        row.update(method=rec["method"], variant=rec["variant"], status=rec.get("status", "missing"),
                   train_s=rec.get("train_s"), eval_s=rec.get("eval_s"))
        if row["status"] == "ok":
            try:
                result = load_result(rec["result"])
            except (OSError, KeyError, ValueError, TypeError, UserError) as exc:
                row["status"] = f"failed: result unreadable ({type(exc).__name__}: {exc})"[:160]
            else:
                i2t, t2i = result.i2t, result.t2i
                row.update(i2t_r1=i2t[0], i2t_r5=i2t[1], i2t_r10=i2t[2], t2i_r1=t2i[0], t2i_r5=t2i[1],
                           t2i_r10=t2i[2], rsum=result.rsum, n_images=result.n_images,
                           n_captions=result.n_captions, protocol=result.protocol)
                reported = next((result.extras[k] for k in LATENCY_KEYS
                                 if isinstance(result.extras.get(k), int | float)), None)
                queries = (result.n_images or 0) + (result.n_captions or 0)
                if reported is not None:
                    row.update(latency_ms=float(reported), latency_source="package")
                elif isinstance(row["eval_s"], int | float) and queries:
                    row.update(latency_ms=1000.0 * row["eval_s"] / queries, latency_source="eval wall / queries")
        if params and rec.get("params") is None:
            row["params"] = count_params(rec.get("checkpoint"))
        elif rec.get("params") is not None:
            row["params"] = rec["params"]
        rows.append(row)
    return rows


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    if isinstance(value, int) and value >= 10_000:
        return f"{value / 1e6:.2f}M"
    return str(value)


def to_markdown(rows: list[dict[str, Any]], title: str | None = None) -> str:
    head = ["method", "variant", "i2t R@1", "R@5", "R@10", "t2i R@1", "R@5", "R@10", "rsum", "train s", "eval s",
            "ms/query", "params", "status"]
    lines = [f"**{title}**", ""] if title else []
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["method"], r["variant"], *(_fmt(r[k]) for k in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1",
                                                                    "t2i_r5", "t2i_r10", "rsum")),
                 _fmt(r["train_s"], 0), _fmt(r["eval_s"], 1), _fmt(r["latency_ms"], 2), _fmt(r["params"]),
                 r["status"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r[k] is None else r[k]) for k in COLUMNS})
    return buf.getvalue()
