"""ALADIN's YAML configs (``alad/configs/*.yaml``): read with a safe loader, every key checked.

The original read them with ``yaml.load`` (no Loader) and looked keys up as it went, so a misspelt key
was silently ignored (its ``activate_distillation_after`` was read as ``activate-distillation-after`` and
never applied). Here every section and key must be one the original configs use (an unknown key names
the closest valid one), each value is type- and range-checked, and the values this reproduction does
not implement (depth aggregation, post layers, stop-word removal, the 'order' measure) are refused.
The sections ``text-model``, ``image-model`` and most of ``dataset`` belong to TERAN's configs and are
accepted but unused (the backbone is the VinVL checkpoint).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from typing import Any

from itr_common.config import load_config
from itr_common.errors import did_you_mean, fail

SECTIONS: dict[str, tuple[str, ...]] = {
    "dataset": ("name", "images-path", "data", "restval", "pre-extracted-features"),
    "text-model": ("name", "pretrain", "word-dim", "extraction-hidden-layer", "fine-tune", "pre-extracted", "layers",
                   "dropout"),
    "image-model": ("name", "pre-extracted-features-root", "transformer-layers", "dropout", "pos-encoding",
                    "crop-size", "fine-tune", "feat-dim", "norm"),
    "model": ("name", "embed-size", "text-aggregation", "image-aggregation", "freeze-teran", "teran-layers",
              "tern-layers", "post-layers", "exclude-stopwords", "shared-transformer", "depth-aggregation",
              "depth-aggregation-alignment", "depth-aggregation-matching", "dropout"),
    "training": ("lr", "grad-clip", "max-violation", "loss-type", "loss-weights", "alignment-mode",
                 "distillation-mode", "activate_distillation_after", "activate-distillation-after", "measure",
                 "margin", "bs", "scheduler", "gamma", "step-size", "warmup", "warmup-period"),
}
REQUIRED = {
    "model": ("embed-size", "text-aggregation", "image-aggregation", "teran-layers", "tern-layers",
              "shared-transformer", "dropout"),
    "training": ("lr", "grad-clip", "max-violation", "loss-type", "loss-weights", "measure", "margin", "bs",
                 "scheduler"),
}
LOSS_TYPES = ("alignment", "matching", "distillation")
ALIGNMENT_MODES = ("MrSw", "MrAVGw", "MwSr", "symm", "sum", "mean", "scan-sentences")
DISTILLATION_MODES = ("listnet", "mse", "ordinal", "contrastive")
AGGREGATIONS = ("first",)
MEASURES = ("dot", "cosine")


def _check_type(where: str, value: Any, kinds: tuple[type, ...], what: str) -> None:
    if isinstance(value, bool) and bool not in kinds:
        fail(f"{where}: expected {what}, found {value!r}")
    if not isinstance(value, kinds):
        fail(f"{where}: expected {what}, found {value!r}")


def validate_config(config: Any, source: str | os.PathLike = "config") -> dict[str, Any]:
    """Check an ALADIN config dict (sections, keys, types, ranges); return a deep copy."""
    if not isinstance(config, Mapping):
        fail(f"{source}: expected a mapping of sections ({', '.join(SECTIONS)}), found {type(config).__name__}")
    for section, values in config.items():
        if section not in SECTIONS:
            fail(f"{source}: unknown config section '{section}'{did_you_mean(str(section), SECTIONS)}")
        if not isinstance(values, Mapping):
            fail(f"{source}: section '{section}': expected a mapping of keys, found {type(values).__name__}")
        for key in values:
            if key not in SECTIONS[section]:
                fail(f"{source}: unknown config key '{section}.{key}'{did_you_mean(str(key), SECTIONS[section])}")
    for section, keys in REQUIRED.items():
        present = config.get(section, {})
        missing = [k for k in keys if k not in present]
        if missing:
            fail(f"{source}: section '{section}': missing keys {missing}")
    model, training = config["model"], config["training"]
    where = f"{source}: model"
    _check_type(f"{where}.embed-size", model["embed-size"], (int,), "a positive int")
    for key in ("teran-layers", "tern-layers", "post-layers"):
        if key in model:
            _check_type(f"{where}.{key}", model[key], (int,), "an int >= 0")
            if model[key] < 0:
                fail(f"{where}.{key}: expected an int >= 0, found {model[key]}")
    if model["embed-size"] < 1:
        fail(f"{where}.embed-size: expected a positive int, found {model['embed-size']}")
    if model["tern-layers"] < 1:
        fail(f"{where}.tern-layers: expected at least 1 layer in the matching head, found {model['tern-layers']}")
    if model.get("post-layers", 0):
        fail(f"{where}.post-layers: only 0 is supported (the six ALADIN configs), found {model['post-layers']}")
    for key in ("depth-aggregation", "depth-aggregation-alignment", "depth-aggregation-matching"):
        if model.get(key) not in (None, False):
            fail(f"{where}.{key}: only False/null is supported (the six ALADIN configs), found {model[key]!r}")
    if model.get("exclude-stopwords", False):
        fail(f"{where}.exclude-stopwords: only False is supported (the original needs NLTK data), found True")
    for key in ("text-aggregation", "image-aggregation"):
        if model[key] not in AGGREGATIONS:
            fail(f"{where}.{key}: expected one of {list(AGGREGATIONS)}, found {model[key]!r}")
    for key in ("freeze-teran", "shared-transformer"):
        if key in model:
            _check_type(f"{where}.{key}", model[key], (bool,), "true or false")
    _check_type(f"{where}.dropout", model["dropout"], (int, float), "a number in [0, 1)")
    if not 0 <= model["dropout"] < 1:
        fail(f"{where}.dropout: expected a number in [0, 1), found {model['dropout']}")

    where = f"{source}: training"
    loss_type = training["loss-type"]
    _check_type(f"{where}.loss-type", loss_type, (str,), "a '-'-joined list of alignment/matching/distillation")
    parts = loss_type.split("-")
    for part in parts:
        if part not in LOSS_TYPES:
            fail(f"{where}.loss-type: unknown loss '{part}' in '{loss_type}'{did_you_mean(part, LOSS_TYPES)}")
    if len(set(parts)) != len(parts):
        fail(f"{where}.loss-type: a loss is listed twice in '{loss_type}'")
    weights = training["loss-weights"]
    if isinstance(weights, list):
        if len(weights) != len(parts):
            fail(f"{where}.loss-weights: expected {len(parts)} weights for '{loss_type}', found {weights}")
        for w in weights:
            _check_type(f"{where}.loss-weights", w, (int, float), "numbers")
    elif weights != "auto":
        fail(f"{where}.loss-weights: expected a list of numbers or 'auto', found {weights!r}")
    for key, choices in (("alignment-mode", ALIGNMENT_MODES), ("distillation-mode", DISTILLATION_MODES),
                         ("measure", MEASURES)):
        if key in training and training[key] not in choices:
            fail(f"{where}.{key}: expected one of {list(choices)}, found {training[key]!r}"
                 f"{did_you_mean(str(training[key]), choices)}")
    if "alignment" in parts or "distillation" in parts:
        if "alignment-mode" not in training:
            fail(f"{where}: loss-type '{loss_type}' needs alignment-mode")
    if "distillation" in parts and "distillation-mode" not in training:
        fail(f"{where}: loss-type '{loss_type}' needs distillation-mode")
    for key in ("lr", "margin", "grad-clip"):
        _check_type(f"{where}.{key}", training[key], (int, float), "a number")
    if training["lr"] <= 0:
        fail(f"{where}.lr: expected a positive number, found {training['lr']}")
    if training["margin"] < 0:
        fail(f"{where}.margin: expected a number >= 0, found {training['margin']}")
    _check_type(f"{where}.max-violation", training["max-violation"], (bool,), "true or false")
    _check_type(f"{where}.bs", training["bs"], (int,), "a positive int")
    if training["bs"] < 2:
        fail(f"{where}.bs: expected at least 2 (the losses need negatives in the batch), found {training['bs']}")
    if training["scheduler"] not in ("steplr", None):
        fail(f"{where}.scheduler: expected 'steplr' or null, found {training['scheduler']!r}")
    if training["scheduler"] == "steplr":
        for key in ("step-size", "gamma"):
            if key not in training:
                fail(f"{where}: scheduler 'steplr' needs {key}")
        _check_type(f"{where}.step-size", training["step-size"], (int,), "a positive int")
        if training["step-size"] < 1:
            fail(f"{where}.step-size: expected a positive int, found {training['step-size']}")
        _check_type(f"{where}.gamma", training["gamma"], (int, float), "a number")
    if training.get("warmup") not in (None,):
        fail(f"{where}.warmup: only null is supported (the original's 'linear' crashes: its warmup module is "
             f"never imported), found {training['warmup']!r}")
    for key in ("activate_distillation_after", "activate-distillation-after"):
        if key in training:
            _check_type(f"{where}.{key}", training[key], (int,), "an int >= 0 (epochs)")
            if training[key] < 0:
                fail(f"{where}.{key}: expected an int >= 0 (epochs), found {training[key]}")
    return copy.deepcopy(dict(config))


def load_alad_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check an ALADIN YAML config (``--config``)."""
    return validate_config(load_config(path), path)


def loss_types(config: Mapping[str, Any]) -> list[str]:
    return config["training"]["loss-type"].split("-")


def activate_distillation_after(config: Mapping[str, Any]) -> int:
    """Epochs before the distillation loss joins: the YAML's ``activate_distillation_after`` (the key the
    configs spell), or ``activate-distillation-after``; 0 when neither is given (as the original)."""
    training = config["training"]
    if "activate_distillation_after" in training:
        return int(training["activate_distillation_after"])
    return int(training.get("activate-distillation-after", 0))


def both_heads_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """test.py's override: both heads are evaluated (loss-type 'alignment-distillation', weights [1, 1])."""
    out = copy.deepcopy(dict(config))
    out["training"] = {**out["training"], "loss-type": "alignment-distillation", "loss-weights": [1, 1]}
    return out


__all__ = ["SECTIONS", "activate_distillation_after", "load_alad_config", "loss_types", "both_heads_config",
           "validate_config"]
