"""The original Python API: ``from evaluation import evalrank, encode_data, i2t, t2i``, ``evaluation_models``'
``evalrank_single(model_path, test_opt, data_path, split, fold5, data_loader)`` / ``evalrank_ensemble`` /
ensemble ``i2t`` / ``t2i``, and ``python evaluation_models.py`` with the paths edited at the top of the file."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
from dime_testlib import PACKAGE_DIR, PYTHON, python_env

from itr_common.testing import check_usage_error


@pytest.fixture
def original_modules(monkeypatch):
    """The package folder's ``evaluation`` / ``evaluation_models`` modules, imported as the original's users do."""
    import importlib
    import sys

    monkeypatch.syspath_prepend(str(PACKAGE_DIR))
    for name in ("evaluation", "evaluation_models"):
        sys.modules.pop(name, None)
    evaluation = importlib.import_module("evaluation")
    evaluation_models = importlib.import_module("evaluation_models")
    yield evaluation, evaluation_models
    for name in ("evaluation", "evaluation_models"):
        sys.modules.pop(name, None)


def _argsort_ranks(sims: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The original's rank loops (one argsort per query), 5 captions per image."""
    npts = sims.shape[0]
    ranks = np.zeros(npts)
    for index in range(npts):
        inds = np.argsort(sims[index])[::-1]
        ranks[index] = min(np.where(inds == i)[0][0] for i in range(5 * index, 5 * index + 5))
    ranks_t = np.zeros(5 * npts)
    for j in range(5 * npts):
        inds = np.argsort(sims.T[j])[::-1]
        ranks_t[j] = np.where(inds == j // 5)[0][0]
    return ranks, ranks_t


def _recalls(ranks: np.ndarray) -> tuple[float, ...]:
    return tuple(100.0 * np.mean(ranks < k) for k in (1, 5, 10)) + (np.floor(np.median(ranks)) + 1, ranks.mean() + 1)


def test_encode_data_i2t_t2i_as_the_original(original_modules, trained, world):
    from evaluation import encode_data, get_test_loader, i2t, t2i

    from itr_dime.checkpoints import load_model

    evaluation, evaluation_models = original_modules
    path = trained["f30k_precomp/i2t"]
    model, opt, _ = load_model(path)
    loader = get_test_loader("test", opt.data_name, opt.batch_size, 0, opt)
    rgn, img, wrd, stc, stc_lens = encode_data(model, loader, opt)
    n_cap = len(loader.dataset)
    assert n_cap == 100 and rgn.shape[0] == img.shape[0] == wrd.shape[0] == stc.shape[0] == stc_lens.shape[0] == n_cap
    np.testing.assert_array_equal(rgn[0], rgn[4])  # one row per caption: image 0's five captions
    r, (ranks, top1), sims = i2t(model, (rgn, img, wrd, stc), stc_lens, opt, return_ranks=True)
    assert sims.shape == (20, 100)
    ri, (ranks_t, _) = t2i(model, sims, opt, return_ranks=True)
    assert len(t2i(model, sims, opt)) == 5 and len(i2t(model, (rgn, img, wrd, stc), stc_lens, opt)) == 2
    original_i2t, original_t2i = _argsort_ranks(sims)
    np.testing.assert_array_equal(ranks, original_i2t)
    np.testing.assert_array_equal(ranks_t, original_t2i)
    assert r == pytest.approx(_recalls(original_i2t)) and ri == pytest.approx(_recalls(original_t2i))
    # the same numbers as evalrank_single, with test_opt in second place as the original's signature
    result = evaluation_models.evalrank_single(str(path), None, str(world / "data"), "test", False)
    assert result.i2t == pytest.approx(r, abs=1e-6) and result.t2i == pytest.approx(ri, abs=1e-6)


def test_evalrank_single_reads_a_given_data_loader(original_modules, trained):
    from evaluation import get_test_loader

    from itr_dime.checkpoints import load_model

    _, evaluation_models = original_modules
    path = str(trained["f30k_precomp/t2i"])
    _, opt, _ = load_model(path)
    expected = evaluation_models.evalrank_single(path, split="test")
    loader = get_test_loader("test", opt.data_name, 16, 0, opt)
    assert evaluation_models.evalrank_single(path, data_loader=loader).rsum == pytest.approx(expected.rsum)
    plain_batches = list(loader)  # any iterable of the original batches: encoded through encode_data
    assert evaluation_models.evalrank_single(path, data_loader=plain_batches).rsum == pytest.approx(expected.rsum)


def test_fold5_returns_the_data_loader_for_the_next_model(original_modules, trained):
    _, evaluation_models = original_modules
    first = str(trained["coco_precomp/i2t"])
    loader = evaluation_models.evalrank_single(first, split="testall", fold5=True)
    assert isinstance(loader, torch.utils.data.DataLoader)
    assert loader.result.protocol == "coco-1k-fold5" and len(loader.result.folds) == 5
    again = evaluation_models.evalrank_single(str(trained["coco_precomp/t2i"]), split="testall", fold5=True,
                                              data_loader=loader)
    assert again is loader and again.result.extras["directions"] == ["t2i"]


def test_evalrank_writes_ranks_and_ensemble_matches_its_i2t(original_modules, trained, tmp_path, monkeypatch):
    from evaluation import encode_data, get_test_loader

    from itr_dime.checkpoints import load_model

    evaluation, evaluation_models = original_modules
    monkeypatch.chdir(tmp_path)
    path, path2 = str(trained["f30k_precomp/i2t"]), str(trained["f30k_precomp/t2i"])
    result = evaluation.evalrank(path, split="test")
    ranks = torch.load(tmp_path / "ranks.pth.tar", weights_only=False)
    assert ranks["rt"][0].shape == (20,) and ranks["rti"][0].shape == (100,)
    assert result.i2t[0] == pytest.approx(100.0 * np.mean(ranks["rt"][0] < 1))

    ensemble = evaluation_models.evalrank_ensemble(path, path2, split="test", ranks_path=None)
    model, opt, _ = load_model(path)
    model2, opt2, _ = load_model(path2)
    loader = get_test_loader("test", opt.data_name, opt.batch_size, 0, opt)
    embs = encode_data(model, loader, opt)
    embs2 = encode_data(model2, loader, opt2)
    r, sims = evaluation_models.i2t(model, model2, embs[:4], embs2[:4], embs[4], embs2[4], opt)
    ri = evaluation_models.t2i(sims, opt)
    assert ensemble.i2t == pytest.approx(r, abs=1e-6) and ensemble.t2i == pytest.approx(ri, abs=1e-6)


def test_unknown_keyword_fails_naming_the_valid_ones(original_modules, trained):
    from itr_common.errors import UserError

    _, evaluation_models = original_modules
    with pytest.raises(UserError, match="batchsize.*batch_size"):
        evaluation_models.evalrank_single(str(trained["f30k_precomp/i2t"]), batchsize=4)


def _edited_script(tmp_path, **values: str):
    script = tmp_path / "evaluation_models.py"
    text = (PACKAGE_DIR / "evaluation_models.py").read_text()
    for name, value in values.items():
        text, n = re.subn(rf"^{name} = .*$", f"{name} = {value}", text, count=1, flags=re.M)
        assert n == 1, name
    script.write_text(text)
    return script


@pytest.mark.slow
def test_python_evaluation_models_py_with_edited_paths(trained, world, tmp_path):
    """The original README: edit model_path / data_path at the top of evaluation_models.py, run it."""
    copy = tmp_path / "copy"
    copy.mkdir()
    script = _edited_script(copy, model_path=repr(str(trained["f30k_precomp/i2t"])),
                            model_path2=repr(str(trained["f30k_precomp/t2i"])),
                            data_path=repr(str(world / "data")), split='"test"')
    proc = subprocess.run([PYTHON, script.name], cwd=copy, capture_output=True, text=True, env=python_env(),
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    # the result goes beside the (first) checkpoint, not into the folder the script runs from
    result = trained["f30k_precomp/i2t"].parent / "dime_result_ensemble_1k.json"
    assert "rsum:" in proc.stdout and result.is_file() and str(result) in proc.stdout
    assert sorted(p.name for p in copy.iterdir()) == ["evaluation_models.py"]
    assert json.loads(result.read_text())["extras"]["latency_ms_per_query"] > 0
    result.unlink()
    assert "Flickr30K_DIME_it" not in proc.stdout + proc.stderr

    shutil.rmtree(copy)
    copy.mkdir()
    for values, needle in (({"model_path": repr(str(tmp_path / "missing.pth.tar"))}, "missing.pth.tar"),
                           ({"fold5": '"yes"'}, "fold5")):
        script = _edited_script(copy, **values)
        check_usage_error([PYTHON, script.name], [], needle, cwd=copy, env=python_env(), untouched=[copy])
