"""BERT from a local ``--bert_path`` directory: WordPiece tokenizer, caption ids, pretrained model.

DIME, CAMERA and SelfAlign read three files from ``--bert_path``: ``vocab.txt``, ``bert_config.json``
and ``pytorch_model.bin``, a Google BERT checkpoint converted to PyTorch. Converters of different
ages wrote different key names for the same weights: LayerNorm ``gamma``/``beta`` (the first
pytorch-pretrained-BERT) or ``weight``/``bias``, with a ``bert.`` prefix and ``cls.*`` pretraining
heads (a converted ``BertForPreTraining``) or without. :func:`load_bert_model` accepts all of them,
and Hugging Face directories (``config.json``, ``pytorch_model.bin`` or ``model.safetensors``) too,
and returns a :class:`transformers.BertModel` with eager attention (so attention maps can be
returned). :func:`to_google_key_names` writes the Google-converted names back.

transformers is imported inside the functions that need it, so importing this module stays cheap.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from itr_common.errors import did_you_mean, fail, require_dir, require_file
from itr_common.fileio import read_json

if TYPE_CHECKING:
    from transformers import BertConfig, BertModel, BertTokenizer

__all__ = [
    "BERT_CONFIG_FILES",
    "BERT_WEIGHT_FILES",
    "VOCAB_FILE",
    "bert_config_from_json",
    "encode_caption",
    "encode_captions",
    "find_bert_config",
    "find_bert_weights",
    "from_google_key_names",
    "load_bert_model",
    "load_bert_state_dict",
    "load_bert_tokenizer",
    "read_wordpiece_vocab",
    "to_google_key_names",
]

logger = logging.getLogger(__name__)

VOCAB_FILE = "vocab.txt"
BERT_CONFIG_FILES = ("bert_config.json", "config.json")  # Google-converted first, as DIME/CAMERA read it
BERT_WEIGHT_FILES = ("pytorch_model.bin", "model.safetensors")
REQUIRED_CONFIG_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
SPECIAL_WORDPIECES = ("[CLS]", "[SEP]", "[UNK]")
HEAD_PREFIXES = ("cls.",)  # BertForPreTraining's masked-LM and next-sentence heads
IGNORED_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")  # saved by some HF versions

# ------------------------------------------------------------------------------------- tokenizer


def _vocab_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_dir():
        return require_file(path / VOCAB_FILE, "BERT vocabulary (vocab.txt)")
    return require_file(path, "BERT vocabulary (vocab.txt)")


def read_wordpiece_vocab(path: str | os.PathLike) -> dict[str, int]:
    """``vocab.txt`` (a directory holding it, or the file) -> {wordpiece: line number}.

    Lines are stripped as Google's ``tokenization.load_vocab`` does.
    """
    vocab_file = _vocab_file(path)
    try:
        lines = vocab_file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        fail(f"{vocab_file}: expected a UTF-8 WordPiece vocabulary, found undecodable bytes ({err})")
    vocab = {line.strip(): index for index, line in enumerate(lines)}
    missing = [token for token in SPECIAL_WORDPIECES if token not in vocab]
    if missing:
        fail(f"{vocab_file}: expected a BERT WordPiece vocabulary with {list(SPECIAL_WORDPIECES)}, missing {missing}")
    return vocab


def load_bert_tokenizer(path: str | os.PathLike, do_lower_case: bool = True) -> BertTokenizer:
    """A :class:`transformers.BertTokenizer` on the ``vocab.txt`` in directory ``path`` (or at ``path``).

    ``do_lower_case`` is True for the uncased models the papers use (DIME/CAMERA hard-code it).
    """
    from transformers import BertTokenizer

    vocab_file = _vocab_file(path)
    vocab = read_wordpiece_vocab(vocab_file)
    if "vocab" in inspect.signature(BertTokenizer.__init__).parameters:
        # transformers 5: the constructor takes the vocabulary itself and silently ignores
        # vocab_file=..., which would map every word to [UNK].
        tokenizer = BertTokenizer(vocab=vocab, do_lower_case=do_lower_case)
    else:  # transformers 4
        tokenizer = BertTokenizer(vocab_file=str(vocab_file), do_lower_case=do_lower_case)
    probe = next((t for t in vocab if t.isalpha() and (t.islower() or not do_lower_case)), "[SEP]")
    if tokenizer.convert_tokens_to_ids(probe) != vocab[probe]:
        raise RuntimeError(
            f"transformers' BertTokenizer did not take the vocabulary {vocab_file}: "
            f"'{probe}' -> {tokenizer.convert_tokens_to_ids(probe)}, expected {vocab[probe]}"
        )
    return tokenizer


def _check_max_words(max_words: int) -> None:
    if max_words < 2:
        fail(f"--max_words: expected at least 2 (room for [CLS] and [SEP]), found {max_words}")


def _as_text(caption: str | bytes) -> str:
    return caption.decode("utf-8") if isinstance(caption, bytes | bytearray) else caption


def encode_captions(
    tokenizer: BertTokenizer, captions: Sequence[str | bytes], max_words: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Captions -> ``([CLS] wordpieces [SEP]`` zero-padded ids, lengths), DIME/CAMERA's ``convert_to_feature``.

    The wordpieces are cut to ``max_words - 2`` before ``[CLS]``/``[SEP]`` are added, so a long
    caption keeps its ``[SEP]`` at position ``max_words - 1``.

    Returns ids (B, max_words) long and lengths (B,) long (= tokens incl. [CLS]/[SEP] = sum of the
    original ``input_mask``); the attention mask is ``arange(max_words) < lengths[:, None]`` and the
    token type ids are all zero.
    """
    _check_max_words(max_words)
    texts = [_as_text(c) for c in captions]
    ids = torch.zeros(len(texts), max_words, dtype=torch.long)
    lengths = torch.zeros(len(texts), dtype=torch.long)
    if not texts:
        return ids, lengths
    pieces = tokenizer(texts, add_special_tokens=False)["input_ids"]
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    for row, wordpiece_ids in enumerate(pieces):
        sequence = [cls_id, *wordpiece_ids[: max_words - 2], sep_id]
        ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        lengths[row] = len(sequence)
    return ids, lengths


def encode_caption(tokenizer: BertTokenizer, caption: str | bytes, max_words: int = 32) -> tuple[torch.Tensor, int]:
    """One caption -> (ids (max_words,) long, length int); see :func:`encode_captions`."""
    ids, lengths = encode_captions(tokenizer, [caption], max_words)
    return ids[0], int(lengths[0])


# ---------------------------------------------------------------------------------------- config


def _known_config_attributes() -> set[str]:
    from transformers import BertConfig

    config = BertConfig()
    return set(config.to_dict()) | {name for name in dir(config) if not name.startswith("_")}


def bert_config_from_json(path: str | os.PathLike, **overrides: Any) -> BertConfig:
    """``bert_config.json`` (Google) or ``config.json`` (Hugging Face) -> :class:`transformers.BertConfig`.

    ``overrides`` replace values of the file (e.g. ``hidden_dropout_prob=0.0``); unknown names
    fail. Attention is always ``eager``, which transformers 5 needs to return attention maps.
    """
    from transformers import BertConfig

    path = Path(path)
    values = read_json(path, "BERT config", expect=dict)
    missing = [key for key in REQUIRED_CONFIG_KEYS if key not in values]
    if missing:
        fail(f"{path}: expected BERT config keys {list(REQUIRED_CONFIG_KEYS)}, missing {missing}")
    model_type = values.get("model_type", "bert")
    if model_type != "bert":
        logger.warning("%s: model_type is '%s'; reading it as a BERT config", path, model_type)
    if overrides:
        known = _known_config_attributes()
        for key in overrides:
            if key not in known and key not in values:
                fail(f"BERT config override '{key}': not a BertConfig field{did_you_mean(key, known)}")
    values = {key: value for key, value in values.items() if key != "model_type"}
    return BertConfig.from_dict({**values, **overrides}, attn_implementation="eager")


def find_bert_config(directory: str | os.PathLike) -> Path:
    """The config file of a BERT directory: ``bert_config.json``, else ``config.json``."""
    return _first_file_in_bert_dir(directory, BERT_CONFIG_FILES, "a BERT config")


def find_bert_weights(directory: str | os.PathLike) -> Path:
    """The weights file of a BERT directory: ``pytorch_model.bin``, else ``model.safetensors``."""
    return _first_file_in_bert_dir(directory, BERT_WEIGHT_FILES, "BERT weights")


def _first_file_in_bert_dir(directory: str | os.PathLike, names: Sequence[str], what: str) -> Path:
    """The first of ``names`` that is a file in the BERT directory, or fail naming them all."""
    directory = require_dir(directory, "BERT directory")
    for name in names:
        if (directory / name).is_file():
            return directory / name
    fail(f"{directory}: expected {what} ({' or '.join(names)}), found neither")


# --------------------------------------------------------------------------------------- weights


def load_bert_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of ``pytorch_model.bin`` (``torch.load(weights_only=True)``) or ``*.safetensors``, on CPU."""
    path = require_file(path, "BERT weights")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to read is a bad file
        fail(f"{path}: expected a PyTorch state dict of BERT weights, could not load it ({type(err).__name__}: {err})")
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        fail(f"{path}: expected a state dict mapping names to tensors, found {type(state).__name__}")
    return dict(state)


_GOOGLE_SUFFIX = re.compile(r"\.(gamma|beta)$")
_HF_LAYER_NORM_SUFFIX = re.compile(r"(LayerNorm)\.(weight|bias)$")


def from_google_key_names(
    state_dict: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename a converted Google checkpoint to :class:`transformers.BertModel` names.

    ``bert.`` prefix dropped, ``gamma``/``beta`` -> ``weight``/``bias``; the ``cls.*`` pretraining
    heads and saved ``position_ids``/``token_type_ids`` buffers are set aside.
    Returns (renamed state dict, names set aside).
    """
    renamed: dict[str, torch.Tensor] = {}
    set_aside: list[str] = []
    for key, value in state_dict.items():
        if key.startswith(HEAD_PREFIXES):
            set_aside.append(key)
            continue
        name = key.removeprefix("bert.")
        if name in IGNORED_BUFFERS:
            set_aside.append(key)
            continue
        name = _GOOGLE_SUFFIX.sub(lambda m: ".weight" if m.group(1) == "gamma" else ".bias", name)
        if name in renamed:
            fail(f"BERT checkpoint: two keys map to '{name}' (one of them '{key}')")
        renamed[name] = value
    return renamed, set_aside


def to_google_key_names(state_dict: Mapping[str, torch.Tensor], prefix: str = "bert.") -> dict[str, torch.Tensor]:
    """Inverse of :func:`from_google_key_names`: LayerNorm ``weight``/``bias`` -> ``gamma``/``beta``
    and ``prefix`` added, the names a converted Google checkpoint (pytorch-pretrained-BERT) has."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        name = _HF_LAYER_NORM_SUFFIX.sub(lambda m: f"{m.group(1)}.{'gamma' if m.group(2) == 'weight' else 'beta'}", key)
        out[name if name.startswith(prefix) else prefix + name] = value
    return out


def _preview(names: Iterable[str], limit: int = 5) -> str:
    names = sorted(names)
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def load_bert_model(path: str | os.PathLike, **config_overrides: Any) -> BertModel:
    """A pretrained :class:`transformers.BertModel` from a ``--bert_path`` directory, in eval mode.

    The directory holds ``bert_config.json`` or ``config.json`` and ``pytorch_model.bin`` or
    ``model.safetensors``; key names may be Google-converted (see :func:`from_google_key_names`).
    Pretraining heads are skipped, other unexpected keys are logged, a missing pooler is logged
    (it stays randomly initialised) and any other missing weight or shape mismatch fails.
    ``config_overrides`` go to :func:`bert_config_from_json`. Input (B, L) ids -> last hidden state
    (B, L, hidden_size), pooled output (B, hidden_size).
    """
    from transformers import BertModel

    directory = require_dir(path, "BERT directory")
    config_file = find_bert_config(directory)
    weights_file = find_bert_weights(directory)
    config = bert_config_from_json(config_file, **config_overrides)
    state, set_aside = from_google_key_names(load_bert_state_dict(weights_file))
    if set_aside:
        logger.info(
            "%s: skipped %d keys (pretraining heads, buffers): %s", weights_file, len(set_aside), _preview(set_aside)
        )

    model = BertModel(config)
    expected = model.state_dict()
    unexpected = [k for k in state if k not in expected]
    missing = [k for k in expected if k not in state]
    missing_core = [k for k in missing if not k.startswith("pooler.")]
    if missing_core:
        fail(
            f"{weights_file}: expected BERT encoder weights, missing {len(missing_core)}: {_preview(missing_core)}; "
            f"the file has: {_preview(state) or 'no tensors'}"
        )
    for key, value in state.items():
        if key in expected and tuple(value.shape) != tuple(expected[key].shape):
            fail(
                f"{weights_file}: '{key}' has shape {tuple(value.shape)}, but {config_file.name} gives "
                f"{tuple(expected[key].shape)}"
            )
    if unexpected:
        logger.warning("%s: ignored %d unexpected keys: %s", weights_file, len(unexpected), _preview(unexpected))
    if missing:
        logger.warning(
            "%s: no pooler weights (%s); the pooler stays randomly initialised", weights_file, _preview(missing)
        )
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    return model.eval()
