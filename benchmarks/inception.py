"""FID Inception feature extraction throughput on CPU: the Flax FIDInceptionV3 against the PyTorch
mirror of pytorch-fid's network (tests/torch_inception_reference.py), same random weights, same
uint8 frames, in one process.

It times, interleaved repeat by repeat, one batch of --batch frames of --size x --size pixels:
  jax    inception_features' jitted program (uint8 -> /255 -> resize to 299 -> pool_3), fp32,
         blocked until ready;
  torch  the mirror under torch.inference_mode() on frames / 255 (resize inside its forward),
         torch threads = the cores this process may use, denormals flushed as XLA does.
Compilation and --warmup runs are excluded; figures are medians over --repeats, with process CPU
time beside wall time (on a shared machine wall time mostly shows who got the cores).

Last line: one JSON object {"benchmark": "inception", "batch", "jax_fps", "torch_fps",
"ratio_time_jax_over_torch", "max_abs_diff", "machine", ...}.

Run from the repository root:  python benchmarks/inception.py   (batch 8 of 256x256, 3 repeats)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

if __package__ in (None, ""):            # run as a script: make `benchmarks` and `tests` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from metatalk_jax.xla_cpu_flags import use_xla_convolutions_on_cpu  # noqa: E402

use_xla_convolutions_on_cpu()             # the CLIs' XLA:CPU convolution setting

import jax                                # noqa: E402

from benchmarks import machine_info      # noqa: E402
from metatalk_jax.convert.inception_keys import convert_inception  # noqa: E402
from metatalk_jax.models import inception as inc  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=256, help="square input frame side, pixels")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1, help="untimed runs after compilation")
    p.add_argument("--no-torch", action="store_true", help="time JAX only")
    p.add_argument("--device-info", default=None, help="free text added to the machine line")
    args = p.parse_args(argv)

    import torch
    from tests.torch_inception_reference import TorchFIDInception, randomize
    torch.set_num_threads(machine_info.cpu_count())
    torch.set_flush_denormal(True)
    torch_model = randomize(TorchFIDInception(), seed=0).eval()
    variables, _ = convert_inception({k: v.numpy() for k, v in torch_model.state_dict().items()})
    variables = jax.device_put(variables)

    frames = np.random.default_rng(0).integers(0, 256, (args.batch, args.size, args.size, 3),
                                               dtype=np.uint8)
    frames_j = jax.device_put(frames)
    frames_t = torch.from_numpy(frames.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)

    apply = inc.jitted_features(inc.FIDInceptionV3())
    t0 = time.perf_counter()
    compiled = apply.lower(variables, frames_j).compile()
    compile_s = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    gflop = float(cost["flops"]) / args.batch / 1e9
    print(f"jax: compiled in {compile_s:.1f} s, {gflop:.2f} GFLOP per frame (XLA cost analysis)",
          flush=True)

    outputs = {}

    def run_jax():
        outputs["jax"] = compiled(variables, frames_j).block_until_ready()

    def run_torch():
        with torch.inference_mode():
            outputs["torch"] = torch_model(frames_t)

    runners = [("jax", run_jax)] + ([] if args.no_torch else [("torch", run_torch)])
    for _ in range(args.warmup):
        for _, fn in runners:
            fn()
    max_diff = None
    if not args.no_torch:
        max_diff = float(np.max(np.abs(np.asarray(outputs["jax"]) - outputs["torch"].numpy())))
        print(f"max |jax - torch| over the batch's features: {max_diff:.2e} "
              f"(largest feature {float(outputs['torch'].abs().max()):.2f})", flush=True)

    times = {name: [] for name, _ in runners}
    cpu = {name: [] for name, _ in runners}
    for r in range(args.repeats):
        for name, fn in runners:
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
        print(f"  repeat {r + 1}/{args.repeats}: " + ", ".join(
            f"{k} {v[-1]:.2f} s (cpu {cpu[k][-1]:.1f} s)" for k, v in times.items()), flush=True)

    jax_s = statistics.median(times["jax"])
    torch_s = statistics.median(times["torch"]) if not args.no_torch else None
    torch_info = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    result = {
        "benchmark": "inception", "batch": args.batch, "frame_size": args.size,
        "jax_fps": round(args.batch / jax_s, 2),
        "torch_fps": round(args.batch / torch_s, 2) if torch_s else None,
        "ratio_time_jax_over_torch": round(jax_s / torch_s, 3) if torch_s else None,
        "jax_batch_s_all": [round(t, 3) for t in times["jax"]],
        "torch_batch_s_all": [round(t, 3) for t in times.get("torch", [])],
        "jax_cpu_s": round(statistics.median(cpu["jax"]), 2),
        "torch_cpu_s": round(statistics.median(cpu["torch"]), 2) if torch_s else None,
        "gflop_per_frame": round(gflop, 3), "compile_s": round(compile_s, 1),
        "repeats": args.repeats, "max_abs_diff": max_diff,
        "machine": machine_info.machine_description({}, args.device_info or torch_info),
        "xla_flags": os.environ.get("XLA_FLAGS", ""), "load_avg": list(os.getloadavg()),
    }
    print(f"\njax   {jax_s:7.2f} s/batch  {result['jax_fps']:7.2f} frames/s")
    if torch_s:
        print(f"torch {torch_s:7.2f} s/batch  {result['torch_fps']:7.2f} frames/s")
        print(f"jax / torch time: {jax_s / torch_s:.3f}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
