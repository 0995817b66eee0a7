"""The real-data path checked on stand-ins: the synthetic world and the checkpoints a ``make reproduce`` run
trained, laid out as docs/real_data.md lists the downloads, then evaluated by ``realdata.run``.

Same checkpoints, same test split: each paper's real-data evaluation must measure exactly the recalls the
synthetic table holds for that row (:data:`realdata.RESULTS` says which). A difference means the two paths
read the data or the checkpoint differently, which is what this check exists to catch.

    data/                                   (--data-root)  symlinks into <reproduce out>/world
    checkpoints/                            (--checkpoints) symlinks to the trained files, plus the sidecars
        iais/model_config.json              the tiny UNITER config (the default is uniter-base/large)
        lightningdot/eval_config.json       the tiny eval config, pointed at ./data like the released one
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from itr_common.compare import realdata
from itr_common.compare.plan import replace_link
from itr_common.compare.table import load_result
from itr_common.errors import UserError, fail

# --data-root entries -> the world folder they are (paths from docs/real_data.md on the left)
DATA_LINKS: dict[str, str] = {
    "precomp/f30k_precomp": "data/f30k_precomp",
    "bert-base-uncased": "bert",
    "vocab": "vocab",
    "uniter/txt_db": "txt_db",
    "uniter/img_db": "img_db",
    "lightningdot/data/db/itm_flickr30k_test_base-cased.db": "txt_db/itm_flickr30k_test.db",
    "lightningdot/data/img/flickr30k": "img_db/flickr30k",
    "vinvl/coco_ir": "coco_ir",
    "vinvl/features": "features",
}

# --checkpoints entries -> the file a reproduce run trained (relative to its --out; see plan.build_plan)
CHECKPOINT_LINKS: dict[str, str] = {
    "dime/flickr_i2t.pth.tar": "dime/runs/filker_DIME_i2t/model_best.pth.tar",
    "dime/flickr_t2i.pth.tar": "dime/runs/filker_DIME_t2i/model_best.pth.tar",
    "selfalign/camera_flickr.pth.tar": "selfalign/runs/camera_selfalign/model_best.pth.tar",
    "selfalign/vsrn_flickr.pth.tar": "selfalign/runs/vsrn_selfalign/model_best.pth.tar",
    "iais/flickr_model_step_5000.pt": "iais/work/output/itm/singular/ckpt/model_step_500_final.pt",
    "iais/model_config.json": "world/pretrained/uniter-tiny.json",
    "lightningdot/flickr-ft.pt": "lightningdot/work/output/flickr_tiny/biencoder.best.pt",
    "aladin/checkpoint-0132780": "world/pretrained/checkpoint-0132780",
    "aladin/model_best_rsum.pth.tar": "aladin/runs/alad-joint/model_best_rsum.pth.tar",
}


def _link(path: Path, target: Path) -> None:
    if not target.exists():
        fail(f"{target}: expected this file of the reproduce run (stand-in for {path.name}), found none; "
             "run make reproduce first")
    replace_link(path, target)


def _lightningdot_sidecars(reproduce_out: Path, data: Path, ck: Path) -> None:
    """``bert-base-cased/`` holding the tiny text config, and the tiny eval config reading ``./data``."""
    config = reproduce_out / "lightningdot/work/config"
    bert = data / "bert-base-cased"
    bert.mkdir(parents=True, exist_ok=True)
    (bert / "config.json").write_text((config / "bert_tiny.json").read_text())
    _link(bert / "vocab.txt", reproduce_out / "world/bert/vocab.txt")
    tiny = json.loads((config / "flickr30k_eval_tiny_config.json").read_text())
    tiny.update(img_model_config=str((config / "img_tiny.json").resolve()),
                test_txt_db="./data/db/itm_flickr30k_test_base-cased.db", test_img_db="./data/img/flickr30k/",
                val_txt_db="./data/db/itm_flickr30k_test_base-cased.db", val_img_db="./data/img/flickr30k/",
                itm_global_file=None)
    (ck / realdata.SIDECARS["lightningdot"][0]).write_text(json.dumps(tiny, indent=2) + "\n")


def build(reproduce_out: Path, dest: Path, papers: list[str] | None = None) -> tuple[Path, Path]:
    """Lay ``reproduce_out``'s world and trained checkpoints out as ``(--data-root, --checkpoints)`` under ``dest``.

    ``papers`` (default all): only their checkpoints are linked, so a paper whose runs failed does not stop
    the check of the others (its files were never written).
    """
    papers = list(realdata.NEEDS) if papers is None else papers
    data, ck = dest / "data", dest / "checkpoints"
    world = reproduce_out / "world"
    for name, target in DATA_LINKS.items():
        _link(data / name, world / target)
    for name, target in CHECKPOINT_LINKS.items():
        if name.split("/")[0] in papers:
            _link(ck / name, reproduce_out / target)
    if "lightningdot" in papers:
        _lightningdot_sidecars(reproduce_out, data, ck)
    return data, ck


def _recalls(ref: str) -> list[float]:
    result = load_result(ref)
    return [*result.i2t[:3], *result.t2i[:3]]


def compare(out: Path, table_rows: list[dict[str, Any]], papers: list[str]) -> dict[str, str]:
    """Per row of :data:`realdata.RESULTS`: ``same recalls`` or what differs (or why it could not be read)."""
    by_row = {(r["method"], r["variant"]): r for r in table_rows}
    verdicts = {}
    for paper in papers:
        for row, ref in realdata.RESULTS[paper].items():
            label = f"{row[0]} {row[1]}"
            synthetic = by_row.get(row)
            if synthetic is None or synthetic.get("rsum") is None:
                verdicts[label] = "no synthetic result to compare with"
                continue
            try:
                measured = _recalls(str(out / ref))
            except (OSError, KeyError, IndexError, ValueError, UserError) as exc:
                verdicts[label] = f"real-data result unreadable ({type(exc).__name__}: {exc})"
                continue
            expected = [synthetic[k] for k in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")]
            if all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(measured, expected)):
                verdicts[label] = "same recalls"
            else:
                verdicts[label] = (f"DIFFERENT: real-data path {[round(v, 2) for v in measured]} vs table "
                                   f"{[round(v, 2) for v in expected]}")
    return verdicts


def check(reproduce_out: Path, table_rows: list[dict[str, Any]], root: Path, python: str, log=print) -> dict[str, str]:
    """Build the stand-in tree, run the real-data path on it (all papers whose rows finished), compare."""
    done = {(r["method"], r["variant"]) for r in table_rows if r.get("status") == "ok"}
    papers = [p for p, rows in realdata.RESULTS.items() if set(rows) <= done]
    if not papers:
        return {}
    dest = reproduce_out / "real_data_check"
    data, ck = build(reproduce_out, dest, papers)
    log(f"== real-data path on stand-ins ({', '.join(papers)}): itr-reproduce --data-root {data} "
        f"--checkpoints {ck} --out {dest / 'out'} (log {dest / 'log.txt'})", flush=True)
    with open(dest / "log.txt", "w") as logf:
        try:
            rc = realdata.run(data, ck, dest / "out", root, python, papers, stdout=logf)
        except UserError as exc:  # a stand-in file missing: report it with the rest, keep the table
            rc, why = 2, str(exc)
        else:
            why = f"see {dest / 'log.txt'}"
    verdicts = compare(dest / "out", table_rows, papers)
    if rc:
        verdicts["run"] = f"failed (exit {rc}; {why})"
    for label, verdict in verdicts.items():
        log(f"   {label}: {verdict}", flush=True)
    return verdicts
