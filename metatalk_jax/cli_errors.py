"""How every stage's CLI reports bad input: one `error: ...` line on stderr and exit status 2.

Bad input is an `errors.InputError` (raised only by the checks of what the user gave) or an
argparse usage error (argparse exits 2 itself). Every other exception is a failure of the
project or the machine: the CLIs let it propagate, so Python prints its traceback and exits 1.
"""

from __future__ import annotations

import json
import sys
from typing import Callable

from metatalk_jax.errors import InputError

BAD_INPUT_EXIT = 2


def report_bad_input(err: InputError) -> int:
    """Prints the first line of `err` (its type name when it has no message) as `error: ...`
    on stderr and returns the exit status for bad input."""
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    print(f"error: {text}", file=sys.stderr)
    return BAD_INPUT_EXIT


def run_stage(stage: Callable[[], dict]) -> int:
    """Runs a stage; prints its summary dict as one JSON line on stdout and returns 0, or reports
    bad input (an InputError: a missing or unreadable file, a wrong setting) and returns 2."""
    try:
        summary = stage()
    except InputError as err:
        return report_bad_input(err)
    print(json.dumps(summary))
    return 0
