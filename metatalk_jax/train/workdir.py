"""Work dirs that are local paths or URLs (gs://bucket/run, or any scheme etils.epath opens).

On a TPU pod the workers share no disk, so a run's checkpoints, config, metrics, TensorBoard
events and previews all live under one bucket URL that every worker (and a restarted pod on new
VMs) reaches. A URL is never passed through os.path.abspath (which would turn
`gs://b/r` into `<cwd>/gs:/b/r`, a local folder on each worker); local paths are made absolute.

Without TensorFlow, epath opens gs:// through fsspec's gcsfs; orbax writes array shards through
tensorstore's own GCS driver. Both honour the standard emulator settings, which is how the
tests reach a storage emulator on loopback.

`StagedFile` is an append-only file at a URL: object stores cannot append, so the lines are
appended to a local staging copy and the whole object is replaced on every flush (each upload is
one atomic object write: a reader sees the previous or the new version, never half of one).
"""

from __future__ import annotations

import os
import posixpath
import tempfile

from metatalk_jax.errors import InputError

SCHEME_CLIENTS = {"gs": ("gcsfs", "metatalk_jax[gcs]"), "s3": ("s3fs", "s3fs")}


def is_url(path) -> bool:
    return "://" in os.fspath(path)


def resolve(path) -> str:
    """A URL unchanged (a trailing '/' dropped); a local path made absolute."""
    path = os.fspath(path)
    if is_url(path):
        scheme, _, rest = path.partition("://")
        return f"{scheme}://{rest.rstrip('/')}"
    return os.path.abspath(path)


def join(base, *parts: str) -> str:
    """`base`/parts with '/' for URLs and os.path.join for local paths."""
    base = os.fspath(base)
    return posixpath.join(base, *parts) if is_url(base) else os.path.join(base, *parts)


def check_client(path) -> None:
    """ValueError naming the package to install when `path`'s scheme needs a client library
    that is missing (epath would otherwise fail deep inside a save)."""
    path = os.fspath(path)
    if not is_url(path):
        return
    scheme = path.partition("://")[0]
    module, package = SCHEME_CLIENTS.get(scheme, (None, None))
    if module is None:
        return
    try:
        __import__(module)
    except ImportError:
        raise InputError(f"{path}: a {scheme}:// work dir needs the {module} package "
                         f"(pip install '{package}')") from None


def epath_of(path):
    from etils import epath
    return epath.Path(os.fspath(path))


def forget_cached_listings(path) -> None:
    """Drops the folder listings this process's fsspec client cached for `path`'s scheme
    (nothing for local paths). gcsfs answers `exists` and `open` from a listing it cached
    earlier, so a process that listed a folder never sees what another process (another host,
    a restarted run) wrote into it afterwards; readers of a bucket call this first."""
    if is_url(path):
        from etils.epath import backend
        backend.fsspec_backend.fs(os.fspath(path)).invalidate_cache()


def exists(path) -> bool:
    if not is_url(path):
        return os.path.exists(path)
    forget_cached_listings(path)
    return epath_of(path).exists()


def makedirs(path) -> None:
    """Creates `path` (object stores have no folders: then nothing to do beyond a marker-free
    no-op that epath handles)."""
    if is_url(path):
        epath_of(path).mkdir(parents=True, exist_ok=True)
    else:
        os.makedirs(path, exist_ok=True)


def read_bytes(path) -> bytes:
    if is_url(path):
        forget_cached_listings(path)
        return epath_of(path).read_bytes()
    with open(path, "rb") as f:
        return f.read()


def write_bytes(path, data: bytes) -> None:
    """Writes `data` as `path` whole: a local file under a temporary name then renamed, a URL as
    one object upload (atomic for readers)."""
    if is_url(path):
        epath_of(path).write_bytes(data)
        return
    from metatalk_jax.atomic_files import atomic_path
    with atomic_path(path, os.path.splitext(path)[1]) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


class StagedFile:
    """An append-only binary file at `url` (module docstring): `write` appends to a local copy,
    `flush` uploads the whole copy. With `resume`, an existing object is downloaded first so
    appends continue it (a resumed run's metrics.jsonl)."""

    def __init__(self, url: str, *, resume: bool):
        self.url = url
        fd, self.local = tempfile.mkstemp(prefix="metatalk-staged-",
                                          suffix="-" + posixpath.basename(url))
        os.close(fd)
        if resume and exists(url):
            with open(self.local, "wb") as f:
                f.write(read_bytes(url))
        self._file = open(self.local, "ab")
        self._dirty = False

    def tell(self) -> int:
        return self._file.tell()

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._dirty = True

    def flush(self) -> None:
        self._file.flush()
        if self._dirty:
            with open(self.local, "rb") as f:
                write_bytes(self.url, f.read())
            self._dirty = False

    def close(self) -> None:
        if self._file.closed:
            return
        self.flush()
        self._file.close()
        os.remove(self.local)
