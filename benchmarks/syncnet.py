"""SyncNet feature extraction throughput (the cost of LSE-D / LSE-C): the Flax SyncNet against the
PyTorch mirror of syncnet_python's model, same weights, same inputs, same CPU, in one process.

One "frame" = one SyncNet window = what syncnet_python computes per video frame: a lip embedding
of 5 frames at 224x224 (forward_lip) plus an audio embedding of 20 MFCC rows (forward_aud).
Timed, interleaved repeat by repeat, over a batch of --batch windows (20 = syncnet_python's
--batch_size):
  jax    jax.jit of forward_lip and forward_aud in eval mode, fp32, blocked until ready;
  torch  tests/support/torch_syncnet_reference.py under torch.inference_mode(), torch threads = the
         cores this process may use, denormals flushed as XLA does.
Compilation and --warmup runs are excluded; figures are medians over --repeats, with process CPU
time beside wall time (on a shared machine wall time mostly shows who got the cores).

Last line: one JSON object {"benchmark": "syncnet", "batch", "jax_fps", "torch_fps",
"ratio_time_jax_over_torch", "machine", ...}.

Run from the repository root:  python benchmarks/syncnet.py   (batch 20, 3 repeats)
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

if __package__ in (None, ""):            # run as a script: make `benchmarks` and `tests` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The CLIs' XLA:CPU convolution setting, set before JAX creates its CPU client.
from metatalk_jax.runtime import use_xla_convolutions_on_cpu  # noqa: E402

if "--keep-ynn-convs" not in sys.argv:
    use_xla_convolutions_on_cpu()

import jax                                # noqa: E402

from benchmarks import interleaved      # noqa: E402
from metatalk_jax.convert.syncnet_keys import convert_syncnet  # noqa: E402
from metatalk_jax.models import syncnet as sn  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=20, help="windows per call")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--no-torch", action="store_true", help="time the JAX side only")
    p.add_argument("--keep-ynn-convs", action="store_true",
                   help="leave XLA:CPU's default (YNNPACK) convolutions on")
    args = p.parse_args(argv)

    import torch
    from tests.support.torch_syncnet_reference import TorchSyncNet, randomize
    torch_note = interleaved.configure_torch(torch)
    torch_model = randomize(TorchSyncNet(), seed=0).eval()
    variables, _ = convert_syncnet({k: v.numpy() for k, v in torch_model.state_dict().items()})
    variables = jax.device_put(variables)
    model = sn.SyncNet()

    rng = np.random.default_rng(0)
    lips = rng.uniform(0, 255, (args.batch, 5, 224, 224, 3)).astype(np.float32)
    mfcc = rng.normal(0, 8, (args.batch, 13, 20, 1)).astype(np.float32)
    lips_j, mfcc_j = jax.device_put(lips), jax.device_put(mfcc)
    lips_t = torch.from_numpy(lips.transpose(0, 4, 1, 2, 3).copy())
    mfcc_t = torch.from_numpy(mfcc.transpose(0, 3, 1, 2).copy())

    def both(v, x_lip, x_aud):
        return (model.apply(v, x_lip, method=sn.SyncNet.forward_lip),
                model.apply(v, x_aud, method=sn.SyncNet.forward_aud))

    compiled, compile_s, flops = interleaved.compile_with_cost(both, variables, lips_j, mfcc_j)
    gflop = flops / args.batch / 1e9
    print(f"jax: compiled in {compile_s:.1f} s, {gflop:.2f} GFLOP per window (XLA cost analysis)",
          flush=True)

    outputs = {}

    def run_jax():
        outputs["jax"] = jax.block_until_ready(compiled(variables, lips_j, mfcc_j))

    def run_torch():
        with torch.inference_mode():
            outputs["torch"] = (torch_model.forward_lip(lips_t), torch_model.forward_aud(mfcc_t))

    runners = [("jax", run_jax)] + ([] if args.no_torch else [("torch", run_torch)])
    times, cpu = interleaved.time_interleaved(runners, warmup=args.warmup, repeats=args.repeats)
    max_rel = None
    if not args.no_torch:
        max_rel = max(float(np.max(np.abs(np.asarray(j) - t.numpy())) / np.max(np.abs(t.numpy())))
                      for j, t in zip(outputs["jax"], outputs["torch"]))
        print(f"max |jax - torch| / max |torch|: {max_rel:.2e}", flush=True)
    result = interleaved.comparison("syncnet", args.batch, times, cpu, torch_note)
    result.update({"gflop_per_window": round(gflop, 3), "compile_s": round(compile_s, 1),
                   "max_rel_diff": max_rel})
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
