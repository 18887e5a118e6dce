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


def temp_path_beside(path, suffix: str) -> str:
    """Creates an empty hidden temp file in `path`'s folder (made if missing); returns its name.

    Same folder, so the final os.replace is a rename within one file system (atomic).
    """
    directory = os.path.dirname(os.path.abspath(os.fspath(path)))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
    os.close(fd)
    return tmp


def current_umask() -> int:
    """The process umask. /proc reads it without changing it (os.umask would briefly affect
    other threads)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def publish(tmp: str, path, *, directory: bool = False) -> None:
    """Renames a finished temp file (or folder) onto `path` with ordinary permissions:
    mkstemp/mkdtemp make 0600/0700 entries, which would otherwise leak into the result."""
    os.chmod(tmp, (0o777 if directory else 0o666) & ~current_umask())
    os.replace(tmp, os.fspath(path))


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
    """Yields a temporary path beside `path`; publishes it as `path` when the block succeeds."""
    tmp = temp_path_beside(path, suffix)
    try:
        yield tmp
        publish(tmp, path)
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
