"""The expression-faithful renderer against AudioDVP's: training step time and lip sync on pixels.

    python benchmarks/faithful_renderer.py step [--resolution 64] [--batch 8] [--repeats 15]
    python benchmarks/faithful_renderer.py ablation [--steps 1200]

step: the renderer task's whole jitted train step (batch assembly on device, augmentations,
  the GAN update) of Meta Talk's settings and of AudioDVP's, at the same resolution and batch,
  on the same batch of the carphone subject, timed interleaved in one process (medians). The
  conditioning itself costs nothing per step: the cavity is drawn once into the render cache.
ablation: for each renderer setting (AudioDVP; + augmentations; + mouth cavity; both), trains
  configs/renderer.py:cpu on the carphone subject for --steps steps, then drives the subject's own
  backgrounds with its expressions reversed and shifted by half the clip, and measures the
  output's mouth opening on the written pixels against the drive and against the background
  frame (eval/pixel_lip_sync.py).

The carphone subject is prepared once (configs/prepare.py:tiny) and cached. The last line of
output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if __package__ in (None, ""):
    sys.path.insert(0, REPO)

from metatalk_jax.runtime import use_xla_convolutions_on_cpu  # noqa: E402

use_xla_convolutions_on_cpu()

SETTINGS = {   # name -> config overrides of renderer:cpu
    "audiodvp": ["data.conditioning=audiodvp", "data.augment_shift=0.0", "data.augment_gain=0.0"],
    "augment": ["data.conditioning=audiodvp"],
    "cavity": ["data.augment_shift=0.0", "data.augment_gain=0.0"],
    "metatalk": [],
}


def _config(subject: str, name: str, extra=()):
    from metatalk_jax.config_loading import load_config
    return load_config("renderer:cpu", [f"data.subject={subject}", *SETTINGS[name], *extra])


def bench_step(subject: str, args) -> dict:
    import jax

    from benchmarks.interleaved import time_interleaved
    from metatalk_jax.train.loop import Trainer
    from metatalk_jax.train.renderer_task import RendererTask
    extra = [f"data.resolution={args.resolution}", f"batch_size={args.batch}",
             f"model.num_downs={args.num_downs}"]
    trainers, states = {}, {}
    for name in ("audiodvp", "metatalk"):
        config = _config(subject, name, extra)
        trainers[name] = Trainer(RendererTask(config), config)
        states[name] = trainers[name].init()
    task = trainers["metatalk"].task
    batch = next(iter(task.train_batches(seed=0, process_index=0, process_count=1)))
    step_number = {"n": 0}

    def runner(name):
        def run():
            states[name], metrics = trainers[name].step(states[name], batch, step_number["n"])
            jax.block_until_ready((states[name], metrics))
            step_number["n"] += 1
        return run

    times, cpu = time_interleaved([(n, runner(n)) for n in ("audiodvp", "metatalk")],
                                  warmup=3, repeats=args.repeats)
    base, ours = (statistics.median(times[n]) for n in ("audiodvp", "metatalk"))
    base_cpu, ours_cpu = (statistics.median(cpu[n]) for n in ("audiodvp", "metatalk"))
    # process CPU time beside wall time: on a shared machine wall time mostly shows who got
    # the cores, CPU time how much work each step did
    return {"mode": "step", "resolution": args.resolution, "batch": args.batch,
            "num_downs": args.num_downs, "audiodvp_step_s": round(base, 4),
            "metatalk_step_s": round(ours, 4), "metatalk_over_audiodvp": round(ours / base, 3),
            "audiodvp_cpu_s": round(base_cpu, 4), "metatalk_cpu_s": round(ours_cpu, 4),
            "cpu_metatalk_over_audiodvp": round(ours_cpu / base_cpu, 3)}


def bench_ablation(subject: str, args) -> dict:
    import numpy as np

    from metatalk_jax.inference.pipeline import InferenceSettings, prepare_inference, render_video
    from metatalk_jax.train.loop import train_and_evaluate
    settings = InferenceSettings(show_progress=False, lip_sync_frames=250, preset="veryfast")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.settings.split(","):
            workdir = os.path.join(tmp, name)
            config = _config(subject, name, [f"total_steps={args.steps}",
                                             f"checkpoint_every_steps={args.steps}"])
            train_and_evaluate(config, workdir, log=lambda *_: None)
            subj, renderer, video = prepare_inference(subject, workdir, settings)
            own = np.asarray(subj.coefficients["expression"])
            drives = {"reversed": own[::-1], "shifted": np.roll(own, len(own) // 2, axis=0)}
            rows[name] = {drive: render_video(subj, renderer, video, e,
                                              os.path.join(tmp, f"{name}_{drive}.mp4"),
                                              settings)["lip_sync"]
                          for drive, e in drives.items()}
            print(name, json.dumps(rows[name]), flush=True)
    return {"mode": "ablation", "steps": args.steps, "results": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("step", "ablation"))
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--num-downs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--subject", default=None,
                        help="a prepared carphone subject (default: prepared once and cached)")
    args = parser.parse_args(argv)
    from benchmarks.infer import bench_subject
    from benchmarks.machine_info import machine_description
    from metatalk_jax.runtime import enable_compilation_cache
    enable_compilation_cache()
    subject = args.subject or bench_subject()
    result = bench_step(subject, args) if args.mode == "step" else bench_ablation(subject, args)
    result["machine"] = machine_description({})
    result["load_avg"] = list(os.getloadavg())
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
