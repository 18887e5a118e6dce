"""Runs `python -m metatalk_jax.prepare` with the tiny config, for the tests that need a
prepared subject (tests/conftest.py's `carphone_subject`) and the prepare CLI tests."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = "prepare:tiny"


def run_prepare(video, out, *extra):
    cmd = [sys.executable, "-m", "metatalk_jax.prepare", "--video", str(video), "--out", str(out),
           "--config", TINY, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=900)
