"""Pseudo-video generation throughput on a prepared subject, with a random-weight Wav2Lip.

Times, after compilation and one warm-up batch:
  pseudo   frames/s of PseudoFrameMaker.make: decode the subject's video (ping-pong order) +
           Wav2Lip (jit, BN folded, fixed batch) + feathered paste + the fit-resolution crop,
           i.e. the whole pseudo-frame path EXCLUDING the expression fit;
  wav2lip  frames/s of the generator call alone on the same batches (its share of `pseudo`);
  fit      frames/s of ExpressionFitter.fit on the pseudo crops (--fit-steps Adam steps).
Mel chunks come from a synthetic speech-like clip (the mel itself is timed into `pseudo`).

Last line: one JSON object {"benchmark": "pseudo", "pseudo_fps", "wav2lip_fps", "fit_fps", ...}.

Run from the repository root (needs a prepared subject whose source video is readable):
    python benchmarks/pseudo.py --subject subjects/carphone [--batch 128] [--frames 256]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

if __package__ in (None, ""):            # run as a script: make `benchmarks` and `tests` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from metatalk_jax.runtime import use_xla_convolutions_on_cpu  # noqa: E402

if "--keep-ynn-convs" not in sys.argv:
    use_xla_convolutions_on_cpu()

from benchmarks import machine_info      # noqa: E402


def random_checkpoint(path: str) -> None:
    """Writes a random-weight Wav2Lip .pth with the test-side torch mirror (benchmark only)."""
    from tests.support.torch_wav2lip_reference import (TorchWav2Lip, randomize,
                                               save_wav2lip_style_checkpoint)
    save_wav2lip_style_checkpoint(randomize(TorchWav2Lip().eval(), seed=0), path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--subject", required=True, help="prepared subject directory")
    p.add_argument("--wav2lip", default=None, help="checkpoint (default: random weights)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--frames", type=int, default=256, help="timed pseudo frames")
    p.add_argument("--fit-steps", type=int, default=12)
    p.add_argument("--fit-batch", type=int, default=16)
    p.add_argument("--keep-ynn-convs", action="store_true")
    args = p.parse_args(argv)

    import jax
    from metatalk_jax.media.audio_features import wav2lip_mel, wav2lip_mel_chunks
    from metatalk_jax.pseudo_video.fit_expression import ExpressionFitter
    from metatalk_jax.convert.wav2lip_keys import load_wav2lip
    from metatalk_jax.pseudo_video.generate import PseudoFrameMaker
    from metatalk_jax.media.video_read import pingpong_indices
    from metatalk_jax.pseudo_video.wav2lip_run import Wav2LipRunner
    from metatalk_jax.subject.layout import load_subject

    subject = load_subject(args.subject)
    ckpt = args.wav2lip
    if ckpt is None:
        ckpt = os.path.join(tempfile.mkdtemp(prefix="bench_pseudo_"), "wav2lip_random.pth")
        random_checkpoint(ckpt)
    model, variables = load_wav2lip(ckpt, fold_batch_norm=True)
    runner = Wav2LipRunner(model, variables, args.batch)
    maker = PseudoFrameMaker(subject, runner, feather_fraction=0.15)
    fps = float(subject.meta["fps"])
    total = args.frames + args.batch                      # + one warm-up batch
    t = np.arange(int(total / fps * 16000) + 1600) / 16000
    audio = (0.3 * (1 + np.sin(2 * np.pi * 4 * t)) * np.sin(2 * np.pi * 130 * t)).astype(
        np.float32)
    source = pingpong_indices(total, subject.num_frames)

    def pseudo_batches(lo, hi):
        mels = wav2lip_mel_chunks(wav2lip_mel(audio), hi, fps)[lo:]
        crops = []
        for a in range(lo, hi, args.batch):
            b = min(a + args.batch, hi)
            crops.append(maker.make(mels[a - lo:b - lo], source[a:b])[0])   # no landmark backend
        return np.concatenate(crops)

    pseudo_batches(0, args.batch)                         # compile + warm-up
    start = time.perf_counter()
    crops = pseudo_batches(args.batch, total)
    pseudo_s = time.perf_counter() - start

    faces = np.zeros((args.batch, 96, 96, 3), np.uint8)
    mels = np.zeros((args.batch, 80, 16), np.float32)
    start = time.perf_counter()
    for _ in range(0, args.frames, args.batch):
        runner(faces, mels)
    wav2lip_s = time.perf_counter() - start

    fitter = ExpressionFitter(subject, steps=args.fit_steps, batch=args.fit_batch,
                              learning_rate=0.03)
    fit_source = source[args.batch:]
    fitter.fit(crops[:args.fit_batch], fit_source[:args.fit_batch])     # compile
    start = time.perf_counter()
    fitter.fit(crops, fit_source)
    fit_s = time.perf_counter() - start
    maker.close()

    n = args.frames
    result = {"benchmark": "pseudo", "subject_frames": subject.num_frames,
              "frame_size": [int(v) for v in subject.crops["frame_size"]],
              "fit_resolution": int(subject.meta["fit_resolution"]), "batch": args.batch,
              "frames": n, "pseudo_fps": round(n / pseudo_s, 2),
              "wav2lip_fps": round(n / wav2lip_s, 2), "fit_fps": round(n / fit_s, 2),
              "fit_steps": args.fit_steps, "decode_restarts": maker.frames.restarts,
              "backend": jax.default_backend(),
              "machine": machine_info.machine_description({})}
    print(f"pseudo frames (decode+wav2lip+paste+crop): {result['pseudo_fps']} frames/s; "
          f"wav2lip alone {result['wav2lip_fps']}; expression fit {result['fit_fps']}",
          file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
