"""Building the LMDBs from raw data: ``prepro.py --task itm`` (Karpathy JSON -> txt_db) and
``scripts/convert_imgdir.py`` (bottom-up npz folder -> img_db), as a user runs them, against the synthetic world's
released-layout dbs; kill + rerun; bad input exits 2; a training step on the result."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from iais_testlib import PACKAGE_DIR, QUICK, train_argv

KARPATHY_SPLIT = {"train": "train", "dev": "val", "test": "test"}
DB_SPLIT = {"train": "train", "dev": "val", "test": "test"}


@pytest.fixture(scope="session")
def world_obj():
    from itr_common.synthetic import generate_world, preset

    return generate_world(preset("tiny"))


@pytest.fixture(scope="session")
def raw(world_obj, world, tmp_path_factory) -> Path:
    """The tiny world as a user's raw data: ``dataset_flickr30k.json`` (Karpathy format) and ``flickr30k/``
    (one bottom-up npz per image: features, norm_bb, conf, soft_labels-less, plus a 0-d nbb)."""
    from itr_common.synthetic.world import PUNCTUATION

    out = tmp_path_factory.mktemp("raw")
    npz_dir = out / "flickr30k"
    npz_dir.mkdir()
    images, offset = [], 0
    for name in ("train", "dev", "test"):
        split = world_obj.split(name)
        k = split.captions_per_image
        norm_bb = split.norm_bb()
        for i in range(split.n_images):
            image_id = int(split.image_ids[i])
            sentences = [{"tokens": [w for w in split.captions[j].split() if w not in PUNCTUATION],
                          "raw": split.captions[j], "imgid": offset + i, "sentid": int(split.sent_ids[j])}
                         for j in range(k * i, k * (i + 1))]
            images.append({"filename": f"{image_id}.jpg", "imgid": offset + i, "split": KARPATHY_SPLIT[name],
                           "sentids": [s["sentid"] for s in sentences], "sentences": sentences})
            np.savez(npz_dir / f"flickr30k_{image_id:012}.npz", features=split.features[i], norm_bb=norm_bb[i],
                     conf=split.conf[i], nbb=np.array(split.features[i].shape[0]))
        offset += split.n_images
    (out / "dataset_flickr30k.json").write_text(json.dumps({"images": images, "dataset": "flickr30k"}))
    return out


def _n_images(raw: Path) -> int:
    return len(list((raw / "flickr30k").glob("*.npz")))


def _prepro(raw: Path, world: Path, output: Path, *extra: str) -> None:
    from itr_iais.prepro import main

    main(["--annotations", str(raw / "dataset_flickr30k.json"), "--output", str(output), "--task", "itm",
          "--toker", str(world / "bert"), *extra])


def _records(db_dir: Path) -> dict:
    from itr_common.data.uniter_lmdb import TxtTokLmdb

    db = TxtTokLmdb(db_dir, max_txt_len=-1)
    return {i: db[i] for i in db.ids}


@pytest.fixture(scope="session")
def built(raw, world, tmp_path_factory) -> Path:
    """txt_db/itm_flickr30k_{train,val,test}.db and img_db/flickr30k built by the two commands."""
    from itr_iais.convert_imgdir import main as convert

    out = tmp_path_factory.mktemp("built")
    for split in ("train", "val", "test"):
        _prepro(raw, world, out / "txt_db" / f"itm_flickr30k_{split}.db")
    convert(["--img_dir", str(raw / "flickr30k"), "--output", str(out / "img_db"), "--nproc", "2"])
    (out / "pretrained").symlink_to(world / "pretrained")
    return out


def test_txt_db_is_the_released_layout(built, world):
    for split in ("train", "val", "test"):
        ours, released = built / "txt_db" / f"itm_flickr30k_{split}.db", world / "txt_db" / f"itm_flickr30k_{split}.db"
        assert _records(ours) == _records(released)  # every record field: tokens, raw, imgid, sentid, ...
        for name in ("id2len.json", "txt2img.json", "img2txts.json"):
            assert json.loads((ours / name).read_text()) == json.loads((released / name).read_text()), name
        meta, meta_released = (json.loads((d / "meta.json").read_text()) for d in (ours, released))
        for key in ("UNK", "CLS", "SEP", "MASK", "v_range"):
            assert meta[key] == meta_released[key], key
        assert meta["task"] == "itm" and meta["split"] == split and meta["toker"] == str(world / "bert")


def test_img_db_reads_back_as_the_released_one(built, world):
    from itr_common.data.uniter_lmdb import DetectFeatLmdb, TxtTokLmdb, check_consistency

    ours = DetectFeatLmdb(built / "img_db" / "flickr30k", compressed=False)
    released = DetectFeatLmdb(world / "img_db" / "flickr30k", compressed=False)
    assert (built / "img_db" / "flickr30k" / "nbb_th0.2_max100_min10.json").is_file()
    assert ours.name2nbb == released.name2nbb
    for name in released.names:
        for a, b in zip(ours[name], released[name], strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert set(ours.get_raw(released.names[0])) == {"features", "norm_bb", "conf"}  # the 0-d nbb is dropped
    assert check_consistency(TxtTokLmdb(built / "txt_db" / "itm_flickr30k_test.db", -1), ours) == 100


@pytest.mark.slow
def test_iais_trains_on_the_built_dbs(built, tmp_path):
    from itr_iais.train_itm_hard_negatives import main

    out = tmp_path / "run"
    main(train_argv(built, out, *QUICK, "--num_train_steps", "2", "--IAIS", "singular"))
    assert (out / "ckpt" / "model_step_2.pt").is_file()


def test_compressed_fixed_and_keep_all_dbs(raw, tmp_path):
    from itr_common.data.uniter_lmdb import DetectFeatLmdb
    from itr_iais.convert_imgdir import main

    img_dir = str(raw / "flickr30k")
    main(["--img_dir", img_dir + "/", "--output", str(tmp_path), "--nproc", "1", "--compress", "--conf_th", "-1",
          "--num_bb", "10"])
    fixed = DetectFeatLmdb(tmp_path / "flickr30k", conf_th=-1, num_bb=10, compressed=True)
    assert fixed.db_name == "feat_numbb10_compressed" and set(fixed.name2nbb.values()) == {10}
    assert fixed[fixed.names[0]][0].shape[0] == 10
    main(["--img_dir", img_dir, "--output", str(tmp_path), "--nproc", "1", "--keep_all"])
    nbb = json.loads((tmp_path / "flickr30k" / "nbb.json").read_text())
    assert (tmp_path / "flickr30k" / "all").is_dir() and len(nbb) == _n_images(raw)


def test_kill_and_rerun_finish_without_duplicates(raw, world, built, tmp_path, monkeypatch, capsys):
    """A run stopped half-way (SIGINT after some committed batches) finishes on rerun; the result equals a
    clean build."""
    import itr_common.data.uniter_lmdb as lmdb_module
    import itr_common.data.uniter_prepro as prepro
    from itr_common.data.uniter_lmdb import DetectFeatLmdb
    from itr_iais.convert_imgdir import main as convert

    monkeypatch.setattr(lmdb_module, "COMMIT_EVERY", 7)
    real_records, real_load = prepro.itm_records, prepro._load

    def interrupted(iterable, after):
        for n, item in enumerate(iterable):
            if n == after:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(prepro, "itm_records", lambda *a: interrupted(real_records(*a), 23))
    txt = tmp_path / "itm_flickr30k_train.db"
    with pytest.raises(SystemExit) as exc:
        _prepro(raw, world, txt)
    assert exc.value.code == 130 and not (txt / "img2txts.json").exists()
    calls = []

    def load_then_stop(job):  # interrupted at the 20th image (two batches of 7 committed)
        calls.append(job)
        if len(calls) == 20:
            raise KeyboardInterrupt
        return real_load(job)

    monkeypatch.setattr(prepro, "_load", load_then_stop)
    with pytest.raises(SystemExit):
        convert(["--img_dir", str(raw / "flickr30k"), "--output", str(tmp_path / "img_db"), "--nproc", "1"])
    monkeypatch.setattr(prepro, "itm_records", real_records)
    monkeypatch.setattr(prepro, "_load", real_load)
    capsys.readouterr()
    _prepro(raw, world, txt)
    assert "kept from an interrupted run" in capsys.readouterr().out
    assert _records(txt) == _records(built / "txt_db" / "itm_flickr30k_train.db")
    img2txts = json.loads((txt / "img2txts.json").read_text())
    assert all(len(ids) == len(set(ids)) == 5 for ids in img2txts.values())
    convert(["--img_dir", str(raw / "flickr30k"), "--output", str(tmp_path / "img_db"), "--nproc", "1"])
    written_now = int(capsys.readouterr().out.split("images (")[1].split()[0])
    assert written_now == _n_images(raw) - 14  # the first run's two committed batches were kept
    resumed = DetectFeatLmdb(tmp_path / "img_db" / "flickr30k", compressed=False)
    clean = DetectFeatLmdb(built / "img_db" / "flickr30k", compressed=False)
    assert resumed.name2nbb == clean.name2nbb
    assert len(resumed._stored_names()) == len(set(resumed.names)) == _n_images(raw)


@pytest.mark.slow
def test_progress_bar_and_original_script_names(raw, world, tmp_path):
    env = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "prepro.py", "--annotations", str(raw / "dataset_flickr30k.json"),
                           "--output", str(tmp_path / "itm_flickr30k_test.db"), "--task", "itm", "--toker",
                           str(world / "bert")], cwd=PACKAGE_DIR, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "processing itm_flickr30k_test.db" in proc.stderr and "100/100" in proc.stderr  # tqdm bar
    proc = subprocess.run([sys.executable, "scripts/convert_imgdir.py", "--img_dir", str(raw / "flickr30k"),
                           "--output", str(tmp_path / "img_db"), "--nproc", "2"], cwd=PACKAGE_DIR,
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    n = _n_images(raw)
    assert "converting flickr30k" in proc.stderr and f"{n}/{n}" in proc.stderr


def test_bad_input_exits_2_before_any_work(raw, world, built, tmp_path, capsys):
    from itr_common.testing import check_usage_error
    from itr_iais.convert_imgdir import main as convert
    from itr_iais.prepro import main as prepro

    ann, toker = str(raw / "dataset_flickr30k.json"), str(world / "bert")
    base = ["--annotations", ann, "--task", "itm", "--toker", toker]
    finished = built / "txt_db" / "itm_flickr30k_train.db"
    for argv, needles in (
        ([*base, "--output", tmp_path / "mine.db"], ["--split"]),
        ([*base, "--output", tmp_path / "x_train.db", "--split", "dev"], ["--split", "dev"]),
        ([*base, "--output", tmp_path / "x.db", "--split", "restval"], ["restval", "found only"]),
        ([*base, "--output", finished], ["existing"]),
        (["--annotations", tmp_path / "none.json", "--task", "itm", "--output", tmp_path / "a_train.db", "--toker",
          toker], ["none.json"]),
        ([*base[:-1], tmp_path / "nobert/", "--output", tmp_path / "b_train.db"], ["--toker", "vocab.txt"]),
        ([*base, "--output", tmp_path / "c_train.db", "--task", "vqa"], ["--task"]),
        ([*base, "--output", tmp_path / "c_train.db", "--task", "re"], ["--task re"]),
        ([*base, "--output", tmp_path / "e_train.db", "--missing_imgs", ann], ["--missing_imgs"]),
    ):
        check_usage_error(prepro, argv, *needles, untouched=[tmp_path, finished])
    (tmp_path / "bad.json").write_text('{"images": []}')
    check_usage_error(prepro, ["--annotations", tmp_path / "bad.json", "--task", "itm", "--toker", toker,
                               "--output", tmp_path / "d_train.db"], "bad.json", "images")
    img = str(raw / "flickr30k")
    out = tmp_path / "img_db"
    for argv, needles in (
        (["--img_dir", tmp_path / "nope", "--output", out], ["nope"]),
        (["--img_dir", tmp_path, "--output", out], ["*.npz"]),
        (["--img_dir", img, "--output", out, "--min_bb", "200"], ["--min_bb"]),
        (["--img_dir", img, "--output", out, "--conf_th", "2"], ["--conf_th"]),
        (["--img_dir", img, "--output", out, "--nproc", "0"], ["--nproc"]),
        (["--img_dir", img, "--output", out, "--max_bb", "many"], ["--max_bb"]),
        (["--img_dir", img], ["--output"]),
        (["--img_dir", img, "--output", built / "img_db"], ["existing"]),
    ):
        check_usage_error(convert, argv, *needles, untouched=[out, built / "img_db"])
    corrupt = tmp_path / "corrupt" / "flickr30k"
    corrupt.mkdir(parents=True)
    (corrupt / "a.npz").write_bytes(b"not a zip")
    with pytest.raises(SystemExit) as exc:  # found while converting: the bar and a warning come first
        convert(["--img_dir", str(corrupt), "--output", str(tmp_path / "o2"), "--nproc", "1"])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert exc.value.code == 2 and last.startswith("error:") and "a.npz" in last and "none of 1" in last


@pytest.mark.slow
def test_console_scripts_exit_0(raw, world, tmp_path):
    from itr_common.testing import check_console_script

    check_console_script("iais-prepro", ["--annotations", raw / "dataset_flickr30k.json", "--output",
                                         tmp_path / "itm_flickr30k_val.db", "--task", "itm", "--toker", world / "bert"])
    check_console_script("iais-convert-imgdir", ["--img_dir", raw / "flickr30k", "--output", tmp_path, "--nproc", "1"])


def test_a_corrupt_npz_is_skipped_as_the_original(raw, tmp_path, capsys):
    import shutil

    from itr_common.data.uniter_lmdb import DetectFeatLmdb
    from itr_iais.convert_imgdir import main

    folder = tmp_path / "flickr30k"
    shutil.copytree(raw / "flickr30k", folder)
    (folder / "flickr30k_broken.npz").write_bytes(b"truncated")
    main(["--img_dir", str(folder), "--output", str(tmp_path / "img_db"), "--nproc", "1"])
    assert "1 corrupted files skipped" in capsys.readouterr().out
    assert len(DetectFeatLmdb(tmp_path / "img_db" / "flickr30k", compressed=False)) == _n_images(raw)


@pytest.mark.slow
def test_sigkill_then_rerun_finishes_the_img_db(raw, built, tmp_path, capsys):
    """A real SIGKILL half-way through convert_imgdir.py (slowed to 20 ms an image), then the same command again."""
    import signal

    from itr_common.data.uniter_lmdb import DetectFeatLmdb
    from itr_common.testing import subprocess_env
    from itr_iais.convert_imgdir import main as convert

    argv = ["--img_dir", str(raw / "flickr30k"), "--output", str(tmp_path), "--nproc", "1"]
    slow = ("import sys, time\n"
            "import itr_common.data.uniter_lmdb as l, itr_common.data.uniter_prepro as p\n"
            "l.COMMIT_EVERY = 7\n"
            "real = p._load\n"
            "def load(job):\n"
            "    time.sleep(0.02); print('loaded', flush=True); return real(job)\n"
            "p._load = load\n"
            "from itr_iais.convert_imgdir import main\n"
            f"main({argv!r})\n")
    proc = subprocess.Popen([sys.executable, "-c", slow], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=subprocess_env())
    for _ in range(20):  # 20 images loaded: 19 written, two batches of 7 committed
        assert proc.stdout.readline().startswith("loaded")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    capsys.readouterr()
    convert(argv)
    written_now = int(capsys.readouterr().out.split("images (")[1].split()[0])
    assert 0 < written_now <= _n_images(raw) - 14
    resumed = DetectFeatLmdb(tmp_path / "flickr30k", compressed=False)
    clean = DetectFeatLmdb(built / "img_db" / "flickr30k", compressed=False)
    assert resumed.name2nbb == clean.name2nbb and len(resumed._stored_names()) == _n_images(raw)
    for name in clean.names[:5]:
        np.testing.assert_array_equal(resumed[name][0].numpy(), clean[name][0].numpy())
