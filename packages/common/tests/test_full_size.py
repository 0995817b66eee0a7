"""itr_common.compare.full_size (``make full-size``): its commands and layout, without the full-size run itself
(minutes and 8 GB of memory; its measured report is in docs/real_data.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from itr_common.compare import cli, full_size, realdata
from itr_common.synthetic import generate_world, preset, write_world


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("full_size_world")
    write_world(generate_world(preset("tiny")), out, layouts=("precomp", "uniter", "vinvl"))
    return out


def _placeholder_backbones(out: Path) -> dict[str, Path]:
    """The files of the full-size backbones the layout and the commands name, empty (write_backbones: 1.3 GB)."""
    files = ["bert-base-uncased/bert_config.json", "bert-base-uncased/vocab.txt", "bert-base-cased/config.json",
             "bert-base-cased/vocab.txt", "checkpoint-0132780/config.json", "checkpoint-0132780/pytorch_model.bin",
             "uniter-base.pt"]
    for name in files:
        (out / "backbones" / name).parent.mkdir(parents=True, exist_ok=True)
        (out / "backbones" / name).write_bytes(b"")
    return {name: out / "backbones" / name for name in ("bert-base-uncased", "bert-base-cased")} | {
        "vinvl": out / "backbones/checkpoint-0132780", "uniter-base": out / "backbones/uniter-base.pt"}


def test_what_the_training_writes_is_what_the_real_data_path_needs(world, tmp_path):
    out, root = tmp_path / "out", cli.repo_root()
    backbones = _placeholder_backbones(out)
    steps = full_size.training_steps(out, world, backbones, root, sys.executable, list(full_size.PAPERS))
    assert {s.paper for s in steps} == set(full_size.PAPERS) and all(s.cwd.is_dir() for s in steps)
    written = {path for s in steps for path in s.writes}
    for name, target in full_size.TRAINED.items():  # every checkpoint the layout links is written by a step
        assert out / target in written or target.startswith("backbones/"), name
    for path in written:  # stand-ins for the trained files
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    data, ck = full_size.layout(out, world, root, list(full_size.PAPERS))
    assert realdata.missing_files(data, ck, list(full_size.PAPERS)) == []
    sidecar = ck / realdata.SIDECARS["lightningdot"][0]
    assert sidecar.is_file() and '"itm_global_file": null' in sidecar.read_text()
    # LightningDOT's configs read ./data and ./config from its work folder, which the steps run in
    work = out / "lightningdot_work"
    assert (work / "data/db/itm_flickr30k_train_base-cased.db").resolve() == (
        world / "txt_db/itm_flickr30k_train.db").resolve()
    assert (work / "config/flickr30k_ft_config.json").is_file() and (work / "pretrain-flickr.json").is_file()
    evals = full_size.evaluation_steps(out, data, ck, sys.executable, ["dime", "aladin"])
    assert [e.argv[e.argv.index("--papers") + 1] for e in evals] == ["dime", "aladin"]


def test_unknown_papers_exit_2_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        full_size.main(["--out", str(tmp_path / "o"), "--papers", "dime,uniter"])
    assert stop.value.code == 2 and "--papers" in capsys.readouterr().err and not (tmp_path / "o").exists()
