"""runtime.skip_absent_tpu: with libtpu installed (the dev extra) on a host without a TPU, a
stage CLI starts JAX without libtpu's screen of warnings; JAX_PLATFORMS given by the user wins."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from metatalk_jax.runtime import tpu_device_files
from tests.prepare_runner import REPO

START = ("import sys; from metatalk_jax import runtime; "
         "print(runtime.skip_absent_tpu() if sys.argv[1] == 'skip' else None); "
         "import jax; print(jax.devices()[0].platform)")


def start_jax(mode: str, **env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    environment.update(env)
    return subprocess.run([sys.executable, "-c", START, mode], capture_output=True, text=True,
                          cwd=REPO, env=environment, timeout=120)


@pytest.mark.skipif(bool(tpu_device_files()), reason="this host has a TPU")
def test_libtpu_without_a_tpu_starts_quietly_on_the_cpu():
    pytest.importorskip("libtpu")
    plain = start_jax("plain")                  # what JAX does by itself: tries the TPU first
    assert plain.returncode == 0 and "tpu" in plain.stderr.lower(), plain.stderr
    skipped = start_jax("skip")
    assert skipped.returncode == 0, skipped.stderr
    assert skipped.stdout.split() == ["cpu", "cpu"]
    assert "tpu" not in skipped.stderr.lower(), skipped.stderr


def test_a_given_platform_list_is_left_alone():
    given = start_jax("skip", JAX_PLATFORMS="cpu")
    assert given.returncode == 0 and given.stdout.split() == ["None", "cpu"]
