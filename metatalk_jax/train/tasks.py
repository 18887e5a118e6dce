"""Which model a training config trains: config.task -> the task object the engine drives."""

from __future__ import annotations


def make_task(config):
    """config.task: "renderer" (train/renderer_task.py); the A2E joins here later."""
    if config.task == "renderer":
        from metatalk_jax.train.renderer_task import RendererTask
        return RendererTask(config)
    raise ValueError(f"unknown training task {config.task!r} (known: renderer)")
