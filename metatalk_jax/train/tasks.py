"""Which model a training config trains: config.task -> its Task (train/task_protocol.py).

The one place a task name is resolved: the engine (train/loop.py) and the TPU fit check
(train/compile_check.py) both build their task here, through the task's one constructor.
"""

from __future__ import annotations

from metatalk_jax.errors import InputError
from metatalk_jax.train.task_protocol import Task


def make_task(config, *, shapes_only: bool = False) -> Task:
    """config.task: "renderer" (train/renderer_task.py) or "a2e" (train/a2e_task.py).

    shapes_only: built from the config alone, reading no subject or data (the compile check):
    everything the steps need, with the shapes the data would give; no data sources.
    """
    # Imported here: a task module pulls in its model and data pipeline, which the other
    # task does not need.
    if config.task == "renderer":
        from metatalk_jax.train.renderer_task import RendererTask
        return RendererTask(config, shapes_only=shapes_only)
    if config.task == "a2e":
        from metatalk_jax.train.a2e_task import A2ETask
        return A2ETask(config, shapes_only=shapes_only)
    raise InputError(f"unknown training task {config.task!r} (known: renderer, a2e)")
