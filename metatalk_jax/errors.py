"""The one exception type for invalid user input, and what it means for the CLIs.

`InputError` is raised only where the project checks something the user gave: a file, a
directory, a flag, a config key or value, a checkpoint, a corpus. Its message is one line that
names that input and the problem ("subjects/me/audio.wav: not a WAV file"). Every CLI reports an
InputError as one `error: ...` line on stderr and exits 2 (cli_errors.py); any other exception is
a failure of the project or of the machine and keeps its traceback (exit 1).

Checks of the project's own code (shapes passed between its functions, impossible states) raise
ValueError / RuntimeError as before: those are bugs, and their traceback is what finds them.
"""

from __future__ import annotations


class InputError(ValueError):
    """Invalid user input: a file, flag, config value or checkpoint the user gave; the message is
    one line naming it and the problem.

    A ValueError subclass, so callers that catch ValueError around a user-facing check still do.
    """


class MissingInputError(InputError, FileNotFoundError):
    """A file or directory the user named (or that their input implies) does not exist; the
    message names the path. Also a FileNotFoundError, so `except OSError` sees it as before."""
