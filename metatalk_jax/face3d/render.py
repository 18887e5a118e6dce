"""Coefficients -> RGB image, alpha, depth, 68 landmarks and a mouth-region mask.

Composes geometry (shape, normals, pose, camera), SH shading and the rasterizer. Shading is per
vertex and colours are interpolated (Gouraud), as in AudioDVP and Deep3DFaceRecon.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from metatalk_jax.face3d import geometry, raster, shading
from metatalk_jax.face3d.antialias import antialias
from metatalk_jax.face3d.morphable import MorphableModel


class FaceCoeffs(NamedTuple):
    """3DMM coefficients of a batch of B frames.

    identity [B, K_id], expression [B, K_exp], texture [B, K_tex] (unit-variance coefficients);
    angles [B, 3] Euler angles in radians (R = Rz Ry Rx); translation [B, 3] in model units;
    gamma [B, 27] SH lighting in the model convention's layout.
    """

    identity: jax.Array
    expression: jax.Array
    texture: jax.Array
    angles: jax.Array
    translation: jax.Array
    gamma: jax.Array

    @classmethod
    def zeros(cls, model: MorphableModel, batch: int = 1) -> "FaceCoeffs":
        d = model.dims
        z = lambda k: jnp.zeros((batch, k), jnp.float32)  # noqa: E731
        return cls(z(d["id"]), z(d["exp"]), z(d["tex"]), z(3), z(3), z(27))

    def to_audiodvp(self):
        """AudioDVP's per-frame vector [B, 97]: expression 64, gamma 27, angles 3, translation 3."""
        return jnp.concatenate([self.expression, self.gamma, self.angles, self.translation], -1)

    def to_deep3d(self):
        """Deep3DFaceRecon's [B, 257]: id 0:80, exp 80:144, tex 144:224, angles, gamma, trans."""
        return jnp.concatenate([self.identity, self.expression, self.texture, self.angles,
                                self.gamma, self.translation], -1)

    @classmethod
    def from_audiodvp(cls, per_frame, identity, texture) -> "FaceCoeffs":
        """per_frame [B, 97] plus shared identity [80] and texture [80] (broadcast over B)."""
        b = per_frame.shape[0]
        return cls(jnp.broadcast_to(identity, (b, identity.shape[-1])), per_frame[:, :64],
                   jnp.broadcast_to(texture, (b, texture.shape[-1])), per_frame[:, 91:94],
                   per_frame[:, 94:97], per_frame[:, 64:91])

    @classmethod
    def from_deep3d(cls, coeffs) -> "FaceCoeffs":
        return cls(coeffs[:, :80], coeffs[:, 80:144], coeffs[:, 144:224], coeffs[:, 224:227],
                   coeffs[:, 254:257], coeffs[:, 227:254])


class RenderOutput(NamedTuple):
    """image [B,H,W,3] in [0,1]; alpha [B,H,W]; depth [B,H,W] (view depth, 0 = background);
    landmarks [B,68,2] pixel coordinates (x right, y down); mouth_mask [B,H,W] in {0,1};
    fragments: the rasterizer output of the full face."""

    image: jax.Array
    alpha: jax.Array
    depth: jax.Array
    landmarks: jax.Array
    mouth_mask: jax.Array
    fragments: raster.Fragments


def posed_vertices(model: MorphableModel, coeffs: FaceCoeffs):
    """Posed vertices and normals in the model frame: ([B,V,3], [B,V,3])."""
    shape = geometry.face_shape(model, coeffs.identity, coeffs.expression)
    normals = geometry.vertex_normals(shape, model.triangles, model.point_buf,
                                      normalize_faces=model.convention == "deep3d")
    return geometry.apply_pose(shape, normals, coeffs.angles, coeffs.translation, model.convention)


def landmark_ids_for(model: MorphableModel, camera: geometry.PinholeCamera):
    """The model's 68 landmark vertices in image order: a mirroring camera (AudioDVP's) swaps
    left and right, so its landmark i is the model's landmark IBUG68_MIRROR[i]."""
    if camera.mirrored:
        return model.landmark_ids[jnp.asarray(geometry.IBUG68_MIRROR)]
    return model.landmark_ids


def project_to_screen(camera: geometry.PinholeCamera, points, screen_transform=None):
    """[B, N, 3] model-frame points -> [B, N, 3] (u, v, depth), u/v after the optional
    [B, 2, 3] screen_transform (a similarity keeps depth order, so depth is unchanged)."""
    pix = camera.project(points)
    if screen_transform is None:
        return pix
    st = jnp.asarray(screen_transform, pix.dtype)
    uv = jnp.einsum("bij,bnj->bni", st[:, :, :2], pix[..., :2]) + st[:, None, :, 2]
    return jnp.concatenate([uv, pix[..., 2:]], -1)


def render(model: MorphableModel, coeffs: FaceCoeffs, camera: geometry.PinholeCamera, *,
           antialiased: bool = False, perspective_correct: bool = True,
           with_mouth_mask: bool = True, screen_transform=None) -> RenderOutput:
    """Renders a batch of faces.

    Args:
      model: the morphable model (jax arrays; call `.as_jax()` once).
      coeffs: FaceCoeffs with batch B.
      camera: the pinhole camera; its height/width set the image size.
      antialiased: blend silhouette pixels analytically (gradients at the face outline).
      perspective_correct: perspective-correct interpolation (AudioDVP/tf_mesh_renderer
        interpolate perspective-correctly too).
      with_mouth_mask: also rasterize the mouth-region triangles.
      screen_transform: optional [B, 2, 3] affine maps applied to the projected pixel
        coordinates, e.g. the crop module's frame-to-crop maps: the camera then sees the full
        frame and the image is that frame's crop (`camera` gives the crop's height/width).
    """
    verts, normals = posed_vertices(model, coeffs)
    albedo = geometry.face_albedo(model, coeffs.texture)
    conv = model.conv
    colours = shading.sh_shade(albedo, normals, coeffs.gamma, conv["sh_layout"], conv["init_light"])
    pix = project_to_screen(camera, verts, screen_transform)          # [B, V, 3]
    frags = raster.rasterize(pix, model.triangles, camera.image_size,
                             perspective_correct=perspective_correct)
    image = jnp.clip(raster.interpolate(colours, model.triangles, frags), 0.0, 1.0)
    alpha = raster.coverage_alpha(frags)
    if antialiased:
        blended = antialias(jnp.concatenate([image, alpha[..., None]], -1), frags, pix,
                            model.triangles)
        image, alpha = blended[..., :3], blended[..., 3]
    landmarks = pix[:, landmark_ids_for(model, camera), :2]
    if with_mouth_mask:
        # Coverage only: the region's own silhouette, as a full rasterization's mask.
        mouth_mask = raster.covered_pixels(pix, model.mouth_triangles, camera.image_size,
                                           perspective_correct=perspective_correct)
        mouth_mask = mouth_mask.astype(image.dtype)
    else:
        mouth_mask = jnp.zeros(alpha.shape, image.dtype)
    return RenderOutput(image, alpha, frags.depth, landmarks, mouth_mask, frags)
