"""The engine's own config fields (train/loop.py, train/mesh.py), shared by every training config
(configs/renderer.py, configs/a2e.py), so a setting of the engine is defined in one place.
"""

from __future__ import annotations

import ml_collections


def add_engine_fields(config: ml_collections.ConfigDict, *, log_every_steps: int,
                      eval_every_steps: int, preview_every_steps: int) -> None:
    """Mesh, checkpointing, logging/eval/preview cadence and debug switches, with the model's
    own cadence (steps between log lines, evaluations and preview images)."""
    config.mesh = ml_collections.ConfigDict()
    config.mesh.fsdp = 1                   # parameter sharding axis size (1 = data parallel)
    config.mesh.num_devices = 0            # 0 = every device of every process
    config.mesh.min_fsdp_size = 2 ** 16    # smaller leaves stay replicated

    config.checkpoint_every_steps = 1000
    config.keep_checkpoints = 3
    config.async_checkpoints = True
    config.log_every_steps = log_every_steps
    config.eval_every_steps = eval_every_steps
    config.eval_at_start = True
    config.preview_every_steps = preview_every_steps
    config.preview_examples = 4

    # The TPU topology a ':tpu_pod' config is sized for ("" = none): the default of
    # `python -m metatalk_jax.train --compile-only` (train/compile_check.py).
    config.tpu_topology = ""

    config.debug = ml_collections.ConfigDict()
    config.debug.nan_at_step = -1          # tests: the state after this step becomes NaN


def use_tiny_engine_settings(config: ml_collections.ConfigDict) -> None:
    """The ':tiny' variants' engine settings (CPU tests): a checkpoint every 2 steps, a log line
    every step, no evaluation or previews unless a test asks for them."""
    config.checkpoint_every_steps = 2
    config.log_every_steps = 1
    config.eval_every_steps = 0
    config.eval_at_start = False
    config.preview_every_steps = 0
    config.preview_examples = 2


def use_cpu_engine_settings(config: ml_collections.ConfigDict) -> None:
    """The ':cpu' variants' engine settings (a real run on a laptop): checkpoints at the middle
    and the end, a log line every 50 steps, one evaluation and one preview at the end."""
    steps = int(config.total_steps)
    config.checkpoint_every_steps = max(1, steps // 2)
    config.log_every_steps = 50
    config.eval_every_steps = steps
    config.preview_every_steps = steps
    config.preview_examples = 4
