"""``itr-reproduce`` (``make reproduce``): one synthetic world, every paper's README train + evaluation commands
through its own command line, one table (Markdown on stdout, CSV, JSON) and the rsum-latency plot.

With ``--data-root`` and ``--checkpoints`` it takes the real-data path instead (see
:mod:`itr_common.compare.realdata`): every missing file is listed at once (exit 2), then each released
checkpoint is evaluated by its package's evaluation command and printed beside the package's paper table.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from itr_common.compare import plan as planmod
from itr_common.compare import seeds
from itr_common.compare.cpu_env import PORTABLE_CPU_ENV, fingerprint_in
from itr_common.compare.plot import plot_rows
from itr_common.compare.table import build_rows, chance_band, to_csv, to_markdown
from itr_common.errors import ArgumentParser, cli_entry, fail
from itr_common.fileio import read_json, write_json_atomic, write_text_atomic

SYNTHETIC_TITLE = "SYNTHETIC world"
SIZES = {"tiny": ["--size", "tiny", "--n-test", "50"], "small": ["--size", "small"], "demo": ["--size", "demo"],
         "base": ["--size", "base"]}


def repo_root() -> Path:
    """The monorepo root: the folder holding packages/ (from the working directory or this file)."""
    for start in (Path.cwd(), Path(__file__).resolve()):
        for folder in (start, *start.parents):
            if (folder / "packages" / "common").is_dir():
                return folder
    fail("itr-reproduce: expected to run inside the monorepo (a folder with packages/common), found none")


def _fmt_s(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _checkpoint_ref(paths: Path | tuple[Path, ...] | None) -> str | list[str] | None:
    """A row's checkpoint(s) as the record stores them: one path, or a list whose parameters add up."""
    if paths is None:
        return None
    return [str(p) for p in paths] if isinstance(paths, tuple) else str(paths)


def _remove(paths: tuple[Path, ...]) -> None:
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def carried_over(left_out: list[planmod.Job], selected: set[str], previous: list[dict[str, Any]]
                 ) -> tuple[dict[str, str], dict[tuple[str, str], dict[str, Any]]]:
    """What ``--only`` keeps of an earlier run in the same folder: each left-out job's status and its rows' records
    (times, status) from the earlier ``table.json`` records (``previous``), in plan order.

    A left-out job that needs a job run again (or one already stale) is ``stale``: its results were computed from
    outputs that are being replaced. A preparation step (no rows) is ``ok`` when its outputs exist. A job with no
    earlier record is ``not run (--only)``.
    """
    before: dict[str, list[dict[str, Any]]] = {}
    for rec in previous:
        before.setdefault(str(rec.get("job")), []).append(rec)
    status: dict[str, str] = {}
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for job in left_out:
        renewed = [f"{n} ran again" if n in selected else f"{n} is stale" for n in job.needs
                   if n in selected or status.get(n, "").startswith("stale")]
        recs = [r for r in before.get(job.name, []) if (r.get("method"), r.get("variant")) in job.results]
        if renewed:
            status[job.name] = f"stale: {', '.join(renewed)}; add {job.name} to --only"
        elif not job.results and job.outputs:  # a preparation step (no rows, no record): done if its outputs are
            done = all(path.exists() for path in job.outputs)
            status[job.name] = "ok" if done else "not run (--only)"
        elif recs and len(recs) == len(job.results):
            status[job.name] = str(recs[0].get("status", "missing"))
            rows.update({(r["method"], r["variant"]): r for r in recs})
        else:
            status[job.name] = "not run (--only)"
    return status, rows


class Progress:
    """The time-left estimate of a run made of several :func:`run_jobs` calls (one per seed): the expected seconds
    of every job to run (:data:`~itr_common.compare.plan.EXPECTED_S`), scaled by the pace measured so far."""

    def __init__(self, expected_s: float) -> None:
        self.expected_s, self.done_s, self.start = expected_s, 0.0, time.time()

    def finished(self, job_name: str) -> str:
        """Count ``job_name`` as done; returns ``elapsed ..., about ... left``."""
        self.done_s += planmod.EXPECTED_S.get(job_name, 60)
        elapsed = time.time() - self.start
        left = (self.expected_s - self.done_s) * (elapsed / self.done_s if self.done_s else 1.0)
        return f"elapsed {_fmt_s(elapsed)}, about {_fmt_s(max(left, 0.0))} left"


def expected_s(jobs: list[planmod.Job]) -> float:
    """The rough seconds ``jobs`` take on 2 CPU cores at the default size (for the time-left estimate)."""
    return sum(planmod.EXPECTED_S.get(j.name, 60) for j in jobs)


def run_jobs(jobs: list[planmod.Job], out: Path, python: str, log=print,
             left_out: list[planmod.Job] = (), previous: list[dict[str, Any]] = (), label: str = "",
             progress: Progress | None = None) -> list[dict[str, Any]]:
    """Run every job in order; returns one record per table row (status, times, result, checkpoint).

    Each job's ``outputs`` are removed before it runs. ``left_out``: jobs of the plan not selected (``--only``);
    their rows keep the ``previous`` run's records (:func:`carried_over`) or say they were not run. ``label``
    begins each progress line (``seed 1: ``); ``progress``: the estimate of a run that goes on after these jobs (the
    other seeds; default: these jobs alone).
    """
    env = planmod.child_env(python)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    status, kept = carried_over(list(left_out), {j.name for j in jobs}, list(previous))
    times: dict[tuple[str, str], dict[str, float]] = {}
    progress = progress or Progress(expected_s(jobs))
    for k, job in enumerate(jobs, 1):
        job_rows = tuple(job.results) or ()
        blocked = [n for n in job.needs if status.get(n) != "ok"]
        t0 = time.time()
        if blocked:
            status[job.name] = f"skipped: needs {', '.join(blocked)}"
        else:
            status[job.name] = "ok"
            _remove(job.outputs)
            with open(out / "logs" / f"{job.name}.log", "w") as logf:
                for cmd in job.commands:
                    c0 = time.time()
                    logf.write(f"$ (cd {cmd.cwd} && {' '.join(cmd.argv)})\n")
                    logf.flush()
                    rc = subprocess.run(cmd.argv, cwd=cmd.cwd, env=env, stdout=logf,
                                        stderr=subprocess.STDOUT).returncode
                    seconds = time.time() - c0
                    for row in cmd.rows or job_rows:
                        if cmd.kind in ("train", "eval"):
                            slot = times.setdefault(row, {})
                            slot[f"{cmd.kind}_s"] = slot.get(f"{cmd.kind}_s", 0.0) + seconds
                    if rc != 0:
                        status[job.name] = (f"failed: exit {rc} in {Path(cmd.argv[1]).name} "
                                            f"(log {out}/logs/{job.name}.log)")
                        break
            for ref in job.results.values():
                if status[job.name] == "ok" and not Path(str(ref).partition("#")[0]).is_file():
                    status[job.name] = f"failed: no result file {ref}"
        log(f"{label}[{k}/{len(jobs)}] {job.name}: {status[job.name]} in {_fmt_s(time.time() - t0)}; "
            f"{progress.finished(job.name)}", flush=True)
    records = []
    owner = {row: job for job in [*jobs, *left_out] for row in job.results}
    for method, variant in planmod.ROWS:
        row = (method, variant)
        job = owner.get(row)
        earlier = {k: v for k, v in kept.get(row, {}).items() if k.endswith("_s")}
        rec: dict[str, Any] = {"method": method, "variant": variant, **times.get(row, earlier)}
        if job is None:
            rec["status"] = "missing: no run in the plan"
        else:
            rec.update(status=status.get(job.name, "missing: not run"), result=str(job.results[row]),
                       checkpoint=_checkpoint_ref(job.checkpoints.get(row)), job=job.name)
        records.append(rec)
    return records


def _chance_title(rows: list[dict[str, Any]], title: str, meta: dict[str, Any]) -> str:
    """``title`` with the chance rsum of the table's most common gallery (also put in ``meta``)."""
    sizes = [r["n_images"] for r in rows if r["n_images"]]
    if not sizes:
        return title
    n_images = max(set(sizes), key=sizes.count)
    chance, spread = chance_band(n_images)
    meta["chance_rsum"], meta["chance_rsum_spread"] = round(chance, 1), round(spread, 1)
    return title + f"; chance rsum on {n_images} test images: {chance:.0f} +- {spread:.0f}"


def write_outputs(records: list[dict[str, Any]], out: Path, title: str, meta: dict[str, Any],
                  rows: list[dict[str, Any]] | None = None) -> str:
    """table.md / table.csv / table.json (+ the records) and rsum_latency.png; returns the Markdown.
    ``rows``: the records' table rows when already built (:func:`~itr_common.compare.table.build_rows`)."""
    rows = build_rows(records) if rows is None else rows
    title = _chance_title(rows, title, meta)
    md = to_markdown(rows, title)
    write_text_atomic(out / "table.md", md + "\n")
    write_text_atomic(out / "table.csv", to_csv(rows))
    write_json_atomic(out / "table.json", {"meta": meta, "rows": rows, "records": records})
    png = plot_rows(rows, out / "rsum_latency.png", title.split(";")[0], meta.get("chance_rsum"))
    if png:
        meta["plot"] = str(png)
    return md


def write_seed_table(seed_rows: list[list[dict[str, Any]]], folders: list[Path], out: Path, title: str,
                     meta: dict[str, Any]) -> str:
    """A ``--seeds`` run: the mean table of every seed's rows with the paired differences
    (:mod:`~itr_common.compare.seeds`) as ``out``/table.{md,csv,json} and the plot with error bars (each seed's
    own table is in its folder)."""
    rows, diffs = seeds.aggregate(seed_rows), seeds.paired_differences(seed_rows)
    title = _chance_title(rows, title, meta)
    meta.update(seeds=len(folders), seed_folders=[str(f) for f in folders])
    md = seeds.to_markdown(rows, diffs, title)
    write_text_atomic(out / "table.md", md + "\n")
    write_text_atomic(out / "table.csv", seeds.to_csv(rows))
    write_json_atomic(out / "table.json", {"meta": meta, "rows": rows, "differences": diffs})
    png = plot_rows(rows, out / "rsum_latency.png", f"{title.split(';')[0]} (mean +- sd)", meta.get("chance_rsum"))
    if png:
        meta["plot"] = str(png)
    return md


def _meta(args, world: Path, fingerprint: str, seconds: float | None = None) -> dict[str, Any]:
    import platform

    import torch

    from itr_common.bench import cpu_model

    env = planmod.child_env(sys.executable)
    meta: dict[str, Any] = {"size": args.size, "world": str(world), "machine": platform.platform(),
                            "cpu": cpu_model(), "torch": torch.__version__,
                            "omp_threads": env["OMP_NUM_THREADS"],
                            "cpu_kernels": {k: env[k] for k in PORTABLE_CPU_ENV if k in env},
                            "numerics_fingerprint": fingerprint}
    world_json = world / "world.json"
    if world_json.is_file():
        meta["world_config"] = json.loads(world_json.read_text()).get("config")
    if seconds is not None:
        meta["total_s"] = round(seconds, 1)
    return meta


def read_saved_table(path: Path) -> dict[str, Any]:
    """An earlier run's ``table.json``, checked to hold the ``records`` (list) and ``meta`` (dict) a run writes."""
    saved = read_json(path, "reproduce table", expect=dict)
    if not isinstance(saved.get("records"), list) or not isinstance(saved.get("meta"), dict):
        fail(f"{path}: expected the 'records' and 'meta' an itr-reproduce run writes, found keys {sorted(saved)}")
    return saved


def read_saved_meta(path: Path) -> dict[str, Any]:
    """The ``meta`` of an earlier run's ``table.json`` (one seed's or a ``--seeds`` table's)."""
    saved = read_json(path, "reproduce table", expect=dict)
    if not isinstance(saved.get("meta"), dict):
        fail(f"{path}: expected the 'meta' an itr-reproduce run writes, found keys {sorted(saved)}")
    return saved["meta"]


def seed_folders(out: Path, n_seeds: int) -> list[Path]:
    """Each seed's run folder: ``out`` itself for one seed (the single-seed layout), else ``out/seed-<s>``."""
    return [out] if n_seeds == 1 else [out / f"seed-{s}" for s in range(n_seeds)]


def _earlier_runs(out: Path, size: str, n_seeds: int, world: Path) -> list[list[dict[str, Any]]] | None:
    """``--only``: each seed's records of the run already in ``out`` when its world is there, else None (a new
    world is written). Fails when that run had another ``--size`` or ``--seeds``: its other rows and the jobs'
    inputs would no longer match."""
    saved_path = out / "table.json"
    if not saved_path.is_file() or not (world / "world.json").is_file():
        return None
    meta = read_saved_meta(saved_path)
    if meta.get("size") != size:
        fail(f"--size: expected {meta.get('size')} (the world of the run in {out}) with --only, found {size}; "
             "a world of another size needs its own --out")
    if int(meta.get("seeds", 1)) != n_seeds:
        fail(f"--seeds: expected {meta.get('seeds', 1)} (the run in {out}) with --only, found {n_seeds}; "
             "another number of seeds needs its own --out")
    return [read_saved_table(folder / "table.json")["records"] if (folder / "table.json").is_file() else []
            for folder in seed_folders(out, n_seeds)]


def rebuild(out: Path) -> str:
    """``--rebuild``: table.{md,csv,json} and the plot again from the saved records (every seed's for a
    ``--seeds`` run), no run."""
    meta = read_saved_meta(out / "table.json")
    meta.pop("plot", None)
    n_seeds = int(meta.get("seeds", 1))
    folders = seed_folders(out, n_seeds)
    per_seed = [read_saved_table(folder / "table.json") for folder in folders]
    size = meta.get("size", "?")
    title = (f"{SYNTHETIC_TITLE} ({size}), not the papers' data: {len(per_seed[0]['records'])} rows"
             + (f" x {n_seeds} seeds" if n_seeds > 1 else "") + f", {_fmt_s(float(meta.get('total_s', 0)))} in all")
    if n_seeds == 1:
        return write_outputs(per_seed[0]["records"], out, title, meta)
    seed_rows = []
    for s, (saved, folder) in enumerate(zip(per_seed, folders, strict=True)):
        seed_rows.append(build_rows(saved["records"]))
        seed_meta = {**saved["meta"], "seed": s}
        seed_meta.pop("plot", None)
        write_outputs(saved["records"], folder, f"{SYNTHETIC_TITLE} ({size}), seed {s} of {n_seeds}", seed_meta,
                      seed_rows[-1])
    return write_seed_table(seed_rows, folders, out, title, meta)


RUN_FOLDERS = ("dime", "selfalign", "iais", "lightningdot", "aladin", "results", "logs", "real_data_check")


def _clear_runs(out: Path) -> None:
    """A full run starts clean (several trainers refuse a non-empty output folder): every earlier run's folders,
    single-seed and per-seed alike, go; the world is rewritten by the run."""
    for name in RUN_FOLDERS:
        shutil.rmtree(out / name, ignore_errors=True)
    for folder in out.glob("seed-*"):
        if folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="itr-reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="reproduce_out", help="output folder (default reproduce_out)")
    parser.add_argument("--size", default="tiny", choices=sorted(SIZES),
                        help="synthetic world: tiny (default: the tiny preset with a 50-image test split), small, "
                             "demo, base (base: for a GPU)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="train every run with this many seeds on the same world (default 1): each seed's table "
                             "in --out/seed-<s>/, and in --out the mean table with each rsum's sd and the paired "
                             "differences between a method's variants; N seeds take N times as long")
    parser.add_argument("--only", nargs="+", default=None,
                        help="run only these jobs again (names as in the progress lines) in the --out folder of an "
                             "earlier run: their old outputs are removed first, the other rows keep that run's results")
    parser.add_argument("--data-root", default=None, help="real-data path: root of the original data trees")
    parser.add_argument("--checkpoints", default=None, help="real-data path: folder of the released checkpoints")
    parser.add_argument("--papers", default="dime,selfalign,iais,lightningdot,aladin",
                        help="real-data path: comma-separated papers to evaluate (default all five)")
    parser.add_argument("--no-real-data-check", action="store_true",
                        help="skip the closing check: the real-data path run on the world and the checkpoints just "
                             "trained must measure the same recalls as the table (see compare/standin.py)")
    parser.add_argument("--rebuild", action="store_true",
                        help="only rebuild table.{md,csv,json} and the plot from --out's table.json (no run)")
    args = parser.parse_args(argv)
    root = repo_root()
    out = Path(args.out).resolve()
    if args.rebuild:
        print(rebuild(out))
        return 0
    if (args.data_root is None) != (args.checkpoints is None):
        fail("--data-root/--checkpoints: expected both (the real-data path) or neither, found one")
    if args.data_root is not None:
        from itr_common.compare import realdata

        for flag, given in (("--seeds", args.seeds != 1), ("--only", args.only)):
            if given:
                fail(f"{flag}: expected it only on the synthetic runs; the real-data path (--data-root) evaluates "
                     "the released checkpoints once, found both")

        papers = [p for p in args.papers.split(",") if p]
        unknown = sorted(set(papers) - set(realdata.NEEDS))
        if unknown or not papers:
            fail(f"--papers: expected names among {', '.join(realdata.NEEDS)}, found '{args.papers}'")
        return realdata.run(Path(args.data_root), Path(args.checkpoints), out, root, sys.executable, papers)
    if args.seeds < 1:
        fail(f"--seeds: expected a number of training seeds >= 1, found {args.seeds}")
    unknown = sorted(set(args.only or ()) - set(planmod.JOB_NAMES))
    if unknown:
        fail(f"--only: expected job names among {', '.join(planmod.JOB_NAMES)}, found {', '.join(unknown)}")
    world = out / "world"
    previous = _earlier_runs(out, args.size, args.seeds, world) if args.only else None
    out.mkdir(parents=True, exist_ok=True)
    if not args.only:
        _clear_runs(out)
    start = time.time()
    if previous is not None:
        print(f"== synthetic world ({args.size}) of the earlier run: {world}", flush=True)
    else:
        synth = [str(Path(sys.executable).parent / "itr-synth"), "--out", str(world), "--layout", "all",
                 *SIZES[args.size], "--force"]
        print(f"== synthetic world ({args.size}) -> {world}", flush=True)
        subprocess.run(synth, check=True, stdout=subprocess.DEVNULL, env=planmod.child_env(sys.executable))
    # which floats this machine computes under the runs' environment: the same code and fingerprint are the
    # condition for the same table (compare/cpu_env.py)
    fingerprint = fingerprint_in(planmod.child_env(sys.executable), sys.executable)
    print(f"== numerics fingerprint {fingerprint} (python -m itr_common.compare.cpu_env --compare)", flush=True)
    folders = seed_folders(out, args.seeds)
    per_seed: list[list[dict[str, Any]]] = []
    seed_rows: list[list[dict[str, Any]]] = []
    progress = None
    for s, folder in enumerate(folders):
        if folder != out:
            planmod.replace_link(folder / "world", world)  # each seed folder is a whole run's layout
        jobs = planmod.build_plan(root, world, folder, sys.executable, seed=s)
        left_out = [j for j in jobs if args.only and j.name not in args.only]
        jobs = [j for j in jobs if not args.only or j.name in args.only]
        progress = progress or Progress(expected_s(jobs) * len(folders))
        (folder / "results").mkdir(exist_ok=True)
        per_seed.append(run_jobs(jobs, folder, sys.executable, left_out=left_out,
                                 previous=previous[s] if previous else [],
                                 label=f"seed {s}: " if len(folders) > 1 else "", progress=progress))
        if len(folders) > 1:  # each seed's table as soon as it is done: a stopped run keeps the seeds it finished
            seed_rows.append(build_rows(per_seed[-1]))
            write_outputs(per_seed[-1], folder, f"{SYNTHETIC_TITLE} ({args.size}), seed {s} of {len(folders)}",
                          {**_meta(args, world, fingerprint), "seed": s}, seed_rows[-1])
    seconds = time.time() - start
    meta = _meta(args, world, fingerprint, seconds)
    title = (f"{SYNTHETIC_TITLE} ({args.size}), not the papers' data: {len(per_seed[0])} rows"
             + (f" x {len(folders)} seeds" if len(folders) > 1 else "") + f", {_fmt_s(seconds)} in all")
    if len(folders) == 1:
        md = write_outputs(per_seed[0], out, title, meta)
    else:
        md = write_seed_table(seed_rows, folders, out, title, meta)
    print(md)
    print(f"\nwritten: {out}/table.md, table.csv, table.json" + (f", {meta['plot']}" if "plot" in meta else "")
          + (f"; each seed's table in {out}/seed-<s>/" if len(folders) > 1 else ""))
    if args.only or args.no_real_data_check:
        return 0
    from itr_common.compare import standin

    # the real-data path is the same code for every seed: seed 0's checkpoints check it
    verdicts = standin.check(folders[0], build_rows(per_seed[0], params=False), root, sys.executable)
    saved = read_json(out / "table.json", "reproduce table", expect=dict)
    saved["meta"]["real_data_check"] = verdicts
    write_json_atomic(out / "table.json", saved)
    return 0 if all(v == "same recalls" for v in verdicts.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
