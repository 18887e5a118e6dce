"""One line describing the machine a benchmark ran on (CPU model, cores, JAX backend, libraries)."""

from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (platform's guess elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_description(libraries: dict, extra: str | None = None) -> str:
    """'<cpu>, <n> CPU cores; jax <v>; backend ...; <lib> <v>...; python <v>[; extra]'."""
    import jax
    dev = jax.devices()[0]
    parts = [f"{cpu_model()}, {cpu_count()} CPU cores", f"jax {jax.__version__}",
             f"backend {jax.default_backend()} ({dev.device_kind}, {jax.device_count()} device(s))"]
    parts += [f"{name} {version}" for name, version in libraries.items()]
    parts.append(f"python {platform.python_version()}")
    if extra:
        parts.append(extra)
    return "; ".join(parts)
