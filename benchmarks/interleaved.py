"""The JAX-vs-PyTorch inference benchmarks' shared harness (wav2lip.py, syncnet.py, inception.py):
compile-once cost figures, interleaved timing (JAX, torch, JAX, ...) so both sides see the same
machine load, and the common result fields. Wall and process CPU time are both kept: on a shared
machine wall time mostly shows who got the cores, CPU time how much work each side did.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Callable

from benchmarks import machine_info


def configure_torch(torch) -> str:
    """torch threads = this process's cores, denormals flushed as XLA:CPU does (without that,
    torch runs up to 100x slower once small values underflow); returns the machine note."""
    torch.set_num_threads(machine_info.cpu_count())
    torch.set_flush_denormal(True)
    return f"torch {torch.__version__}, {torch.get_num_threads()} threads"


def compile_with_cost(fn, *args) -> tuple[Callable, float, float]:
    """(compiled jax.jit(fn) for args, compile seconds, FLOPs per call from XLA's cost analysis)."""
    import jax
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    seconds = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return compiled, seconds, float(cost["flops"])


def time_interleaved(runners: list[tuple[str, Callable[[], None]]], *, warmup: int,
                     repeats: int) -> tuple[dict, dict]:
    """Runs each (name, fn) `warmup` times, then `repeats` rounds of all of them in turn.
    Returns ({name: [wall s]}, {name: [process CPU s]}), printing each round."""
    for _ in range(warmup):
        for _, fn in runners:
            fn()
    times = {name: [] for name, _ in runners}
    cpu = {name: [] for name, _ in runners}
    for r in range(repeats):
        for name, fn in runners:
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
        print(f"  repeat {r + 1}/{repeats}: " + ", ".join(
            f"{k} {v[-1]:.2f} s (cpu {cpu[k][-1]:.1f} s)" for k, v in times.items()), flush=True)
    return times, cpu


def comparison(name: str, items_per_call: int, times: dict, cpu: dict, machine_note: str) -> dict:
    """The result fields every JAX-vs-torch benchmark reports (torch ones None without torch),
    printing the human summary; medians over the repeats, rates in items per second."""
    jax_s = statistics.median(times["jax"])
    torch_s = statistics.median(times["torch"]) if "torch" in times else None
    result = {
        "benchmark": name, "batch": items_per_call,
        "jax_fps": round(items_per_call / jax_s, 2),
        "torch_fps": round(items_per_call / torch_s, 2) if torch_s else None,
        "ratio_time_jax_over_torch": round(jax_s / torch_s, 3) if torch_s else None,
        "jax_batch_s_all": [round(t, 3) for t in times["jax"]],
        "torch_batch_s_all": [round(t, 3) for t in times.get("torch", [])],
        "jax_cpu_s": round(statistics.median(cpu["jax"]), 2),
        "torch_cpu_s": round(statistics.median(cpu["torch"]), 2) if torch_s else None,
        "repeats": len(times["jax"]),
        "machine": machine_info.machine_description({}, machine_note),
        "xla_flags": os.environ.get("XLA_FLAGS", ""), "load_avg": list(os.getloadavg()),
    }
    print(f"\njax   {jax_s:7.2f} s/batch  {result['jax_fps']:7.2f} items/s  "
          f"(cpu {result['jax_cpu_s']} s)")
    if torch_s:
        print(f"torch {torch_s:7.2f} s/batch  {result['torch_fps']:7.2f} items/s  "
              f"(cpu {result['torch_cpu_s']} s)")
        print(f"jax / torch time: {jax_s / torch_s:.3f}")
    return result
