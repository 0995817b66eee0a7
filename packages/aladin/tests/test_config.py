"""The six original YAML configs (original keys, safe loader), their tiny variants, and refused configs."""

from __future__ import annotations

import pytest
from aladin_testlib import ORIGINAL_CONFIGS, config_path

from itr_aladin.config import SECTIONS, both_heads_config, load_alad_config
from itr_common.errors import UserError

TABLE = {  # freeze-teran, loss-type, loss-weights, step-size (shared/reference/aladin.md)
    "alad-alignment-triplet": (False, "alignment", [1], 15),
    "alad-matching-triplet-finetune": (True, "matching", [1], 10),
    "alad-matching-distill-finetune": (True, "distillation", [1], 10),
    "alad-matching-triplet-e2e": (False, "matching", [1], 15),
    "alad-alignment-and-matching-distill": (False, "alignment-distillation", [1, 1], 15),
    "alad-alignment-and-matching-triplet0.1-plus-distill": (False, "alignment-distillation-matching", [1, 1, 0.1], 15),
}


@pytest.mark.parametrize("name", ORIGINAL_CONFIGS)
def test_original_configs(name):
    config = load_alad_config(config_path(name, tiny=False))
    model, training = config["model"], config["training"]
    found = (model["freeze-teran"], training["loss-type"], training["loss-weights"], training["step-size"])
    assert found == TABLE[name]
    assert model["embed-size"] == 768 and model["tern-layers"] == 2 and model["teran-layers"] == 0
    assert training["lr"] == 1e-5 and training["bs"] == 32 and training["margin"] == 0.2
    assert training["max-violation"] is True and training["alignment-mode"] == "MrSw"
    assert training["distillation-mode"] == "listnet" and training["scheduler"] == "steplr"
    tiny = load_alad_config(config_path(name))
    assert tiny["training"]["loss-type"] == training["loss-type"]
    assert set(tiny["model"]) == set(model) and set(tiny["training"]) == set(training)


def test_test_py_forces_both_heads():
    config = both_heads_config(load_alad_config(config_path("alad-alignment-triplet", tiny=False)))
    assert config["training"]["loss-type"] == "alignment-distillation"
    assert config["training"]["loss-weights"] == [1, 1]


@pytest.mark.parametrize(("edit", "needle"), [
    (("alignment-mode: 'MrSw'", "alignment-mod: 'MrSw'"), "did you mean 'alignment-mode'"),
    (("  margin: 0.2", "  margin: 0.2\n  activate_distilation_after: 1"), "activate_distillation_after"),
    (("loss-type: 'alignment'", "loss-type: 'alignment-distilation'"), "did you mean 'distillation'"),
    (("bs: 32", "bs: 'many'"), "training.bs"),
    (("warmup: null", "warmup: 'linear'"), "warmup"),
])
def test_bad_configs_name_the_key(tmp_path, edit, needle):
    text = config_path("alad-alignment-triplet", tiny=False).read_text()
    assert edit[0] in text
    path = tmp_path / "bad.yaml"
    path.write_text(text.replace(edit[0], edit[1]))
    with pytest.raises(UserError, match=needle):
        load_alad_config(path)


def test_sections_cover_teran_style_configs(tmp_path):
    path = tmp_path / "old.yaml"
    text = config_path("alad-matching-distill-finetune", tiny=False).read_text()
    path.write_text(text + "\ntext-model:\n  name: 'bert'\n  pretrain: 'bert-base-uncased'\n")
    assert "text-model" in load_alad_config(path) and "text-model" in SECTIONS


def test_yaml_is_read_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("model: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(UserError, match="invalid YAML"):
        load_alad_config(path)
