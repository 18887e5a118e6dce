"""Training throughput of the neural renderer: one full pix2pix GAN step (G forward, D update, G
update with the updated D, Adam on both) in JAX, against the same architecture in PyTorch.

It times, in one process and interleaved repeat by repeat:
  jax    jax.jit(gan_train_step) with the state donated, blocked until ready;
  torch  the same step in PyTorch (tests/support/torch_renderer_reference.py: AudioDVP's
         unet_256 with refine + NLayerDiscriminator, NFRModel.optimize_parameters order), torch
         threads = the cores this process may use, denormals flushed as XLA does (skipped with
         --no-torch and for --arch hd or bfloat16, which have no torch mirror);
  dot    a large jnp.dot in the compute dtype: the matmul rate this machine reaches from XLA
         in this run (a measured rate, not the hardware's peak).
Compilation and --warmup steps of each are excluded; figures are medians over --repeats. Process
CPU time per step (all threads) is reported beside wall time: on a machine shared with other jobs
it shows how much work each side did, when the wall times mostly show who got the cores.

"of dot" = FLOPs of the compiled JAX step (XLA cost analysis of `jit(step).lower(...).compile()`)
/ median step time / the measured jnp.dot rate (the better of a measurement before and one after
the steps): the fraction of the matmul rate XLA reaches here, not a model-FLOPs utilisation of the
hardware's peak (which on a CPU would need its clock and vector width; the jnp.dot rate is what
XLA's own best kernel achieves, so it is the relevant ceiling). The torch row uses the same FLOP
count.

Output: a readable table, then as the last line one JSON object
  {"bench": "renderer", "machine": ..., "config": {...}, "jax_step_s": ..., "torch_step_s": ...,
   "jax_over_torch": ..., "jax_images_per_s": ..., "torch_images_per_s": ..., "step_gflop": ...,
   "dot_gflops": ..., "jax_gflops": ..., "jax_fraction_of_dot": ..., ...}

Run from the repository root:  python benchmarks/renderer.py            (256, batch 16, unet)
GPU:  python benchmarks/renderer.py --resolution 1024 --dtype bfloat16 --arch hd --no-torch
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time

import numpy as np

if __package__ in (None, ""):            # run as a script: make `benchmarks` and `tests` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The train CLI's XLA:CPU convolution setting (metatalk_jax/runtime.py explains it), set
# before JAX creates its CPU client, hence here. --keep-ynn-convs measures XLA:CPU's default.
from metatalk_jax.runtime import CPU_CONV_FLAG, use_xla_convolutions_on_cpu  # noqa: E402

if "--keep-ynn-convs" not in sys.argv:
    use_xla_convolutions_on_cpu()

import jax                                # noqa: E402
import jax.numpy as jnp                   # noqa: E402
import ml_collections                     # noqa: E402

from benchmarks import machine_info      # noqa: E402
from metatalk_jax.models.renderer import make_renderer  # noqa: E402
from metatalk_jax.train import gan_step   # noqa: E402

INPUT_CHANNELS = 21                       # AudioDVP: 7 frames x RGB


def model_config(args) -> ml_collections.ConfigDict:
    factor = args.hd_global_factor if args.arch == "hd" else 1
    num_downs = args.num_downs or int(np.log2(args.resolution // factor))
    return ml_collections.ConfigDict(dict(
        arch=args.arch, num_downs=num_downs, ngf=args.ngf, ndf=args.ndf, n_layers_d=3,
        num_d_scales=args.num_d_scales or (1 if args.arch == "unet" else 3),
        use_refine=True, use_dropout=True, dtype=args.dtype,
        hd_global_factor=factor, hd_local_ngf=args.hd_local_ngf, hd_local_blocks=3))


# -- JAX ----------------------------------------------------------------------------------------

def build_jax_step(config, batch: int, resolution: int, lambda_fm: float):
    """(compiled step, initial state, inputs, targets, step GFLOP, compile seconds)."""
    generator, discriminator = make_renderer(config)
    g_tx, d_tx = gan_step.make_gan_optimizers(ml_collections.ConfigDict({}))
    in_shape = (batch, resolution, resolution, INPUT_CHANNELS)
    out_shape = (batch, resolution, resolution, 3)
    state = jax.jit(functools.partial(
        gan_step.create_gan_state, generator=generator, discriminator=discriminator,
        g_tx=g_tx, d_tx=d_tx, input_shape=in_shape, target_shape=out_shape))(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    inputs = jnp.asarray(rng.uniform(-1, 1, in_shape).astype(np.float32))
    targets = jnp.asarray(rng.uniform(-1, 1, out_shape).astype(np.float32))
    loss_config = ml_collections.ConfigDict(dict(lambda_l1=100.0, lambda_fm=lambda_fm))
    step = jax.jit(functools.partial(gan_step.gan_train_step, generator=generator,
                                     discriminator=discriminator, g_tx=g_tx, d_tx=d_tx,
                                     loss_config=loss_config), donate_argnums=0)
    t0 = time.perf_counter()
    compiled = step.lower(state, inputs, targets, jax.random.PRNGKey(1)).compile()
    compile_s = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return compiled, state, inputs, targets, float(cost["flops"]) / 1e9, compile_s


def measured_dot_gflops(dtype: str, size: int, repeats: int = 5) -> float:
    """Best GFLOP/s of jnp.dot on [size,size] x [size,size] in `dtype` (jit, blocked)."""
    dt = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
    a = jnp.asarray(np.random.default_rng(1).standard_normal((size, size)), dt)
    b = jnp.asarray(np.random.default_rng(2).standard_normal((size, size)), dt)
    f = jax.jit(jnp.dot)
    f(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * size ** 3 / best / 1e9


# -- torch --------------------------------------------------------------------------------------

def build_torch_step(config, batch: int, resolution: int):
    """(callable running one step, description) for AudioDVP's architecture in PyTorch."""
    import torch
    from tests.support.torch_renderer_reference import (TorchPatchDiscriminator, TorchPix2PixStep,
                                                TorchUnetGenerator, init_pix2pix_weights)
    torch.set_num_threads(machine_info.cpu_count())
    # XLA:CPU flushes denormals to zero; without the same torch can run 100x slower once Adam's
    # second moments of tiny gradients underflow (seen at small sizes).
    torch.set_flush_denormal(True)
    net_g = init_pix2pix_weights(TorchUnetGenerator(
        INPUT_CHANNELS, 3, config.num_downs, config.ngf, use_dropout=True, use_refine=True), 0)
    net_d = init_pix2pix_weights(TorchPatchDiscriminator(INPUT_CHANNELS + 3, config.ndf, 3), 1)
    step = TorchPix2PixStep(net_g, net_d)
    gen = torch.Generator().manual_seed(0)
    real_a = torch.rand((batch, INPUT_CHANNELS, resolution, resolution), generator=gen) * 2 - 1
    real_b = torch.rand((batch, 3, resolution, resolution), generator=gen) * 2 - 1
    return ((lambda: step(real_a, real_b)),
            f"torch {torch.__version__}, {torch.get_num_threads()} threads")


# -- main ---------------------------------------------------------------------------------------

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1, help="untimed steps after compilation")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--arch", choices=["unet", "hd"], default="unet")
    p.add_argument("--no-torch", action="store_true", help="time JAX only")
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--num-downs", type=int, default=0, help="default: log2(U-Net resolution)")
    p.add_argument("--num-d-scales", type=int, default=0, help="default: 1 (unet), 3 (hd)")
    p.add_argument("--hd-global-factor", type=int, default=0,
                   help="HD: the U-Net runs at resolution / factor (default 2 at 512, 4 above)")
    p.add_argument("--hd-local-ngf", type=int, default=32)
    p.add_argument("--lambda-fm", type=float, default=None, help="default: 0 (unet), 10 (hd)")
    p.add_argument("--matmul-size", type=int, default=0, help="default: 4096 (CPU), 8192 (GPU)")
    p.add_argument("--device-info", default=None, help="free text added to the machine line")
    p.add_argument("--keep-ynn-convs", action="store_true",
                   help=f"do not add {CPU_CONV_FLAG} to XLA_FLAGS (XLA:CPU's default)")
    args = p.parse_args(argv)
    if args.arch == "hd" and not args.hd_global_factor:
        args.hd_global_factor = 2 if args.resolution <= 512 else 4
    lambda_fm = (args.lambda_fm if args.lambda_fm is not None
                 else (10.0 if args.arch == "hd" else 0.0))
    use_torch = not args.no_torch and args.arch == "unet" and args.dtype == "float32"
    config = model_config(args)

    print(f"config: {config.to_dict()}, batch {args.batch}, {args.resolution}x{args.resolution}, "
          f"lambda_fm {lambda_fm}", flush=True)
    compiled, state, inputs, targets, step_gflop, compile_s = build_jax_step(
        config, args.batch, args.resolution, lambda_fm)
    print(f"jax: compiled in {compile_s:.1f} s, {step_gflop:.1f} GFLOP per step (XLA cost "
          f"analysis)", flush=True)
    rng = jax.random.PRNGKey(2)

    def jax_step():
        nonlocal state
        state, metrics = compiled(state, inputs, targets, rng)
        jax.block_until_ready((state, metrics))

    torch_step, torch_info = (build_torch_step(config, args.batch, args.resolution) if use_torch
                              else (None, ""))
    for _ in range(args.warmup):
        jax_step()
        if torch_step:
            torch_step()

    matmul_size = args.matmul_size or (4096 if jax.default_backend() == "cpu" else 8192)
    # the dot rate is the best of a measurement before and one after the steps (other jobs on
    # a shared machine can only make it look lower)
    dot_rates = [measured_dot_gflops(args.dtype, matmul_size)]
    times = {"jax": [], "torch": []}
    cpu_times = {"jax": [], "torch": []}       # process CPU seconds (all threads) per step
    for r in range(args.repeats):
        for name, fn in (("jax", jax_step), ("torch", torch_step)):
            if fn is None:
                continue
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - t0)
            cpu_times[name].append(time.process_time() - c0)
        print(f"  repeat {r + 1}/{args.repeats}: " + ", ".join(
            f"{k} {v[-1]:.3f} s (cpu {cpu_times[k][-1]:.1f} s)" for k, v in times.items() if v),
            flush=True)

    dot_rates.append(measured_dot_gflops(args.dtype, matmul_size))
    dot = max(dot_rates)
    jax_s = statistics.median(times["jax"])
    torch_s = statistics.median(times["torch"]) if times["torch"] else None
    result = {
        "bench": "renderer",
        "machine": machine_info.machine_description({}, args.device_info or torch_info or None),
        "config": {**config.to_dict(), "batch": args.batch, "resolution": args.resolution,
                   "lambda_fm": lambda_fm, "input_channels": INPUT_CHANNELS},
        "repeats": args.repeats, "compile_s": round(compile_s, 1),
        "jax_step_s": round(jax_s, 4), "jax_step_s_all": [round(t, 4) for t in times["jax"]],
        "jax_images_per_s": round(args.batch / jax_s, 3),
        "torch_step_s": round(torch_s, 4) if torch_s else None,
        "torch_step_s_all": [round(t, 4) for t in times["torch"]],
        "torch_images_per_s": round(args.batch / torch_s, 3) if torch_s else None,
        "jax_over_torch": round(jax_s / torch_s, 3) if torch_s else None,
        "jax_cpu_s": round(statistics.median(cpu_times["jax"]), 3),
        "torch_cpu_s": round(statistics.median(cpu_times["torch"]), 3) if torch_s else None,
        "jax_over_torch_cpu": (round(statistics.median(cpu_times["jax"])
                                     / statistics.median(cpu_times["torch"]), 3)
                               if torch_s else None),
        "step_gflop": round(step_gflop, 1),
        "jax_gflops": round(step_gflop / jax_s, 1),
        "dot_gflops": round(dot, 1), "dot_gflops_all": [round(p, 1) for p in dot_rates],
        "matmul_size": matmul_size,
        "jax_fraction_of_dot": round(step_gflop / jax_s / dot, 4),
        "torch_fraction_of_dot_same_flops": (round(step_gflop / torch_s / dot, 4)
                                             if torch_s else None),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "load_avg": list(os.getloadavg()),
    }
    rows = [("jax", jax_s, result["jax_fraction_of_dot"])]
    if torch_s:
        rows.append(("torch", torch_s, result["torch_fraction_of_dot_same_flops"]))
    print(f"\n{'impl':>6} {'step s':>9} {'images/s':>9} {'GFLOP/s':>9} {'of dot':>7}")
    for name, t, fraction in rows:
        print(f"{name:>6} {t:>9.3f} {args.batch / t:>9.2f} {step_gflop / t:>9.1f} "
              f"{fraction:>7.1%}")
    if torch_s:
        print(f"jax / torch step time: {jax_s / torch_s:.3f} (process CPU time: "
              f"{result['jax_over_torch_cpu']:.3f})")
    print(f"measured jnp.dot rate ({args.dtype}, {matmul_size}^3): {dot:.1f} GFLOP/s; "
          f"step {step_gflop:.1f} GFLOP")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
