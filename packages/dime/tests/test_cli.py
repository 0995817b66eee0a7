"""Command lines: the original script names, bad input (one line, exit 2), evaluation, ensemble,
COCO 1K-fold5 / 5K, the reproduce table."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import time
from pathlib import Path

import pytest
from dime_testlib import PACKAGE_DIR, PYTHON, python_env, train_argv

from itr_common.testing import check_console_script, check_usage_error, stderr_report


def test_missing_data_path_exits_2(world, tmp_path):
    from itr_dime.train import main

    argv = train_argv(world, tmp_path / "run")
    argv[argv.index("--data_path") + 1] = str(tmp_path / "nowhere")
    check_usage_error(main, argv, "nowhere", "not found", untouched=[tmp_path / "run"])


def test_missing_bert_path_exits_2(world, tmp_path):
    from itr_dime.train import main

    argv = train_argv(world, tmp_path / "run")
    argv[argv.index("--bert_path") + 1] = str(tmp_path / "no_bert")
    check_usage_error(main, argv, "no_bert", "--bert_path", untouched=[tmp_path / "run"])


def test_missing_resume_checkpoint_exits_2(world, tmp_path):
    from itr_dime.train import main

    check_usage_error(main, train_argv(world, tmp_path / "run", "f30k_precomp", None, "--resume",
                                       str(tmp_path / "gone.pth.tar")),
                      "gone.pth.tar", "--resume", untouched=[tmp_path / "run"])


def test_wrong_img_dim_exits_2(world, tmp_path):
    from itr_dime.train import main

    check_usage_error(main, train_argv(world, tmp_path / "run", "f30k_precomp", None, "--img_dim", "2048"),
                      "--img_dim", "expected 32", untouched=[tmp_path / "run"])


def test_missing_or_corrupt_checkpoint_exits_2(in_package_dir, tmp_path):
    from itr_dime.evaluate_models import main

    # the script's default: pretrain_model/flickr/Flickr30K_DIME_it.pth.tar
    check_usage_error(main, [], "Flickr30K_DIME_it.pth.tar", "not found")
    corrupt = tmp_path / "corrupt.pth.tar"
    corrupt.write_bytes(b"not a checkpoint")
    check_usage_error(main, ["--model_path", str(corrupt), "--out", str(tmp_path / "r.json")], "corrupt.pth.tar",
                      untouched=[tmp_path / "r.json"])


def test_evaluate_single_model_flickr(trained, world, tmp_path, capsys):
    from itr_dime.evaluate_models import evaluate

    out = tmp_path / "result.json"
    start = time.perf_counter()
    result = evaluate(["--model_path", str(trained["f30k_precomp/i2t"]), "--data_path", str(world / "data"),
                   "--split", "test", "--shard_size", "7", "--out", str(out)])
    wall = time.perf_counter() - start
    printed = capsys.readouterr().out
    assert "Protocol: 1k" in printed and "rsum:" in printed and "Image to text:" in printed
    record = json.loads(out.read_text())
    assert record["protocol"] == "1k" and record["n_images"] == 20 and record["n_captions"] == 100
    assert record["rsum"] == pytest.approx(sum(result.i2t[:3]) + sum(result.t2i[:3]))
    assert f"rsum: {result.rsum:.2f}" in printed
    # the encode + score time, model loading excluded: below the call's wall time, spread over 120 queries
    extras = record["extras"]
    assert extras["latency_ms_per_query"] > 0 and 0 < extras["compute_s"] < wall
    assert extras["latency_ms_per_query"] == pytest.approx(1000 * extras["compute_s"] / 120)


def test_shard_size_does_not_change_the_scores(trained):
    from itr_common.data.precomp import PrecompSplit
    from itr_common.text import load_bert_tokenizer
    from itr_dime.checkpoints import load_model
    from itr_dime.evaluation import encode_split, score_matrix

    model, opt, _ = load_model(trained["f30k_precomp/t2i"])
    split = PrecompSplit(opt.data_path, opt.data_name, "test")
    enc = encode_split(model, split, load_bert_tokenizer(opt.bert_path), opt.max_words, 16)
    import torch

    torch.testing.assert_close(score_matrix(model, enc, 3), score_matrix(model, enc, 64), atol=1e-5, rtol=1e-5)


def test_scoring_runs_where_the_model_lives_unless_told():
    import torch

    from itr_dime.evaluation import model_device

    assert model_device(torch.nn.Linear(2, 2)) == torch.device("cpu")
    assert model_device(torch.nn.Linear(2, 2, device="meta")) == torch.device("meta")
    assert model_device(torch.nn.Linear(2, 2), "meta") == torch.device("meta")

def test_evaluate_ensemble_is_the_mean_of_both_score_matrices(trained, tmp_path):
    import torch

    from itr_dime.evaluation import ensemble_scores
    from itr_dime.evaluation_models import EvalSettings, evalrank, load_and_encode

    paths = [trained["f30k_precomp/i2t"], trained["f30k_precomp/t2i"]]
    settings = EvalSettings(split="test")
    loaded = load_and_encode(paths, settings)
    mean = ensemble_scores(loaded.models, loaded.encoded)
    from itr_dime.evaluation import score_matrix

    separate = [score_matrix(m, e) for m, e in zip(loaded.models, loaded.encoded, strict=True)]
    torch.testing.assert_close(mean, (separate[0] + separate[1]) / 2)
    result = evalrank(paths, settings)
    assert result.extras["ensemble"] and result.extras["directions"] == ["i2t", "t2i"]


def test_coco_fold5_and_5k(trained, tmp_path, capsys):
    from itr_common.metrics import evaluate_sims
    from itr_dime.evaluate_models import evaluate
    from itr_dime.evaluation import score_matrix
    from itr_dime.evaluation_models import EvalSettings, load_and_encode

    path = str(trained["coco_precomp/i2t"])
    fold5 = evaluate(["--model_path", path, "--split", "testall", "--fold5", "--out", str(tmp_path / "1k.json")])
    assert fold5.protocol == "coco-1k-fold5" and len(fold5.folds) == 5
    assert "Fold 4:" in capsys.readouterr().out
    five_k = evaluate(["--model_path", path, "--split", "testall", "--out", str(tmp_path / "5k.json")])
    assert five_k.protocol == "coco-5k" and five_k.n_images == 20
    # the fold5 run scores only the diagonal blocks: same numbers as the folds of the full matrix
    loaded = load_and_encode([path], EvalSettings(split="testall"))
    full = evaluate_sims(score_matrix(loaded.models[0], loaded.encoded[0]), "coco-1k-fold5")
    assert fold5.i2t == pytest.approx(full.i2t) and fold5.t2i == pytest.approx(full.t2i)


def test_reproduce_prints_paper_rows(trained, tmp_path, capsys):
    from itr_dime.reproduce import run

    out = tmp_path / "repro.json"
    comparisons = run(["--model_path", str(trained["coco_precomp/i2t"]), "--model_path2",
                        str(trained["coco_precomp/t2i"]), "--out", str(out)])
    printed = capsys.readouterr().out
    assert "DIME-ensemble | protocol coco-1k-fold5" in printed and "DIME-ensemble | protocol coco-5k" in printed
    assert "78.8" in printed and "59.3" in printed  # paper DIME* COCO 1K / 5K i2t R@1
    record = json.loads(out.read_text())
    assert record["row"] == "DIME-ensemble"
    assert [c["paper"]["i2t"][0] for c in record["comparisons"]] == [78.8, 59.3]
    assert [c.result.protocol for c in comparisons] == ["coco-1k-fold5", "coco-5k"]


def test_reproduce_single_flickr_model(trained, tmp_path, capsys):
    from itr_dime.reproduce import main

    main(["--model_path", str(trained["f30k_precomp/t2i"])])
    printed = capsys.readouterr().out
    assert "DIME-t2i | protocol 1k (f30k)" in printed and "77.5" in printed
    # the comparison JSON goes beside the checkpoint by default, not into the working folder
    saved = Path(trained["f30k_precomp/t2i"]).parent / "dime_reproduce.json"
    assert json.loads(saved.read_text())["row"] == "DIME-t2i"


def test_original_script_names_exist_and_run(in_package_dir):
    for name in ("train.py", "evaluate_models.py"):
        proc = subprocess.run([PYTHON, name, "--help"], capture_output=True, text=True, env=python_env(), timeout=120)
        assert proc.returncode == 0 and ("--model_path" in proc.stdout or "--lambda_softmax_CMRC" in proc.stdout)
    for name in ("evaluation.py", "evaluation_models.py"):
        spec = importlib.util.spec_from_file_location(f"dime_shim_{name[:-3]}", PACKAGE_DIR / name)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert callable(module.main)
    proc = subprocess.run([PYTHON, "-m", "itr_dime.train", "--lambda_softmax=4", "--direction", "x"],
                          capture_output=True, text=True, env=python_env(), timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "--direction" in proc.stderr


def test_readme_training_command_verbatim(world, tmp_path):
    """README: python train.py --data_path $DATA_PATH --bert_path $BERT_PATH --data_name f30k_precomp
    --logger_name runs/filker_DIME --direction i2t --extra_stc 1 --lambda_softmax=4 (+ the tiny config)."""
    argv = ["--data_path", str(world / "data"), "--bert_path", str(world / "bert"), "--data_name", "f30k_precomp",
            "--logger_name", "runs/filker_DIME", "--direction", "i2t", "--extra_stc", "1", "--lambda_softmax=4",
            "--img_dim", "32", "--embed_size", "16", "--hid_IMRC", "16", "--hid_router", "16", "--num_head_IMRC", "4",
            "--num_epochs", "1", "--batch_size", "48", "--workers", "0"]
    proc = subprocess.run([PYTHON, str(PACKAGE_DIR / "train.py"), *argv], cwd=tmp_path, capture_output=True,
                          text=True, env=python_env(), timeout=300)
    assert proc.returncode == 0, stderr_report(proc.stderr, 2000)
    assert (tmp_path / "runs/filker_DIME/model_best.pth.tar").is_file()
    assert "Text to image:" in proc.stderr


def test_mixed_precision_scores_track_fp32(trained):
    import torch

    from itr_common.data.precomp import PrecompSplit
    from itr_common.text import load_bert_tokenizer
    from itr_dime.checkpoints import load_model
    from itr_dime.evaluation import encode_split, score_matrix

    model, opt, _ = load_model(trained["f30k_precomp/i2t"])
    split = PrecompSplit(opt.data_path, opt.data_name, "test")
    tokenizer = load_bert_tokenizer(opt.bert_path)
    full = score_matrix(model, encode_split(model, split, tokenizer, opt.max_words, 16), 32)
    half = score_matrix(model, encode_split(model, split, tokenizer, opt.max_words, 16, fp16=True), 32, fp16=True)
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    torch.testing.assert_close(half, full, atol=0.05, rtol=0.05)  # bf16 autocast on CPU


@pytest.mark.slow
def test_console_scripts_exit_0_through_the_installed_entry_points(world, tmp_path):
    """``dime-train``, ``dime-evaluate`` and ``dime-reproduce`` as a user runs them: status 0, no repr."""
    run = tmp_path / "run"
    check_console_script("dime-train", train_argv(world, run, "f30k_precomp", None, "--num_epochs", "1",
                                                  "--batch_size", "48"))
    best = str(run / "model_best.pth.tar")
    out = check_console_script("dime-evaluate", ["--model_path", best, "--out", str(tmp_path / "e.json")])
    assert "rsum:" in out.stdout and (tmp_path / "e.json").is_file()
    out = check_console_script("dime-reproduce", ["--model_path", best, "--out", str(tmp_path / "r.json")])
    assert "DIME-i2t" in out.stdout and (tmp_path / "r.json").is_file()
