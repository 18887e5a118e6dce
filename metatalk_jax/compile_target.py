"""Which platform the program being traced is for.

Usually the default backend's; the training engine's compile-only fit check traces for a TPU or
GPU topology on a CPU host, and code that picks a form by platform (the renderer's convolutions,
the rasterizer's per-image loop) must follow the program's platform, not the host's.
"""

from __future__ import annotations

import contextlib
import contextvars

import jax

_PLATFORM = contextvars.ContextVar("traced_platform", default=None)


@contextlib.contextmanager
def compiling_for(platform: str | None):
    """Within this block, code is traced for `platform` ("cpu", "tpu", "gpu", ...; None = the
    default backend's)."""
    token = _PLATFORM.set(platform)
    try:
        yield
    finally:
        _PLATFORM.reset(token)


def target_platform() -> str:
    """The platform of the program being traced: compiling_for's, else jax.default_backend()."""
    return _PLATFORM.get() or jax.default_backend()
