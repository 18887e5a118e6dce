"""A2E training throughput on this machine: steps/s of the jitted train step (engine Trainer).

    python -m benchmarks.a2e [--steps 30] [--variants tiny,default]

On CPU it runs on this process's devices (one host device unless XLA_FLAGS forces more).
Builds a small synthetic subject (tone-burst speech whose expressions are band energies, as
tests/test_a2e.py) in a temporary directory, then for each config variant times the train step
alone on one fixed batch (the data pipeline is timed separately: batches/s of the grain
iterator). The last line of output is JSON: {variant: {steps_per_s, examples_per_s, batch,
window, data_batches_per_s, compile_s}, "devices": ..., "machine": ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time


def _measure(variant: str, subject: str, steps: int) -> dict:
    import jax
    import numpy as np

    from metatalk_jax.config_loading import load_config
    from metatalk_jax.train.a2e_task import A2ETask
    from metatalk_jax.train.loop import Trainer

    spec = "a2e" + (f":{variant}" if variant != "default" else "")
    config = load_config(spec, [f"data.subject={subject}", "data.model=procedural",
                                "data.pseudo_ratio=0.0"])
    task = A2ETask(config)
    trainer = Trainer(task, config)
    data = iter(task.train_batches(seed=0, process_index=0, process_count=1))
    batches = [next(data) for _ in range(5)]
    warm_data = time.perf_counter()
    for _ in range(10):
        next(data)
    data_rate = 10 / (time.perf_counter() - warm_data)
    state = trainer.init()
    t0 = time.perf_counter()
    state, metrics = trainer.step(state, batches[0], 0)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(steps):
        state, metrics = trainer.step(state, batches[i % len(batches)], i + 1)
    jax.block_until_ready((state, metrics))
    rate = steps / (time.perf_counter() - t0)
    return {"steps_per_s": round(rate, 2), "examples_per_s": round(rate * config.batch_size, 1),
            "batch": int(config.batch_size), "window": int(config.data.window),
            "model": config.model.kind, "loss": round(float(np.asarray(metrics["loss"])), 4),
            "data_batches_per_s": round(data_rate, 2), "compile_s": round(compile_s, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--variants", default="tiny,default")
    parser.add_argument("--seconds", type=float, default=30.0, help="synthetic video length")
    args = parser.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from metatalk_jax.runtime import use_xla_convolutions_on_cpu
    use_xla_convolutions_on_cpu()
    import numpy as np

    from tests.test_a2e import write_subject
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        subject = os.path.join(tmp, "subject")
        write_subject(subject, args.seconds, np.random.default_rng(0))
        for variant in args.variants.split(","):
            results[variant] = _measure(variant, subject, args.steps)
            print(f"{variant}: {results[variant]}", flush=True)
    import flax
    from benchmarks.machine_info import machine_description
    results["machine"] = machine_description({"flax": flax.__version__})
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
