"""Writing files so that a reader never sees a half-written one.

Every writer here writes to a hidden temporary name in the destination folder and renames it
into place (an atomic replace on POSIX); if writing fails the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Iterator

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
    """Yields a temporary path beside `path`; renames it to `path` when the block succeeds."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_npz(path: str, **arrays) -> str:
    """np.savez atomically (the temporary name ends in .npz so numpy keeps it)."""
    with atomic_path(path, ".npz") as tmp:
        np.savez(tmp, **arrays)
    return path


def write_json(path: str, data: dict) -> str:
    """Indented, key-sorted JSON, atomically."""
    with atomic_path(path, ".json") as tmp:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.write("\n")
    return path
