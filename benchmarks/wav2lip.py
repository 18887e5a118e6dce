"""Wav2Lip generator inference throughput: the Flax model against the PyTorch mirror of the
reference, same weights, same inputs, same CPU, in one process.

It times, interleaved repeat by repeat:
  jax    jax.jit(Wav2Lip.apply) in eval mode, fp32, blocked until ready; by default with
         BatchNorm folded into the convs at load time (`--no-fold` keeps the BN layers) and
         transposed convs as XLA's lhs-dilated convolution (`--phase-transpose`: per output
         phase, see conv_transpose_torch);
  torch  tests/support/torch_wav2lip_reference.py under torch.inference_mode(), torch threads = the
         cores this process may use, denormals flushed as XLA does.
Compilation and --warmup runs are excluded; figures are medians over --repeats. Process CPU
time per batch (all threads) is printed beside wall time: on a machine shared with other jobs
it shows how much work each side did when wall times mostly show who got the cores.

Last line: one JSON object {"benchmark": "wav2lip", "batch": 128, "jax_fps", "torch_fps",
"ratio_time_jax_over_torch", "machine", ...}.

Run from the repository root:  python benchmarks/wav2lip.py   (batch 128, 3 repeats)
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

if __package__ in (None, ""):            # run as a script: make `benchmarks` and `tests` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The CLIs' XLA:CPU convolution setting (metatalk_jax/runtime.py), set before JAX creates
# its CPU client; --keep-ynn-convs measures XLA:CPU's default instead.
from metatalk_jax.runtime import CPU_CONV_FLAG, use_xla_convolutions_on_cpu  # noqa: E402

if "--keep-ynn-convs" not in sys.argv:
    use_xla_convolutions_on_cpu()

import jax                                # noqa: E402

from benchmarks import interleaved      # noqa: E402
from metatalk_jax.convert.wav2lip_keys import convert_wav2lip  # noqa: E402
from metatalk_jax.models import wav2lip as w2l  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1, help="untimed runs after compilation")
    p.add_argument("--no-fold", action="store_true", help="keep BatchNorm layers (no folding)")
    p.add_argument("--phase-transpose", action="store_true",
                   help="transposed convs per output phase (not one lhs-dilated conv)")
    p.add_argument("--no-torch", action="store_true", help="time JAX only")
    p.add_argument("--keep-ynn-convs", action="store_true",
                   help=f"do not add {CPU_CONV_FLAG} to XLA_FLAGS (XLA:CPU's default)")
    p.add_argument("--device-info", default=None, help="free text added to the machine line")
    args = p.parse_args(argv)

    import torch
    from tests.support.torch_wav2lip_reference import TorchWav2Lip, randomize
    torch_note = interleaved.configure_torch(torch)
    torch_model = randomize(TorchWav2Lip(), seed=0).eval()

    variables, _ = convert_wav2lip({k: v.numpy() for k, v in torch_model.state_dict().items()})
    fold = not args.no_fold
    model = w2l.Wav2Lip(folded_batch_norm=fold, transpose_by_phases=args.phase_transpose)
    if fold:
        variables = w2l.fold_batch_norm(variables)
    variables = jax.device_put(variables)

    rng = np.random.default_rng(0)
    audio = rng.uniform(-4, 4, (args.batch, w2l.MEL_BINS, w2l.MEL_STEPS, 1)).astype(np.float32)
    face = rng.uniform(0, 1, (args.batch, w2l.IMAGE_SIZE, w2l.IMAGE_SIZE, 6)).astype(np.float32)
    audio_j, face_j = jax.device_put(audio), jax.device_put(face)
    audio_t = torch.from_numpy(audio.transpose(0, 3, 1, 2).copy())
    face_t = torch.from_numpy(face.transpose(0, 3, 1, 2).copy())

    compiled, compile_s, flops = interleaved.compile_with_cost(model.apply, variables, audio_j,
                                                               face_j)
    print(f"jax: compiled in {compile_s:.1f} s, {flops / args.batch / 1e9:.2f} GFLOP per image "
          f"(XLA cost analysis); BN folded: {fold}, transposed convs "
          f"{'per phase' if args.phase_transpose else 'dilated'}", flush=True)

    outputs = {}

    def run_jax():
        outputs["jax"] = compiled(variables, audio_j, face_j).block_until_ready()

    def run_torch():
        with torch.inference_mode():
            outputs["torch"] = torch_model(audio_t, face_t)

    runners = [("jax", run_jax)] + ([] if args.no_torch else [("torch", run_torch)])
    times, cpu = interleaved.time_interleaved(runners, warmup=args.warmup, repeats=args.repeats)
    max_diff = None
    if not args.no_torch:
        max_diff = float(np.max(np.abs(np.asarray(outputs["jax"]) -
                                       outputs["torch"].numpy().transpose(0, 2, 3, 1))))
        print(f"max |jax - torch| over the batch: {max_diff:.2e}", flush=True)
    result = interleaved.comparison("wav2lip", args.batch, times, cpu,
                                    args.device_info or torch_note)
    result.update({"gflop_per_image": round(flops / args.batch / 1e9, 3),
                   "compile_s": round(compile_s, 1), "bn_folded": fold,
                   "transpose": "phases" if args.phase_transpose else "dilated",
                   "max_abs_diff": max_diff})
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
