"""The reproduce table: one row per (method, variant) from the result JSONs and the run records.

A run record (``records.json``, written by the driver) holds, per row: ``status`` (``ok``, ``failed: ...``,
``skipped: ...``, ``missing``), ``result`` (a RetrievalResult JSON path, ``file.json#head/protocol`` for a
nested record such as ALADIN's test output), ``train_s``, ``eval_s`` and ``checkpoint``. A row whose JSON is
absent or unreadable is reported as such, never dropped.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
from pathlib import Path
from typing import Any

from itr_common.errors import UserError
from itr_common.metrics import RetrievalResult, chance_recalls, chance_rsum_spread

COLUMNS = ["method", "variant", "status", "i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum",
           "chance_rsum", "chance_z", "train_s", "eval_s", "latency_ms", "latency_source", "params", "n_images",
           "n_captions", "protocol"]
LATENCY_KEYS = ("latency_ms_per_query", "ms_per_query", "latency_ms")
# a finished row whose rsum is fewer spreads of random scores above chance than this is marked "near chance"
NEAR_CHANCE_Z = 3.0


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


@functools.lru_cache(maxsize=16)
def chance_band(n_images: int, captions_per_image: int = 5) -> tuple[float, float]:
    """Random scores' expected rsum on this gallery and its spread (:func:`~itr_common.metrics.chance_rsum_spread`).

    Cached: the rows of a table and its title share a gallery, so the (seeded, deterministic) Monte Carlo runs
    once per gallery size.
    """
    return chance_recalls(n_images, captions_per_image)["rsum"], chance_rsum_spread(n_images, captions_per_image)


def chance_columns(rsum: float, n_images: int, captions_per_image: int) -> dict[str, float]:
    """``chance_rsum`` and ``chance_z``: how many spreads of random scores ``rsum`` lies above chance."""
    chance, spread = chance_band(n_images, captions_per_image)
    return {"chance_rsum": round(chance, 2), "chance_z": round((rsum - chance) / spread, 2)}


def build_rows(records: list[dict[str, Any]], params: bool = True) -> list[dict[str, Any]]:
    """One table row per record; metrics from its result JSON when the run finished.

    A finished row also gets ``chance_rsum`` and ``chance_z`` (its rsum against random scores on the same
    gallery, for the whole-gallery protocols the reproduce runs use): a row that did not learn on the world
    is told apart from one that did, in the data and in the Markdown (:data:`NEAR_CHANCE_Z`).
    """
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
                if result.n_images and result.n_captions and result.n_captions % result.n_images == 0:
                    row.update(chance_columns(result.rsum, result.n_images, result.n_captions // result.n_images))
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


def fmt_cell(value: Any, digits: int = 1) -> str:
    """A Markdown cell: ``-`` for None or NaN, floats to ``digits`` places, large ints in millions."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    if isinstance(value, int) and value >= 10_000:
        return f"{value / 1e6:.2f}M"
    return str(value)


def status_cell(row: dict[str, Any]) -> str:
    """The status, with "near chance" where a finished row's rsum is within NEAR_CHANCE_Z spreads of chance."""
    z = row.get("chance_z")
    if row["status"] == "ok" and isinstance(z, int | float) and z < NEAR_CHANCE_Z:
        return f"ok, near chance ({z:+.1f} sd of random scores)"
    return row["status"]


def to_markdown(rows: list[dict[str, Any]], title: str | None = None) -> str:
    head = ["method", "variant", "i2t R@1", "R@5", "R@10", "t2i R@1", "R@5", "R@10", "rsum", "train s", "eval s",
            "ms/query", "params", "status"]
    lines = [f"**{title}**", ""] if title else []
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["method"], r["variant"], *(fmt_cell(r[k]) for k in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1",
                                                                    "t2i_r5", "t2i_r10", "rsum")),
                 fmt_cell(r["train_s"], 0), fmt_cell(r["eval_s"], 1), fmt_cell(r["latency_ms"], 2),
                 fmt_cell(r["params"]), status_cell(r)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _csv_cell(value: Any) -> Any:
    """None as an empty cell; a list (every seed's rsum) as ``;``-separated values, None as empty."""
    if isinstance(value, list):
        return ";".join("" if v is None else str(v) for v in value)
    return "" if value is None else value


def to_csv(rows: list[dict[str, Any]], columns: list[str] = COLUMNS) -> str:
    """The rows as CSV with a header of ``columns`` (default: a single-seed table's)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _csv_cell(r.get(k)) for k in columns})
    return buf.getvalue()
