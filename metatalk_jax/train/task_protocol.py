"""What a model must offer to be trained: the `Task` that the engine (train/loop.py) drives and the
TPU fit check (train/compile_check.py) compiles.

Tasks: train/renderer_task.py, train/a2e_task.py. Each has one constructor,
`TaskClass(config, *, shapes_only=False)`, and train/tasks.py picks the class from config.task.
"""

from __future__ import annotations

from typing import Any, Iterable, Protocol, runtime_checkable

import jax
import numpy as np

# {key: (shape, dtype)} of what data_pipelines/windows.py adds to every example of a window
# batch: the row's global stream position and whether it is real (False: the padding of a last
# partial batch). Part of every window task's example_spec.
WINDOW_ROW_SPEC = {"example_id": ((), np.int64), "example_valid": ((), bool)}


@runtime_checkable
class Task(Protocol):
    """A model to train: its state, its pure steps (jitted, sharded and donated by the engine),
    its data and the replicated constants the steps take.

    B below is the global batch size (config.batch_size); a process's batches hold its
    B / process_count rows, which the engine assembles into the global batch the steps see.

    Optional members, which the engine looks up with getattr (a task without them gets the
    default):
      finalize_eval(means: dict) -> dict   the reported eval metrics from the means of
                                           eval_step's sums (for metrics that are not means of
                                           per-example values, e.g. a correlation from
                                           moments); default: the means as they are.
      preview_labels: tuple[str, ...]      titles of preview_step's image columns, left to
                                           right; default: ("preview",).
    """

    name: str          # its config.task value

    def constants(self) -> dict:
        """{name: array} replicated on every device, passed to every step as `constants` (kept
        out of the state: they are not trained and not checkpointed)."""

    def init_state(self, rng: jax.Array) -> Any:
        """A fresh train state (a pytree of arrays) from a typed key. The engine traces it
        under eval_shape and jit: it must not read data."""

    def example_spec(self) -> dict:
        """{key: (shape, numpy dtype)} of one example of the batches the steps get (a batch
        holds [B, *shape]), WINDOW_ROW_SPEC included: the compile check's abstract batch."""

    def train_batches(self, *, seed: int, process_index: int,
                      process_count: int) -> Iterable[dict]:
        """This process's rows of every global training batch, without end (checkpointable: a
        grain iterator)."""

    def eval_batches(self, *, process_index: int, process_count: int) -> Iterable[dict]:
        """This process's rows of the held-out batches, each example once (the last batch
        padded with example_valid False)."""

    def train_step(self, state: Any, batch: dict, rng: jax.Array,
                   constants: dict) -> tuple[Any, dict]:
        """(next state, {metric: float scalar}) after one optimisation step on a global
        batch; pure."""

    def eval_step(self, state: Any, batch: dict, constants: dict) -> dict:
        """{metric: sum over the batch's real examples} and "count" (how many): the engine
        divides the totals over all batches by the total count; pure."""

    def preview_step(self, state: Any, batch: dict, constants: dict) -> jax.Array:
        """float [B, H, W, 3] in [0, 1]: one image per example, its columns side by side;
        pure."""
