"""Writing files and folders so that a reader never sees a half-written one.

Every writer here writes to a hidden temporary name in the destination folder and renames it
into place (an atomic replace on POSIX); if writing fails the temporary file or folder is
removed. Local paths only: an object store (gs://) has no rename, so what writes there copies
file by file instead (train/staging.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
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


def partial_dir_prefix(path) -> str:
    """The name prefix of `publishing_dir`'s temporary folders for `path` (".<name>.partial-"):
    a writer may look for stale ones of a killed run by it."""
    return f".{os.path.basename(os.path.abspath(os.fspath(path)))}.partial-"


@contextlib.contextmanager
def publishing_dir(path, *, replace: bool, temp_prefix: str | None = None,
                   temp_suffix: str = "") -> Iterator[str]:
    """Yields a new, empty temporary folder beside `path`; renames it to `path` when the block
    succeeds, so a reader sees no folder at `path` or a complete one.

    replace=True: a folder already at `path` is replaced. rename() cannot replace a non-empty
      folder, so the old one is first parked inside another temporary folder beside it, the new
      one renamed into place, then the old one deleted (for that instant `path` is absent; if
      the new one cannot be renamed, the old one is put back).
    replace=False: when something is at `path` by the time the block ends (another process may
      have finished first), FileExistsError is raised and the new folder is removed.
    On any exception in the block (KeyboardInterrupt too) the temporary folder is removed and
    `path` is untouched. The published folder gets the ordinary umask mode (not mkdtemp's 0700).

    temp_prefix / temp_suffix: the temporary folders' names are prefix + random + suffix
    (default prefix: partial_dir_prefix(path)); a caller whose readers skip certain names
    (tfds's "incomplete.*") names them so. The parent folder is made if missing.
    """
    path = os.fspath(path)
    if "://" in path:
        raise ValueError(f"{path}: a folder is published by renaming it, which an object store "
                         "does not have; write it locally")
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    prefix = partial_dir_prefix(path) if temp_prefix is None else temp_prefix
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=prefix, suffix=temp_suffix, dir=parent)
    try:
        yield tmp
        if not os.path.lexists(path):
            publish(tmp, path, directory=True)
        elif not replace:
            raise FileExistsError(f"{path}: exists; not replacing it")
        else:
            _replace_dir(tmp, path, prefix, temp_suffix)
    finally:
        if os.path.lexists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def _replace_dir(new: str, path: str, prefix: str, suffix: str) -> None:
    """Renames the finished folder `new` onto the existing folder `path` (publishing_dir)."""
    parking = tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=os.path.dirname(path))
    old = os.path.join(parking, os.path.basename(path))
    os.replace(path, old)
    try:
        publish(new, path, directory=True)
    except BaseException:
        os.replace(old, path)       # put the old one back (left parked if even that fails)
        os.rmdir(parking)
        raise
    shutil.rmtree(parking, ignore_errors=True)
