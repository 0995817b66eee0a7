"""``make bench``'s report: every ``bench_out/*.json`` in one Markdown + JSON file, with the machine, threads,
torch version and settings each benchmark recorded, and the papers' speed claims side by side as the ratios
measured in the same run (read from what each benchmark wrote; nothing is re-measured here):

* ALADIN: cross-encoder vs matching head vs alignment head, per gallery size (``bench_aladin``);
* LightningDOT: UNITER scoring all pairs vs the bi-encoder (and with re-ranking), per gallery (``bench_lightningdot``);
* SelfAlign: DIME's cross-attention query vs SelfAlign's, Flickr30K 1K and COCO 5K galleries (``bench_selfalign``).
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from itr_common.errors import ArgumentParser, cli_entry, fail
from itr_common.fileio import write_json_atomic, write_text_atomic

REPORT_NAME = "report"
META_KEYS = ("platform", "machine", "device", "gpu", "torch", "threads", "model")


def _find(obj: Any, key: str) -> Any:
    """The first value stored under ``key`` anywhere in ``obj`` (depth first), or None."""
    if isinstance(obj, dict):
        if key in obj and not isinstance(obj[key], dict | list):
            return obj[key]
        for value in obj.values():
            found = _find(value, key)
            if found is not None:
                return found
    elif isinstance(obj, list):
        for value in obj:
            found = _find(value, key)
            if found is not None:
                return found
    return None


def _settings(record: dict[str, Any]) -> dict[str, Any]:
    """The benchmark's flags (its ``config``), else its top-level scalar fields."""
    config = record.get("config") if isinstance(record.get("config"), dict) else record
    return {k: v for k, v in config.items() if isinstance(v, int | float | str | bool) or v is None}


def _meta(record: dict[str, Any]) -> dict[str, Any]:
    """Machine, device, torch, threads, model: what the run recorded first, then the flags it was given."""
    outside = {k: v for k, v in record.items() if k != "config"}
    meta = {}
    for key in META_KEYS:
        value = _find(outside, key)
        if value is None:
            value = _find(record.get("config"), key)
        if value is not None:
            meta[key] = value
    if meta.get("threads") == 0:
        meta["threads"] = "library default"
    return meta


def claims(benches: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per speed claim measured: paper, comparison, setting, ratio (slower / faster)."""
    rows: list[dict[str, Any]] = []
    aladin = benches.get("aladin", {})
    for n, lat in sorted((aladin.get("latency") or {}).items(), key=lambda kv: int(kv[0])):
        for label, slow, fast in (("cross-encoder / matching head", "cross_encoder_s", "matching_s"),
                                  ("cross-encoder / alignment head", "cross_encoder_s", "alignment_s"),
                                  ("alignment head / matching head", "alignment_s", "matching_s")):
            if isinstance(lat.get(slow), int | float) and isinstance(lat.get(fast), int | float) and lat[fast] > 0:
                rows.append({"paper": "ALADIN", "comparison": label, "setting": f"gallery {n}",
                             "ratio": lat[slow] / lat[fast]})
    ld = benches.get("lightningdot", {})
    for n, row in sorted(((ld.get("end_to_end") or {}).get("by_gallery_size") or {}).items(),
                         key=lambda kv: int(kv[0])):
        for key, value in row.items():
            if key == "speedup":
                label = "UNITER all pairs / LightningDOT bi-encoder"
            elif key.startswith("speedup_rerank_top"):
                label = f"UNITER all pairs / LightningDOT + re-rank top {key.removeprefix('speedup_rerank_top')}"
            else:
                continue
            rows.append({"paper": "LightningDOT", "comparison": label, "setting": f"gallery {n}", "ratio": value})
    sa = benches.get("selfalign", {})
    for name, entry in (sa.get("variants") or {}).items():
        ratios = (entry.get("latency_s") or {}).get("dime_over_selfalign") or {}
        for setting, value in ratios.items():
            rows.append({"paper": "SelfAlign", "comparison": f"DIME query / {name} query", "setting": setting,
                         "ratio": value})
    return rows


def gather(folder: Path) -> dict[str, dict[str, Any]]:
    """name -> the JSON each benchmark wrote (the report itself left out)."""
    benches = {}
    for path in sorted(folder.glob("*.json")):
        if path.stem == REPORT_NAME:
            continue
        try:
            benches[path.stem] = json.loads(path.read_text())
        except ValueError as exc:
            fail(f"{path}: expected a benchmark's JSON, found unreadable JSON ({exc})")
    return benches


def build_report(benches: dict[str, dict[str, Any]]) -> dict[str, Any]:
    import torch

    meta = {name: _meta(rec) for name, rec in benches.items()}
    return {"host": {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
                     "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()},
            "benchmarks": {name: {"meta": meta[name], "settings": _settings(rec)} for name, rec in benches.items()},
            "claims": claims(benches), "raw": benches}


def to_markdown(report: dict[str, Any]) -> str:
    host = report["host"]
    lines = ["# Benchmark report", "",
             f"Host (where this report was gathered): {host['platform']}, Python {host['python']}, torch "
             f"{host['torch']}, {host['cpu_count']} CPUs, torch default threads {host['torch_threads']}", "",
             "## Benchmarks", "", "| benchmark | machine / device | torch | threads | model | settings |",
             "|---|---|---|---|---|---|"]
    for name, bench in report["benchmarks"].items():
        m = bench["meta"]
        where = " / ".join(str(m[k]) for k in ("platform", "machine", "device", "gpu") if m.get(k)) or "-"
        settings = ", ".join(f"{k}={v}" for k, v in bench["settings"].items() if k not in ("out", "torch", "machine"))
        lines.append(f"| {name} | {where} | {m.get('torch', '-')} | {m.get('threads', '-')} | {m.get('model', '-')} "
                     f"| {settings or '-'} |")
    lines += ["", "## The papers' speed claims, measured in this run (ratio = slower / faster)", ""]
    if not report["claims"]:
        lines.append("No ALADIN, LightningDOT or SelfAlign benchmark output found.")
    else:
        lines += ["| paper | comparison | setting | ratio |", "|---|---|---|---|"]
        lines += [f"| {c['paper']} | {c['comparison']} | {c['setting']} | {c['ratio']:.1f}x |"
                  for c in report["claims"]]
    missing = [p for p in ("aladin", "lightningdot", "selfalign") if p not in report["benchmarks"]]
    if missing:
        lines += ["", f"Missing benchmark output: {', '.join(missing)}."]
    return "\n".join(lines) + "\n"


@cli_entry
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="bench-report", description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default="bench_out", help="folder of the benchmarks' JSON (bench_out)")
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    if not folder.is_dir():
        fail(f"{folder}: expected the folder the benchmarks wrote, found none")
    benches = gather(folder)
    if not benches:
        fail(f"{folder}: expected benchmark JSON files, found none")
    report = build_report(benches)
    md = to_markdown(report)
    write_text_atomic(folder / f"{REPORT_NAME}.md", md)
    write_json_atomic(folder / f"{REPORT_NAME}.json", report)
    print(md)
    print(f"written: {folder / REPORT_NAME}.md, {folder / REPORT_NAME}.json")
    return 0
