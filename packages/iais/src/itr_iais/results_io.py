"""``results.bin`` of ``inf_itm.py``: the original pickle, a safe twin, and a loader that runs no code.

The original writes ``pickle.dump((score_matrix, txt_ids, img_ids))`` with a torch tensor inside
(LightningDOT's re-ranking reads it). We write the same file and, beside it, ``results.npz``
(``scores`` float32, ``txt_ids``, ``img_ids`` as unicode arrays; no pickle). :func:`load_results`
reads the npz when it is there, and otherwise unpickles ``results.bin`` through an allow-list that
only rebuilds tensors (their storage is read by ``torch.load(weights_only=True)``), lists and strings.
"""

from __future__ import annotations

import io
import os
import pickle
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from itr_common.errors import UserError, require_file
from itr_common.fileio import write_bytes_atomic

RESULTS_BIN = "results.bin"
RESULTS_NPZ = "results.npz"


def write_results(output_dir: str | os.PathLike, scores: torch.Tensor, txt_ids: Sequence[str],
                  img_ids: Sequence[str]) -> tuple[Path, Path]:
    """Write ``results.bin`` (the original pickle) and ``results.npz`` (safe) into ``output_dir``."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    scores = scores.detach().cpu()
    bin_path, npz_path = out / RESULTS_BIN, out / RESULTS_NPZ
    write_bytes_atomic(bin_path, pickle.dumps((scores, list(txt_ids), list(img_ids))))
    buffer = io.BytesIO()
    np.savez(buffer, scores=scores.float().numpy(), txt_ids=np.array(list(txt_ids), dtype=str),
             img_ids=np.array(list(img_ids), dtype=str))
    write_bytes_atomic(npz_path, buffer.getvalue())
    return bin_path, npz_path


def _storage_from_bytes(data: bytes) -> Any:
    """``torch.storage._load_from_bytes`` without code execution, on CPU."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("collections", "OrderedDict"): OrderedDict,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def load_results(path: str | os.PathLike) -> tuple[torch.Tensor, list[str], list[str]]:
    """(scores (n_txt, n_img) float tensor, txt_ids, img_ids) from an output dir, results.npz or results.bin."""
    target = Path(path)
    if target.is_dir():
        target = target / RESULTS_NPZ if (target / RESULTS_NPZ).is_file() else target / RESULTS_BIN
    require_file(target, "inference results")
    if target.suffix == ".npz":
        try:
            with np.load(target, allow_pickle=False) as data:
                return (torch.from_numpy(data["scores"]), [str(x) for x in data["txt_ids"]],
                        [str(x) for x in data["img_ids"]])
        except (ValueError, KeyError, OSError) as err:
            raise UserError(f"{target}: expected scores, txt_ids and img_ids arrays, found unreadable data ({err})"
                            ) from None
    try:
        with open(target, "rb") as handle:
            loaded = _RestrictedUnpickler(handle).load()
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, TypeError) as err:
        raise UserError(f"{target}: not a safe results.bin ({err})") from None
    if not (isinstance(loaded, tuple) and len(loaded) == 3 and isinstance(loaded[0], torch.Tensor)):
        raise UserError(f"{target}: expected (score_matrix, txt_ids, img_ids), found {type(loaded).__name__}")
    scores, txt_ids, img_ids = loaded
    return scores.float(), [str(t) for t in txt_ids], [str(i) for i in img_ids]
