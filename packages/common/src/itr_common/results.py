"""Tables built from the one-JSON-per-run result files that every evaluation writes.

``python -m itr_common.results DIR [DIR ...]`` (console script ``itr-results``) reads every
``*.json`` written by :meth:`itr_common.metrics.RetrievalResult.write_json` under the given folders
and prints one row per run: R@1/5/10 both ways, rsum, protocol and the run's time when recorded.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from itr_common.errors import ArgumentParser, cli_entry, fail
from itr_common.metrics import RetrievalResult

HEADER = ("run", "protocol", "i2t R@1", "R@5", "R@10", "t2i R@1", "R@5", "R@10", "rsum", "time s")


def collect_results(paths: Iterable[str | os.PathLike]) -> list[tuple[str, RetrievalResult]]:
    """(name, result) for every result JSON in ``paths`` (files or folders, searched recursively)."""
    found: list[tuple[str, RetrievalResult]] = []
    for path in map(Path, paths):
        if path.is_file():
            files = [path]
        elif path.is_dir():
            files = sorted(path.rglob("*.json"))
        else:
            fail(f"{path}: no such result file or folder")
        for file in files:
            found.append((str(file.relative_to(path) if path.is_dir() else file.name).removesuffix(".json"),
                          RetrievalResult.from_json(file)))
    return found


def format_rows(results: Iterable[tuple[str, RetrievalResult]]) -> str:
    """A fixed-width table, one row per result."""
    rows = [HEADER]
    for name, result in results:
        time_s = result.extras.get("time_s")
        rows.append((
            str(result.extras.get("name", name)),
            result.protocol,
            *(f"{v:.2f}" for v in result.i2t[:3]),
            *(f"{v:.2f}" for v in result.t2i[:3]),
            f"{result.rsum:.2f}",
            f"{time_s:.1f}" if isinstance(time_s, int | float) else "-",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="itr-results", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="result JSON files or folders holding them")
    args = parser.parse_args(argv)
    results = collect_results(args.paths)
    if not results:
        fail(f"{', '.join(args.paths)}: no result JSON found")
    print(format_rows(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
