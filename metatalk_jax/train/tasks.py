"""Which model a training config trains: config.task -> the task object the engine drives."""

from __future__ import annotations

from metatalk_jax.errors import InputError


def make_task(config):
    """config.task: "renderer" (train/renderer_task.py) or "a2e" (train/a2e_task.py)."""
    if config.task == "renderer":
        from metatalk_jax.train.renderer_task import RendererTask
        return RendererTask(config)
    if config.task == "a2e":
        from metatalk_jax.train.a2e_task import A2ETask
        return A2ETask(config)
    raise InputError(f"unknown training task {config.task!r} (known: renderer, a2e)")
