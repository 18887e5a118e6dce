"""Copy a directory tree between a bucket URL and a local disk (a subject for a pod's workers).

    python -m metatalk_jax.train.staging subjects/me gs://bucket/subjects/me     # upload once
    python -m metatalk_jax.train.staging gs://bucket/subjects/me /data/subjects/me

The workers of a TPU pod share no disk, and a preempted pod comes back on new VMs with empty
disks. A training config may therefore name its subject by URL
(`--config.data.subject=gs://bucket/subjects/me`): every host then stages it into its own cache
(`staged_copy`: <cache>/staged/<key>, the key made from the listing of names and sizes), once
per host, and reads the local copy (the TFDS shards are read with random access, memory-mapped
caches are built beside them; neither works on an object store).

Local copies are made under a temporary name and renamed when complete
(atomic_files.publishing_dir), so a host killed mid-copy leaves nothing that looks finished. An
object store has no rename: a copy to a URL is written file by file.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import sys

from metatalk_jax import runtime
from metatalk_jax.atomic_files import publishing_dir
from metatalk_jax.cli_errors import report_bad_input
from metatalk_jax.errors import InputError
from metatalk_jax.train import workdir as workdir_lib


def listing(root: str) -> list[tuple[str, int]]:
    """[(relative path with '/', size in bytes)] of every file under `root` (URL or local)."""
    root = workdir_lib.resolve(root)
    if workdir_lib.is_url(root):
        out, folders = [], [workdir_lib.epath_of(root)]
        while folders:               # a subject holds tens of files: one listing per folder
            for entry in folders.pop().iterdir():
                if entry.is_dir():
                    folders.append(entry)
                else:
                    out.append((os.fspath(entry)[len(root) + 1:], entry.stat().length))
        return sorted(out)
    out = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            out.append((os.path.relpath(path, root).replace(os.sep, "/"),
                        os.path.getsize(path)))
    return sorted(out)


def copy_tree(source: str, destination: str) -> int:
    """Copies every file under `source` to `destination` (either may be a URL; a local
    destination is built beside itself and renamed); returns the number of files."""
    source, destination = workdir_lib.resolve(source), workdir_lib.resolve(destination)
    try:
        files = listing(source)
    except FileNotFoundError:   # the source the user named is not there (a bucket may say so)
        files = []
    if not files:
        raise InputError(f"{source}: no files to copy (not a directory, or empty)")
    if workdir_lib.is_url(destination):
        for name, _ in files:
            workdir_lib.write_bytes(workdir_lib.join(destination, name),
                                    workdir_lib.read_bytes(workdir_lib.join(source, name)))
        return len(files)
    try:
        with publishing_dir(destination, replace=False, temp_prefix=".staging-") as tmp:
            for name, _ in files:
                target = os.path.join(tmp, *name.split("/"))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with open(target, "wb") as f:
                    f.write(workdir_lib.read_bytes(workdir_lib.join(source, name)))
    except FileExistsError:     # another process of this host finished first: its copy stays
        if not os.path.isdir(destination):
            raise
    return len(files)


def staged_copy(url: str, cache_root: str | None = None) -> str:
    """The local copy of the tree at `url` in this host's cache, made if missing (module
    docstring); a local path is returned unchanged."""
    if not workdir_lib.is_url(url):
        return url
    workdir_lib.check_client(url)
    url = workdir_lib.resolve(url)
    key = hashlib.sha256(repr((url, listing(url))).encode()).hexdigest()[:20]
    root = cache_root or os.path.join(runtime.default_cache_dir(), "staged", socket.gethostname())
    path = os.path.join(root, f"{os.path.basename(url)}-{key}")
    if not os.path.isdir(path):
        copy_tree(url, path)
    return path


def main(argv=None) -> int:
    runtime.start()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a local directory or a URL (gs://bucket/path)")
    parser.add_argument("destination", help="a local directory or a URL")
    args = parser.parse_args(argv)
    try:
        count = copy_tree(args.source, args.destination)
    except InputError as err:     # its message names the source; anything else is a traceback
        return report_bad_input(err)
    print(f"copied {count} files: {args.source} -> {args.destination}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
