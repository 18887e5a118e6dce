"""The renders of the frames still inside some window, kept on the device.

The generator of output frame k reads the renders of frames k-half..k+half. Renders are made
batch by batch and each is read by up to `window` generator calls, so they stay where they
were drawn: a ring of `slots` frames on the device (frame f in slot f mod slots), written one
render batch at a time and read by gathering whole windows there. Nothing of the windows
travels to the host; the host gets back only what it composites (each centre's mouth mask) and,
with a preview, the centre's render.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np


def ring_slots(batch: int, half: int) -> int:
    """Slots enough for every frame a window may still read: the renders of a batch being
    generated (its centres +- half) and the next render batch; a multiple of `batch`, so a
    render batch never wraps around the ring's end."""
    return batch * (2 + -(-2 * half // batch))


@partial(jax.jit, donate_argnums=(0,))
def _write(ring, start, parts):
    return jax.tree.map(
        lambda buffer, part: jax.lax.dynamic_update_slice_in_dim(buffer, part, start, axis=0),
        ring, parts)


@partial(jax.jit, static_argnames=("half",))
def _windows(ring, slots, valid, *, half: int):
    renders, masks, references = ring
    window_masks = jnp.where(valid[..., None, None], masks[slots], 0)
    centre = slots[:, half]
    return (renders[slots], window_masks, None if references is None else references[centre],
            masks[centre], renders[centre])


class RenderRing:
    """Device slots for the renders [R, R, 3] uint8, dilated mouth masks [R, R] uint8 and
    (renderers that read one) mouth references [R, R, 3] uint8 of consecutive frames."""

    def __init__(self, batch: int, half: int):
        self.batch, self.half = batch, half
        self.slots = ring_slots(batch, half)
        self._buffers = None

    def put(self, first: int, renders, masks, references=None) -> None:
        """Stores frames first..first+B-1 ([B, ...] device arrays, B = the batch; padding at the
        end of a last, short batch lands in slots no window reads)."""
        parts = (renders, masks, references)
        if self._buffers is None:
            self._buffers = jax.tree.map(
                lambda part: jnp.zeros((self.slots,) + part.shape[1:], part.dtype), parts)
        self._buffers = _write(self._buffers, np.int32(first % self.slots), parts)

    def windows(self, frames: np.ndarray, valid: np.ndarray):
        """frames int [B, W] (frame numbers, each stored and not yet overwritten), valid bool
        [B, W] -> device arrays (renders [B, W, R, R, 3], masks [B, W, R, R] zero where not
        valid, the centres' references [B, R, R, 3] or None, the centres' masks [B, R, R], the
        centres' renders [B, R, R, 3])."""
        slots = np.asarray(frames, np.int64) % self.slots
        return _windows(self._buffers, jnp.asarray(slots, jnp.int32), jnp.asarray(valid),
                        half=self.half)
