"""The renderer training's augmentations: random per-example changes to a batch, applied by
train/renderer_task.py after the conditioning is masked. `random_flip` mirrors examples
left-right (AudioDVP trains with flips); `random_shift` moves them by a few whole pixels and
`random_gain` scales the renders' colour channels, because the exact place of the face in the
crop and the lighting of a render would otherwise tell the generator which training frame it is
looking at. Each example's draw depends on (key, example_id) only, never on its place in the
batch, so the augmentation does not change with the batch's layout over devices or processes.
The conditioning itself (the masked 3DMM render windows) is subject/conditioning.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def random_flip(key, example_id, *images):
    """Flips each example left-right with probability 1/2, the same way for all `images`
    ([B, H, W, C] each). The coin of an example depends on (key, example_id) only, so it does
    not change with the batch's layout over devices or processes."""
    coins = jax.vmap(lambda i: jax.random.bernoulli(jax.random.fold_in(key, i)))(example_id)
    return tuple(jnp.where(coins[:, None, None, None], x[:, :, ::-1], x) for x in images)


def _example_keys(key, example_id):
    """One key per example from (key, example_id): independent of the batch's layout."""
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(example_id)


def random_shift(key, example_id, max_shift: int, *images):
    """Moves each example by a random whole-pixel offset in [-max_shift, max_shift]^2, the same
    way for all `images` ([B, H, W, C] each), wrapping at the borders (the renderer's masked
    images are constant there). Takes away the exact place of the face in the crop, which
    otherwise tells the generator which training frame it is looking at."""
    offsets = jax.vmap(lambda k: jax.random.randint(k, (2,), -max_shift, max_shift + 1))(
        _example_keys(key, example_id))
    move = jax.vmap(lambda x, d: jnp.roll(x, (d[0], d[1]), axis=(0, 1)))
    return tuple(move(x, offsets) for x in images)


def random_gain(key, example_id, max_gain: float, renders):
    """[B, W, R, R, 3] renders in [0, 1] times a random per-example, per-channel gain in
    [1 - max_gain, 1 + max_gain], clipped: the lighting of a render then no longer identifies
    its training frame."""
    gains = jax.vmap(lambda k: jax.random.uniform(k, (3,), minval=1.0 - max_gain,
                                                  maxval=1.0 + max_gain))(
        _example_keys(key, example_id))
    return jnp.clip(renders * gains[:, None, None, None, :], 0.0, 1.0)
