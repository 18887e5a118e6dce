"""How every stage's CLI reports bad input: one `error: ...` line on stderr and exit status 2."""

from __future__ import annotations

import sys

BAD_INPUT_EXIT = 2


def report_bad_input(err: BaseException) -> int:
    """Prints the first line of `err` (its type name when it has no message) as `error: ...`
    on stderr and returns the exit status for bad input."""
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    print(f"error: {text}", file=sys.stderr)
    return BAD_INPUT_EXIT
