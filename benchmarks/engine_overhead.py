"""Engine overhead on CPU: steps/s of the whole training loop vs the bare jitted step.

    python -m benchmarks.engine_overhead [--steps 120] [--log-every 40] [--subject DIR]

The tiny renderer (configs/renderer.py:tiny, batch 8 at 32 px) on the carphone subject
(prepared once with prepare:tiny into the metatalk cache, or --subject). Two figures, one
process, the same compiled step:

  bare   the jitted train step alone, state donated, on 4 batches already on the device
         (Trainer.step in a loop, one block_until_ready at the end);
  loop   train_and_evaluate end to end: grain reading, device transfer, metrics, progress,
         logging every --log-every steps, checkpoints off (one final save, after the timed
         window): steps/s between the first and the last log line, so the compile and the
         final save are outside the window.

The last line is JSON {bare_steps_per_s, loop_steps_per_s, pair_ratios, median_ratio, ...} (one
figure per repeat; each bare/loop pair runs back to back); the target of issue 15 is a ratio
>= 0.9 (loop overhead <= 10% of the bare step).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def prepared_subject() -> str:
    from metatalk_jax.demo_assets import carphone_path
    from metatalk_jax.runtime import default_cache_dir
    out = os.path.join(default_cache_dir(), "bench_subjects", "carphone_tiny")
    if not os.path.exists(os.path.join(out, "subject.json")):
        subprocess.run([sys.executable, "-m", "metatalk_jax.prepare", "--video", carphone_path(),
                        "--out", out, "--config", "prepare:tiny",
                        "--config.audio_required=False"], check=True)
    return out


def bare_steps_per_s(config, steps: int) -> float:
    import jax
    from metatalk_jax.train.loop import Trainer
    from metatalk_jax.train.tasks import make_task
    task = make_task(config)
    trainer = Trainer(task, config)
    data = iter(task.train_batches(seed=0, process_index=0, process_count=1))
    batches = [trainer.device_batch(next(data)) for _ in range(4)]
    state = trainer.init()
    state, metrics = trainer.step(state, batches[0], 0)        # compile
    jax.block_until_ready((state, metrics))
    start = time.perf_counter()
    for i in range(steps):
        state, metrics = trainer.step(state, batches[i % 4], i + 1)
    jax.block_until_ready((state, metrics))
    return steps / (time.perf_counter() - start)


def loop_steps_per_s(config, workdir: str) -> float:
    from metatalk_jax.train.loop import train_and_evaluate
    train_and_evaluate(config, workdir, log=lambda *_: None)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if "g_total" in line]
    first, last = rows[0], rows[-1]
    return (last["step"] - first["step"]) / (last["time"] - first["time"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--log-every", type=int, default=40)
    parser.add_argument("--subject", default=None)
    parser.add_argument("--repeats", type=int, default=3, help="alternating bare/loop runs")
    parser.add_argument("--loop-only", action="store_true",
                        help="only the loop figure (to time an older train/loop.py)")
    args = parser.parse_args(argv)
    from metatalk_jax.runtime import use_xla_convolutions_on_cpu
    use_xla_convolutions_on_cpu()
    from metatalk_jax.config_loading import load_config
    from benchmarks.machine_info import machine_description
    subject = args.subject or prepared_subject()
    config = load_config("renderer:tiny", [
        f"data.subject={subject}", f"total_steps={args.steps}", "checkpoint_every_steps=0",
        f"log_every_steps={args.log_every}", "async_checkpoints=False"])
    bare, loop = [], []
    for _ in range(args.repeats):      # alternated, so a busy spell hits both
        bare.append(0.0 if args.loop_only else bare_steps_per_s(config, args.steps))
        with tempfile.TemporaryDirectory() as workdir:
            loop.append(loop_steps_per_s(config, workdir))
        print(f"bare {bare[-1]:.2f} steps/s, loop {loop[-1]:.2f} steps/s", flush=True)
    # each pair ran back to back, so its ratio is the least disturbed by other load
    ratios = sorted(lp / b for b, lp in zip(bare, loop) if b)
    result = {"bare_steps_per_s": [round(b, 2) for b in bare],
              "loop_steps_per_s": [round(lp, 2) for lp in loop],
              "pair_ratios": [round(r, 3) for r in ratios],
              "median_ratio": round(ratios[len(ratios) // 2], 3) if ratios else None,
              "steps": args.steps,
              "log_every": args.log_every, "batch": int(config.batch_size),
              "machine": machine_description({})}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
