"""SHA-256 of files: what identifies a model, a video or a checkpoint's source, and what checks a
downloaded asset against its pinned digest."""

from __future__ import annotations

import hashlib
import os

from metatalk_jax.errors import InputError, MissingInputError

_BLOCK = 1 << 20   # bytes read at a time: a multi-GB video is hashed in constant memory


class ChecksumError(InputError):
    """A file's sha256 is not the pinned one (the message names the file)."""


def file_sha256(path) -> str:
    """Hex SHA-256 (64 lowercase characters) of the bytes of the file at `path`."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: str, expected: str) -> str:
    """Returns `path` if its sha256 is `expected` (hex, any case); else raises ChecksumError
    naming the file (FileNotFoundError when there is no file)."""
    if not os.path.isfile(path):
        raise MissingInputError(f"{path}: file not found")
    got = file_sha256(path)
    if got != expected.lower():
        raise ChecksumError(f"{path}: sha256 {got} does not match the expected {expected} "
                            f"(corrupt or different file; delete it and retry)")
    return path
