"""itr_common.compare.standin: the make-reproduce outputs laid out as the real-data tree (docs/real_data.md) and
the check that the real-data path measures the table's recalls. No training: the checkpoints are empty files;
``make reproduce`` runs the check for real at its end (README, "One table for five papers")."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from itr_common.compare import cli, plan, realdata, standin
from itr_common.errors import UserError
from itr_common.metrics import evaluate_sims
from itr_common.synthetic import generate_world, preset, write_world


@pytest.fixture(scope="module")
def reproduce_out(tmp_path_factory) -> Path:
    """A reproduce --out folder: the tiny world, the package configs the plan links, empty 'trained' files."""
    out = tmp_path_factory.mktemp("reproduce_out")
    write_world(generate_world(preset("tiny")), out / "world", layouts=("precomp", "uniter", "vinvl"))
    plan.uniter_workdir(out / "lightningdot", out / "world", cli.repo_root() / "packages/lightningdot")
    for target in standin.CHECKPOINT_LINKS.values():
        path = out / target
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
    return out


def test_the_stand_in_tree_has_every_file_the_real_data_path_needs(reproduce_out, tmp_path):
    data, ck = standin.build(reproduce_out, tmp_path / "standin")
    assert realdata.missing_files(data, ck, list(realdata.NEEDS)) == []
    # the sidecars replace the full-size configs: the IAIS model config and the LightningDOT eval config
    argv = {paper: cmds[0][0] for paper, cmds in realdata.commands(data, ck, tmp_path / "o", cli.repo_root(),
                                                                    sys.executable).items()}
    assert argv["iais"][argv["iais"].index("--model_config") + 1] == str(ck / "iais/model_config.json")
    eval_config = Path(argv["lightningdot"][argv["lightningdot"].index("--eval_config") + 1])
    config = json.loads(eval_config.read_text())
    assert config["test_txt_db"].startswith("./data/db/") and config["itm_global_file"] is None
    assert Path(config["img_model_config"]).is_file()
    # without the LightningDOT sidecar the released eval config and its meta file are needed again
    (ck / "lightningdot/eval_config.json").unlink()
    missing = realdata.missing_files(data, ck, ["lightningdot"])
    assert len(missing) == 1 and "flickr_meta.json" in missing[0]
    # building again over an existing tree works (links are replaced)
    standin.build(reproduce_out, tmp_path / "standin")


def test_a_missing_trained_file_is_named(reproduce_out, tmp_path):
    from itr_common.errors import UserError

    empty = tmp_path / "empty_out"
    (empty / "world").mkdir(parents=True)
    with pytest.raises(UserError, match="make reproduce"):
        standin.build(empty, tmp_path / "standin")


def test_only_the_papers_whose_rows_finished_are_laid_out(reproduce_out, tmp_path):
    """A failed paper (here VSRN's training, so no vsrn checkpoint) does not stop the others' check: a --size
    base run crashed the whole closing check on the missing VSRN file."""
    partial = tmp_path / "partial_out"
    partial.mkdir()
    (partial / "world").symlink_to(reproduce_out / "world")
    for name, target in standin.CHECKPOINT_LINKS.items():
        if name.startswith(("dime/", "aladin/")) and not (partial / target).exists():
            (partial / target).parent.mkdir(parents=True, exist_ok=True)
            (partial / target).write_bytes(b"")
    data, ck = standin.build(partial, tmp_path / "standin", ["dime", "aladin"])
    assert realdata.missing_files(data, ck, ["dime", "aladin"]) == []
    assert not (ck / "selfalign").exists() and not (ck / "lightningdot").exists()
    with pytest.raises(UserError, match="make reproduce"):  # asking for a paper that did not run still names it
        standin.build(partial, tmp_path / "standin2", ["selfalign"])


def test_compare_says_same_or_different_per_row(tmp_path):
    rng = np.random.default_rng(0)
    sims = rng.normal(size=(10, 50)) + np.kron(np.eye(10), np.ones((1, 5)))
    result = evaluate_sims(sims, "1k")
    (tmp_path / "lightningdot").mkdir()
    result.write_json(tmp_path / "lightningdot/retrieval_result_test.json")
    recalls = dict(zip(("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"),
                       (*result.i2t[:3], *result.t2i[:3])))
    row = {"method": "LightningDOT", "variant": "bi-encoder", "rsum": result.rsum, **recalls}
    assert standin.compare(tmp_path, [row], ["lightningdot"]) == {"LightningDOT bi-encoder": "same recalls"}
    changed = {**row, "t2i_r10": recalls["t2i_r10"] - 2.0}
    assert standin.compare(tmp_path, [changed], ["lightningdot"])["LightningDOT bi-encoder"].startswith("DIFFERENT")
    verdict = standin.compare(tmp_path, [row | {"method": "DIME", "variant": "ensemble"}], ["dime"])
    assert verdict["DIME ensemble"].startswith("real-data result unreadable")


def test_lightningdot_work_links_follow_the_current_data_root(tmp_path):
    from itr_common.errors import UserError

    out, root = tmp_path / "out", cli.repo_root()
    first, second = tmp_path / "d1", tmp_path / "d2"
    for d in (first, second):
        (d / "lightningdot/data").mkdir(parents=True)
    work = realdata.link_lightningdot_work(out, first, root)
    assert (work / "data").resolve() == (first / "lightningdot/data").resolve()
    # a rerun with another --data-root and the same --out must not evaluate the old data
    realdata.link_lightningdot_work(out, second, root)
    assert (work / "data").resolve() == (second / "lightningdot/data").resolve()
    # a dangling link (its data root moved away) is replaced, not a FileExistsError
    (second / "lightningdot/data").rmdir()
    realdata.link_lightningdot_work(out, first, root)
    assert (work / "data").resolve() == (first / "lightningdot/data").resolve()
    (work / "data").unlink()
    (work / "data").mkdir()  # not ours: refused with one line
    with pytest.raises(UserError, match="lightningdot_work/data: expected a link"):
        realdata.link_lightningdot_work(out, first, root)


def test_relative_roots_reach_the_evaluations_that_run_elsewhere(reproduce_out, tmp_path, monkeypatch):
    """--data-root D --checkpoints C given relative to the shell's folder: every evaluation runs in another folder
    (--out), so each got paths that named nothing there ('checkpoint not found' after the up-front check passed)."""
    standin.build(reproduce_out, tmp_path / "standin")
    calls = []

    def fake_run(argv, cwd, **_):
        calls.append((argv, Path(cwd)))
        return type("Done", (), {"returncode": 0})()

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(realdata.subprocess, "run", fake_run)
    assert realdata.run(Path("standin/data"), Path("standin/checkpoints"), tmp_path / "out", cli.repo_root(),
                        sys.executable, ["dime", "selfalign", "aladin"]) == 0
    paths = [arg for argv, _ in calls for arg in argv[1:] if "standin" in arg]
    assert len(calls) == 4 and paths and all(Path(arg).is_absolute() and Path(arg).exists() for arg in paths)
