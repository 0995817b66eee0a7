"""The real-data path of ``itr-reproduce``: ``--data-root`` (the original data trees) and ``--checkpoints``
(the released files), laid out as docs/real_data.md lists them.

Every file every selected paper needs is checked first and ALL missing ones are reported in one message
(exit status 2) before anything runs. Then each package's own ``<pkg>-reproduce`` command evaluates its
released checkpoint and prints the measured recalls beside the package's ``paper_table.yaml``.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from itr_common.compare.plan import child_env
from itr_common.errors import fail


@dataclass(frozen=True)
class Need:
    root: str  # "data" (under --data-root) or "ckpt" (under --checkpoints)
    path: str
    what: str
    unless: str | None = None  # an optional file under --checkpoints (a SIDECAR) whose presence makes this unneeded


# Optional files under --checkpoints that change how a paper's checkpoint is evaluated: a checkpoint of another
# size than the released one (your own fine-tuned model, or the synthetic stand-ins of ``standin``).
SIDECARS: dict[str, tuple[str, str]] = {
    "iais": ("iais/model_config.json",
             "UNITER model config of the IAIS checkpoint (default: uniter-base.json or uniter-large.json, chosen "
             "from the checkpoint's shapes by iais-reproduce)"),
    "lightningdot": ("lightningdot/eval_config.json",
                     "eval config used instead of the package's config/flickr30k_eval_config.json (paths relative "
                     "to a folder whose ./data is <data-root>/lightningdot/data and ./config the package's config/)"),
}


# What each paper's evaluation reads (Flickr30K 1K test for the SCAN/UNITER papers, COCO 5K for ALADIN).
NEEDS: dict[str, list[Need]] = {
    "dime": [
        Need("data", "precomp/f30k_precomp/test_ims.npy", "SCAN precomp region features, Flickr30K test"),
        Need("data", "precomp/f30k_precomp/test_caps.txt", "Flickr30K test captions"),
        Need("data", "bert-base-uncased/bert_config.json", "BERT config (weights come with the checkpoint)"),
        Need("data", "bert-base-uncased/vocab.txt", "BERT vocabulary"),
        Need("ckpt", "dime/flickr_i2t.pth.tar", "DIME i2t model (the original's pretrain_model/flickr/...)"),
        Need("ckpt", "dime/flickr_t2i.pth.tar", "DIME t2i model"),
    ],
    "selfalign": [
        Need("data", "precomp/f30k_precomp/test_ims.npy", "SCAN precomp region features, Flickr30K test"),
        Need("data", "precomp/f30k_precomp/test_caps.txt", "Flickr30K test captions"),
        Need("data", "bert-base-uncased/vocab.txt", "BERT vocabulary (CAMERA)"),
        Need("data", "vocab/f30k_precomp_vocab.pkl", "VSRN vocabulary"),
        Need("ckpt", "selfalign/camera_flickr.pth.tar", "CAMERA + SelfAlign model"),
        Need("ckpt", "selfalign/vsrn_flickr.pth.tar", "VSRN + SelfAlign model"),
    ],
    "iais": [
        Need("data", "uniter/txt_db/itm_flickr30k_test.db/data.mdb", "UNITER txt_db, Flickr30K test"),
        Need("data", "uniter/img_db/flickr30k/nbb_th0.2_max100_min10.json", "UNITER img_db, Flickr30K"),
        Need("ckpt", "iais/flickr_model_step_5000.pt", "UNITER-base + IAIS fine-tuned ITM model"),
    ],
    "lightningdot": [
        Need("data", "lightningdot/data/db/itm_flickr30k_test_base-cased.db/data.mdb", "txt_db, Flickr30K test"),
        Need("data", "lightningdot/data/img/flickr30k/nbb_th0.2_max100_min10.json", "img_db, Flickr30K"),
        Need("data", "lightningdot/data/meta/flickr_meta.json", "itm_global_file of the eval config",
             unless=SIDECARS["lightningdot"][0]),
        Need("data", "bert-base-cased/config.json", "local bert-base-cased (the config names the hub model)"),
        Need("data", "bert-base-cased/vocab.txt", "its vocabulary"),
        Need("ckpt", "lightningdot/flickr-ft.pt", "LightningDOT fine-tuned on Flickr30K"),
    ],
    "aladin": [
        Need("data", "vinvl/coco_ir/test_captions.pt", "VinVL coco_ir test captions"),
        Need("data", "vinvl/coco_ir/test_img_keys.tsv", "COCO 5K test image ids"),
        Need("data", "vinvl/features/features.tsv", "VinVL region features"),
        Need("data", "vinvl/features/features.lineidx", "its line index"),
        Need("data", "vinvl/features/imageid2idx.json", "image id -> row"),
        Need("data", "vinvl/features/predictions.tsv", "detector predictions (object tags)"),
        Need("data", "vinvl/features/predictions.lineidx", "its line index"),
        Need("ckpt", "aladin/checkpoint-0132780/config.json", "VinVL base coco_ir checkpoint"),
        Need("ckpt", "aladin/checkpoint-0132780/pytorch_model.bin", "VinVL base coco_ir weights"),
        Need("ckpt", "aladin/model_best_rsum.pth.tar", "ALADIN trained model"),
    ],
}


def missing_files(data_root: Path, checkpoints: Path, papers: list[str]) -> list[str]:
    """'paper: path (what)' for every needed file that is not there, in paper order."""
    lines = []
    for paper in papers:
        for need in NEEDS[paper]:
            if need.unless is not None and (checkpoints / need.unless).is_file():
                continue
            path = (data_root if need.root == "data" else checkpoints) / need.path
            if not path.is_file():
                lines.append(f"{paper}: {path} ({need.what})")
    return lines


def commands(data_root: Path, ck: Path, out: Path, root: Path, python: str) -> dict[str, list[tuple[list[str], Path]]]:
    """Each paper's evaluation: its own ``<pkg>-reproduce`` console script (argv, cwd)."""
    bin_dir = Path(python).parent
    precomp, bert = str(data_root / "precomp"), str(data_root / "bert-base-uncased")
    ld_work = out / "lightningdot_work"
    iais_config = ck / SIDECARS["iais"][0]
    iais_flags = ["--model_config", str(iais_config)] if iais_config.is_file() else []
    ld_config = ck / SIDECARS["lightningdot"][0]
    ld_eval_config = str(ld_config) if ld_config.is_file() else "config/flickr30k_eval_config.json"
    return {
        "dime": [([str(bin_dir / "dime-reproduce"), "--model_path", str(ck / "dime/flickr_i2t.pth.tar"),
                   "--model_path2", str(ck / "dime/flickr_t2i.pth.tar"), "--data_path", precomp, "--bert_path", bert,
                   "--data_name", "f30k_precomp", "--split", "test", "--out", str(out / "dime.json")], out)],
        "selfalign": [([str(bin_dir / "selfalign-reproduce"), "--model_path", str(ck / f"selfalign/{v}_flickr.pth.tar"),
                        "--data_path", precomp, "--text_path", text, "--data_name", "f30k_precomp", "--split", "test",
                        "--out", str(out / f"selfalign_{v}.json")], out)
                      for v, text in (("camera", bert), ("vsrn", str(data_root / "vocab")))],
        "iais": [([str(bin_dir / "iais-reproduce"), "--checkpoint", str(ck / "iais/flickr_model_step_5000.pt"),
                   "--data_root", str(data_root / "uniter"), "--dataset", "flickr",
                   "--output_dir", str(out / "iais"), *iais_flags], out)],
        "lightningdot": [([str(bin_dir / "lightningdot-reproduce"),
                           "--checkpoint", str(ck / "lightningdot/flickr-ft.pt"),
                           "--eval_config", ld_eval_config, "--row", "flickr-ft",
                           "--output_dir", str(out / "lightningdot"),
                           "--", "--txt_model_config", str(data_root / "bert-base-cased")], ld_work)],
        "aladin": [([str(bin_dir / "aladin-reproduce"), "--data_dir", str(data_root / "vinvl/coco_ir"),
                     "--img_feat_file", str(data_root / "vinvl/features/features.tsv"),
                     "--eval_model_dir", str(ck / "aladin/checkpoint-0132780"),
                     "--load_checkpoint", str(ck / "aladin/model_best_rsum.pth.tar"),
                     "--max_seq_length", "50", "--max_img_seq_length", "34", "--out", str(out / "aladin.json")],
                    out)],
    }


# Where each paper's evaluation above writes its measured result (relative to ``out``; ``#`` selects a record
# inside the file, see table.load_result), by the row of the synthetic table it corresponds to.
RESULTS: dict[str, dict[tuple[str, str], str]] = {
    "dime": {("DIME", "ensemble"): "dime.json#comparisons/0/measured"},
    "selfalign": {("CAMERA", "+SelfAlign"): "selfalign_camera.json#comparisons/0/measured",
                  ("VSRN", "+SelfAlign"): "selfalign_vsrn.json#comparisons/0/measured"},
    "iais": {("UNITER-ITM (hard negatives)", "IAIS singular"): "iais/retrieval_result.json"},
    "lightningdot": {("LightningDOT", "bi-encoder"): "lightningdot/retrieval_result_test.json"},
    "aladin": {("ALADIN", "matching head"): "aladin.test_img_keys.json#matching/coco-5k",
               ("ALADIN", "alignment head"): "aladin.test_img_keys.json#alignment/coco-5k"},
}


def link_lightningdot_work(out: Path, data_root: Path, root: Path) -> Path:
    """``out/lightningdot_work`` with ``data`` -> ``<data-root>/lightningdot/data`` and ``config`` -> the package's
    config/ (the relative paths of LightningDOT's eval configs). Links of an earlier run are replaced: they may
    point at another ``--data-root``, or nowhere."""
    ld_work = out / "lightningdot_work"
    ld_work.mkdir(parents=True, exist_ok=True)
    for name, target in (("data", data_root / "lightningdot/data"), ("config", root / "packages/lightningdot/config")):
        link = ld_work / name
        if link.is_symlink():
            link.unlink()
        elif link.exists():
            fail(f"{link}: expected a link that itr-reproduce makes, found a {'folder' if link.is_dir() else 'file'}; "
                 "remove it or pick another --out")
        link.symlink_to(target.resolve())
    return ld_work


def run(data_root: Path, checkpoints: Path, out: Path, root: Path, python: str,
        papers: list[str] | None = None, stdout: TextIO | None = None) -> int:
    """Check every file first (one message, exit 2), then evaluate each paper beside its table.

    ``stdout``: where the commands and their output go (default: this process's standard output).
    """
    papers = papers or list(NEEDS)
    # the evaluations run in other folders (``out``, LightningDOT's work folder): relative roots would name nothing
    data_root, checkpoints = data_root.absolute(), checkpoints.absolute()
    missing = missing_files(data_root, checkpoints, papers)
    if missing:
        fail(f"--data-root/--checkpoints: {len(missing)} needed file(s) missing (layout: docs/real_data.md): "
             + "; ".join(missing))
    out.mkdir(parents=True, exist_ok=True)
    link_lightningdot_work(out, data_root, root)
    env, failed = child_env(python), []
    for paper, cmds in commands(data_root, checkpoints, out, root, python).items():
        if paper not in papers:
            continue
        for argv, cwd in cmds:
            print(f"== {paper}: {' '.join(argv)}", flush=True, file=stdout or sys.stdout)
            rc = subprocess.run(argv, cwd=cwd, env=env, stdout=stdout, stderr=subprocess.STDOUT if stdout else None
                                ).returncode
            if rc:
                failed.append(f"{paper} (exit {rc})")
    if failed:
        print(f"failed: {', '.join(failed)}", file=stdout or sys.stdout)
        return 1
    return 0
