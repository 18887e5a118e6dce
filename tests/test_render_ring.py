"""The device ring of renders: windows read back equal the frames written, in the order the
pipeline writes and reads them."""

import jax.numpy as jnp
import numpy as np
import pytest

from metatalk_jax.inference.render_ring import RenderRing, ring_slots


@pytest.mark.parametrize("batch,half", [(8, 3), (2, 3), (1, 3), (4, 0)])
def test_windows_are_the_frames_written_while_the_ring_turns(batch, half):
    rng = np.random.default_rng(batch * 10 + half)
    frames = 5 * ring_slots(batch, half) + 3            # several turns and a short last batch
    renders = rng.integers(0, 256, (frames, 4, 4, 3), dtype=np.uint8)
    masks = rng.integers(0, 256, (frames, 4, 4), dtype=np.uint8)
    ring = RenderRing(batch, half)
    window = np.arange(-half, half + 1)
    rendered = next_centre = 0
    while next_centre < frames:
        if rendered < frames:                           # one batch, padded as the pipeline does
            n = min(batch, frames - rendered)
            take = np.minimum(np.arange(rendered, rendered + batch), rendered + n - 1)
            ring.put(rendered, jnp.asarray(renders[take]), jnp.asarray(masks[take]))
            rendered += n
        # whole batches of centres whose windows are rendered (all that is left at the end):
        # the pipeline's schedule
        done = rendered == frames
        top = frames if done else rendered - half
        while next_centre < top and (top - next_centre >= batch or done):
            centres = np.arange(next_centre, min(next_centre + batch, top))
            positions = centres[:, None] + window[None, :]
            valid = (positions >= 0) & (positions < frames)
            stored = np.clip(positions, max(0, rendered - ring.slots), rendered - 1)
            got, got_masks, refs, centre_masks, centre_renders = ring.windows(stored, valid)
            want = renders[np.clip(positions, 0, frames - 1)]
            np.testing.assert_array_equal(np.asarray(got)[valid], want[valid])
            np.testing.assert_array_equal(np.asarray(got_masks)[valid],
                                          masks[np.clip(positions, 0, frames - 1)][valid])
            assert np.all(np.asarray(got_masks)[~valid] == 0)
            np.testing.assert_array_equal(np.asarray(centre_masks), masks[centres])
            np.testing.assert_array_equal(np.asarray(centre_renders), renders[centres])
            assert refs is None
            next_centre = int(centres[-1]) + 1
