"""``iais-reproduce --model_config auto``: the bundled base / large config chosen from the checkpoint's shape."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from itr_common.checkpoint import save_atomic
from itr_common.errors import UserError
from itr_common.testing import check_usage_error
from itr_iais.options import BUNDLED_CONFIG_DIR
from itr_iais.reproduce import choose_model_config, resolve_auto_config, uniter_shape


def _shaped_state(hidden: int, layers: int, prefix: str = "") -> dict[str, torch.Tensor]:
    """Just the keys the detection reads: the word embeddings (width = hidden) and one weight per encoder layer."""
    state = {f"{prefix}uniter.embeddings.word_embeddings.weight": torch.zeros(3, hidden),
             f"{prefix}uniter.img_embeddings.img_linear.weight": torch.zeros(hidden, 8),
             f"{prefix}rank_output.weight": torch.zeros(1, hidden)}
    for i in range(layers):
        state[f"{prefix}uniter.encoder.layer.{i}.output.LayerNorm.weight"] = torch.zeros(hidden)
        state[f"{prefix}uniter.encoder.layer.{i}.attention.self.query.weight"] = torch.zeros(hidden, hidden)
    return state


@pytest.mark.parametrize(("hidden", "layers", "name"), [(768, 12, "uniter-base.json"), (1024, 24, "uniter-large.json")])
def test_auto_picks_the_bundled_config_of_the_checkpoint_shape(hidden, layers, name, tmp_path: Path):
    assert uniter_shape(_shaped_state(hidden, layers)) == (hidden, layers)
    assert choose_model_config(_shaped_state(hidden, layers), "ckpt.pt") == BUNDLED_CONFIG_DIR / name
    assert choose_model_config(_shaped_state(hidden, layers, "module."), "ckpt.pt").name == name  # DDP prefix
    path = tmp_path / "model_step_5000.pt"
    save_atomic(_shaped_state(hidden, layers), path)
    chosen, state = resolve_auto_config(str(path))
    assert chosen == BUNDLED_CONFIG_DIR / name and chosen.is_file()
    # the state read for the shape is what the evaluation loads (the file is read once)
    assert state.keys() == _shaped_state(hidden, layers).keys()


@pytest.mark.parametrize(("hidden", "layers"), [(768, 24), (1024, 12), (64, 2)])
def test_auto_refuses_any_other_shape(hidden, layers):
    with pytest.raises(UserError, match=rf"ckpt.pt: --model_config auto: .*found hidden {hidden}, {layers} layers; "
                                        "pass --model_config"):
        choose_model_config(_shaped_state(hidden, layers), "ckpt.pt")


def test_auto_with_a_tiny_checkpoint_exits_2_naming_it_before_any_work(trained_run: Path, world: Path, tmp_path: Path):
    from itr_iais.reproduce import main

    checkpoint = trained_run / "ckpt" / "model_step_4_final.pt"
    out = tmp_path / "repro"
    check_usage_error(main, ["--checkpoint", str(checkpoint), "--data_root", str(world), "--output_dir", str(out)],
                      str(checkpoint), "hidden 64, 2 layers", "pass --model_config", untouched=[out])


def test_paper_table_rows_name_their_source():
    """The rows iais-reproduce prints come from paper_table.yaml, each dataset with its source (none verified)."""
    from importlib import resources

    import yaml

    from itr_common.paper_table import load_paper_table

    data = yaml.safe_load(resources.files("itr_iais").joinpath("paper_table.yaml").read_text(encoding="utf-8"))
    rows = load_paper_table("itr_iais")
    assert set(rows) == set(data["row_sources"])
    for name, by_dataset in rows.items():
        assert "unverified" in name and set(by_dataset) == set(data["row_sources"][name])
    (row,) = rows.values()
    assert row["f30k"] == {"i2t": [88.3, 98.4, 99.4], "t2i": [76.86, 93.30, 95.72]}
    assert row["coco5k"]["t2i"] is None  # the listing gives COCO image-to-text only
