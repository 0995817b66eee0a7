"""lightningdot-search (gallery index + query) and rerank.py (top M re-scored by UNITER) on the tiny world."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from ldot_testlib import CONFIG_DIR, TINY_EVAL, eval_argv

from itr_common.data.uniter_lmdb import TxtTokLmdb


@pytest.fixture(scope="module")
def gallery(trained_run: Path, world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from itr_lightningdot.eval_itm import main

    out = tmp_path_factory.mktemp("gallery")
    assert main(eval_argv(world, trained_run / "biencoder.last.pt", out / "eval", "--splits", "test",
                          "--save_embeddings", str(out / "index"), "--vocab", str(world / "bert"))) == 0
    return out / "index"


def test_search_ranks_by_the_dot_product_of_the_two_towers(gallery: Path, world: Path, capsys):
    from itr_lightningdot.search import Searcher, main

    txt_db = TxtTokLmdb(world / "txt_db" / "itm_flickr30k_test.db", -1)
    caption = txt_db[txt_db.ids[0]]["raw"]
    assert main(["--index", str(gallery), caption, "--topk", "5"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith(f"query: {caption}") and "ms/query" in printed[0] and len(printed) == 6
    searcher = Searcher.load(gallery)
    query = searcher.embed([caption])
    brute = query @ np.load(gallery / "img_embeddings.npy").T
    ids = searcher.index.index_id_to_db_id
    expected = [ids[j] for j in np.argsort(-brute[0])[:5]]
    assert [line.split()[2] for line in printed[1:]] == expected
    assert float(printed[1].split()[1]) == pytest.approx(float(brute[0].max()), abs=1e-3)


def test_search_build_from_a_checkpoint_matches_the_saved_embeddings(trained_run: Path, world: Path, gallery: Path,
                                                                     tmp_path: Path, capsys):
    from itr_lightningdot.search import main

    out = tmp_path / "built"
    assert main(["--build", "--index", str(out), "--checkpoint", str(trained_run / "biencoder.last.pt"),
                 "--img_db", str(world / "img_db" / "flickr30k"),
                 "--txt_db", str(world / "txt_db" / "itm_flickr30k_test.db"),
                 "--txt_model_config", str(CONFIG_DIR / "bert_tiny.json"),
                 "--img_model_config", str(CONFIG_DIR / "img_tiny.json"), "--project_dim", "64",
                 "--vocab", str(world / "bert"), "--hnsw_index", "a white dog"]) == 0
    assert np.allclose(np.load(out / "img_embeddings.npy"), np.load(gallery / "img_embeddings.npy"), atol=1e-5)
    meta = json.loads((out / "gallery.index_meta.json").read_text())
    assert meta["kind"] == "hnsw" and meta["store_n"] == 512 and len(meta["ids"]) == 20
    assert "(hnsw index, 20 images" in capsys.readouterr().out


def test_search_bad_input_exits_2(gallery: Path, tmp_path: Path, capsys):
    from itr_lightningdot.search import main

    for argv, message in ((["--index", str(gallery), "   "], "non-empty"),
                          (["--index", str(tmp_path / "none"), "a dog"], "--index"),
                          (["--index", str(gallery), "a dog", "--topk", "0"], "--topk")):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2 and message in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    for f in gallery.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    state = torch.load(other / "query_encoder.pt")
    state["encode_proj.3.bias"] = state["encode_proj.3.bias"] + 1  # another model's text tower
    torch.save(state, other / "query_encoder.pt")
    with pytest.raises(SystemExit) as info:
        main(["--index", str(other), "a dog"])
    assert info.value.code == 2 and "not the model the index was built with" in capsys.readouterr().err
    meta = json.loads((gallery / "gallery.index_meta.json").read_text())
    (other / "query_encoder.pt").write_bytes((gallery / "query_encoder.pt").read_bytes())
    (other / "gallery.index_meta.json").write_text(json.dumps({**meta, "dim": 32}))
    with pytest.raises(SystemExit) as info:
        main(["--index", str(other), "a dog"])
    assert info.value.code == 2


@pytest.mark.slow
def test_console_script_exits_0(gallery: Path):
    from itr_common.testing import check_console_script

    check_console_script("lightningdot-search", ["--index", str(gallery), "a red car", "--topk", "3"])


def _rerank_argv(world: Path, trained_run: Path, out: Path, *extra: str) -> list[str]:
    txt, img = world / "txt_db", world / "img_db" / "flickr30k"
    return ["--config", str(TINY_EVAL), "--biencoder_checkpoint", str(trained_run / "biencoder.last.pt"),
            "--test_txt_db", str(txt / "itm_flickr30k_test.db"), "--test_img_db", str(img),
            "--val_txt_db", str(txt / "itm_flickr30k_val.db"), "--val_img_db", str(img),
            "--txt_model_config", str(CONFIG_DIR / "bert_tiny.json"),
            "--img_model_config", str(CONFIG_DIR / "img_tiny.json"), "--output_dir", str(out), *extra]


def test_oracle_rerank_lifts_r1_to_the_bi_encoders_r_at_m(trained_run: Path, world: Path, tmp_path: Path, capsys):
    pytest.importorskip("itr_iais")
    from itr_iais.results_io import write_results
    from itr_lightningdot.rerank import main

    txt_db = TxtTokLmdb(world / "txt_db" / "itm_flickr30k_test.db", -1)
    img_ids = list(dict.fromkeys(txt_db.txt2img[t] for t in txt_db.ids))
    scores = torch.tensor([[1.0 if txt_db.txt2img[t] == i else 0.0 for i in img_ids] for t in txt_db.ids])
    write_results(tmp_path / "oracle", scores, txt_db.ids, img_ids)
    assert main(_rerank_argv(world, trained_run, tmp_path / "rr", "--uniter_results", str(tmp_path / "oracle"),
                             "--thresholds", "5", "10")) == 0
    assert "re-ranked top 10" in capsys.readouterr().out
    rows = json.loads((tmp_path / "rr" / "rerank.json").read_text())["rows"]
    base, top5, top10 = rows
    assert top5["t2i"][0] == pytest.approx(base["t2i"][1]) and top10["t2i"][0] == pytest.approx(base["t2i"][2])
    assert top10["i2t"][0] == pytest.approx(base["i2t"][2])  # an image's own captions move to the top
    bi = json.loads((trained_run / "retrieval_result_test.json").read_text())
    for side in ("t2i", "i2t"):
        assert base[side] == pytest.approx([bi[side]["r1"], bi[side]["r5"], bi[side]["r10"]])


def test_rerank_with_a_uniter_checkpoint_matches_inf_itm_scores(trained_run: Path, world: Path, tmp_path: Path):
    from itr_lightningdot.rerank import main

    start = time.perf_counter()
    assert main(_rerank_argv(world, trained_run, tmp_path / "rr", "--uniter_checkpoint",
                             str(world / "pretrained" / "uniter-tiny.pt"), "--uniter_config",
                             str(world / "pretrained" / "uniter-tiny.json"), "--thresholds", "10")) == 0
    wall = time.perf_counter() - start
    rows = json.loads((tmp_path / "rr" / "rerank.json").read_text())["rows"]
    assert rows[1]["M"] == 10 and rows[1]["pairs_scored"] == 100 * 10 + 20 * 10
    # latency: stage 1 (bi-encoder retrieval) + stage 2 (UNITER re-ranking of the top 10), both stored
    bi = json.loads((tmp_path / "rr" / "retrieval_result.json").read_text())["extras"]
    rr = json.loads((tmp_path / "rr" / "retrieval_result_rerank10.json").read_text())["extras"]
    assert bi["retrieve_s"] == rr["retrieve_s"] > 0 and rr["rerank_s"] > 0
    assert bi["compute_s"] == pytest.approx(bi["retrieve_s"]) and bi["latency_ms_per_query"] > 0
    assert rr["compute_s"] == pytest.approx(rr["retrieve_s"] + rr["rerank_s"]) and rr["compute_s"] < wall
    assert rr["latency_ms_per_query"] == pytest.approx(1000 * rr["compute_s"] / 120)
    assert rr["latency_ms_per_query"] > bi["latency_ms_per_query"]
    assert rows[1]["t2i"][2] == pytest.approx(rows[0]["t2i"][2])  # R@10 of a top-10 re-rank cannot change
    iais = pytest.importorskip("itr_iais.inf_itm")
    assert iais.main(["--txt_db", str(world / "txt_db" / "itm_flickr30k_test.db"),
                      "--img_db", str(world / "img_db" / "flickr30k"),
                      "--checkpoint", str(world / "pretrained" / "uniter-tiny.pt"),
                      "--model_config", str(world / "pretrained" / "uniter-tiny.json"),
                      "--output_dir", str(tmp_path / "inf")]) == 0
    assert main(_rerank_argv(world, trained_run, tmp_path / "rr2", "--uniter_results", str(tmp_path / "inf"),
                             "--thresholds", "10")) == 0
    from_matrix = json.loads((tmp_path / "rr2" / "rerank.json").read_text())["rows"]
    for a, b in zip(rows, from_matrix):  # our pair scoring = IAIS inf_itm's all-pairs matrix, re-ranking alike
        assert a["i2t"] == pytest.approx(b["i2t"]) and a["t2i"] == pytest.approx(b["t2i"])
