"""The runs of ``make reproduce``: each package's README training and evaluation commands on ONE world.

A :class:`Job` is a list of shell commands (run in the package's folder or a work folder), the rows it fills
(``(method, variant) -> result JSON``) and the jobs it needs. Commands are the ones each package's ``demo.sh``
runs (same tiny model configs), pointed at the shared world instead of a private one.

On a world larger than the tiny one (``--size``) every run trains for as many passes over its training split
as on the tiny world (:func:`train_scale`): epoch-based trainers (DIME, SelfAlign, LightningDOT fine-tuning,
ALADIN) do so by themselves; the step-based ones (UNITER's ITM pre-training, IAIS fine-tuning, LightningDOT
pre-training) get their steps, warm-up and validation interval multiplied by the ratio of training images.
The SCAN-family trainers (DIME, CAMERA, VSRN, with and without SelfAlign) there also begin with
:data:`SUM_VIOLATION_EPOCHS` epochs of the summed hinge loss before the max-violation one
(``--sum_violation_epochs``): trained from the first step with the hardest negative only, DIME settled on equal
scores for every pair on a 400-image world (its rank loss stuck at 2 x margin x batch: dev rsum 80 of 600 after
10 epochs), where two epochs of summed violations first give dev rsum 586.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from itr_common.compare.cpu_env import portable_cpu_env

# (method, variant) rows of the table, in order; every one appears, finished or not.
ROWS: list[tuple[str, str]] = [
    ("DIME", "i2t"), ("DIME", "t2i"), ("DIME", "ensemble"),
    ("CAMERA", "baseline"), ("CAMERA", "+SelfAlign"), ("VSRN", "baseline"), ("VSRN", "+SelfAlign"),
    ("UNITER-ITM (hard negatives)", "no IAIS"), ("UNITER-ITM (hard negatives)", "IAIS singular"),
    ("UNITER-ITM (hard negatives)", "IAIS distributed"),
    ("LightningDOT", "bi-encoder"), ("LightningDOT", "+UNITER re-rank top 20"),
    ("ALADIN", "matching head"), ("ALADIN", "alignment head"),
]

# every job of build_plan, in run order (``--only`` is checked against these before any work)
JOB_NAMES = ("dime-i2t", "dime-t2i", "dime-eval", "selfalign-camera", "selfalign-vsrn", "iais-pretrain", "iais-none",
             "iais-singular", "iais-distributed", "lightningdot", "lightningdot-rerank", "aladin")

# the seed each training command runs with when given none (the package's default, or its tiny config's "seed"):
# ``--seeds N`` runs seed s of N as these + s, so seed 0 is exactly the single-seed table
DEFAULT_SEEDS = {"dime": 0, "selfalign": 1024, "itm-pretrain": 42, "iais": 42, "lightningdot": 42, "aladin": 88}

# rough seconds per job on 2 CPU cores at the default size (for the time-left estimate only)
EXPECTED_S = {"world": 10, "dime-i2t": 60, "dime-t2i": 60, "dime-eval": 20, "selfalign-camera": 80,
              "selfalign-vsrn": 80, "iais-pretrain": 30, "iais-none": 60, "iais-singular": 70,
              "iais-distributed": 70, "lightningdot": 60, "lightningdot-rerank": 40, "aladin": 80}


@dataclass
class Command:
    argv: list[str]
    cwd: Path
    kind: str = "train"  # train | eval | prep: which time column the wall time adds to
    rows: tuple[tuple[str, str], ...] = ()  # rows whose time this command counts toward (default: the job's)


@dataclass
class Job:
    name: str
    package: str
    commands: list[Command]
    results: dict[tuple[str, str], Path] = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    # the checkpoint(s) of each row, for the parameter count (several: an ensemble or a two-stage pipeline,
    # whose parameters add up)
    checkpoints: dict[tuple[str, str], Path | tuple[Path, ...]] = field(default_factory=dict)
    # what the job writes (folders or files): ``--only`` removes them before the job runs again (several trainers
    # refuse a used output folder, and LightningDOT's pretrain.py would continue from the old checkpoints)
    outputs: tuple[Path, ...] = ()


def world_config(world: Path) -> dict:
    """The generator config the world was written with (world.json)."""
    return json.loads((world / "world.json").read_text())["config"]


# the number of training images the tiny configs (and demo.sh commands) were tuned for: the tiny world's
TINY_N_TRAIN = 48
# step-based schedules of the tiny runs (the fine-tuning and pre-training configs hold theirs; UNITER's ITM
# pre-training stand-in runs with itr_iais.pretrain_itm's defaults, as in IAIS's demo.sh)
ITM_PRETRAIN_STEPS, ITM_PRETRAIN_WARMUP = 1200, 100
SCHEDULE_KEYS = ("num_train_steps", "warmup_steps", "valid_steps")
# epochs of the summed hinge loss before the max-violation one, for the SCAN-family runs on larger worlds
SUM_VIOLATION_EPOCHS = 2


def train_scale(world: Path) -> float:
    """How many times more training images the world has than the tiny one (at least 1): the factor that keeps
    a step-based schedule at the tiny run's number of passes over the data. On the base world (500 images) the
    tiny schedules were a tenth of that, and UNITER's ITM pre-training never left chance (accuracy 0.51 after
    1200 steps; it takes off after about 1300 when given 3000)."""
    return max(1.0, int(world_config(world).get("n_train", TINY_N_TRAIN)) / TINY_N_TRAIN)


def scaled_steps(steps: int, scale: float) -> int:
    """``steps`` of a tiny schedule on a world ``scale`` times its size."""
    return steps if scale <= 1 else max(1, round(steps * scale))


def world_feat_dim(world: Path) -> int:
    """The region feature size the world was written with."""
    return int(world_config(world)["feat_dim"])


def replace_link(path: Path, target: Path) -> None:
    """``path`` (its folder made if needed) becomes a symlink to ``target`` resolved, replacing a link or file there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink()
    path.symlink_to(target.resolve())


def uniter_workdir(out: Path, world: Path, pkg: Path) -> Path:
    """A work folder where the package's tiny configs find ``synthetic/...`` (the shared world) and ``config/``.

    ``config/`` links every file of the package's config folder, except the tiny configs that need fitting to
    the world (:func:`_fit_config`), which are copied: BERT-style model configs get the world's vocabulary size
    (larger worlds, ``--size``, have more words than the tiny one the configs were written for), step-based
    schedules are scaled (:func:`train_scale`), and a pre-training config drops ``mrckl`` on a world written
    without soft labels.
    """
    work = out / "work"
    config = work / "config"
    if config.is_symlink() or config.is_file():
        config.unlink()
    config.mkdir(parents=True, exist_ok=True)
    replace_link(work / "synthetic", world)
    vocab = json.loads((world / "bert" / "config.json").read_text())["vocab_size"]
    soft_labels = bool(world_config(world).get("img_db_soft_labels", True))
    scale = train_scale(world)
    for src in sorted((pkg / "config").iterdir()):
        target = config / src.name
        tiny = src.name.endswith("tiny.json") or src.name.endswith("-tiny-hn.json")
        data = json.loads(src.read_text()) if tiny else None
        fitted = _fit_config(data, vocab, soft_labels, scale) if isinstance(data, dict) else None
        if fitted is not None:
            if target.is_symlink():
                target.unlink()
            target.write_text(json.dumps(fitted, indent=2) + "\n")
        else:
            replace_link(target, src)
    return work


def _fit_config(data: dict, vocab: int, soft_labels: bool, scale: float = 1.0) -> dict | None:
    """A tiny config fitted to the world, or None when it fits as it is (then it is linked).

    A BERT-style model config takes the world's vocabulary size. A training config with ``num_train_steps``
    gets its :data:`SCHEDULE_KEYS` multiplied by ``scale`` (:func:`train_scale`). Without ``soft_labels`` in
    the img_db (the demo and base worlds leave them out: 1601 floats a region) a pre-training config drops its
    ``mrckl`` task (the KL to the detector's label distribution needs them) with its mix ratio.
    """
    if "vocab_size" in data:
        return {**data, "vocab_size": vocab}
    datasets = [*data.get("train_datasets", []), *data.get("val_datasets", [])]
    drop_mrckl = not soft_labels and any("mrckl" in d.get("tasks", []) for d in datasets)
    rescale = scale > 1 and "num_train_steps" in data
    if not (drop_mrckl or rescale):
        return None
    fitted = copy.deepcopy(data)
    if rescale:
        fitted.update({k: scaled_steps(int(data[k]), scale) for k in SCHEDULE_KEYS if k in data})
    if not drop_mrckl:
        return fitted
    for key in ("train_datasets", "val_datasets"):
        for d in fitted.get(key, []):
            keep = [i for i, task in enumerate(d.get("tasks", [])) if task != "mrckl"]
            if "mix_ratio" in d:
                d["mix_ratio"] = [d["mix_ratio"][i] for i in keep]
            d["tasks"] = [d["tasks"][i] for i in keep]
    return fitted


def seed_flag(trainer: str, seed: int) -> list[str]:
    """``--seed`` for run ``seed`` of a ``--seeds`` table: none for seed 0 (the trainer's own default, the
    commands of ``demo.sh``), else :data:`DEFAULT_SEEDS` ``[trainer] + seed``."""
    return [] if seed == 0 else ["--seed", str(DEFAULT_SEEDS[trainer] + seed)]


def build_plan(root: Path, world: Path, out: Path, python: str, seed: int = 0) -> list[Job]:
    """Every job, in run order. ``root`` is the repository, ``out`` the reproduce output folder; ``seed`` (0, 1,
    ...) picks the training seeds (:func:`seed_flag`), the world stays the same."""
    pk = root / "packages"
    res = out / "results"
    feat = str(world_feat_dim(world))
    scale = train_scale(world)
    warm_up = [] if scale <= 1 else ["--sum_violation_epochs", str(SUM_VIOLATION_EPOCHS)]
    py = python
    jobs: list[Job] = []

    # ---- DIME: README training for both directions, evaluation of each and of the ensemble
    dime, d_out = pk / "dime", out / "dime"
    tiny = ["--img_dim", feat, "--embed_size", "32", "--hid_IMRC", "64", "--hid_router", "32", "--num_head_IMRC", "4",
            "--batch_size", "8", "--num_epochs", "16", "--learning_rate", "2e-3", "--lr_update", "12",
            "--workers", "0", "--log_step", "100", *warm_up, *seed_flag("dime", seed)]
    data = ["--data_path", str(world / "data"), "--bert_path", str(world / "bert"), "--data_name", "f30k_precomp"]
    ck = {d: d_out / f"runs/filker_DIME_{d}/model_best.pth.tar" for d in ("i2t", "t2i")}
    jobs.append(Job("dime-i2t", "dime", [Command(
        [py, "train.py", *data, "--logger_name", str(d_out / "runs/filker_DIME_i2t"), "--direction", "i2t",
         "--extra_stc", "1", "--lambda_softmax=4", *tiny], dime, rows=(("DIME", "i2t"), ("DIME", "ensemble")))],
        outputs=(d_out / "runs/filker_DIME_i2t",)))
    jobs.append(Job("dime-t2i", "dime", [Command(
        [py, "train.py", *data, "--logger_name", str(d_out / "runs/filker_DIME_t2i"), "--direction", "t2i",
         "--extra_img", "1", "--lambda_softmax=9", *tiny], dime, rows=(("DIME", "t2i"), ("DIME", "ensemble")))],
        outputs=(d_out / "runs/filker_DIME_t2i",)))
    evals = [Command([py, "evaluate_models.py", "--model_path", str(ck["i2t"]), "--split", "test",
                      "--out", str(res / "dime-i2t.json")], dime, "eval", (("DIME", "i2t"),)),
             Command([py, "evaluate_models.py", "--model_path", str(ck["t2i"]), "--split", "test",
                      "--out", str(res / "dime-t2i.json")], dime, "eval", (("DIME", "t2i"),)),
             Command([py, "evaluate_models.py", "--model_path", str(ck["i2t"]), "--model_path2", str(ck["t2i"]),
                      "--split", "test", "--out", str(res / "dime-ensemble.json")], dime, "eval",
                     (("DIME", "ensemble"),))]
    jobs.append(Job("dime-eval", "dime", evals,
                    {("DIME", v): res / f"dime-{v}.json" for v in ("i2t", "t2i", "ensemble")},
                    needs=("dime-i2t", "dime-t2i"),
                    checkpoints={("DIME", "i2t"): ck["i2t"], ("DIME", "t2i"): ck["t2i"],
                                 ("DIME", "ensemble"): (ck["i2t"], ck["t2i"])},
                    outputs=tuple(res / f"dime-{v}.json" for v in ("i2t", "t2i", "ensemble"))))

    # ---- SelfAlign: CAMERA and VSRN, each with --selfalign 0 (the baseline, same code) and 1
    s_out = out / "selfalign"
    embed = "32"
    learn = ["--img_dim", feat, "--embed_size", embed, "--local_clu_num", "16", "--batch_size", "8",
             "--num_epochs", "10", "--learning_rate", "5e-3", "--lr_update", "100", "--workers", "0",
             "--log_step", "1000",
             "--val_step", "100000", *warm_up, *seed_flag("selfalign", seed)]
    # VSRN's caption model reads the GCN-reasoned regions, so --dim_vid is the joint embedding size (not the
    # region feature size: the two only coincide on the tiny world, whose features are 32-d)
    text = {"camera": ["--bert_path", str(world / "bert"), "--head", "4", "--smry_k", "4"],
            "vsrn": ["--vocab_path", str(world / "vocab"), "--word_dim", "16", "--dim_vid", embed, "--dim_hidden", "16",
                     "--dim_word", "16", "--max_len", "20"]}
    for variant, method in (("camera", "CAMERA"), ("vsrn", "VSRN")):
        cmds, results, cks = [], {}, {}
        for flag, label in (("0", "baseline"), ("1", "+SelfAlign")):
            name = f"{variant}_{'selfalign' if flag == '1' else 'base'}"
            row = (method, label)
            run_dir = s_out / "runs" / name
            cwd = pk / "selfalign" / f"{variant}_SelfAlign"
            cmds.append(Command([py, "train.py", "--data_path", str(world / "data"), "--data_name", "f30k_precomp",
                                 "--logger_name", str(run_dir), "--selfalign", flag, *learn, *text[variant]],
                                cwd, "train", (row,)))
            cmds.append(Command([py, "evaluate_models.py", "--model_path", str(run_dir / "model_best.pth.tar"),
                                 "--split", "test", "--out", str(res / f"selfalign-{name}.json")], cwd, "eval", (row,)))
            results[row] = res / f"selfalign-{name}.json"
            cks[row] = run_dir / "model_best.pth.tar"
        jobs.append(Job(f"selfalign-{variant}", "selfalign", cmds, results, checkpoints=cks,
                        outputs=(*(ck.parent for ck in cks.values()), *results.values())))

    # ---- IAIS: UNITER's ITM pre-training as the uniter-base stand-in, then hard-negative fine-tuning
    # without IAIS and with IAIS singular / distributed, each evaluated with inf_itm
    iais = pk / "iais"
    i_work = uniter_workdir(out / "iais", world, iais)
    longer = ([] if scale <= 1 else ["--num_train_steps", str(scaled_steps(ITM_PRETRAIN_STEPS, scale)),
                                      "--warmup_steps", str(scaled_steps(ITM_PRETRAIN_WARMUP, scale))])
    jobs.append(Job("iais-pretrain", "iais", [Command(
        [py, "-m", "itr_iais.pretrain_itm", "--txt_db", "synthetic/txt_db/itm_flickr30k_train.db",
         "--img_db", "synthetic/img_db/flickr30k", "--model_config", "synthetic/pretrained/uniter-tiny.json",
         "--output", "output/pretrained/uniter-tiny-itm.pt", *longer, *seed_flag("itm-pretrain", seed)], i_work,
        "prep")],
        outputs=(i_work / "output/pretrained/uniter-tiny-itm.pt",)))
    itm_final = f"model_step_{_config_steps(i_work / 'config/train-itm-flickr-tiny-hn.json')}_final.pt"
    bi, rr = ("LightningDOT", "bi-encoder"), ("LightningDOT", "+UNITER re-rank top 20")
    for flag, label in (("False", "no IAIS"), ("singular", "IAIS singular"), ("distributed", "IAIS distributed")):
        tag = {"False": "none"}.get(flag, flag)
        row = ("UNITER-ITM (hard negatives)", label)
        ckpt = f"output/itm/{tag}/ckpt/{itm_final}"
        train_rows = (row, rr) if tag == "none" else (row,)  # the no-IAIS model is also the re-ranker
        jobs.append(Job(f"iais-{tag}", "iais", [
            Command([py, str(iais / "train_itm_hard_negatives.py"), "--config", "config/train-itm-flickr-tiny-hn.json",
                     "--IAIS", flag, "--output_dir", f"output/itm/{tag}", *seed_flag("iais", seed)], i_work, "train",
                    train_rows),
            Command([py, str(iais / "inf_itm.py"), "--txt_db", "synthetic/txt_db/itm_flickr30k_test.db",
                     "--img_db", "synthetic/img_db/flickr30k", "--checkpoint", ckpt,
                     "--model_config", "synthetic/pretrained/uniter-tiny.json",
                     "--output_dir", f"output/inf_itm/{tag}"],
                    i_work, "eval", (row,))],
            {row: i_work / f"output/inf_itm/{tag}/retrieval_result.json"}, needs=("iais-pretrain",),
            checkpoints={row: i_work / ckpt}, outputs=(i_work / f"output/itm/{tag}", i_work / f"output/inf_itm/{tag}")))

    # ---- LightningDOT: pre-train, fine-tune, evaluate the bi-encoder; re-rank its top 20 with the UNITER ITM
    # model fine-tuned above (hard negatives, no IAIS)
    ld = pk / "lightningdot"
    l_work = uniter_workdir(out / "lightningdot", world, ld)
    jobs.append(Job("lightningdot", "lightningdot", [
        Command([py, str(ld / "pretrain.py"), "--config", "config/pretrain-tiny.json",
                 *seed_flag("lightningdot", seed)], l_work, "train", (bi, rr)),
        Command([py, str(ld / "train_itm.py"), "--config", "config/flickr30k_ft_tiny_config.json",
                 "--biencoder_checkpoint",
                 f"output/pretrain_tiny/ckpt/model_step_{_config_steps(l_work / 'config/pretrain-tiny.json')}.pt",
                 *seed_flag("lightningdot", seed)],
                l_work, "train", (bi, rr)),
        Command([py, str(ld / "eval_itm.py"), "config/flickr30k_eval_tiny_config.json",
                 "output/flickr_tiny/biencoder.best.pt", "--splits", "test", "--output_dir", "output/eval"],
                l_work, "eval", (bi,))],
        {bi: l_work / "output/eval/retrieval_result_test.json"},
        checkpoints={bi: l_work / "output/flickr_tiny/biencoder.best.pt"},
        outputs=tuple(l_work / "output" / name for name in ("pretrain_tiny", "flickr_tiny", "eval"))))
    jobs.append(Job("lightningdot-rerank", "lightningdot", [
        Command([py, str(ld / "rerank.py"), "--config", "config/flickr30k_eval_tiny_config.json",
                 "--biencoder_checkpoint", "output/flickr_tiny/biencoder.best.pt",
                 "--uniter_checkpoint", str(i_work / "output/itm/none/ckpt" / itm_final),
                 "--uniter_config", "synthetic/pretrained/uniter-tiny.json", "--thresholds", "20",
                 "--output_dir", "output/rerank"], l_work, "eval")],
        {rr: l_work / "output/rerank/retrieval_result_rerank20.json"}, needs=("lightningdot", "iais-none"),
        checkpoints={rr: (l_work / "output/flickr_tiny/biencoder.best.pt",
                          i_work / "output/itm/none/ckpt" / itm_final)},
        outputs=(l_work / "output/rerank",)))

    # ---- ALADIN: the joint config (alignment head + distilled matching head), test on the whole test split
    al = pk / "aladin" / "alad"
    a_out = out / "aladin"
    adata = ["--data_dir", str(world / "coco_ir"), "--img_feat_file", str(world / "features/features.tsv"),
             "--eval_model_dir", str(world / "pretrained/checkpoint-0132780"), "--max_seq_length", "50",
             "--max_img_seq_length", "34"]
    a_ck = a_out / "runs/alad-joint/model_best_rsum.pth.tar"
    jobs.append(Job("aladin", "aladin", [
        Command([py, "train.py", *adata, "--config", "configs/alad-alignment-and-matching-distill-tiny.yaml",
                 "--logger_name", str(a_out / "runs/alad-joint"), "--val_step", "7000", "--num_epochs", "10",
                 "--num_workers", "0", "--log_step", "50", *seed_flag("aladin", seed)], al, "train"),
        Command([py, "test.py", *adata, "--eval_img_keys_file", "test_img_keys.tsv", "--num_workers", "0",
                 "--load_checkpoint", str(a_ck), "--out", str(a_out / "test.json")], al, "eval")],
        {("ALADIN", "matching head"): a_out / "test.json#matching/coco-5k",
         ("ALADIN", "alignment head"): a_out / "test.json#alignment/coco-5k"},
        checkpoints={("ALADIN", "matching head"): a_ck, ("ALADIN", "alignment head"): a_ck},
        outputs=(a_out / "runs/alad-joint", a_out / "test.json")))
    return jobs


def _config_steps(config: Path) -> int:
    """``num_train_steps`` of a (fitted or linked) training config of a work folder: its final checkpoint's
    name holds it."""
    return int(json.loads(config.read_text())["num_train_steps"])


def child_env(python: str, machine: str | None = None) -> dict[str, str]:
    """The environment of every command: the venv's scripts first, offline hub, one thread unless set, and on
    x86-64 (``machine``: default ``platform.machine()``) the AVX2 kernels of
    :func:`~itr_common.compare.cpu_env.portable_cpu_env` unless set."""
    env = dict(os.environ)
    env["PATH"] = str(Path(python).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.update(portable_cpu_env(env, machine))
    return env
