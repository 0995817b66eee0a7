"""How a torchrun worker process ends: Python's own shutdown steps, then an exit without the interpreter's teardown.

Why: ``DistributedDataParallel`` (torch 2.13, gloo) keeps its process group alive after
``destroy_process_group()``; the group's three threads (``gloo_tcp_loop``, ``pt_gloo_runloop`` x2) run until
the process ends, even after the model is deleted and garbage-collected (measured: the threads are still there
after ``shutdown()``, after ``main`` returned, and in an ``atexit`` handler; a group used without DDP ends its
threads at once; pytorch/pytorch#107298 reports the same threads). A normal exit then finalises the interpreter
while those threads still run, and now and then that aborts a worker that had finished its work ("terminate called
without an active exception", SIGABRT; pytorch/pytorch#179291 describes the mechanism: a gloo thread releasing
a tensor needs the GIL of an interpreter being torn down; its fix, an atexit handler, was abandoned): 3 tests in
the suite's 2-process checks over 6 full runs on one machine, none in 90 runs of the same command by hand, 6 at a time.
torchrun reports such a worker as failed and the run as lost.

:func:`end_worker` runs every shutdown step that Python code can observe, in the order the interpreter runs
them: it joins the non-daemon threads (a TensorBoard writer's), runs the ``atexit`` handlers (logging's
flush, multiprocessing's reaping of data-loader workers, ``tempfile`` clean-up), flushes stdout and stderr, and
only then calls ``os._exit`` with the status, so neither the interpreter's finalisation nor the C++ destructors
race the leaked threads.
:func:`itr_common.errors.cli_entry` calls it for every console script that runs as a torchrun worker; a
process not started by torchrun (a test calling ``main`` in-process, a single-process run) exits as Python
always does.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from collections.abc import Mapping
from typing import NoReturn

TORCHRUN_WORKER_VAR = "TORCHELASTIC_RUN_ID"
"""Set by torchrun (torch.distributed.run) in each worker's environment, and by nothing else."""


def is_torchrun_worker(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process was started by torchrun (``environ`` defaults to ``os.environ``)."""
    return TORCHRUN_WORKER_VAR in (os.environ if environ is None else environ)


def status_code(code: object) -> int:
    """The exit status ``sys.exit(code)`` gives: None -> 0, an int as it is, anything else printed on stderr
    and 1 (Python's own rule for ``SystemExit``)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return int(code)
    print(code, file=sys.stderr)
    return 1


def finish_python_shutdown() -> None:
    """What the interpreter does on exit before its C-level teardown: join the non-daemon threads, run the
    ``atexit`` handlers, flush the standard streams."""
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def end_worker(code: object) -> NoReturn:
    """End this process with ``code`` (a ``SystemExit`` code) after :func:`finish_python_shutdown`, skipping
    the interpreter's finalisation and the C++ static destructors (``os._exit``)."""
    status = status_code(code)
    finish_python_shutdown()
    os._exit(status)
