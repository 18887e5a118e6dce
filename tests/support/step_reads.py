"""Which batch keys a training task's steps read: traced (jax.eval_shape, nothing runs) with a
batch that records every key looked up, so a test can hold a task's batches to exactly those."""

from __future__ import annotations

import jax
import jax.numpy as jnp


class RecordingBatch(dict):
    """A batch dict (of device arrays, as the engine passes) that remembers the keys read
    through [] or .get."""

    def __init__(self, batch):
        super().__init__({key: jnp.asarray(value) for key, value in batch.items()})
        self.read: set[str] = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)


def keys_read_by_steps(task, batch) -> set[str]:
    """The keys of `batch` that task.train_step, eval_step and preview_step read."""
    recording = RecordingBatch(batch)
    state = jax.eval_shape(task.init_state, jax.random.key(0))
    constants = task.constants()
    key = jax.random.key(1)
    jax.eval_shape(lambda s: task.train_step(s, recording, key, constants), state)
    jax.eval_shape(lambda s: task.eval_step(s, recording, constants), state)
    jax.eval_shape(lambda s: task.preview_step(s, recording, constants), state)
    return recording.read
