"""Tiny random checkpoints in the released formats: Google-converted BERT, UNITER, VinVL/OSCAR coco_ir.

No pretrained weight can be downloaded, so the paper packages load these instead. Every file has
the original key names and layout; only the sizes are small and the values random (Linear and
Embedding weights ~ N(0, 0.02), biases 0, LayerNorm weight 1 and bias 0: BERT's initialiser).

* BERT (``--bert_path`` of DIME/CAMERA/SelfAlign): ``vocab.txt``, ``bert_config.json`` (Google),
  ``config.json`` (Hugging Face) and ``pytorch_model.bin`` of a converted ``BertForPreTraining``:
  ``bert.*`` with LayerNorm ``gamma``/``beta`` plus the ``cls.*`` pretraining heads.
* UNITER (``uniter-base.pt``): the plain state dict of ``UniterForPretraining`` (ChenRocks/UNITER
  model/pretrain.py): ``uniter.*`` backbone (LayerNorm ``weight``/``bias``), the MLM head ``cls.*``
  (decoder tied to the word embeddings), ``feat_regress.*`` (weight tied to ``img_linear.weight``),
  ``region_classifier.*`` and ``itm_output.*``. The model config json is written beside it.
* VinVL/OSCAR coco_ir checkpoint dir (``checkpoint-0132780/``): ``config.json``, ``pytorch_model.bin``
  of ``ImageBertForSequenceClassification`` (``bert.embeddings/encoder/pooler``, ``bert.img_embedding``,
  ``bert.LayerNorm`` for the image features, ``classifier``), ``vocab.txt``,
  ``special_tokens_map.json``, ``added_tokens.json`` and ``training_args.bin`` (a ``torch.save``'d
  ``argparse.Namespace``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from itr_common.checkpoint import save_atomic
from itr_common.errors import fail
from itr_common.fileio import write_json_atomic, write_lines_atomic

# ----------------------------------------------------------------------------------------------
# configs

# ChenRocks/UNITER config/uniter-base.json (bert-base-cased sizes) and uniter-large.json
UNITER_BASE_CONFIG: dict[str, Any] = {
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "max_position_embeddings": 512,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "type_vocab_size": 2,
    "vocab_size": 28996,
}
UNITER_LARGE_CONFIG: dict[str, Any] = {
    **UNITER_BASE_CONFIG,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_attention_heads": 16,
    "num_hidden_layers": 24,
}
UNITER_IMG_DIM = 2048
UNITER_LABEL_DIM = 1601
POS_DIM = 7  # UNITER position feature: norm_bb (6) + area

TINY_SIZES = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}


def bert_config_dict(vocab_size: int, **sizes: Any) -> dict[str, Any]:
    """A Google ``bert_config.json`` dict: bert-base values with ``vocab_size`` and ``sizes`` applied."""
    unknown = set(sizes) - set(UNITER_BASE_CONFIG)
    if unknown:
        fail(f"bert config: unknown keys {sorted(unknown)}")
    return {**UNITER_BASE_CONFIG, "vocab_size": int(vocab_size), **sizes}


def tiny_config(vocab_size: int) -> dict[str, Any]:
    """hidden 64, 2 layers, 4 heads, FFN 128 (UNITER / BERT / OSCAR model config keys)."""
    return bert_config_dict(vocab_size, **TINY_SIZES)


def _check_config(config: Mapping[str, Any], what: str) -> None:
    needed = ("vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size", "max_position_embeddings",
              "type_vocab_size", "num_attention_heads")
    missing = [k for k in needed if k not in config]
    if missing:
        fail(f"{what} config: expected keys {list(needed)}, missing {missing}")
    if config["hidden_size"] % config["num_attention_heads"]:
        fail(f"{what} config: hidden_size {config['hidden_size']} is not a multiple of "
             f"num_attention_heads {config['num_attention_heads']}")


# ----------------------------------------------------------------------------------------------
# key lists (name -> shape), in the order the modules register them


Shapes = dict[str, tuple[int, ...]]


def _linear(name: str, n_in: int, n_out: int, bias: bool = True) -> Shapes:
    out = {f"{name}.weight": (n_out, n_in)}
    if bias:
        out[f"{name}.bias"] = (n_out,)
    return out


def _layer_norm(name: str, dim: int) -> Shapes:
    return {f"{name}.weight": (dim,), f"{name}.bias": (dim,)}


def bert_text_embedding_shapes(prefix: str, config: Mapping[str, Any]) -> Shapes:
    """``{prefix}embeddings.{word,position,token_type}_embeddings`` and ``LayerNorm``."""
    h = config["hidden_size"]
    return {
        f"{prefix}embeddings.word_embeddings.weight": (config["vocab_size"], h),
        f"{prefix}embeddings.position_embeddings.weight": (config["max_position_embeddings"], h),
        f"{prefix}embeddings.token_type_embeddings.weight": (config["type_vocab_size"], h),
        **_layer_norm(f"{prefix}embeddings.LayerNorm", h),
    }


def bert_encoder_shapes(prefix: str, config: Mapping[str, Any]) -> Shapes:
    """``{prefix}encoder.layer.{i}.*`` of the Hugging Face / UNITER / OSCAR BertLayer."""
    h, ffn = config["hidden_size"], config["intermediate_size"]
    out: Shapes = {}
    for i in range(config["num_hidden_layers"]):
        layer = f"{prefix}encoder.layer.{i}"
        for part in ("query", "key", "value"):
            out.update(_linear(f"{layer}.attention.self.{part}", h, h))
        out.update(_linear(f"{layer}.attention.output.dense", h, h))
        out.update(_layer_norm(f"{layer}.attention.output.LayerNorm", h))
        out.update(_linear(f"{layer}.intermediate.dense", h, ffn))
        out.update(_linear(f"{layer}.output.dense", ffn, h))
        out.update(_layer_norm(f"{layer}.output.LayerNorm", h))
    return out


def _mlm_head_shapes(config: Mapping[str, Any]) -> Shapes:
    h, v = config["hidden_size"], config["vocab_size"]
    return {
        "cls.predictions.bias": (v,),
        **_linear("cls.predictions.transform.dense", h, h),
        **_layer_norm("cls.predictions.transform.LayerNorm", h),
        "cls.predictions.decoder.weight": (v, h),
    }


def uniter_state_dict_shapes(
    config: Mapping[str, Any], img_dim: int = UNITER_IMG_DIM, label_dim: int = UNITER_LABEL_DIM
) -> Shapes:
    """Names and shapes of ``UniterForPretraining(config, img_dim, img_label_dim).state_dict()``.

    With :data:`UNITER_BASE_CONFIG` and the defaults this is the key list of the released
    ``uniter-base.pt`` (UNITER model/model.py, model/layer.py, model/pretrain.py).
    """
    _check_config(config, "UNITER")
    h = config["hidden_size"]
    out: Shapes = {}
    out.update(bert_text_embedding_shapes("uniter.", config))
    img = "uniter.img_embeddings"
    out.update(_linear(f"{img}.img_linear", img_dim, h))
    out.update(_layer_norm(f"{img}.img_layer_norm", h))
    out.update(_layer_norm(f"{img}.pos_layer_norm", h))
    out.update(_linear(f"{img}.pos_linear", POS_DIM, h))
    out[f"{img}.mask_embedding.weight"] = (2, img_dim)
    out.update(_layer_norm(f"{img}.LayerNorm", h))
    out.update(bert_encoder_shapes("uniter.", config))
    out.update(_linear("uniter.pooler.dense", h, h))
    out.update(_mlm_head_shapes(config))
    # RegionFeatureRegression: own parameters first (weight tied to img_linear.weight, bias), then net
    out["feat_regress.weight"] = (h, img_dim)
    out["feat_regress.bias"] = (img_dim,)
    out.update(_linear("feat_regress.net.0", h, h))
    out.update(_layer_norm("feat_regress.net.2", h))
    out.update(_linear("region_classifier.net.0", h, h))
    out.update(_layer_norm("region_classifier.net.2", h))
    out.update(_linear("region_classifier.net.3", h, label_dim))
    out.update(_linear("itm_output", h, 2))
    return out


UNITER_TIED = {
    "cls.predictions.decoder.weight": "uniter.embeddings.word_embeddings.weight",
    "feat_regress.weight": "uniter.img_embeddings.img_linear.weight",
}


def google_bert_state_dict_shapes(config: Mapping[str, Any]) -> Shapes:
    """A converted Google ``BertForPreTraining`` checkpoint with Hugging Face LayerNorm names
    (``bert.*`` + ``cls.predictions.*`` + ``cls.seq_relationship.*``); see :func:`write_bert_dir`."""
    _check_config(config, "BERT")
    h = config["hidden_size"]
    out: Shapes = {}
    out.update(bert_text_embedding_shapes("bert.", config))
    out.update(bert_encoder_shapes("bert.", config))
    out.update(_linear("bert.pooler.dense", h, h))
    out.update(_mlm_head_shapes(config))
    out.update(_linear("cls.seq_relationship", h, 2))
    return out


BERT_TIED = {"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight"}


def oscar_state_dict_shapes(config: Mapping[str, Any]) -> Shapes:
    """Names and shapes of OSCAR's ``ImageBertForSequenceClassification(config).state_dict()`` with the
    plain Linear classifier and ``img_feature_type`` a region-feature type (frcnn)."""
    _check_config(config, "OSCAR")
    for key in ("img_feature_dim", "num_labels"):
        if key not in config:
            fail(f"OSCAR config: expected key '{key}'")
    h = config["hidden_size"]
    out: Shapes = {}
    out.update(bert_text_embedding_shapes("bert.", config))
    out.update(bert_encoder_shapes("bert.", config))
    out.update(_linear("bert.pooler.dense", h, h))
    out.update(_linear("bert.img_embedding", config["img_feature_dim"], h))
    if config.get("use_img_layernorm", 0):  # Oscar builds it only when config.json has a true use_img_layernorm
        out.update(_layer_norm("bert.LayerNorm", h))
    out.update(_linear("classifier", h, config["num_labels"]))
    return out


# ----------------------------------------------------------------------------------------------
# random weights


# Sequential LayerNorms of UNITER's pretraining heads, named by position
_INDEXED_LAYER_NORMS = ("feat_regress.net.2", "region_classifier.net.2")


def _is_layer_norm(name: str) -> bool:
    module = name.rsplit(".", 1)[0]
    last = module.rsplit(".", 1)[-1]
    return "LayerNorm" in last or last.endswith("layer_norm") or module in _INDEXED_LAYER_NORMS


def random_state_dict(
    shapes: Mapping[str, tuple[int, ...]],
    seed: int = 0,
    std: float = 0.02,
    tied: Mapping[str, str] | None = None,
) -> dict[str, torch.Tensor]:
    """Random float32 tensors for ``shapes`` (BERT init); ``tied`` maps a key to the key whose tensor it shares."""
    tied = dict(tied or {})
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for name, shape in shapes.items():
        if name in tied:
            continue
        if _is_layer_norm(name):
            out[name] = torch.ones(shape) if name.endswith(".weight") else torch.zeros(shape)
        elif name.endswith(".bias") and len(shape) == 1:
            out[name] = torch.zeros(shape)
        else:
            out[name] = torch.randn(shape, generator=gen) * std
    for name, source in tied.items():
        if name in shapes:
            if tuple(out[source].shape) != tuple(shapes[name]):
                fail(f"tied weight {name}: shape {shapes[name]} differs from {source} {tuple(out[source].shape)}")
            out[name] = out[source]
    return {name: out[name] for name in shapes}  # keep the registration order


def _google_names(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """LayerNorm ``weight``/``bias`` -> ``gamma``/``beta`` on every key (``bert.*`` and ``cls.*``)."""
    from itr_common.text import to_google_key_names

    bert = {k: v for k, v in state.items() if k.startswith("bert.")}
    heads = {k: v for k, v in state.items() if not k.startswith("bert.")}
    out = to_google_key_names(bert, prefix="bert.")
    out.update(to_google_key_names(heads, prefix="cls."))
    return out


# ----------------------------------------------------------------------------------------------
# BERT vocabulary and directory

BERT_SPECIALS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}
BERT_PUNCTUATION = tuple("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def bert_vocab_tokens(words: Iterable[str]) -> list[str]:
    """A WordPiece vocabulary in BERT's layout for ``words`` (lower case, one token each).

    ``[PAD]``=0, ``[unused0..98]``=1..99, ``[UNK]``=100, ``[CLS]``=101, ``[SEP]``=102, ``[MASK]``=103,
    then punctuation (``!`` first, so UNITER's ``v_range`` starts at 104), digits, single letters and
    their ``##`` continuations (an unseen word splits into letters instead of becoming ``[UNK]``), then
    the words, sorted.
    """
    tokens = ["[PAD]", *(f"[unused{i}]" for i in range(99)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    digits = [str(d) for d in range(10)]
    extra = [*BERT_PUNCTUATION, *digits, *letters, *(f"##{c}" for c in letters + digits)]
    seen = set(tokens)
    for token in extra:
        if token not in seen:
            tokens.append(token)
            seen.add(token)
    for word in sorted(set(words)):
        if not word or word != word.strip() or " " in word:
            fail(f"BERT vocabulary: expected single words, found {word!r}")
        if word.lower() != word:
            fail(f"BERT vocabulary: expected lower-case words (one vocabulary serves cased and uncased), "
                 f"found {word!r}")
        if word not in seen:
            tokens.append(word)
            seen.add(word)
    return tokens


def write_bert_dir(
    out_dir: str | os.PathLike, vocab_tokens: Sequence[str], config: Mapping[str, Any] | None = None, seed: int = 0
) -> Path:
    """A ``--bert_path`` directory: ``vocab.txt``, ``bert_config.json``, ``config.json``, ``pytorch_model.bin``.

    ``config`` defaults to :func:`tiny_config` for the vocabulary; ``vocab_size`` is always
    ``len(vocab_tokens)``. Weights are a random converted ``BertForPreTraining`` with Google names
    (``bert.embeddings.LayerNorm.gamma``, ..., ``cls.predictions.*``, ``cls.seq_relationship.*``).
    """
    out = Path(out_dir)
    cfg = dict(config) if config is not None else tiny_config(len(vocab_tokens))
    cfg["vocab_size"] = len(vocab_tokens)
    _check_config(cfg, "BERT")
    write_lines_atomic(out / "vocab.txt", vocab_tokens)
    write_json_atomic(out / "bert_config.json", cfg)
    hf = {"architectures": ["BertForPreTraining"], "model_type": "bert", "layer_norm_eps": 1e-12, "pad_token_id": 0,
          **cfg}
    write_json_atomic(out / "config.json", hf)
    state = random_state_dict(google_bert_state_dict_shapes(cfg), seed=seed, tied=BERT_TIED)
    save_atomic(_google_names(state), out / "pytorch_model.bin")
    return out


# ----------------------------------------------------------------------------------------------
# UNITER


def write_uniter_checkpoint(
    path: str | os.PathLike,
    config: Mapping[str, Any],
    img_dim: int = UNITER_IMG_DIM,
    label_dim: int = UNITER_LABEL_DIM,
    seed: int = 0,
    config_path: str | os.PathLike | None = None,
) -> Path:
    """A random ``uniter-*.pt`` (plain state dict of ``UniterForPretraining``) and its model config json.

    The config goes to ``config_path`` (default: ``path`` with ``.json``). Returns ``path``.
    """
    path = Path(path)
    state = random_state_dict(uniter_state_dict_shapes(config, img_dim, label_dim), seed=seed, tied=UNITER_TIED)
    save_atomic(state, path)
    write_json_atomic(Path(config_path) if config_path is not None else path.with_suffix(".json"), dict(config))
    return path


# ----------------------------------------------------------------------------------------------
# VinVL / OSCAR coco_ir checkpoint

OSCAR_CHECKPOINT_NAME = "checkpoint-0132780"  # the VinVL base coco_ir checkpoint ALADIN starts from


def oscar_config_dict(vocab_size: int, img_feature_dim: int, **sizes: Any) -> dict[str, Any]:
    """``config.json`` of an OSCAR retrieval checkpoint (pytorch_transformers ``BertConfig`` with the fields
    run_retrieval.py sets: img_feature_dim, img_feature_type, loss_type, use_img_layernorm, ...)."""
    base = bert_config_dict(vocab_size, **sizes)
    config = {
        **base,
        "finetuning_task": "ir",
        "img_feature_dim": int(img_feature_dim),
        "img_feature_type": "frcnn",
        "img_layer_norm_eps": 1e-12,
        "layer_norm_eps": 1e-12,
        "loss_type": "sfmx",
        "num_labels": 2,
        "output_attentions": False,
        "output_hidden_states": False,
        "pruned_heads": {},
        "torchscript": False,
        "use_img_layernorm": 1,
    }
    return dict(sorted(config.items()))


def oscar_training_args(config: Mapping[str, Any], **overrides: Any) -> argparse.Namespace:
    """The ``training_args.bin`` Namespace: OSCAR run_retrieval.py's arguments of a coco_ir training run.

    ``restore_training_settings`` reads do_lower_case, img_feature_type, max_seq_length,
    max_img_seq_length, add_od_labels, od_label_type, use_img_layernorm and img_layer_norm_eps.
    """
    args = {
        "data_dir": "datasets/coco_ir", "img_feat_file": "datasets/coco_ir/features.tsv",
        "model_name_or_path": "pretrained_models/base-vg-labels/ep_67_588997", "output_dir": "output/",
        "loss_type": "sfmx", "config_name": "", "tokenizer_name": "", "max_seq_length": 70,
        "do_train": True, "do_test": False, "do_eval": False, "test_split": "test", "eval_img_keys_file": "",
        "eval_caption_index_file": "", "cross_image_eval": False, "add_od_labels": True, "od_label_type": "vg",
        "att_mask_type": "CLR", "do_lower_case": True, "drop_out": 0.1, "max_img_seq_length": 50,
        "img_feature_dim": int(config["img_feature_dim"]), "img_feature_type": config.get("img_feature_type", "frcnn"),
        "use_img_layernorm": int(config.get("use_img_layernorm", 1)),
        "img_layer_norm_eps": float(config.get("img_layer_norm_eps", 1e-12)),
        "per_gpu_train_batch_size": 32, "per_gpu_eval_batch_size": 64, "output_mode": "classification",
        "num_labels": int(config.get("num_labels", 2)), "num_captions_per_img_train": 5,
        "num_captions_per_img_val": 5, "gradient_accumulation_steps": 1, "learning_rate": 2e-5,
        "weight_decay": 0.05, "adam_epsilon": 1e-8, "max_grad_norm": 1.0, "warmup_steps": 0,
        "scheduler": "linear", "num_workers": 4, "num_train_epochs": 30, "max_steps": -1, "logging_steps": 20,
        "save_steps": -1, "evaluate_during_training": True, "eval_model_dir": "", "no_cuda": False, "seed": 88,
        "n_gpu": 1, "train_batch_size": 32,
    }
    unknown = set(overrides) - set(args)
    if unknown:
        fail(f"OSCAR training args: unknown fields {sorted(unknown)}")
    args.update(overrides)
    return argparse.Namespace(**args)


def write_oscar_checkpoint_dir(
    out_dir: str | os.PathLike,
    config: Mapping[str, Any],
    vocab_tokens: Sequence[str],
    seed: int = 0,
    **training_args: Any,
) -> Path:
    """A VinVL/OSCAR coco_ir checkpoint directory (e.g. ``.../checkpoint-0132780/``); returns it.

    ``config`` is an :func:`oscar_config_dict`; its ``vocab_size`` must equal ``len(vocab_tokens)``.
    ``training_args`` override fields of :func:`oscar_training_args`.
    """
    out = Path(out_dir)
    if config.get("vocab_size") != len(vocab_tokens):
        fail(f"OSCAR config: vocab_size {config.get('vocab_size')} differs from the {len(vocab_tokens)} vocab tokens")
    state = random_state_dict(oscar_state_dict_shapes(config), seed=seed)
    save_atomic(state, out / "pytorch_model.bin")
    write_json_atomic(out / "config.json", dict(config), sort_keys=True)
    write_lines_atomic(out / "vocab.txt", vocab_tokens)
    write_json_atomic(out / "special_tokens_map.json", {
        "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]",
    }, indent=None)
    write_json_atomic(out / "added_tokens.json", {}, indent=None)
    save_atomic(oscar_training_args(config, **training_args), out / "training_args.bin")
    return out


__all__ = [
    "BERT_TIED",
    "OSCAR_CHECKPOINT_NAME",
    "UNITER_BASE_CONFIG",
    "UNITER_LARGE_CONFIG",
    "UNITER_TIED",
    "bert_config_dict",
    "bert_encoder_shapes",
    "bert_vocab_tokens",
    "google_bert_state_dict_shapes",
    "oscar_config_dict",
    "oscar_state_dict_shapes",
    "oscar_training_args",
    "random_state_dict",
    "tiny_config",
    "uniter_state_dict_shapes",
    "write_bert_dir",
    "write_oscar_checkpoint_dir",
    "write_uniter_checkpoint",
]
