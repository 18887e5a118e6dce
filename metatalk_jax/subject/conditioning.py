"""The neural renderer's conditioning: windows of masked 3DMM renders.

AudioDVP's renderer sees, for frame i, the 3DMM renders of frames i-3..i+3, each multiplied by
its frame's (dilated) mouth mask and normalised to [-1, 1], stacked along channels in time order
(frame i-3's RGB first); window positions past the ends of the video are all-zero tensors (zero
*after* normalisation, as its temporal dataset pads). The target is the real face crop times the
mouth mask, normalised the same way. `window_renders` draws the faces with the JAX renderer (the
render cache of training and, at inference, the faces of audio-driven expressions);
`stack_window` and `masked_target` run inside the jitted steps.

With a mouth reference (configs/renderer.py data.mouth_reference; subject/mouth_references.py),
the generator also sees one real crop of the subject, of the frame whose mouth is nearest the
centre frame's, redrawn in the centre render's geometry (face3d/texture_transfer.py) and masked
by the centre frame's mouth mask: 3 more input channels after the window's (`with_reference`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from metatalk_jax.errors import InputError
from metatalk_jax.face3d.geometry import PinholeCamera
from metatalk_jax.face3d.morphable import MorphableModel
from metatalk_jax.face3d.mouth_interior import paint_mouth_cavity
from metatalk_jax.face3d.render import FaceCoeffs, posed_vertices, project_to_screen, render
from metatalk_jax.face3d.texture_transfer import transfer_texture


MOUTH_DILATE_KERNEL = np.ones((3, 3), np.uint8)
# The renderer's conditioning: "audiodvp" draws the 3DMM as it is (its mesh is closed at the
# mouth); "mouth_cavity" also fills the region between the lips with a dark red (the colour of
# a mouth's inside, far from any skin colour), so an opened mouth shows in the renders.
CONDITIONINGS = {"audiodvp": None, "mouth_cavity": (0.25, 0.05, 0.05)}


def cavity_colour(conditioning: str):
    """The cavity colour of a conditioning name (None for none); ValueError for unknown names."""
    if conditioning not in CONDITIONINGS:
        raise InputError(f"unknown renderer conditioning {conditioning!r}; expected one of "
                         f"{sorted(CONDITIONINGS)}")
    return CONDITIONINGS[conditioning]


def mouth_dilation_steps(mouth_dilation: int, resolution: int) -> int:
    """3x3 dilations of the mouth mask at `resolution`: `mouth_dilation` (prepare's config,
    AudioDVP's 4) at 256 px, scaled with the crop side."""
    return max(1, int(round(mouth_dilation * resolution / 256)))


def dilated_mouth_masks(mouth, steps: int) -> jax.Array:
    """[N, R, R] mouth-triangle coverage in [0, 1] -> uint8 {0, 255} masks dilated `steps` times
    by a 3x3 square (AudioDVP's cv2.dilate), i.e. one (2 steps + 1)-square maximum, outside the
    image counting as 0; done as a row and a column maximum. The masks of the target shards
    (training) and of inference's renders alike."""
    side = 2 * int(steps) + 1
    masks = jnp.where(jnp.asarray(mouth) > 0.5, 255, 0).astype(jnp.uint8)
    for window in ((1, side, 1), (1, 1, side)):
        masks = jax.lax.reduce_window(masks, np.uint8(0), jax.lax.max, window, (1, 1, 1), "SAME")
    return masks


class CropRenders(NamedTuple):
    """The subject's 3DMM drawn in frames' crops: image [N, R, R, 3] in [0, 1] (background 0),
    mouth [N, R, R] mouth-triangle coverage in {0, 1}, landmarks [N, 68, 2] crop pixels,
    alpha [N, R, R] face coverage in {0, 1} (the shards' face masks), reference [N, R, R, 3] in
    [0, 1]: the mouth references redrawn in each render's geometry (None when not asked for)."""

    image: jax.Array
    mouth: jax.Array
    landmarks: jax.Array
    alpha: jax.Array
    reference: jax.Array | None = None


class ReferenceFrames(NamedTuple):
    """The real crops to redraw in N renders' geometry, one per render, with what places the
    mesh in them: expression [N, E], angles [N, 3], translation [N, 3] (each reference frame's
    fitted values), screen_transform [N, 2, 3] (frame pixels -> that frame's stored crop at S),
    crops [N, S, S, 3] uint8."""

    expression: jax.Array
    angles: jax.Array
    translation: jax.Array
    screen_transform: jax.Array
    crops: jax.Array


def crop_renders(model: MorphableModel, camera: PinholeCamera, expression, gamma, angles,
                 translation, screen_transform, *, mouth_cavity=None,
                 reference: ReferenceFrames | None = None) -> CropRenders:
    """Renders N faces of the subject, each in its own crop: the one way the training shards'
    masks, the render cache (training), inference and the pseudo-video previews draw the subject
    (the fits differentiate their own renders: recon.fit.render_fit).

    model: the subject's model (identity and albedo folded in, see subject.face_model);
    camera: the video's camera rasterizing at R; expression [N, E], gamma [N, 27], angles
    [N, 3] (rad), translation [N, 3]; screen_transform [N, 2, 3] frame-to-crop maps
    (continuous pixel coordinates at R). mouth_cavity: None (AudioDVP's render), or an RGB
    colour in [0, 1] painted between the opened lips (face3d.mouth_interior). reference: real
    crops to redraw in each render's geometry (CropRenders.reference). No gradient flows into
    the coefficients.
    """
    def f32(x):
        return jnp.asarray(x, jnp.float32)

    n = expression.shape[0]
    empty = jnp.zeros((n, 0), jnp.float32)
    coeffs = FaceCoeffs(empty, f32(expression), empty, f32(angles), f32(translation), f32(gamma))
    out = render(model, coeffs, camera, screen_transform=f32(screen_transform))
    image = out.image
    if mouth_cavity is not None:
        image = paint_mouth_cavity(image, out.landmarks, mouth_cavity)
    redrawn = None
    if reference is not None:
        placed = FaceCoeffs(empty, f32(reference.expression), empty, f32(reference.angles),
                            f32(reference.translation), jnp.zeros((n, 27), jnp.float32))
        vertices, _ = posed_vertices(model, placed)
        positions = project_to_screen(camera, vertices, f32(reference.screen_transform))
        redrawn = transfer_texture(out.fragments, model.triangles, positions[..., :2],
                                   f32(reference.crops) / 255.0)
    return jax.lax.stop_gradient(CropRenders(image, out.mouth_mask, out.landmarks, out.alpha,
                                             redrawn))


def window_renders(model: MorphableModel, camera: PinholeCamera, expression, gamma, angles,
                   translation, screen_transform, *, mouth_cavity=None) -> jax.Array:
    """`crop_renders` images of every window position: coefficients [B, W, ...] ->
    [B, W, R, R, 3] float in [0, 1]."""
    b, w = expression.shape[:2]

    def flat(x):
        return jnp.reshape(x, (b * w,) + x.shape[2:])

    image = crop_renders(model, camera, flat(expression), flat(gamma), flat(angles),
                         flat(translation), flat(screen_transform),
                         mouth_cavity=mouth_cavity).image
    return image.reshape((b, w) + image.shape[1:])


def stack_window(renders, mouth_mask, valid) -> jax.Array:
    """[B, W, R, R, 3] renders in [0, 1], [B, W, R, R] masks in [0, 1], [B, W] bool ->
    generator input [B, R, R, 3W] in [-1, 1] (invalid positions exactly 0)."""
    x = renders * mouth_mask[..., None] * 2.0 - 1.0
    x = jnp.where(valid[:, :, None, None, None], x, 0.0)
    b, w, r, _, c = x.shape
    return jnp.transpose(x, (0, 2, 3, 1, 4)).reshape(b, r, r, w * c)


def with_reference(inputs, reference, centre_mask) -> jax.Array:
    """Generator input [B, R, R, 3W] ++ the mouth reference [B, R, R, 3] in [0, 1] times the
    centre frame's mask [B, R, R] in [0, 1], normalised as the renders -> [B, R, R, 3W + 3]."""
    ref = reference * centre_mask[..., None] * 2.0 - 1.0
    return jnp.concatenate([inputs, ref.astype(inputs.dtype)], axis=-1)


def masked_target(face_crop, mouth_mask) -> jax.Array:
    """[B, R, R, 3] uint8 crop and [B, R, R] mask in [0, 1] -> [B, R, R, 3] in [-1, 1]."""
    return face_crop.astype(jnp.float32) / 255.0 * mouth_mask[..., None] * 2.0 - 1.0

