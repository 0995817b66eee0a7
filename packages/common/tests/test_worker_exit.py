"""How a console script ends as a torchrun worker (itr_common.worker_exit through cli_entry): the same status,
output and exit handlers as a normal exit, without the interpreter teardown that DDP's leaked gloo threads can abort."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from itr_common.testing import subprocess_env
from itr_common.worker_exit import TORCHRUN_WORKER_VAR, is_torchrun_worker, status_code

# A console script whose main ends as chosen by argv[1]; it leaves behind what a normal exit would finish: an
# unflushed print (stdout is a pipe, so block-buffered), an atexit handler, a non-daemon thread still writing.
SCRIPT = textwrap.dedent("""
    import atexit, os, sys, threading, time
    from itr_common.errors import cli_entry, fail

    @cli_entry
    def main(argv=None):
        how = sys.argv[1]
        atexit.register(lambda: print("atexit ran", flush=True))
        threading.Thread(target=lambda: (time.sleep(0.3), print("thread finished"))).start()
        print("work done")  # not flushed
        if how == "return":
            return 3
        if how == "user_error":
            fail("--flag: expected a number, found 'x'")
        if how == "exit":
            raise SystemExit(143)
        if how == "crash":
            raise RuntimeError("unexpected")
        return None

    main()
    print("after main: only a process that is not a torchrun worker gets here", flush=True)
""")


def _run(how: str, worker: bool) -> subprocess.CompletedProcess:
    env = subprocess_env(PYTHONUNBUFFERED="0")
    env.pop(TORCHRUN_WORKER_VAR, None)
    if worker:
        env[TORCHRUN_WORKER_VAR] = "test-run"
    return subprocess.run([sys.executable, "-c", SCRIPT, how], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("how", "status"), [("none", 0), ("return", 3), ("user_error", 2), ("exit", 143)])
def test_a_worker_ends_with_the_status_output_and_exit_handlers_of_a_normal_exit(how: str, status: int):
    done = _run(how, worker=True)
    assert done.returncode == status, done.stderr
    assert done.stdout.splitlines() == ["work done", "thread finished", "atexit ran"], done.stdout
    assert "after main" not in done.stdout  # it ended inside cli_entry, not by returning to the script
    if how == "user_error":
        assert done.stderr.strip() == "error: --flag: expected a number, found 'x'"


def test_outside_torchrun_main_returns_to_the_script_as_always():
    done = _run("return", worker=False)
    assert done.returncode == 0, done.stderr  # the script ignores main's 3 and goes on
    assert done.stdout.splitlines() == ["work done", "after main: only a process that is not a torchrun worker gets "
                                        "here", "thread finished", "atexit ran"]


def test_an_unexpected_exception_in_a_worker_shows_its_traceback_and_exits_1():
    done = _run("crash", worker=True)
    assert done.returncode == 1
    assert done.stderr.startswith("Traceback (most recent call last):")
    assert done.stderr.rstrip().endswith("RuntimeError: unexpected")
    assert done.stdout.splitlines() == ["work done", "thread finished", "atexit ran"]


def test_status_code_follows_pythons_rule_for_system_exit(capsys):
    assert status_code(None) == 0
    assert status_code(143) == 143
    assert status_code("fatal: no data") == 1
    assert capsys.readouterr().err == "fatal: no data\n"
    assert status_code(True) == 1  # sys.exit(True) exits 1 without a word
    assert capsys.readouterr().err == ""


def test_is_torchrun_worker_reads_torchruns_own_variable():
    assert is_torchrun_worker({TORCHRUN_WORKER_VAR: "abc", "RANK": "0"})
    assert not is_torchrun_worker({"RANK": "0", "WORLD_SIZE": "2"})  # mp.spawn workers, a user's own launcher
