"""runtime.start, the one start-up every CLI's main makes first (the XLA:CPU convolution flag,
JAX's compilation cache, no absent TPU), and runtime.skip_absent_tpu: with libtpu installed
(the dev extra) on a host without a TPU, a stage CLI starts JAX without libtpu's screen of
warnings; JAX_PLATFORMS given by the user wins."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys

import pytest

from metatalk_jax import runtime
from metatalk_jax.runtime import tpu_device_files
from tests.support.prepare_runner import REPO

PACKAGE_DIR = os.path.join(REPO, "metatalk_jax")
# Every module of the package runnable with `python -m` (each has a main(argv)).
CLI_MODULES = ("metatalk_jax.app", "metatalk_jax.convert.__main__", "metatalk_jax.demo",
               "metatalk_jax.evaluate", "metatalk_jax.export", "metatalk_jax.face3d.assets",
               "metatalk_jax.infer", "metatalk_jax.prepare", "metatalk_jax.pseudo",
               "metatalk_jax.train.__main__", "metatalk_jax.train.staging")

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


# -- runtime.start ---------------------------------------------------------------------------------

def _runnable_modules() -> set[str]:
    """The package's modules with an `if __name__ == "__main__":` guard."""
    found = set()
    for folder, _, names in os.walk(PACKAGE_DIR):
        for name in names:
            path = os.path.join(folder, name)
            if name.endswith(".py") and re.search(r"^if __name__ == .__main__.:",
                                                  open(path).read(), re.M):
                relative = os.path.relpath(path, REPO)[:-3]
                found.add(relative.replace(os.sep, "."))
    return found


def test_the_cli_list_is_every_runnable_module():
    assert _runnable_modules() == set(CLI_MODULES)


class _Started(Exception):
    """Raised by the stand-in for runtime.start: main got that far and no further."""


@pytest.mark.parametrize("module", CLI_MODULES)
def test_every_cli_main_calls_runtime_start_first(module, monkeypatch):
    def started():
        raise _Started
    monkeypatch.setattr(runtime, "start", started)
    main = importlib.import_module(module).main
    try:
        main(["--help"])
    except _Started:
        return
    except SystemExit:      # --help printed: the arguments were parsed before the start-up
        pass
    pytest.fail(f"{module}.main does not call runtime.start() before anything else")


def test_start_sets_up_jax_before_it_is_imported(tmp_path):
    """In a fresh process start() imports no JAX (--help stays fast) and JAX then starts with
    the convolution flag and the compilation cache."""
    code = ("import os, sys; from metatalk_jax import runtime; runtime.start(); "
            "print('jax' in sys.modules); import jax; "
            "print(jax.config.jax_compilation_cache_dir); "
            "print(jax.config.jax_persistent_cache_min_compile_time_secs); "
            "print(runtime.CPU_CONV_FLAG in os.environ['XLA_FLAGS'])")
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR",
                                "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")}
    environment.update(METATALK_JAX_CACHE=str(tmp_path / "jax_cache"), JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, env=environment, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", str(tmp_path / "jax_cache"),
                                   str(runtime.MIN_CACHED_COMPILE_S), "True"]


def test_start_after_jax_is_loaded_updates_its_config(tmp_path, monkeypatch):
    import jax
    before = (jax.config.jax_compilation_cache_dir,
              jax.config.jax_persistent_cache_min_compile_time_secs)
    monkeypatch.setenv("METATALK_JAX_CACHE", str(tmp_path / "jax_cache"))
    monkeypatch.setenv("JAX_PLATFORMS", os.environ.get("JAX_PLATFORMS") or "cpu")
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
    try:
        runtime.start()
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "jax_cache")
        assert runtime.CPU_CONV_FLAG in os.environ["XLA_FLAGS"]
    finally:
        jax.config.update("jax_compilation_cache_dir", before[0])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])
