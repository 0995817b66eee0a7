"""The shared conformance kit: the checks every paper package's tests run on itself, the same way.

Import the checks from here (they need no pytest)::

    from itr_common.testing import check_usage_error, check_console_script, check_resume_exact, ...

and, for the pytest fixtures, import them into the package's ``tests/conftest.py``:
``from itr_common.testing.fixtures import honesty_worlds_factory, one_torch_thread  # noqa: F401``.
The API and an example are in docs/architecture.md ("The conformance kit").
"""

from itr_common.testing.conformance import (
    SIGTERM_STATUS,
    ConformanceError,
    LearningCheck,
    Outcome,
    ResumeCheck,
    assert_same_tensors,
    check_checkpoint_round_trip,
    check_console_script,
    check_learns,
    check_resume_exact,
    check_sigterm_message,
    check_usage_error,
    cli_train_and_evaluate,
    console_script,
    edit_checkpoint,
    honesty_worlds,
    invoke,
    python_module,
    rsum_of,
    run_command,
    single_thread,
    state_dicts_in,
    subprocess_env,
    tree_listing,
)

__all__ = [
    "SIGTERM_STATUS",
    "ConformanceError",
    "LearningCheck",
    "Outcome",
    "ResumeCheck",
    "assert_same_tensors",
    "check_checkpoint_round_trip",
    "check_console_script",
    "check_learns",
    "check_resume_exact",
    "check_sigterm_message",
    "check_usage_error",
    "cli_train_and_evaluate",
    "console_script",
    "edit_checkpoint",
    "honesty_worlds",
    "invoke",
    "python_module",
    "rsum_of",
    "run_command",
    "single_thread",
    "state_dicts_in",
    "subprocess_env",
    "tree_listing",
]
