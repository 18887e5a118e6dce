"""Preemption: turn SIGTERM into "save a checkpoint at the next step boundary and exit".

Cloud TPU / GPU schedulers send SIGTERM some seconds before they take a machine away. In a
single process a Python signal handler sets a flag that the loop polls after each step. With
several processes the step at which each one notices the signal may differ, so the decision is
taken by JAX's preemption sync point (the coordination service agrees on one step for all
processes); jax.distributed.initialize installs its own SIGTERM notifier for that, so no Python
handler is installed then.
"""

from __future__ import annotations

import signal

import jax


class PreemptionWatch:
    """`reached(step)` -> True once, at the step boundary where every process should save."""

    def __init__(self):
        self.signalled = False
        self._multi = jax.process_count() > 1
        self._previous = None
        if not self._multi:
            self._previous = signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        del signum, frame
        self.signalled = True

    def reached(self, step: int) -> bool:
        if self._multi:
            from jax.experimental import multihost_utils
            return bool(multihost_utils.reached_preemption_sync_point(step))
        return self.signalled

    def close(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
