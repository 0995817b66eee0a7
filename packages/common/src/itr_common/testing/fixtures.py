"""Optional pytest fixtures of the conformance kit, imported into a package's ``tests/conftest.py``::

    from itr_common.testing.fixtures import honesty_worlds_factory, one_torch_thread  # noqa: F401

(``pytest_plugins`` only works in the root conftest, which the packages do not have).

* ``one_torch_thread`` (autouse): every test runs torch on one thread;
* ``honesty_worlds_factory``: ``factory(layouts, size="tiny", **changes)`` -> ``{"real", "shuffled"}``
  trees written once per session for each distinct request;
* :func:`tests_dir_on_path` (``tests_dir_on_path(__file__)`` in a conftest: the ``<pkg>_testlib`` helpers import
  by name), :func:`world_fixture` (``world = world_fixture("precomp")``: the session's tiny synthetic world in
  those layouts) and :func:`package_dir_fixture` (``in_package_dir = package_dir_fixture(PACKAGE_DIR)``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from itr_common.testing.conformance import honesty_worlds, single_thread


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    with single_thread():
        yield


@pytest.fixture(scope="session")
def honesty_worlds_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., dict[str, Path]]:
    cache: dict[tuple, dict[str, Path]] = {}

    def make(layouts: Sequence[str], size: str = "tiny", **changes: Any) -> dict[str, Path]:
        key = (tuple(layouts), size, tuple(sorted(changes.items())))
        if key not in cache:
            cache[key] = honesty_worlds(tmp_path_factory.mktemp("honesty"), layouts, size, **changes)
        return cache[key]

    return make


def tests_dir_on_path(conftest_file: str) -> Path:
    """Put the folder of ``conftest_file`` first on ``sys.path`` (once) so its ``<pkg>_testlib`` imports by name."""
    folder = Path(conftest_file).resolve().parent
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return folder


def world_fixture(*layouts: str, size: str = "tiny", doc: str | None = None) -> Callable[..., Path]:
    """A session fixture writing the synthetic world of preset ``size`` in ``layouts`` once; bind it to ``world``."""

    @pytest.fixture(scope="session")
    def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
        from itr_common.synthetic import generate_world, preset, write_world

        out = tmp_path_factory.mktemp("world")
        write_world(generate_world(preset(size)), out, layouts=layouts)
        return out

    world.__doc__ = doc or f"The {size} synthetic world in the {', '.join(layouts)} layout(s)."
    return world


def package_dir_fixture(package_dir: Path) -> Callable[..., Path]:
    """A fixture running the test from ``package_dir`` (where the original script names live); bind it to
    ``in_package_dir``."""

    @pytest.fixture
    def in_package_dir(monkeypatch: pytest.MonkeyPatch) -> Path:
        monkeypatch.chdir(package_dir)
        return package_dir

    in_package_dir.__doc__ = f"Run from {package_dir.name}/ (where the original script names live)."
    return in_package_dir


__all__ = ["honesty_worlds_factory", "one_torch_thread", "package_dir_fixture", "tests_dir_on_path",
           "world_fixture"]
