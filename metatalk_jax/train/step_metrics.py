"""Training metrics kept on the devices between log steps, and the non-finite check they feed.

The engine (train/loop.py) dispatches step after step without waiting for the device: each
step's metrics (a dict of device scalars) go into a `PendingMetrics`, which fetches them all in
one transfer when the loop logs or saves. A NaN/Inf is then found at the first fetch after it
happened; the error names the range of steps where the state went bad (after the last step
known to be finite, up to the first one seen non-finite) and the last good checkpoint, and the
loop checks the state itself before every save, so a non-finite state is never checkpointed.
"""

from __future__ import annotations

import math

import jax


class NonFiniteError(RuntimeError):
    """Training produced NaN/Inf; the message names the steps and the offending metrics."""


class PendingMetrics:
    """Per-step device metrics since the last fetch, and what the fetched ones proved finite.

    good_through: the newest step s whose resulting state is known finite (0 = the initial
    state): step k's metrics are computed from the state after step k - 1, and a checked
    state (`state_checked`) proves its own step.
    """

    def __init__(self, good_through: int = 0):
        self.good_through = int(good_through)
        self._pending: list[tuple[int, dict]] = []

    def add(self, step: int, metrics: dict) -> None:
        """Metrics (device scalars) of the step that produced state `step` (1-based)."""
        self._pending.append((int(step), metrics))

    def fetch(self) -> list[tuple[int, dict]]:
        """[(step, {name: float})] of every pending step, fetched in one transfer; raises
        NonFiniteError at the first step with a non-finite value (naming the step and the
        values; train/loop.py adds the last good checkpoint)."""
        pending, self._pending = self._pending, []
        if not pending:
            return []
        values = jax.device_get([m for _, m in pending])
        rows = []
        for (step, _), metrics in zip(pending, values):
            row = {k: float(v) for k, v in metrics.items()}
            bad = {k: v for k, v in row.items() if not math.isfinite(v)}
            if bad:
                raise NonFiniteError(self.describe(step, bad))
            self.good_through = max(self.good_through, step - 1)
            rows.append((step, row))
        return rows

    def state_checked(self, step: int, finite: bool) -> None:
        """Records the result of checking the state after `step`; raises when it is not finite."""
        if not finite:
            raise NonFiniteError(self.describe(step, {}))
        self.good_through = max(self.good_through, int(step))

    def describe(self, step: int, bad: dict) -> str:
        what = ", ".join(f"{k}={v}" for k, v in bad.items()) or "parameters"
        first = self.good_through + 1
        where = f"step {step}" if first >= step else f"steps {first}-{step}"
        return f"non-finite values in {where} ({what} at step {step})"
