"""Does a training config fit a TPU topology? Compile its steps for the TPU on a CPU machine.

    python -m metatalk_jax.train --config renderer:tpu_pod --compile-only [--topology v5e:4x4]

libtpu (the `dev` extra installs it) compiles ahead of time for a described TPU topology with no
TPU attached: `jax.experimental.topologies.get_topology_desc` gives compile-only devices, the
engine's real train and eval steps (train/loop.Trainer, same shardings, donation and
convolution forms as a TPU run) are lowered on a mesh over them and compiled. XLA's own
accounting then gives, per chip:

  memory     arguments + outputs - aliased (the donated state) + temporaries, against the chip's
             HBM; a step that does not fit fails to compile (CompileTimeHbmOom), which is reported
             the same way;
  FLOPs      and bytes accessed per step (cost_analysis, per chip: the program is per device);
  roofline   step time >= max(FLOPs / peak FLOP/s, bytes / HBM bandwidth), with the chip's
             published bf16 peak and bandwidth; compute-bound when FLOPs per byte exceed the
             ridge point peak / bandwidth.

No subject or data is read: the task is built from the config alone (train/tasks.py
`make_task(config, shapes_only=True)`, the constructor the engine uses), and the batch is the
abstract one of the task's `example_spec`. The exit status is 0 when every step fits (with
`--min-headroom` of the HBM left free), 1 otherwise. A full-size renderer at 1024 takes tens of
minutes and ~11 GB of host memory to compile on 2 cores; the tiny configs take about a minute.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os

import jax

from metatalk_jax.errors import InputError

GIB = 2.0 ** 30


@dataclasses.dataclass(frozen=True)
class Chip:
    """Published per-chip figures (cloud.google.com/tpu/docs/<version>): bf16 peak FLOP/s, HBM
    bandwidth in bytes/s and HBM in GiB (v5e: the 15.75 GiB libtpu reports as usable)."""
    peak_flops: float
    hbm_bandwidth: float
    hbm_gib: float


CHIPS = {
    "v4": Chip(275e12, 1228e9, 32.0),
    "v5e": Chip(197e12, 819e9, 15.75),
    "v5p": Chip(459e12, 2765e9, 95.0),
    "v6e": Chip(918e12, 1640e9, 32.0),
}


def chip_of(topology: str) -> Chip:
    version = topology.split(":")[0].lower().replace("litepod", "e")
    if version not in CHIPS:
        raise InputError(f"--topology {topology}: unknown TPU version {version!r} "
                         f"(known: {', '.join(CHIPS)}; e.g. v5e:4x4, v5p:2x2x2, v6e:4x4)")
    return CHIPS[version]


def topology_devices(topology: str) -> list:
    """Compile-only devices of `topology` (e.g. "v5e:4x4"), described by libtpu."""
    chip_of(topology)
    try:
        from jax.experimental import topologies
        return list(topologies.get_topology_desc(topology, "tpu").devices)
    except Exception as err:  # libtpu missing or the name unknown: many error types
        first = (str(err).strip().splitlines() or [type(err).__name__])[-1]
        raise InputError(f"--topology {topology}: libtpu cannot describe it ({first[:200]}); "
                         "install the dev extra (pip install -e '.[dev]') for libtpu") from None


# ----------------------------------------------------------------------------------------------
# Compile and report
# ----------------------------------------------------------------------------------------------

def global_batch_spec(example_spec: dict, batch_size: int, sharding) -> dict:
    """{key: ShapeDtypeStruct [B, ...]} with the dtypes jax gives the numpy batch."""
    return {k: jax.ShapeDtypeStruct((batch_size, *shape), jax.dtypes.canonicalize_dtype(dtype),
                                    sharding=sharding)
            for k, (shape, dtype) in example_spec.items()}


def step_report(compiled, chip: Chip, chips: int, batch_size: int) -> dict:
    """Per-chip memory (bytes), FLOPs, bytes accessed and the roofline of one compiled step."""
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    used = (mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
            + mem.temp_size_in_bytes)
    flops, accessed = float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))
    compute_s, memory_s = flops / chip.peak_flops, accessed / chip.hbm_bandwidth
    step_s = max(compute_s, memory_s)
    return {"arguments_gib": mem.argument_size_in_bytes / GIB,
            "outputs_gib": mem.output_size_in_bytes / GIB,
            "aliased_gib": mem.alias_size_in_bytes / GIB,
            "temporaries_gib": mem.temp_size_in_bytes / GIB,
            "used_gib": used / GIB, "hbm_gib": chip.hbm_gib,
            "free_fraction": 1.0 - used / GIB / chip.hbm_gib,
            "tflop_per_chip": flops / 1e12, "tflop_per_step": flops * chips / 1e12,
            "gb_accessed_per_chip": accessed / 1e9,
            "flop_per_byte": flops / max(accessed, 1.0),
            "ridge_flop_per_byte": chip.peak_flops / chip.hbm_bandwidth,
            "compute_s": compute_s, "memory_s": memory_s, "roofline_s": step_s,
            "bound": "compute" if compute_s >= memory_s else "memory",
            "images_per_s": batch_size / step_s if step_s else float("inf")}


@contextlib.contextmanager
def persistent_cache_off():
    """JAX's persistent compilation cache off for the block, then as it was.

    Why: a step compiled for a topology has no client to load a cached executable into, so a
    cache entry from an earlier run cannot be used and JAX warns "Error reading persistent
    compilation cache entry ... PjRtCompiler must be constructed with a Client" on every later
    compile-only run in a process with the cache on (and writes entries nothing can read).
    JAX decides once per process whether the cache is used: reset_cache makes it decide again.
    """
    from jax.experimental.compilation_cache import compilation_cache
    was = bool(jax.config.jax_enable_compilation_cache)
    jax.config.update("jax_enable_compilation_cache", False)
    compilation_cache.reset_cache()
    try:
        yield
    finally:
        jax.config.update("jax_enable_compilation_cache", was)
        compilation_cache.reset_cache()


def _compile(jitted, *args):
    """(compiled, None) or (None, the compiler's one-line reason) for an out-of-memory step."""
    try:
        with persistent_cache_off():
            return jitted.lower(*args).compile(), None
    except Exception as err:  # XlaRuntimeError RESOURCE_EXHAUSTED / CompileTimeHbmOom
        text = str(err)
        if "RESOURCE_EXHAUSTED" in text or "HbmOom" in text or "hbm" in text.lower():
            lines = [ln for ln in text.splitlines() if "hbm" in ln.lower() or "Used" in ln]
            return None, (lines or text.splitlines())[0].strip()[:300]
        raise


def compile_for_topology(config, topology: str, *,
                         steps: tuple[str, ...] = ("train", "eval")) -> dict:
    """Compiles config's train and eval steps for `topology`; {"train": report, "eval": ...}
    (a report is {"oom": reason} when the step does not fit)."""
    from metatalk_jax.train.loop import Trainer
    from metatalk_jax.train.mesh import batch_sharding, make_mesh, replicated
    from metatalk_jax.train.tasks import make_task
    chip, devices = chip_of(topology), topology_devices(topology)
    task = make_task(config, shapes_only=True)
    mesh = make_mesh(config.mesh, devices=devices)
    trainer = Trainer(task, config, mesh=mesh, compile_only=True)
    state = jax.tree.map(lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s),
                         trainer.abstract_state, trainer.shardings)
    b = int(config.batch_size)
    batch = global_batch_spec(task.example_spec(), b, batch_sharding(mesh))
    key = jax.eval_shape(lambda: jax.random.fold_in(jax.random.key(0), 0))
    key = jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=replicated(mesh))
    out = {"config_task": config.task, "topology": topology, "chips": len(devices),
           "device_kind": devices[0].device_kind, "mesh": dict(mesh.shape),
           "batch_size": b, "platform": trainer.platform}
    for name, jitted, args in (("train", trainer._step, (state, batch, key, trainer.constants)),
                               ("eval", trainer._eval, (state, batch, trainer.constants))):
        if name not in steps:
            continue
        compiled, oom = _compile(jitted, *args)
        out[name] = {"oom": oom} if oom else step_report(compiled, chip, len(devices), b)
    return out


def fits(result: dict, min_headroom: float = 0.0) -> bool:
    return all("oom" not in result[s] and result[s]["free_fraction"] >= min_headroom
               for s in ("train", "eval") if s in result)


def format_report(result: dict, name: str) -> str:
    lines = [f"{name} on {result['topology']}: {result['chips']} x {result['device_kind']}, "
             f"mesh {result['mesh']}, global batch {result['batch_size']}, "
             f"convolutions for {result['platform']}"]
    for step in ("train", "eval"):
        if step not in result:
            continue
        r = result[step]
        if "oom" in r:
            lines.append(f"  {step} step: DOES NOT FIT: {r['oom']}")
            continue
        lines += [
            f"  {step} step, per chip: arguments {r['arguments_gib']:.2f} GiB + temporaries "
            f"{r['temporaries_gib']:.2f} GiB + outputs {r['outputs_gib']:.2f} GiB - aliased "
            f"{r['aliased_gib']:.2f} GiB = {r['used_gib']:.2f} GiB of {r['hbm_gib']:.2f} GiB HBM "
            f"({100 * r['free_fraction']:.1f}% free)",
            f"    {r['tflop_per_chip']:.4g} TFLOP/chip ({r['tflop_per_step']:.4g} TFLOP/step), "
            f"{r['gb_accessed_per_chip']:.2f} GB accessed/chip, {r['flop_per_byte']:.0f} FLOP/B "
            f"(ridge {r['ridge_flop_per_byte']:.0f}): {r['bound']}-bound",
            f"    roofline {1e3 * r['roofline_s']:.2f} ms/step (compute {1e3 * r['compute_s']:.2f}"
            f" ms, memory {1e3 * r['memory_s']:.2f} ms) -> {r['images_per_s']:.0f} examples/s"]
    return "\n".join(lines)


def main_compile_only(config, name: str, topology: str, *, min_headroom: float,
                      json_path: str | None, train_only: bool = False, log=print) -> int:
    """The CLI's --compile-only: prints the report, writes it as JSON when asked; 0 = fits."""
    # Compiling never runs anything on a TPU, so it need not take libtpu's one-process-per-host
    # lock (held by any jax process here that probed for a TPU).
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    topology = topology or str(config.get("tpu_topology", "") or "")
    if not topology:
        raise InputError(f"{name}: no --topology given and the config names none "
                         "(config.tpu_topology)")
    result = compile_for_topology(config, topology,
                                  steps=("train",) if train_only else ("train", "eval"))
    ok = fits(result, min_headroom)
    log(format_report(result, name))
    log(f"fits {topology}" + (f" with >= {100 * min_headroom:.0f}% HBM free" if min_headroom
                              else "") + (": yes" if ok else ": NO"))
    if json_path:
        from metatalk_jax.atomic_files import write_json
        write_json(json_path, {"config": name, **result, "fits": ok})
    return 0 if ok else 1

