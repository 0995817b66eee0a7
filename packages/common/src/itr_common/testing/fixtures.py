"""Optional pytest fixtures of the conformance kit, imported into a package's ``tests/conftest.py``::

    from itr_common.testing.fixtures import honesty_worlds_factory, one_torch_thread  # noqa: F401

(``pytest_plugins`` only works in the root conftest, which the packages do not have).

* ``one_torch_thread`` (autouse): every test runs torch on one thread;
* ``honesty_worlds_factory``: ``factory(layouts, size="tiny", **changes)`` -> ``{"real", "shuffled"}``
  trees written once per session for each distinct request.
"""

from __future__ import annotations

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
