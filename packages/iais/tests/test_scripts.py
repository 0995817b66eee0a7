"""The README's shell steps: ``bash scripts/download_itm.sh $STORAGE`` (prints what to fetch, checks the tree),
``source launch_container.sh $TXT_DB $IMG_DB $OUTPUT $PRETRAIN_DIR`` (with a fake ``docker`` that records its
arguments) and ``horovodrun -np N python ...`` (one line pointing at torchrun)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from iais_testlib import PACKAGE_DIR


def _bash(command: str, cwd: Path = PACKAGE_DIR, **env: str) -> subprocess.CompletedProcess:
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1",
            "HOME": os.environ.get("HOME", "/tmp"), **env}
    return subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, env=full, timeout=300)


@pytest.fixture
def storage(world, tmp_path) -> Path:
    """A downloaded Flickr30K tree made of the synthetic world's dbs (links) and its tiny checkpoint."""
    store = tmp_path / "storage"
    (store / "img_db").mkdir(parents=True)
    (store / "txt_db").mkdir()
    (store / "pretrained").mkdir()
    (store / "img_db" / "flickr30k").symlink_to(world / "img_db" / "flickr30k")
    for split in ("train", "val", "test"):
        name = f"itm_flickr30k_{split}.db"
        (store / "txt_db" / name).symlink_to(world / "txt_db" / name)
    for model in ("uniter-base.pt", "uniter-large.pt"):
        shutil.copy(world / "pretrained" / "uniter-tiny.pt", store / "pretrained" / model)
    return store


def test_download_itm_sh_prints_each_step_and_creates_the_folders(tmp_path):
    proc = _bash(f"bash scripts/download_itm.sh {tmp_path / 'store'}")
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout
    for line in ("step 1/3: image dbs", "step 2/3: text dbs", "step 3/3: pretrained",
                 "[missing] img_db/flickr30k: not downloaded", "[missing] txt_db/itm_coco_restval.db",
                 "/img_db/flickr30k.tar -P", "tar -xvf", "/pretrained/uniter-large.pt -P"):
        assert line in out, line
    assert all((tmp_path / "store" / d).is_dir() for d in ("img_db", "txt_db", "pretrained", "finetune"))


def test_download_itm_checks_a_downloaded_tree(storage, capsys):
    from itr_iais.download_itm import main

    assert main([str(storage), "--datasets", "flickr"]) == 0
    out = capsys.readouterr().out
    assert "[ok] txt_db/itm_flickr30k_test.db: 100 texts, every image in img_db/flickr30k" in out
    assert "[ok] img_db/flickr30k:" in out and "feat_th0.2_max100_min10" in out and "complete" in out

    digest = hashlib.sha256((storage / "pretrained" / "uniter-base.pt").read_bytes()).hexdigest()
    sums = storage / "SHA256SUMS"
    sums.write_text(f"{digest}  pretrained/uniter-base.pt\n{'0' * 64}  pretrained/uniter-large.pt\n")
    assert main([str(storage), "--datasets", "flickr", "--checksums", str(sums)]) == 1
    out = capsys.readouterr().out
    assert "[ok] sha256 pretrained/uniter-base.pt" in out
    assert "[checksum mismatch] sha256 pretrained/uniter-large.pt" in out

    (storage / "pretrained" / "uniter-large.pt").write_bytes(b"<html>403</html>")
    test_db = storage / "txt_db" / "itm_flickr30k_test.db"
    source = Path(os.readlink(test_db))
    test_db.unlink()
    shutil.copytree(source, test_db)
    (test_db / "img2txts.json").unlink()
    assert main([str(storage), "--datasets", "flickr"]) == 1
    out = capsys.readouterr().out
    assert "[missing] pretrained/uniter-large.pt: incomplete" in out and "interrupted download?" in out
    assert "[missing] txt_db/itm_flickr30k_test.db: incomplete" in out and "img2txts.json" in out
    assert "[missing] txt_db/itm_coco_train.db" not in out  # --datasets flickr


def test_download_itm_bad_input_exits_2(tmp_path):
    from itr_common.testing import check_usage_error, subprocess_env
    from itr_iais.download_itm import main

    env = subprocess_env(PYTHON=sys.executable)
    check_usage_error(["bash", "scripts/download_itm.sh"], [], "PATH_TO_STORAGE", cwd=PACKAGE_DIR, env=env)
    (tmp_path / "file").write_text("x")
    check_usage_error(main, [tmp_path / "file"], "found a file")
    check_usage_error(main, [tmp_path / "store", "--datasets", "vg"], "--datasets", untouched=[tmp_path / "store"])
    check_usage_error(main, [tmp_path / "store", "--checksums", tmp_path / "no"], "--checksums",
                      untouched=[tmp_path / "store"])


def _fake_docker(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$DOCKER_ARGS"\n')
    docker.chmod(0o755)
    return bin_dir


def test_launch_container_runs_the_image_with_the_original_mounts(tmp_path):
    bin_dir = _fake_docker(tmp_path)
    for name in ("txt", "img", "pretrained"):
        (tmp_path / name).mkdir()
    args = tmp_path / "args"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "DOCKER_ARGS": str(args)}
    proc = _bash(f"source launch_container.sh {tmp_path}/txt {tmp_path}/img {tmp_path}/finetune {tmp_path}/pretrained;"
                 " echo status=$?", **env)
    assert "status=0" in proc.stdout, proc.stderr
    argv = args.read_text().splitlines()
    assert argv[:2] == ["run", "--gpus"] and argv[2] == '"device=all"' and "--ipc=host" in argv
    mounts = [argv[i + 1] for i, a in enumerate(argv) if a == "--mount"]
    assert mounts == [f"src={tmp_path}/finetune,dst=/storage,type=bind",
                      f"src={tmp_path}/pretrained,dst=/pretrain,type=bind,readonly",
                      f"src={tmp_path}/txt,dst=/txt,type=bind,readonly",
                      f"src={tmp_path}/img,dst=/img,type=bind,readonly"]
    assert argv[-3:] == ["-w", "/src/packages/iais", "itr-iais"] and (tmp_path / "finetune").is_dir()

    proc = _bash(f"CUDA_VISIBLE_DEVICES=0,1 ITR_IAIS_IMAGE=mine bash launch_container.sh {tmp_path}/txt {tmp_path}/img "
                 f"{tmp_path}/out {tmp_path}/pretrained torchrun --nproc_per_node 2 train_itm_hard_negatives.py", **env)
    assert proc.returncode == 0, proc.stderr
    argv = args.read_text().splitlines()
    assert argv[2] == '"device=0,1"' and "NVIDIA_VISIBLE_DEVICES=0,1" in argv
    assert argv[argv.index("mine") + 1:] == ["torchrun", "--nproc_per_node", "2", "train_itm_hard_negatives.py"]


def test_launch_container_bad_input_returns_2_without_leaving_the_shell(tmp_path):
    bin_dir = _fake_docker(tmp_path)
    (tmp_path / "d").mkdir()
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "DOCKER_ARGS": str(tmp_path / "args")}
    proc = _bash(f"source launch_container.sh {tmp_path}/d {tmp_path}/missing {tmp_path}/o {tmp_path}/d;"
                 " echo status=$?", **env)
    assert "status=2" in proc.stdout and "$IMG_DB" in proc.stderr and "missing" in proc.stderr
    assert not (tmp_path / "args").exists()
    proc = _bash("bash launch_container.sh only two", **env)
    assert proc.returncode == 2 and "usage" in proc.stderr
    proc = _bash(f"bash launch_container.sh {tmp_path}/d {tmp_path}/d {tmp_path}/o {tmp_path}/d", PATH="/usr/bin:/bin")
    assert proc.returncode == 2 and "docker" in proc.stderr


def test_horovodrun_points_at_torchrun():
    proc = _bash("bash scripts/horovodrun -np 8 python train_itm_hard_negatives.py --config config/x.json "
                 "--IAIS singular")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith("torchrun --nproc_per_node 8 train_itm_hard_negatives.py --config config/x.json "
                             "--IAIS singular")
