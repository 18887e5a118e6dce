"""Process-wide runtime settings every stage CLI makes before it computes: XLA:CPU flags, the
metatalk cache directory and JAX's persistent compilation cache.

`start()` is the one start-up: every stage CLI's main calls it first, before it parses its
arguments (it costs no JAX import, so --help stays fast) and before JAX starts. It leaves an
absent TPU out (`skip_absent_tpu`), sets the XLA:CPU convolution flag
(`use_xla_convolutions_on_cpu`) and turns on JAX's persistent compilation cache.

This module imports nothing from the package and does not import JAX at load time, so a CLI (or
tests/conftest.py, or a benchmark) can call `use_xla_convolutions_on_cpu()` before the first
`import jax` of the process; flags set after JAX has created its CPU client have no effect.

Why the convolution flag: jax 0.10.2's XLA:CPU hands convolutions to YNNPACK by default, which
computes the weight gradients of the renderer's large-image convolutions 5-10x slower than XLA's
own (Eigen) convolutions (measured by benchmarks/renderer.py; `--keep-ynn-convs` shows the
default). The flag keeps YNNPACK for everything else; it changes nothing on GPU or TPU.
"""

from __future__ import annotations

import os

CPU_CONV_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
# Compilations shorter than this are not worth a disk read on the next run (seconds).
MIN_CACHED_COMPILE_S = 0.5


def use_xla_convolutions_on_cpu() -> None:
    """Adds CPU_CONV_FLAG to XLA_FLAGS (once). Call before the first `import jax` of the
    process; later calls have no effect on an already created CPU client."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {CPU_CONV_FLAG}".strip()


def default_cache_dir() -> str:
    """Where metatalk_jax caches what it downloads or builds (offline model, demo clip, render
    caches, compiled programs): $METATALK_CACHE, else $XDG_CACHE_HOME/metatalk_jax, else
    ~/.cache/metatalk_jax (an absolute path; the folder may not exist yet)."""
    if os.environ.get("METATALK_CACHE"):
        return os.path.abspath(os.path.expanduser(os.environ["METATALK_CACHE"]))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(os.path.abspath(base), "metatalk_jax")


def compilation_cache_dir() -> str:
    """JAX's persistent compilation cache folder: $METATALK_JAX_CACHE, else
    <default_cache_dir()>/jax_cache."""
    return os.environ.get("METATALK_JAX_CACHE") or os.path.join(default_cache_dir(), "jax_cache")


def enable_compilation_cache() -> str:
    """Turns on JAX's persistent compilation cache and returns its folder
    (compilation_cache_dir()). A second run of a stage with the same shapes (another
    `prepare` of a clip of the same sizes, a resumed training) skips XLA compilation, 10-20 s
    for the fit and the renderer's step on a 2-core CPU. Imports JAX (`start` does not)."""
    import jax
    path = compilation_cache_dir()
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_CACHED_COMPILE_S)
    return path


def start() -> None:
    """The start-up of every stage CLI (module docstring): call it first in main.

    Leaves an absent TPU out, sets the XLA:CPU convolution flag and turns on the persistent
    compilation cache. Before JAX is imported all three are environment variables JAX reads
    when it loads (JAX_PLATFORMS, XLA_FLAGS, JAX_COMPILATION_CACHE_DIR and
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS), so this imports nothing heavy; when JAX is
    already loaded (a CLI's main called from Python) its config is updated instead. Calling it
    twice changes nothing more.
    """
    import sys
    skip_absent_tpu()
    use_xla_convolutions_on_cpu()
    if "jax" in sys.modules:
        enable_compilation_cache()
    else:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = compilation_cache_dir()
        os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = str(MIN_CACHED_COMPILE_S)


def tpu_device_files() -> list[str]:
    """The TPU device files of this host (/dev/accel* on v2-v5 VMs, /dev/vfio/<n> on v6e)."""
    import glob
    return glob.glob("/dev/accel*") + glob.glob("/dev/vfio/[0-9]*")


def skip_absent_tpu() -> str | None:
    """Leaves the TPU out of the platforms JAX starts when libtpu is installed on a host that
    has no TPU; returns the platforms set, or None when nothing was changed.

    Why: the dev extra installs libtpu for the compile-only TPU checks, and then every JAX start
    on a laptop or GPU box first tries the TPU and prints a screen of libtpu warnings. Nothing
    is changed when JAX_PLATFORMS is set, when the host has TPU device files, or when libtpu is
    absent; a CUDA plugin keeps the GPU first ("cuda,cpu"). Call before JAX's first use of a
    device (before `import jax` is best; afterwards jax.config is updated instead)."""
    import importlib.util
    import sys
    if (os.environ.get("JAX_PLATFORMS") or tpu_device_files()
            or importlib.util.find_spec("libtpu") is None):
        return None
    cuda = any(importlib.util.find_spec(name) is not None
               for name in ("jax_cuda12_plugin", "jax_cuda13_plugin"))
    platforms = "cuda,cpu" if cuda else "cpu"
    os.environ["JAX_PLATFORMS"] = platforms
    if "jax" in sys.modules:
        sys.modules["jax"].config.update("jax_platforms", platforms)
    return platforms
