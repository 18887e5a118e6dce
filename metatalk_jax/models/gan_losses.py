"""GAN losses for the renderer: pix2pix's vanilla GAN (BCE on logits), L1, and pix2pixHD's
discriminator feature matching. All return float32 scalars (float64 for float64 inputs).

Discriminator outputs come in two shapes: a PatchDiscriminator's feature list (last entry the
logits [B,h,w,1]) or a MultiScaleDiscriminator's list of such lists; both are accepted.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _at_least_float32(x: jax.Array) -> jax.Array:
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def per_scale(d_outputs) -> list[list[jax.Array]]:
    """A discriminator's output as a list (one entry per scale) of feature lists."""
    return ([list(d_outputs)] if not isinstance(d_outputs[0], (list, tuple))
            else [list(s) for s in d_outputs])


def bce_with_logits(logits: jax.Array, target_is_real: bool) -> jax.Array:
    """torch BCEWithLogitsLoss against an all-1 (real) or all-0 (fake) target, mean over every
    element: mean(softplus(-x)) for real, mean(softplus(x)) for fake."""
    x = _at_least_float32(logits)
    return jnp.mean(jax.nn.softplus(-x if target_is_real else x))


def gan_loss(d_outputs, target_is_real: bool) -> jax.Array:
    """Vanilla GAN loss on the logits of every scale, summed over scales (pix2pixHD; one scale ==
    pix2pix's GANLoss('vanilla'))."""
    return sum(bce_with_logits(scale[-1], target_is_real) for scale in per_scale(d_outputs))


def l1_loss(prediction: jax.Array, target: jax.Array) -> jax.Array:
    """Mean absolute difference (torch L1Loss), in the images' units ([-1,1] for the renderer)."""
    return jnp.mean(jnp.abs(_at_least_float32(prediction) - _at_least_float32(target)))


def feature_matching_loss(fake_outputs, real_outputs) -> jax.Array:
    """pix2pixHD feature matching: mean L1 between D's features on fake and on real (the real
    side held constant), over every layer but the logits, averaged over layers and scales."""
    per_scale_losses = []
    for fake, real in zip(per_scale(fake_outputs), per_scale(real_outputs)):
        layers = [l1_loss(f, jax.lax.stop_gradient(r)) for f, r in zip(fake[:-1], real[:-1])]
        per_scale_losses.append(sum(layers) / len(layers))
    return sum(per_scale_losses) / len(per_scale_losses)
