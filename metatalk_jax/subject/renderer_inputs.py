"""The neural renderer's conditioning: windows of masked 3DMM renders.

AudioDVP's renderer sees, for frame i, the 3DMM renders of frames i-3..i+3, each multiplied by
its frame's (dilated) mouth mask and normalised to [-1, 1], stacked along channels in time order
(frame i-3's RGB first); window positions past the ends of the video are all-zero tensors (zero
*after* normalisation, as its temporal dataset pads). The target is the real face crop times the
mouth mask, normalised the same way. `window_renders` draws the faces with the JAX renderer (the
render cache of training and, at inference, the faces of audio-driven expressions);
`stack_window` and `masked_target` run inside the jitted steps.
"""

from __future__ import annotations

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from metatalk_jax.face3d.geometry import PinholeCamera
from metatalk_jax.face3d.morphable import MorphableModel
from metatalk_jax.face3d.render import FaceCoeffs, render


MOUTH_DILATE_KERNEL = np.ones((3, 3), np.uint8)


def mouth_dilation_steps(mouth_dilation: int, resolution: int) -> int:
    """3x3 dilations of the mouth mask at `resolution`: `mouth_dilation` (prepare's config,
    AudioDVP's 4) at 256 px, scaled with the crop side."""
    return max(1, int(round(mouth_dilation * resolution / 256)))


def dilated_mouth_mask(mouth, steps: int) -> np.ndarray:
    """[R, R] mouth-triangle coverage in [0, 1] -> uint8 {0, 255} mask dilated `steps` times:
    the masks of the target shards (training) and of inference's renders alike."""
    return cv2.dilate((np.asarray(mouth) > 0.5).astype(np.uint8) * 255, MOUTH_DILATE_KERNEL,
                      iterations=steps)


def window_renders(model: MorphableModel, camera: PinholeCamera, expression, gamma, angles,
                   translation, screen_transform) -> jax.Array:
    """Shaded 3DMM renders of every window position, [B, W, R, R, 3] float in [0, 1].

    model: the subject's model (identity and albedo folded in, see subject.face_model);
    camera: the video's camera rasterizing at R; expression [B, W, E], gamma [B, W, 27],
    angles [B, W, 3] (rad), translation [B, W, 3]; screen_transform [B, W, 2, 3] frame-to-crop
    maps (continuous pixel coordinates at R). No gradient flows into the coefficients.
    """
    b, w = expression.shape[:2]
    n = b * w

    def flat(x):
        return jnp.reshape(x, (n,) + x.shape[2:]).astype(jnp.float32)

    empty = jnp.zeros((n, 0), jnp.float32)
    coeffs = FaceCoeffs(empty, flat(expression), empty, flat(angles), flat(translation),
                        flat(gamma))
    out = render(model, coeffs, camera, screen_transform=flat(screen_transform),
                 with_mouth_mask=False)
    image = jax.lax.stop_gradient(out.image)
    return image.reshape((b, w) + image.shape[1:])


def stack_window(renders, mouth_mask, valid) -> jax.Array:
    """[B, W, R, R, 3] renders in [0, 1], [B, W, R, R] masks in [0, 1], [B, W] bool ->
    generator input [B, R, R, 3W] in [-1, 1] (invalid positions exactly 0)."""
    x = renders * mouth_mask[..., None] * 2.0 - 1.0
    x = jnp.where(valid[:, :, None, None, None], x, 0.0)
    b, w, r, _, c = x.shape
    return jnp.transpose(x, (0, 2, 3, 1, 4)).reshape(b, r, r, w * c)


def masked_target(face_crop, mouth_mask) -> jax.Array:
    """[B, R, R, 3] uint8 crop and [B, R, R] mask in [0, 1] -> [B, R, R, 3] in [-1, 1]."""
    return face_crop.astype(jnp.float32) / 255.0 * mouth_mask[..., None] * 2.0 - 1.0


def random_flip(key, example_id, *images):
    """Flips each example left-right with probability 1/2, the same way for all `images`
    ([B, H, W, C] each). The coin of an example depends on (key, example_id) only, so it does
    not change with the batch's layout over devices or processes."""
    coins = jax.vmap(lambda i: jax.random.bernoulli(jax.random.fold_in(key, i)))(example_id)
    return tuple(jnp.where(coins[:, None, None, None], x[:, :, ::-1], x) for x in images)
