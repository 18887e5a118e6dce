"""Runs `python -m metatalk_jax.prepare` with the tiny config, for the tests that need a
prepared subject (tests/conftest.py's `carphone_subject`) and the prepare CLI tests."""

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys

from tests.support.package_sources import package_source_files

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = "prepare:tiny"


def run_prepare(video, out, *extra):
    cmd = [sys.executable, "-m", "metatalk_jax.prepare", "--video", str(video), "--out", str(out),
           "--config", TINY, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=900)


def source_digest() -> str:
    """sha256 (16 hex) of every .py file of the package, the top-level configs/ and
    data_pipelines/ included (tests/support/package_sources.py): a prepared subject cached under
    one digest was made by exactly this code. Files are named by their path inside the package,
    so the digest does not depend on which folder of the repository holds them."""
    digest = hashlib.sha256()
    for inside, path in package_source_files().items():
        digest.update(inside.encode() + b"\0")
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:16]


def cached_subject_dir(video, extra) -> str:
    """Where prepare_once keeps the subject of (this package source, `video`, `extra`)."""
    from metatalk_jax.runtime import default_cache_dir
    with open(video, "rb") as f:
        video_digest = hashlib.sha256(f.read()).hexdigest()
    key = hashlib.sha256(repr((source_digest(), video_digest, TINY, tuple(extra))).encode())
    return os.path.join(default_cache_dir(), "test_subjects", key.hexdigest()[:16])


def prepare_once(video, out, *extra) -> subprocess.CompletedProcess:
    """`run_prepare(video, out, *extra)`, reusing the result of an earlier test session with the
    same package source, video and arguments (a copy of the subject, and the CLI's output, from
    <metatalk cache>/test_subjects/<key>/). CI's slow set runs after the default set and needs
    the same subject: this saves it a minute of tracking and fitting."""
    cached = cached_subject_dir(video, extra)
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    # Parallel test workers (`make test`: pytest -n 2) wait for the one that prepares instead of
    # repeating it.
    with open(f"{cached}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _copy_or_prepare(cached, video, out, extra)


def _copy_or_prepare(cached, video, out, extra) -> subprocess.CompletedProcess:
    record = os.path.join(cached, "run.json")
    if os.path.exists(record):
        shutil.copytree(os.path.join(cached, "subject"), out)
        with open(record) as f:
            run = json.load(f)
        # the copied subject.json names the video it was made from, which is `video` itself
        return subprocess.CompletedProcess(run["args"], 0, run["stdout"], run["stderr"])
    done = run_prepare(video, out, *extra)
    if done.returncode == 0:
        staging = f"{cached}.tmp{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(out, os.path.join(staging, "subject"))
        with open(os.path.join(staging, "run.json"), "w") as f:
            json.dump({"args": done.args, "stdout": done.stdout, "stderr": done.stderr}, f)
        shutil.rmtree(cached, ignore_errors=True)
        os.replace(staging, cached)             # complete or absent
    return done
