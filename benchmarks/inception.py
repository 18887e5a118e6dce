"""FID Inception feature extraction throughput on CPU: the Flax FIDInceptionV3 against the PyTorch
mirror of pytorch-fid's network (tests/support/torch_inception_reference.py), same random
weights, same uint8 frames, in one process.

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
import sys

import numpy as np

if __package__ in (None, ""):            # run as a script: make `benchmarks` and `tests` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from metatalk_jax.runtime import use_xla_convolutions_on_cpu  # noqa: E402

use_xla_convolutions_on_cpu()             # the CLIs' XLA:CPU convolution setting

import jax                                # noqa: E402

from benchmarks import interleaved      # noqa: E402
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
    from tests.support.torch_inception_reference import TorchFIDInception, randomize
    torch_note = interleaved.configure_torch(torch)
    torch_model = randomize(TorchFIDInception(), seed=0).eval()
    variables, _ = convert_inception({k: v.numpy() for k, v in torch_model.state_dict().items()})
    variables = jax.device_put(variables)

    frames = np.random.default_rng(0).integers(0, 256, (args.batch, args.size, args.size, 3),
                                               dtype=np.uint8)
    frames_j = jax.device_put(frames)
    frames_t = torch.from_numpy(frames.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)

    apply = inc.jitted_features(inc.FIDInceptionV3())
    compiled, compile_s, flops = interleaved.compile_with_cost(apply, variables, frames_j)
    gflop = flops / args.batch / 1e9
    print(f"jax: compiled in {compile_s:.1f} s, {gflop:.2f} GFLOP per frame (XLA cost analysis)",
          flush=True)

    outputs = {}

    def run_jax():
        outputs["jax"] = compiled(variables, frames_j).block_until_ready()

    def run_torch():
        with torch.inference_mode():
            outputs["torch"] = torch_model(frames_t)

    runners = [("jax", run_jax)] + ([] if args.no_torch else [("torch", run_torch)])
    times, cpu = interleaved.time_interleaved(runners, warmup=args.warmup, repeats=args.repeats)
    max_diff = None
    if not args.no_torch:
        max_diff = float(np.max(np.abs(np.asarray(outputs["jax"]) - outputs["torch"].numpy())))
        print(f"max |jax - torch| over the batch's features: {max_diff:.2e} "
              f"(largest feature {float(outputs['torch'].abs().max()):.2f})", flush=True)
    result = interleaved.comparison("inception", args.batch, times, cpu,
                                    args.device_info or torch_note)
    result.update({"frame_size": args.size, "gflop_per_frame": round(gflop, 3),
                   "compile_s": round(compile_s, 1), "max_abs_diff": max_diff})
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
