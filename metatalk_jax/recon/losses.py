"""Loss terms for fitting a 3DMM to video frames (AudioDVP's terms and weights as the start).

AudioDVP trains its coefficient regressor with
    1.9 * photometric MSE + 1.6e-3 * landmark loss + 3e-4 * (|id|^2 + 1.7e-3 |tex|^2 + 0.8 |exp|^2)
with landmark weight 50 on brows (17-26), eyes (36-47) and mouth (48-67) and 1 elsewhere, on
256 x 256 crops. We fit the coefficients directly, at any crop size, so landmark distances are
measured in units of a 256 px crop of the same box (the weights keep their meaning) and the
photometric error is the mean over the face pixels rather than over the whole image (AudioDVP's
mean includes background, which only rescales the weight by the face's area).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

# The 256 px crop in which AudioDVP's landmark weights were chosen.
LANDMARK_UNIT_RESOLUTION = 256


class LossWeights(NamedTuple):
    photometric: float = 1.9
    landmark: float = 1.6e-3
    regularization: float = 3e-4
    identity: float = 1.0
    texture: float = 1.7e-3
    expression: float = 0.8
    # Per-vertex albedo offsets (models without a texture basis): mean squared offset.
    albedo: float = 1e-2
    # Per-landmark weights: AudioDVP's are 50 on brows/eyes/mouth and 1 on jaw and nose.
    landmark_inner: float = 50.0
    landmark_nose: float = 1.0
    landmark_jaw: float = 1.0

    @classmethod
    def from_config(cls, config) -> "LossWeights":
        """Reads the fields present in an ml_collections config (missing ones keep defaults)."""
        return cls(**{k: float(config[k]) for k in cls._fields if k in config})


def landmark_weights(weights: LossWeights | None = None) -> np.ndarray:
    """[68] float32: `landmark_inner` on brows, eyes and mouth (17-26, 36-47, 48-67),
    `landmark_nose` on the nose (27-35), `landmark_jaw` on the jaw line (0-16)."""
    weights = weights or LossWeights()
    w = np.full(68, weights.landmark_jaw, np.float32)
    w[17:27] = weights.landmark_inner
    w[27:36] = weights.landmark_nose
    w[36:68] = weights.landmark_inner
    return w


def landmark_loss(predicted, target, weights, frame_mask=None):
    """Weighted mean squared landmark distance.

    predicted, target: [B, 68, 2] in landmark units (pixels of a 256 px crop);
    weights: [68]; frame_mask: optional [B] (0 for padding frames). Returns a scalar.
    """
    per_frame = jnp.mean(weights * jnp.sum((predicted - target) ** 2, -1), -1)
    return _masked_mean(per_frame, frame_mask)


def photometric_loss(rendered, observed, region, frame_mask=None):
    """Mean squared colour error over the face region.

    rendered, observed: [B, H, W, 3] in [0, 1]; region: [B, H, W] in [0, 1] (rendered face
    coverage x the model's face mask). Returns a scalar.
    """
    err = jnp.sum(region[..., None] * (rendered - observed) ** 2, axis=(1, 2, 3))
    area = 3.0 * jnp.sum(region, axis=(1, 2)) + 1e-6
    return _masked_mean(err / area, frame_mask)


def coefficient_regularization(weights: LossWeights, identity, expression, texture=None,
                               frame_mask=None):
    """AudioDVP's prior: |id|^2 + 1.7e-3 |tex|^2 + 0.8 |exp|^2 (expression per frame, averaged).

    identity [K_id], expression [B, K_exp], texture [K_tex] or None."""
    reg = weights.identity * jnp.sum(identity ** 2)
    reg = reg + weights.expression * _masked_mean(jnp.sum(expression ** 2, -1), frame_mask)
    if texture is not None and texture.size:
        reg = reg + weights.texture * jnp.sum(texture ** 2)
    return reg


def _masked_mean(values, frame_mask):
    if frame_mask is None:
        return jnp.mean(values)
    return jnp.sum(values * frame_mask) / jnp.maximum(jnp.sum(frame_mask), 1.0)
