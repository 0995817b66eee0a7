"""itr_common.compare: the reproduce table, plot, driver loop, real-data file check and bench report, on fake
result / benchmark JSONs (no training: every command here is a one-line python -c)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from itr_common.compare import bench_report, cli, cpu_env, plan, realdata, table
from itr_common.compare.cpu_env import PORTABLE_CPU_ENV, numerics_fingerprint
from itr_common.compare.plot import label_heights, plot_rows
from itr_common.metrics import RetrievalResult, evaluate_sims
from itr_common.testing.conformance import check_usage_error, run_command, subprocess_env


def fake_result(path: Path, signal: float, seed: int = 0, **extras) -> RetrievalResult:
    """A real RetrievalResult computed from a random 10 x 50 score matrix with the diagonal lifted by signal."""
    rng = np.random.default_rng(seed)
    sims = rng.normal(size=(10, 50))
    for i in range(10):
        sims[i, 5 * i:5 * i + 5] += signal
    result = evaluate_sims(sims, "1k", extras=extras)
    result.write_json(path)
    return result


def test_rows_markdown_csv_keep_every_status(tmp_path):
    good = fake_result(tmp_path / "good.json", 3.0)
    fake_result(tmp_path / "timed.json", 1.0, latency_ms_per_query=2.5)
    nested = {"results": {"matching": {"coco-5k": good.to_dict()}}}
    (tmp_path / "aladin.json").write_text(json.dumps(nested))
    records = [
        {"method": "A", "variant": "x", "status": "ok", "result": str(tmp_path / "good.json"), "train_s": 10.0,
         "eval_s": 6.0},
        {"method": "A", "variant": "reported", "status": "ok", "result": str(tmp_path / "timed.json"), "eval_s": 6.0},
        {"method": "B", "variant": "matching", "status": "ok", "result": f"{tmp_path / 'aladin.json'}#matching/coco-5k",
         "eval_s": 1.0},
        {"method": "C", "variant": "y", "status": "failed: exit 1 in train.py", "result": str(tmp_path / "none.json")},
        {"method": "D", "variant": "z", "status": "ok", "result": str(tmp_path / "absent.json")},
        {"method": "E", "variant": "w", "status": "missing: no run in the plan"},
    ]
    rows = table.build_rows(records)
    assert [r["method"] for r in rows] == ["A", "A", "B", "C", "D", "E"]
    assert rows[0]["rsum"] == pytest.approx(good.rsum) and rows[0]["i2t_r1"] == pytest.approx(good.i2t[0])
    assert rows[0]["latency_ms"] == pytest.approx(1000 * 6.0 / 60)
    assert rows[0]["latency_source"] == "eval wall / queries"
    assert rows[1]["latency_ms"] == 2.5 and rows[1]["latency_source"] == "package"
    assert rows[2]["rsum"] == pytest.approx(good.rsum)
    assert rows[3]["status"].startswith("failed") and rows[3]["rsum"] is None
    assert rows[4]["status"].startswith("failed: result unreadable")
    assert rows[5]["status"].startswith("missing")
    md = table.to_markdown(rows, "SYNTHETIC")
    assert md.count("\n| ") == 7 and "failed: exit 1" in md and "missing: no run" in md and "SYNTHETIC" in md
    parsed = list(csv.DictReader(io.StringIO(table.to_csv(rows))))
    assert len(parsed) == 6 and float(parsed[0]["rsum"]) == pytest.approx(good.rsum) and parsed[3]["rsum"] == ""


def test_rows_say_how_far_above_chance_they_are_and_mark_those_near_it(tmp_path):
    """A row that did not learn (random scores) reads "near chance" in the Markdown, a learned one "ok"; both
    carry chance_rsum / chance_z in the CSV; a failed row has neither."""
    from itr_common.metrics import chance_recalls, chance_rsum_spread

    learned = fake_result(tmp_path / "learned.json", 3.0)
    fake_result(tmp_path / "random.json", 0.0)
    records = [{"method": m, "variant": "v", "status": "ok", "result": str(tmp_path / f"{m}.json")}
               for m in ("learned", "random")]
    records.append({"method": "failed", "variant": "v", "status": "failed: exit 1 in train.py"})
    rows = table.build_rows(records, params=False)
    chance, spread = chance_recalls(10)["rsum"], chance_rsum_spread(10)
    assert rows[0]["chance_rsum"] == pytest.approx(chance, abs=0.01)
    assert rows[0]["chance_z"] == pytest.approx((learned.rsum - chance) / spread, abs=0.01)
    assert rows[0]["chance_z"] > table.NEAR_CHANCE_Z > rows[1]["chance_z"]
    assert rows[2]["chance_z"] is None and rows[2]["chance_rsum"] is None
    md_rows = table.to_markdown(rows).splitlines()[2:]
    assert md_rows[0].endswith("| ok |") and "| ok, near chance (" in md_rows[1]
    assert md_rows[2].endswith("| failed: exit 1 in train.py |")
    parsed = list(csv.DictReader(io.StringIO(table.to_csv(rows))))
    assert float(parsed[1]["chance_z"]) == rows[1]["chance_z"] and parsed[2]["chance_z"] == ""


def test_param_count_from_a_checkpoint(tmp_path):
    import torch

    torch.save({"model": [{"w": torch.zeros(3, 4)}, {"b": torch.zeros(5)}], "epoch": 1}, tmp_path / "scan.pth.tar")
    torch.save({"uniter.w": torch.zeros(2, 2)}, tmp_path / "plain.pt")
    assert table.count_params(str(tmp_path / "scan.pth.tar")) == 17
    assert table.count_params(str(tmp_path / "plain.pt")) == 4
    assert table.count_params(str(tmp_path / "none.pt")) is None
    # an ensemble / a retriever and its re-ranker: the parameters add up; one unreadable file makes it unknown
    assert table.count_params([str(tmp_path / "scan.pth.tar"), str(tmp_path / "plain.pt")]) == 21
    assert table.count_params([str(tmp_path / "scan.pth.tar"), str(tmp_path / "none.pt")]) is None


def test_plot_writes_a_png_of_the_timed_rows(tmp_path):
    rows = [{"method": "A", "variant": "x", "rsum": 300.0, "latency_ms": 0.5},
            {"method": "B", "variant": "y", "rsum": 150.0, "latency_ms": 40.0},
            {"method": "C", "variant": "failed", "rsum": None, "latency_ms": None}]
    png = plot_rows(rows, tmp_path / "p.png", "SYNTHETIC")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size < 200_000
    assert plot_rows(rows[2:], tmp_path / "none.png", "t") is None and not (tmp_path / "none.png").exists()


def test_plot_labels_of_nearby_points_stack_instead_of_overlapping():
    # Three rows at about the same latency within one label height: placed from the top, each moves to a gap
    # below the last; a point 1.2 decades away keeps its own height, and so does a label far enough below.
    xs, ys = [3.5, 3.5, 3.6, 0.2, 3.5], [190.0, 185.0, 178.0, 186.0, 120.0]
    assert label_heights(xs, ys, gap=10.0) == [190.0, 180.0, 170.0, 186.0, 120.0]
    assert label_heights([1.0, 1.0], [100.0, 100.0], gap=5.0) == [100.0, 95.0]  # ties: the order is stable
    # a gap whose subtraction rounds (190.3 - 9.7 = 180.60000000000002) must not clash with itself forever
    assert label_heights([3.5, 3.5], [190.3, 185.0], gap=9.7) == [190.3, 190.3 - 9.7]


def test_plot_title_breaks_after_its_colon_when_too_wide():
    from itr_common.compare.plot import _two_lines

    assert _two_lines("short: title") == "short: title"
    assert _two_lines("SYNTHETIC world (tiny), not the papers' data: " + "x" * 40) == \
        "SYNTHETIC world (tiny), not the papers' data:\n" + "x" * 40
    assert _two_lines("word " * 20, width=12) == "word word\n" + ("word " * 18)


def _writer(path: Path, signal: float) -> list[str]:
    code = (f"import numpy as np, sys; from itr_common.metrics import evaluate_sims; s = np.random.default_rng(0)"
            f".normal(size=(10, 50)); [s.__setitem__((i, slice(5*i, 5*i+5)), s[i, 5*i:5*i+5] + {signal}) "
            f"for i in range(10)]; evaluate_sims(s, '1k').write_json(sys.argv[1])")
    return [sys.executable, "-c", code, str(path)]


def test_run_jobs_reports_failed_and_skipped_runs(tmp_path, monkeypatch):
    rows = plan.ROWS[:3]
    fail_cmd = plan.Command([sys.executable, "-c", "raise SystemExit(3)"], tmp_path)
    jobs = [plan.Job("ok", "p", [plan.Command(_writer(tmp_path / "a.json", 3.0), tmp_path, "eval")],
                     {rows[0]: tmp_path / "a.json"}),
            plan.Job("bad", "p", [fail_cmd], {rows[1]: tmp_path / "b.json"}),
            plan.Job("after", "p", [plan.Command(_writer(tmp_path / "c.json", 3.0), tmp_path)],
                     {rows[2]: tmp_path / "c.json"}, needs=("bad",))]
    lines: list[str] = []
    left_out = [plan.Job("other", "p", [fail_cmd], {plan.ROWS[3]: tmp_path / "d.json"})]
    records = cli.run_jobs(jobs, tmp_path, sys.executable, log=lambda s, **_: lines.append(s), left_out=left_out)
    assert len(lines) == 3 and all("left" in line for line in lines)
    assert len(records) == len(plan.ROWS)  # every row of the table, run or not
    status = {(r["method"], r["variant"]): r["status"] for r in records}
    assert status[rows[0]] == "ok" and status[rows[1]].startswith("failed: exit 3")
    assert status[rows[2]] == "skipped: needs bad"
    assert status[plan.ROWS[3]] == "not run (--only)"
    assert all(status[r].startswith("missing") for r in plan.ROWS[4:])
    assert records[0]["eval_s"] > 0
    md = cli.write_outputs(records, tmp_path, "SYNTHETIC", {})
    assert "skipped: needs bad" in md and (tmp_path / "table.csv").is_file()
    assert len(json.loads((tmp_path / "table.json").read_text())["rows"]) == len(plan.ROWS)
    (tmp_path / "table.md").unlink()
    assert cli.main(["--out", str(tmp_path), "--rebuild"]) == 0  # table again from the saved records, no run
    assert "skipped: needs bad" in (tmp_path / "table.md").read_text()


def _trainer(run_dir: Path) -> list[str]:
    """A stand-in trainer that, like IAIS's and LightningDOT's, refuses an output folder with files in it."""
    code = ("import os, sys; d = sys.argv[1]; used = os.path.isdir(d) and os.listdir(d); "
            "os.makedirs(d, exist_ok=True); open(os.path.join(d, 'model.pt'), 'w').close(); sys.exit(2 if used else 0)")
    return [sys.executable, "-c", code, str(run_dir)]


def test_only_runs_a_job_again_from_scratch_and_keeps_the_other_rows(tmp_path):
    rows = plan.ROWS[:3]

    def jobs() -> list[plan.Job]:
        return [plan.Job("first", "p", [plan.Command(_trainer(tmp_path / "run1"), tmp_path),
                                        plan.Command(_writer(tmp_path / "a.json", 3.0), tmp_path, "eval")],
                         {rows[0]: tmp_path / "a.json"}, outputs=(tmp_path / "run1", tmp_path / "a.json")),
                plan.Job("second", "p", [plan.Command(_trainer(tmp_path / "run2"), tmp_path),
                                         plan.Command(_writer(tmp_path / "b.json", 3.0), tmp_path, "eval")],
                         {rows[1]: tmp_path / "b.json"}, outputs=(tmp_path / "run2", tmp_path / "b.json")),
                plan.Job("uses-second", "p", [plan.Command(_writer(tmp_path / "c.json", 3.0), tmp_path, "eval")],
                         {rows[2]: tmp_path / "c.json"}, needs=("second",), outputs=(tmp_path / "c.json",))]

    quiet = lambda *a, **k: None  # noqa: E731
    first = cli.run_jobs(jobs(), tmp_path, sys.executable, log=quiet)
    assert [r["status"] for r in first[:3]] == ["ok"] * 3

    # --only second: its used folder is cleared (the trainer would refuse it), "first" keeps its record and times,
    # and "uses-second", computed from the replaced outputs, is marked stale instead of showing old numbers
    selected = [j for j in jobs() if j.name == "second"]
    left_out = [j for j in jobs() if j.name != "second"]
    again = cli.run_jobs(selected, tmp_path, sys.executable, log=quiet, left_out=left_out, previous=first)
    status = [r["status"] for r in again[:3]]
    assert status[:2] == ["ok", "ok"], status
    assert status[2] == "stale: second ran again; add uses-second to --only"
    after = plan.Job("after", "p", [], {plan.ROWS[3]: tmp_path / "d.json"}, needs=("uses-second",))
    assert cli.carried_over([*left_out, after], {"second"}, first)[0]["after"] == (
        "stale: uses-second is stale; add after to --only")  # stale spreads down the needs, saying why
    assert again[0]["eval_s"] == first[0]["eval_s"] and again[1]["eval_s"] != first[1]["eval_s"]

    # a preparation step (no rows, so no record) counts as done when its outputs exist
    prep = plan.Job("prep", "p", [], outputs=(tmp_path / "run1",))
    assert cli.carried_over([prep], set(), [])[0] == {"prep": "ok"}
    assert cli.carried_over([plan.Job("prep", "p", [], outputs=(tmp_path / "none",))], set(), [])[0] == {
        "prep": "not run (--only)"}

    # a prerequisite left out with an earlier "ok" lets the job that needs it run
    selected = [j for j in jobs() if j.name == "uses-second"]
    left_out = [j for j in jobs() if j.name != "uses-second"]
    third = cli.run_jobs(selected, tmp_path, sys.executable, log=quiet, left_out=left_out, previous=again)
    assert [r["status"] for r in third[:3]] == ["ok"] * 3


def test_only_refuses_an_unknown_job_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--out", str(tmp_path / "out"), "--only", "dime-i2t", "iais"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: --only: expected job names among dime-i2t, ")
    assert not (tmp_path / "out").exists()  # no world written, no folder made


def test_only_refuses_a_size_other_than_the_earlier_runs(tmp_path, capsys):
    (tmp_path / "world").mkdir()
    (tmp_path / "world" / "world.json").write_text("{}")
    (tmp_path / "table.json").write_text(json.dumps({"meta": {"size": "base"}, "records": []}))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--out", str(tmp_path), "--only", "dime-i2t"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --size: expected base (the world of the run in") and "found tiny" in err
    assert err.count("\n") == 0


def test_real_data_lists_every_missing_file_at_once(tmp_path):
    data, ck = tmp_path / "data", tmp_path / "ck"
    (data / "precomp/f30k_precomp").mkdir(parents=True)
    (data / "precomp/f30k_precomp/test_ims.npy").write_bytes(b"x")
    missing = realdata.missing_files(data, ck, list(realdata.NEEDS))
    assert len(missing) == sum(len(v) for v in realdata.NEEDS.values()) - 2  # present for dime and selfalign
    line = check_usage_error(cli.main, ["--data-root", str(data), "--checkpoints", str(ck), "--out",
                                        str(tmp_path / "out")], "flickr-ft.pt", "model_best_rsum.pth.tar",
                             "test_caps.txt", untouched=[tmp_path / "out"])
    assert f"{len(missing)} needed file(s) missing" in line
    check_usage_error(cli.main, ["--data-root", str(data), "--out", str(tmp_path / "out")], "--checkpoints")
    line = check_usage_error(cli.main, ["--data-root", str(data), "--checkpoints", str(ck), "--papers", "iais"],
                             "iais/flickr_model_step_5000.pt")
    assert "dime" not in line


def _fake_benches(folder: Path) -> None:
    folder.mkdir()
    (folder / "aladin.json").write_text(json.dumps({
        "config": {"model": "tiny", "threads": 2, "torch": "2.x", "machine": "x86_64", "galleries": "100,1000"},
        "latency": {"1000": {"matching_s": 0.001, "alignment_s": 0.01, "cross_encoder_s": 0.5},
                    "100": {"matching_s": 0.001, "alignment_s": 0.002, "cross_encoder_s": 0.05}}}))
    (folder / "lightningdot.json").write_text(json.dumps({
        "config": {"model": "tiny"}, "machine": {"platform": "Linux", "torch": "2.x", "threads": 2},
        "end_to_end": {"by_gallery_size": {"1000": {"bi_encoder_s": 0.01, "uniter_all_pairs_s": 2.0, "speedup": 200.0,
                                                    "speedup_rerank_top10": 50.0}}}}))
    (folder / "selfalign.json").write_text(json.dumps({
        "benchmark": "selfalign", "model": "tiny", "threads": 1, "device": "cpu",
        "variants": {"CAMERA+SelfAlign": {"latency_s": {"dime_over_selfalign": {"flickr30k_1k_images": 30.0}}},
                     "CAMERA": {}}}))
    (folder / "report.json").write_text("{}")  # an earlier report is not a benchmark


def test_bench_report_gathers_ratios(tmp_path, capsys):
    _fake_benches(tmp_path / "b")
    assert bench_report.main([str(tmp_path / "b")]) == 0
    report = json.loads((tmp_path / "b/report.json").read_text())
    assert sorted(report["benchmarks"]) == ["aladin", "lightningdot", "selfalign"]
    got = {(c["paper"], c["comparison"], c["setting"]): c["ratio"] for c in report["claims"]}
    assert got[("ALADIN", "cross-encoder / matching head", "gallery 1000")] == pytest.approx(500)
    assert got[("ALADIN", "alignment head / matching head", "gallery 100")] == pytest.approx(2)
    assert got[("LightningDOT", "UNITER all pairs / LightningDOT bi-encoder", "gallery 1000")] == 200
    assert got[("LightningDOT", "UNITER all pairs / LightningDOT + re-rank top 10", "gallery 1000")] == 50
    assert got[("SelfAlign", "DIME query / CAMERA+SelfAlign query", "flickr30k_1k_images")] == 30
    assert report["benchmarks"]["aladin"]["meta"]["threads"] == 2
    assert report["benchmarks"]["lightningdot"]["meta"]["torch"] == "2.x"
    md = (tmp_path / "b/report.md").read_text()
    assert "| ALADIN | cross-encoder / matching head | gallery 100 | 50.0x |" in md
    assert md in capsys.readouterr().out
    check_usage_error(bench_report.main, [str(tmp_path / "nothing")], "nothing")


def test_plan_covers_every_row_with_existing_scripts(tmp_path):
    world = tmp_path / "world"
    (world / "bert").mkdir(parents=True)
    (world / "world.json").write_text(json.dumps({"config": {"feat_dim": 64}}))
    (world / "bert/config.json").write_text(json.dumps({"vocab_size": 300}))
    root = cli.repo_root()
    jobs = plan.build_plan(root, world, tmp_path / "out", sys.executable)
    assert sorted(row for job in jobs for row in job.results) == sorted(plan.ROWS)
    names = [job.name for job in jobs]
    assert names == list(plan.JOB_NAMES) and set(plan.EXPECTED_S) == {"world", *names}
    assert all(set(job.needs) <= set(names[:names.index(job.name)]) for job in jobs)  # needs run first
    for job in jobs:
        for cmd in job.commands:
            script = cmd.argv[1]
            assert cmd.cwd.is_dir(), cmd.cwd
            assert script == "-m" or (cmd.cwd / script).is_file(), (job.name, script)
            assert "--img_dim" not in cmd.argv or cmd.argv[cmd.argv.index("--img_dim") + 1] == "64"
    # LightningDOT's tiny BERT configs follow the world's vocabulary; the other configs are links
    config = tmp_path / "out/lightningdot/work/config"
    assert json.loads((config / "bert_tiny.json").read_text())["vocab_size"] == 300
    assert (config / "flickr30k_eval_tiny_config.json").is_symlink()
    # every row has its checkpoint(s) for the parameter count; the ensemble and the re-ranker count two models,
    # and their training time is that of both models they are made of
    assert {row for job in jobs for row in job.checkpoints} == set(plan.ROWS)
    by_row = {row: ck for job in jobs for row, ck in job.checkpoints.items()}
    assert len(by_row[("DIME", "ensemble")]) == 2 and len(by_row[("LightningDOT", "+UNITER re-rank top 20")]) == 2
    trained_for = {row: {job.name for job in jobs for cmd in job.commands if cmd.kind == "train"
                         and row in (cmd.rows or tuple(job.results))} for row in plan.ROWS}
    assert trained_for[("DIME", "ensemble")] == {"dime-i2t", "dime-t2i"}
    assert trained_for[("LightningDOT", "+UNITER re-rank top 20")] == {"lightningdot", "iais-none"}
    assert all(trained_for[row] for row in plan.ROWS)
    # --only clears what a job writes: every result file and every checkpoint of a job that trains it lies in one
    # of the outputs of the job that writes it, and no two jobs share an output
    def written_by(path: Path) -> set[str]:
        path = Path(str(path).partition("#")[0])
        return {job.name for job in jobs for out in job.outputs if path == out or out in path.parents}

    assert all(written_by(ref) == {job.name} for job in jobs for ref in job.results.values())
    for row, names in trained_for.items():
        cks = by_row[row] if isinstance(by_row[row], tuple) else (by_row[row],)
        assert set().union(*(written_by(ck) for ck in cks)) == names, row
    outputs = [out for job in jobs for out in job.outputs]
    assert len(outputs) == len(set(outputs))
    assert written_by(tmp_path / "out/iais/work/output/pretrained/uniter-tiny-itm.pt") == {"iais-pretrain"}


def test_pretraining_drops_mrckl_on_a_world_without_soft_labels(tmp_path):
    """The demo and base worlds write no img_db soft labels: LightningDOT's tiny pre-training config is copied
    without its mrckl task (and that task's mix ratio), which stopped every larger --size with exit 2."""
    root = cli.repo_root()
    source = json.loads((root / "packages/lightningdot/config/pretrain-tiny.json").read_text())
    for soft, name in ((True, "with"), (False, "without")):
        world = tmp_path / name / "world"
        (world / "bert").mkdir(parents=True)
        (world / "world.json").write_text(json.dumps({"config": {"feat_dim": 64, "img_db_soft_labels": soft}}))
        (world / "bert/config.json").write_text(json.dumps({"vocab_size": 300}))
        work = plan.uniter_workdir(tmp_path / name / "out", world, root / "packages/lightningdot")
        config = work / "config/pretrain-tiny.json"
        if soft:
            assert config.is_symlink()
            continue
        fitted = json.loads(config.read_text())
        train, val = fitted["train_datasets"][0], fitted["val_datasets"][0]
        assert train["tasks"] == ["itm", "mlm", "mrfr"] and val["tasks"] == ["itm", "mlm", "mrfr"]
        assert train["mix_ratio"] == source["train_datasets"][0]["mix_ratio"][:3]
        assert {k: v for k, v in fitted.items() if not k.endswith("_datasets")} == \
            {k: v for k, v in source.items() if not k.endswith("_datasets")}


def test_step_based_schedules_keep_the_tiny_passes_over_a_larger_world(tmp_path):
    """UNITER's ITM pre-training, IAIS fine-tuning and LightningDOT pre-training count steps, not epochs: on a
    world with 10x the tiny world's training images they run 10x the steps (warm-up and validation interval
    alike), and the commands that read their final checkpoints follow the new step number."""
    root = cli.repo_root()
    iais_src = json.loads((root / "packages/iais/config/train-itm-flickr-tiny-hn.json").read_text())
    ldot_src = json.loads((root / "packages/lightningdot/config/pretrain-tiny.json").read_text())
    for n_train, scale in ((None, 1), (plan.TINY_N_TRAIN * 10, 10)):
        world = tmp_path / f"world{scale}"
        (world / "bert").mkdir(parents=True)
        config = {"feat_dim": 64, **({"n_train": n_train} if n_train else {})}
        (world / "world.json").write_text(json.dumps({"config": config}))
        (world / "bert/config.json").write_text(json.dumps({"vocab_size": 300}))
        assert plan.train_scale(world) == scale
        out = tmp_path / f"out{scale}"
        jobs = {job.name: job for job in plan.build_plan(root, world, out, sys.executable)}
        iais_cfg = out / "iais/work/config/train-itm-flickr-tiny-hn.json"
        ldot_cfg = out / "lightningdot/work/config/pretrain-tiny.json"
        assert iais_cfg.is_symlink() == (scale == 1) and ldot_cfg.is_symlink() == (scale == 1)
        fitted = json.loads(iais_cfg.read_text())
        for key in plan.SCHEDULE_KEYS:
            assert fitted[key] == iais_src[key] * scale
        assert {k: v for k, v in fitted.items() if k not in plan.SCHEDULE_KEYS} == \
            {k: v for k, v in iais_src.items() if k not in plan.SCHEDULE_KEYS}
        assert json.loads(ldot_cfg.read_text())["num_train_steps"] == ldot_src["num_train_steps"] * scale
        pretrain = jobs["iais-pretrain"].commands[0].argv
        if scale == 1:
            assert "--num_train_steps" not in pretrain  # the tiny run is demo.sh's command as it is
        else:
            assert pretrain[pretrain.index("--num_train_steps") + 1] == str(plan.ITM_PRETRAIN_STEPS * scale)
            assert pretrain[pretrain.index("--warmup_steps") + 1] == str(plan.ITM_PRETRAIN_WARMUP * scale)
        final = f"model_step_{iais_src['num_train_steps'] * scale}_final.pt"
        inf_itm = jobs["iais-none"].commands[1].argv
        assert inf_itm[inf_itm.index("--checkpoint") + 1] == f"output/itm/none/ckpt/{final}"
        rerank = jobs["lightningdot-rerank"].commands[0].argv
        assert rerank[rerank.index("--uniter_checkpoint") + 1].endswith(f"itm/none/ckpt/{final}")
        train_itm = jobs["lightningdot"].commands[1].argv
        assert train_itm[train_itm.index("--biencoder_checkpoint") + 1] == \
            f"output/pretrain_tiny/ckpt/model_step_{ldot_src['num_train_steps'] * scale}.pt"
        # the SCAN-family runs warm up with summed violations on the larger world only (tiny: demo.sh's commands)
        scan_family = [c.argv for name in ("dime-i2t", "dime-t2i", "selfalign-camera", "selfalign-vsrn")
                       for c in jobs[name].commands if c.kind == "train"]
        assert len(scan_family) == 6
        for argv in scan_family:
            warm = argv[argv.index("--sum_violation_epochs") + 1] if "--sum_violation_epochs" in argv else None
            assert warm == (None if scale == 1 else str(plan.SUM_VIOLATION_EPOCHS)), argv


def test_plan_flags_pass_the_scan_family_option_checks_on_a_world_larger_than_tiny(tmp_path):
    """The DIME and SelfAlign training commands of the plan pass their packages' own option checks on a world
    whose features are not 32-d (VSRN's --dim_vid was given the feature size, which only equals the
    embedding size on the tiny world: every larger --size failed in 1 s)."""
    dime_options = pytest.importorskip("itr_dime.options")
    selfalign_options = pytest.importorskip("itr_selfalign.options")
    world = tmp_path / "world"
    (world / "bert").mkdir(parents=True)
    (world / "world.json").write_text(json.dumps({"config": {"feat_dim": 2048}}))
    (world / "bert/config.json").write_text(json.dumps({"vocab_size": 300}))
    jobs = plan.build_plan(cli.repo_root(), world, tmp_path / "out", sys.executable)
    checked = []
    for job in jobs:
        for cmd in job.commands:
            if cmd.argv[1] != "train.py" or job.package not in ("dime", "selfalign"):
                continue
            if job.package == "dime":
                opt = dime_options.parse_train_args(cmd.argv[2:])
            else:
                opt = selfalign_options.parse_train_args(cmd.cwd.name.split("_")[0], cmd.argv[2:])
            assert opt.img_dim == 2048
            checked.append(job.name)
    assert sorted(set(checked)) == ["dime-i2t", "dime-t2i", "selfalign-camera", "selfalign-vsrn"]


def test_a_full_run_ends_with_the_real_data_check(tmp_path, monkeypatch):
    """The closing check's verdicts land in table.json; a difference makes the exit status 1; it can be skipped."""
    from itr_common.compare import standin

    row = ("LightningDOT", "bi-encoder")
    monkeypatch.setattr(plan, "build_plan", lambda root, world, out, python, seed=0: [plan.Job(
        "ld", "lightningdot", [plan.Command(_writer(out / "r.json", 3.0), out, "eval")], {row: out / "r.json"})])
    calls = []

    def fake_check(out, rows, root, python):
        calls.append({(r["method"], r["variant"]): r["rsum"] for r in rows if r["rsum"] is not None})
        return {"LightningDOT bi-encoder": "DIFFERENT: real-data path [...] vs table [...]"}

    monkeypatch.setattr(standin, "check", fake_check)
    out = tmp_path / "out"
    assert cli.main(["--out", str(out)]) == 1
    assert list(calls[0]) == [row]  # the check sees the table's finished rows
    meta = json.loads((out / "table.json").read_text())["meta"]
    assert meta["real_data_check"]["LightningDOT bi-encoder"].startswith("DIFFERENT")
    assert cli.main(["--out", str(out), "--no-real-data-check"]) == 0 and len(calls) == 1


def test_seed_zero_runs_each_trainers_default_and_seed_s_adds_s(tmp_path):
    """--seeds: seed 0 is demo.sh's commands as they are (no --seed), seed s passes every training command its
    trainer's default seed + s; DEFAULT_SEEDS are those defaults (argparse or the tiny config's "seed")."""
    world = tmp_path / "world"
    (world / "bert").mkdir(parents=True)
    (world / "world.json").write_text(json.dumps({"config": {"feat_dim": 64}}))
    (world / "bert/config.json").write_text(json.dumps({"vocab_size": 300}))
    root = cli.repo_root()
    trainers = {"dime": "dime", "selfalign-camera": "selfalign", "selfalign-vsrn": "selfalign",
                "iais-pretrain": "itm-pretrain", "iais-none": "iais", "iais-singular": "iais",
                "iais-distributed": "iais", "lightningdot": "lightningdot", "aladin": "aladin"}
    for seed in (0, 2):
        seen = set()
        for job in plan.build_plan(root, world, tmp_path / f"out{seed}", sys.executable, seed=seed):
            for cmd in job.commands:
                given = cmd.argv[cmd.argv.index("--seed") + 1] if "--seed" in cmd.argv else None
                if cmd.kind == "eval" or seed == 0:
                    assert given is None, (job.name, cmd.argv)
                    continue
                trainer = trainers[job.name if job.name in trainers else job.name.split("-")[0]]
                assert given == str(plan.DEFAULT_SEEDS[trainer] + seed), (job.name, cmd.argv)
                seen.add(trainer)
        assert seen == (set() if seed == 0 else set(plan.DEFAULT_SEEDS))
    config = {name: json.loads((root / "packages" / name).read_text())["seed"] for name in (
        "iais/config/train-itm-flickr-tiny-hn.json", "lightningdot/config/pretrain-tiny.json",
        "lightningdot/config/flickr30k_ft_tiny_config.json")}
    assert set(config.values()) == {plan.DEFAULT_SEEDS["iais"]} == {plan.DEFAULT_SEEDS["lightningdot"]}
    defaults = {"dime": ("itr_dime.options", lambda m: m.build_train_parser()),
                "selfalign": ("itr_selfalign.options", lambda m: m.build_parser("camera")),
                "itm-pretrain": ("itr_iais.pretrain_itm", lambda m: m.build_parser()),
                "aladin": ("itr_aladin.options", lambda m: m.build_train_parser())}
    for trainer, (module, parser) in defaults.items():
        assert parser(pytest.importorskip(module)).get_default("seed") == plan.DEFAULT_SEEDS[trainer], trainer
    assert pytest.importorskip("itr_selfalign.options").build_parser("vsrn").get_default("seed") == \
        plan.DEFAULT_SEEDS["selfalign"]


def _seed_rows(rsums: list[float | None]) -> list[dict]:
    """Table rows of one seed for the first four ROWS (DIME i2t / t2i / ensemble, CAMERA baseline): rsum split
    evenly over the six recalls; None: a failed run."""
    rows = []
    for (method, variant), rsum in zip(plan.ROWS[:4], rsums, strict=True):
        row = {c: None for c in table.COLUMNS}
        row.update(method=method, variant=variant, status="ok" if rsum is not None else "failed: exit 1 in x.py",
                   train_s=10.0, eval_s=2.0, params=1000)
        if rsum is not None:
            row.update({k: rsum / 6 for k in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")},
                       rsum=rsum, n_images=50, n_captions=250, latency_ms=1.0)
        rows.append(row)
    return rows


def test_seed_table_means_sd_and_paired_differences_by_hand(tmp_path):
    from itr_common.compare import seeds

    per_seed = [_seed_rows([100.0, 130.0, 160.0, 90.0]),
                _seed_rows([120.0, 110.0, 170.0, None]),
                _seed_rows([140.0, 150.0, 150.0, 96.0])]
    rows = seeds.aggregate(per_seed)
    dime_i2t, dime_t2i, ensemble, camera = rows
    assert dime_i2t["rsum"] == pytest.approx(120.0) and dime_i2t["rsum_sd"] == pytest.approx(20.0)
    assert dime_i2t["i2t_r1"] == pytest.approx(20.0) and dime_i2t["rsum_per_seed"] == [100.0, 120.0, 140.0]
    assert (dime_i2t["rsum_min"], dime_i2t["rsum_max"], dime_i2t["n_ok"], dime_i2t["status"]) == (100, 140, 3, "ok")
    # mean 120 against chance 62 +- 13 on 50 images: far above
    assert dime_i2t["chance_z"] > 3 and ensemble["rsum_sd"] == pytest.approx(10.0)
    # a failed seed: the mean is over the two that finished, and the status names the one that did not
    assert camera["rsum"] == pytest.approx(93.0) and camera["rsum_sd"] == pytest.approx(math.sqrt(18.0))
    assert camera["n_ok"] == 2 and camera["status"] == "2/3 seeds ok; seed 1: failed: exit 1 in x.py"
    assert camera["rsum_per_seed"] == [90.0, None, 96.0]
    diffs = seeds.paired_differences(per_seed)
    # DIME t2i - i2t: +30, -10, +10; ensemble - i2t: +60, +50, +10; CAMERA has one variant here: no difference
    assert [(d["variant"], d["against"]) for d in diffs] == [("t2i", "i2t"), ("ensemble", "i2t")]
    t2i, ens = diffs
    assert t2i["per_seed"] == [30.0, -10.0, 10.0] and t2i["mean"] == pytest.approx(10.0)
    assert t2i["sd"] == pytest.approx(20.0) and t2i["se"] == pytest.approx(20.0 / math.sqrt(3))
    assert (t2i["higher"], t2i["n"]) == (2, 3) and (ens["higher"], ens["mean"]) == (3, pytest.approx(40.0))
    md = seeds.to_markdown(rows, diffs, "SYNTHETIC")
    assert "| 120.0 ± 20.0 | 100.0 / 120.0 / 140.0 |" in md and "| 90.0 / - / 96.0 |" in md
    assert "| DIME | t2i | i2t | +10.0 ± 20.0 | 11.5 | 2 of 3 seeds | +30.0 / -10.0 / +10.0 |" in md
    assert "means over 3 training seeds" in md
    parsed = list(csv.DictReader(io.StringIO(seeds.to_csv(rows))))
    assert parsed[3]["rsum_per_seed"] == "90.0;;96.0" and float(parsed[0]["rsum_sd"]) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="seed 1: expected the rows of seed 0"):
        seeds.aggregate([per_seed[0], per_seed[1][::-1]])
    png = plot_rows(rows, tmp_path / "p.png", "SYNTHETIC (mean +- sd)")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_seeds_run_each_seed_in_its_folder_and_write_the_mean_table(tmp_path, monkeypatch, capsys):
    """--seeds 2 on a stand-in plan whose score signal depends on the seed: each seed's folder holds a whole run
    (its world a link to the shared one), the mean table and the differences are in --out, --rebuild redraws them,
    and --only / --size / --seeds mismatches are refused."""
    rows = plan.ROWS[:2]
    built = []

    def fake_plan(root, world, out, python, seed=0):
        built.append((out, seed))
        return [plan.Job(f"j{k}", "p", [plan.Command(_writer(out / f"{k}.json", 2.0 + seed + k), out, "eval")],
                         {row: out / f"{k}.json"}, outputs=(out / f"{k}.json",)) for k, row in enumerate(rows)]

    monkeypatch.setattr(plan, "build_plan", fake_plan)
    monkeypatch.setattr(plan, "JOB_NAMES", ("j0", "j1"))
    out = tmp_path / "out"
    assert cli.main(["--out", str(out), "--seeds", "2", "--no-real-data-check"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [(p.name, s) for p, s in built] == [("seed-0", 0), ("seed-1", 1)]
    assert (out / "seed-1/world").resolve() == (out / "world").resolve()
    saved = json.loads((out / "table.json").read_text())
    assert saved["meta"]["seeds"] == 2 and len(saved["meta"]["seed_folders"]) == 2
    # the table says which floats the machine computed (one fingerprint for all seeds, printed before the runs)
    assert re.fullmatch(r"[0-9a-f]{12}", saved["meta"]["numerics_fingerprint"])
    assert f"== numerics fingerprint {saved['meta']['numerics_fingerprint']} " in "\n".join(lines)
    assert json.loads((out / "seed-1/table.json").read_text())["meta"]["numerics_fingerprint"] == \
        saved["meta"]["numerics_fingerprint"]
    first = {(r["method"], r["variant"]): r for r in saved["rows"]}[rows[0]]
    by_seed = [json.loads((out / f"seed-{s}/table.json").read_text())["rows"][0]["rsum"] for s in (0, 1)]
    assert by_seed[1] > by_seed[0]  # the stand-in's signal grows with the seed
    assert first["rsum_per_seed"][:2] == by_seed and first["rsum"] == pytest.approx(sum(by_seed) / 2)
    assert saved["differences"][0]["variant"] == rows[1][1]
    md = (out / "table.md").read_text()
    assert "x 2 seeds" in md and "Paired differences" in md and (out / "rsum_latency.png").is_file()
    assert any(line.startswith("seed 1: [2/2] j1: ok") for line in lines)
    (out / "table.md").unlink()
    assert cli.main(["--out", str(out), "--rebuild"]) == 0 and "Paired differences" in (out / "table.md").read_text()
    # --only reruns a job of every seed and keeps the other rows
    built.clear()
    assert cli.main(["--out", str(out), "--seeds", "2", "--only", "j1"]) == 0
    assert [s for _, s in built] == [0, 1]
    again = json.loads((out / "table.json").read_text())["rows"]
    assert [r["rsum"] for r in again] == [r["rsum"] for r in saved["rows"]]
    monkeypatch.undo()
    check_usage_error(cli.main, ["--out", str(out), "--only", "dime-i2t"], "--seeds: expected 2 (the run in",
                      untouched=[out])
    check_usage_error(cli.main, ["--out", str(tmp_path / "new"), "--seeds", "0"], "--seeds: expected a number")
    check_usage_error(cli.main, ["--out", str(tmp_path / "new"), "--seeds", "2", "--data-root", "d",
                                 "--checkpoints", "c"], "--seeds: expected it only on the synthetic runs")
    assert not (tmp_path / "new").exists()
    # a full single-seed run in the same folder clears the seed folders of the earlier one
    monkeypatch.setattr(plan, "build_plan", fake_plan)
    monkeypatch.setattr(plan, "JOB_NAMES", ("j0", "j1"))
    assert cli.main(["--out", str(out), "--no-real-data-check"]) == 0
    assert not list(out.glob("seed-*")) and "seeds" not in json.loads((out / "table.json").read_text())["meta"]


def test_cpu_model_reads_the_model_name(tmp_path):
    from itr_common.bench import cpu_model

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t: fpu\n")
    assert cpu_model(info) == "AMD EPYC 7B13"
    assert cpu_model(tmp_path / "absent")  # falls back to the platform's word, never empty


def test_child_env_pins_the_avx2_kernels_on_x86_unless_the_user_set_them(monkeypatch):
    """Every reproduce command runs the AVX2 paths of ATen, MKL and oneDNN on x86-64 (no instruction-set choice
    between CPUs of one vendor); a value of the user's own wins, and other architectures get none."""
    monkeypatch.delenv("MKL_CBWR", raising=False)
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    env = plan.child_env(sys.executable, machine="x86_64")
    assert env["MKL_CBWR"] == "AVX2" and env["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert env["ATEN_CPU_CAPABILITY"] == "default" and env["OMP_NUM_THREADS"]
    monkeypatch.delenv("ATEN_CPU_CAPABILITY")
    arm = plan.child_env(sys.executable, machine="aarch64")
    assert not set(PORTABLE_CPU_ENV) & set(arm)
    # the shell's version (ci/demo.sh): export lines for what the environment leaves unset
    shell = run_command([sys.executable, "-m", "itr_common.compare.cpu_env"],
                        env={**os.environ, "ATEN_CPU_CAPABILITY": "default"})
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert shell.stdout.splitlines() == ["export MKL_CBWR=AVX2", "export ONEDNN_MAX_CPU_ISA=AVX2"]
    else:
        assert shell.stdout == ""
    # bad input: one line naming the flag, exit 2, like every command of the project
    check_usage_error(cpu_env.main, ["--fingerprints"], "--fingerprints", "did you mean")
    check_usage_error(cpu_env.main, ["--compare", "--candidates"], "--candidates", "--compare")


def test_numerics_fingerprint_is_deterministic_and_the_compare_line_names_both_settings(monkeypatch, capsys):
    """The fingerprint of a short seeded training is the same twice in one process and changes with the training;
    ``--compare`` and ``--candidates`` (the last lines of ci/test.sh) give it under the pins, the library defaults
    and each candidate setting, each computed in a process of its own."""
    first = numerics_fingerprint(steps=3)
    assert numerics_fingerprint(steps=3) == first and re.fullmatch(r"[0-9a-f]{12}", first)
    assert numerics_fingerprint(steps=4) != first
    assert cpu_env.main(["--compare"]) == 0
    line = capsys.readouterr().out.strip()
    found = re.fullmatch(r"numerics fingerprint on .+ \(.+\), torch \S+: ([0-9a-f]{12}) with the AVX2 pins "
                         r"\(make reproduce, make demo\), ([0-9a-f]{12}) with the library defaults \(make test\)", line)
    assert found, line
    if not set(PORTABLE_CPU_ENV) & set(os.environ):  # this process runs with the defaults, as ci/test.sh runs it
        assert found[2] == numerics_fingerprint()
    # a candidate equal to the pins gives the pinned fingerprint: both are the same setting in a fresh process
    monkeypatch.setattr(cpu_env, "CANDIDATE_CPU_ENVS", (PORTABLE_CPU_ENV,))
    assert cpu_env.main(["--candidates"]) == 0
    assert capsys.readouterr().out.strip() == (f"numerics fingerprint {found[1]} with ATEN_CPU_CAPABILITY=avx2 "
                                               "MKL_CBWR=AVX2 ONEDNN_MAX_CPU_ISA=AVX2")


def test_op_fingerprints_name_the_library_that_computes_other_floats():
    """``--ops``: one fingerprint per kernel family, the same twice; a library's own setting moves only the families
    that library computes (its inputs come from NumPy, so torch's own vectorised RNG cannot move them all)."""
    from itr_common.compare.cpu_env import op_fingerprints

    here = op_fingerprints()
    assert here == op_fingerprints()
    assert list(here) == ["gemm", "gemv", "conv1d", "exp", "tanh", "sigmoid", "sum", "gru", "layer_norm", "softmax",
                          "adam"]
    assert all(re.fullmatch(r"[0-9a-f]{8}", value) for value in here.values())

    def ops_under(**setting: str) -> dict[str, str]:
        env = {**cpu_env.without_pins(subprocess_env()), **setting}
        line = run_command([sys.executable, "-m", "itr_common.compare.cpu_env", "--ops"], env=env).stdout.strip()
        assert line.startswith("numerics fingerprint by operation: "), line
        return dict(pair.split("=") for pair in line.split(": ", 1)[1].split())

    mkl, onednn = ops_under(MKL_CBWR="COMPATIBLE"), ops_under(ONEDNN_MAX_CPU_ISA="SSE41")
    defaults = ops_under()
    # the GRU's input projections are GEMMs
    assert {k for k in here if mkl[k] != defaults[k]} <= {"gemm", "gemv", "gru"}
    assert {k for k in here if onednn[k] != defaults[k]} <= {"conv1d"}
