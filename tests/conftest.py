"""Test-wide hooks: the helpers beside the tests importable, and the `system` mark enforced."""

import sys
from pathlib import Path

import pytest

# `servers` (test-owned sshd, redis, S3) is a helper module beside the tests.
sys.path.insert(0, str(Path(__file__).parent))

from skylapse.transfer.local_sshd import MissingProgramError, find_program
from tests_support import SYSTEM_PROGRAMS


@pytest.hookimpl(tryfirst=True)  # before any fixture starts the program
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked ``system(*programs)`` fails (never skips) when one of them is missing."""
    for mark in item.iter_markers("system"):
        if not mark.args:
            pytest.fail("pytest.mark.system needs the programs the test runs", pytrace=False)
        missing = []
        for program in mark.args:
            if program not in SYSTEM_PROGRAMS:
                pytest.fail(f"{program} is not in tests_support.SYSTEM_PROGRAMS", pytrace=False)
            try:
                find_program(program, SYSTEM_PROGRAMS[program])
            except MissingProgramError as exc:
                missing.append(str(exc))
        if missing:
            pytest.fail(
                "; ".join(missing) + ": `make system-deps` installs it (as root), or run "
                '`pytest -m "not system"` for the suite without system programs',
                pytrace=False,
            )
