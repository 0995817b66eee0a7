"""The one install path (ci/install.sh) that CI, `make install` and the Dockerfiles share."""

from __future__ import annotations

import importlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PAPERS = ["iais", "aladin", "selfalign", "dime", "lightningdot"]


def _dockerfile_install(paper: str) -> tuple[dict[str, str], list[str]]:
    """The env assignments and arguments of the Dockerfile's ci/install.sh line."""
    text = (ROOT / "docker" / paper / "Dockerfile").read_text().replace("\\\n", " ")  # join continued lines
    line = next(ln for ln in text.splitlines() if "ci/install.sh" in ln and ln.startswith("RUN"))
    words = shlex.split(line[len("RUN") :].split("&&")[0])  # the install command, before any chained one
    env = {}
    while "=" in words[0]:
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    assert words[:2] == ["bash", "ci/install.sh"], line
    return env, words[2:]


@pytest.mark.parametrize("paper", PAPERS)
def test_dockerfile_installs_exactly_common_and_its_package(paper):
    text = (ROOT / "docker" / paper / "Dockerfile").read_text()
    assert re.search(r"^FROM pytorch/pytorch:\d+\.\d+\.\d+-cuda[\d.]+-cudnn\d+-runtime$", text, re.M)
    copied = re.findall(r"^COPY (\S+) \S+$", text, re.M)
    assert copied == ["ci/install.sh", "packages/common", f"packages/{paper}"]
    env, args = _dockerfile_install(paper)
    run = subprocess.run(
        ["bash", str(ROOT / "ci/install.sh"), *args],
        env={**os.environ, **env, "DRY_RUN": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    lines = run.stdout.strip().splitlines()
    assert lines == [f"pip install {ROOT}/packages/common {ROOT}/packages/{paper}"]


def test_default_install_is_pinned_cpu_torch_and_all_packages_editable():
    run = subprocess.run(
        ["bash", str(ROOT / "ci/install.sh"), sys.executable],
        env={**os.environ, "DRY_RUN": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    lines = run.stdout.strip().splitlines()
    assert lines[0] == "pip install torch==2.13.0"
    for pkg in ["common", *PAPERS]:
        assert f"-e {ROOT}/packages/{pkg}[test]" in lines[1]


@pytest.mark.slow
def test_wheels_carry_code_and_package_data(tmp_path):
    """Non-editable installs (Docker) must carry every module and data file (configs, tables)."""
    for pkg in ["common", *PAPERS]:
        # Build from a copy: setuptools writes build/ and *.egg-info next to the sources it builds.
        copy = tmp_path / "src" / pkg
        shutil.copytree(ROOT / "packages" / pkg, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "tests"))
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path),
             str(copy)],
            check=True,
            capture_output=True,
        )
        src = ROOT / "packages" / pkg / "src"
        wheel = next(tmp_path.glob(f"itr_{pkg}-*.whl"))
        names = set(zipfile.ZipFile(wheel).namelist())
        expected = {
            str(p.relative_to(src))
            for p in src.rglob("*")
            if p.is_file() and p.suffix in {".py", ".json", ".yaml"} and "__pycache__" not in p.parts
        }
        missing = expected - names
        assert not missing, f"{wheel.name} lacks {sorted(missing)[:5]}"


def test_console_scripts_resolve():
    scripts = [ep for ep in entry_points(group="console_scripts") if ep.value.startswith("itr_")]
    assert any(ep.name == "itr-synth" for ep in scripts)
    for ep in scripts:
        module, _, attr = ep.value.partition(":")
        fn = getattr(importlib.import_module(module), attr)
        assert callable(fn), ep
