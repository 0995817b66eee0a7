"""The shared conformance kit: the checks every paper package's tests run on itself, the same way.

Import the checks from here (they need no pytest)::

    from itr_common.testing import check_usage_error, check_console_script, check_resume_exact, ...

and, for the pytest fixtures, import them into the package's ``tests/conftest.py``:
``from itr_common.testing.fixtures import honesty_worlds_factory, one_torch_thread  # noqa: F401``.
:mod:`~itr_common.testing.helpers` adds ``tiny_bert``, ``uniter_db_flags`` and ``run_bench``.
The API and an example are in docs/architecture.md ("The conformance kit").
"""

from itr_common.testing import conformance, helpers
from itr_common.testing.conformance import *  # noqa: F403  (the checks; their names are conformance.__all__)
from itr_common.testing.helpers import *  # noqa: F403  (tiny_bert, uniter_db_flags, run_bench)

__all__ = [*conformance.__all__, *helpers.__all__]
