"""How every stage's CLI reports bad input: one `error: ...` line on stderr and exit status 2."""

from __future__ import annotations

import json
import sys
from typing import Callable

BAD_INPUT_EXIT = 2


def report_bad_input(err: BaseException) -> int:
    """Prints the first line of `err` (its type name when it has no message) as `error: ...`
    on stderr and returns the exit status for bad input."""
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    print(f"error: {text}", file=sys.stderr)
    return BAD_INPUT_EXIT


BAD_INPUT_ERRORS = (ValueError, OSError, KeyError)


def run_stage(stage: Callable[[], dict]) -> int:
    """Runs a stage; prints its summary dict as one JSON line on stdout and returns 0, or reports
    bad input (BAD_INPUT_ERRORS: missing or unreadable files, wrong settings) and returns 2."""
    try:
        summary = stage()
    except BAD_INPUT_ERRORS as err:
        return report_bad_input(err)
    print(json.dumps(summary))
    return 0
