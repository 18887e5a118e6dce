"""Face formation geometry: coefficients -> vertices, vertex normals, pose, perspective cameras.

Model frame (BFM): x to the subject's left, y up, z towards the viewer. Image frame (the
rasterizer's contract): x right, y down, pixel (i, j) centred at (j + 0.5, i + 0.5), depth > 0.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from metatalk_jax.face3d.morphable import MorphableModel


def face_shape(model: MorphableModel, identity, expression):
    """Vertices in model units: mean + id_basis . identity + exp_basis . expression.

    identity [B, K_id], expression [B, K_exp] -> [B, V, 3].
    """
    return (model.mean_shape[None]
            + jnp.einsum("vck,bk->bvc", model.id_basis, identity)
            + jnp.einsum("vck,bk->bvc", model.exp_basis, expression))


def face_albedo(model: MorphableModel, texture):
    """Per-vertex albedo in [0, 1] (before clamping): texture [B, K_tex] -> [B, V, 3]."""
    if model.tex_basis.shape[-1] == 0:
        return jnp.broadcast_to(model.mean_albedo[None],
                                (texture.shape[0],) + model.mean_albedo.shape)
    return model.mean_albedo[None] + jnp.einsum("vck,bk->bvc", model.tex_basis, texture)


def vertex_normals(vertices, triangles, point_buf, normalize_faces: bool = False):
    """Unit vertex normals from the triangles around each vertex.

    Args:
      vertices: [B, V, 3]; triangles [F, 3]; point_buf [V, P] triangle ids padded with F.
      normalize_faces: Deep3DFaceRecon normalises each face normal before summing; AudioDVP
        sums the raw cross products (area-weighted).
    Returns:
      [B, V, 3]. Face normal (v0 - v1) x (v1 - v2), outward for BFM's counter-clockwise winding.
    """
    v0, v1, v2 = (vertices[:, triangles[:, i]] for i in range(3))
    face_n = jnp.cross(v0 - v1, v1 - v2)
    if normalize_faces:
        face_n = face_n / jnp.maximum(jnp.linalg.norm(face_n, axis=-1, keepdims=True), 1e-12)
    face_n = jnp.concatenate([face_n, jnp.zeros_like(face_n[:, :1])], axis=1)  # pad row F
    summed = jnp.sum(face_n[:, point_buf], axis=2)
    return summed / jnp.maximum(jnp.linalg.norm(summed, axis=-1, keepdims=True), 1e-12)


def euler_rotation(angles):
    """R = Rz(c) Ry(b) Rx(a) for angles (a, b, c) in radians: [..., 3] -> [..., 3, 3].

    Both AudioDVP (tf_mesh_renderer's XYZ Tait-Bryan) and Deep3DFaceRecon use this matrix.
    """
    s, c = jnp.sin(angles), jnp.cos(angles)
    s0, s1, s2 = s[..., 0], s[..., 1], s[..., 2]
    c0, c1, c2 = c[..., 0], c[..., 1], c[..., 2]
    rows = [
        [c2 * c1, c2 * s1 * s0 - c0 * s2, s2 * s0 + c2 * c0 * s1],
        [c1 * s2, c2 * c0 + s2 * s1 * s0, c0 * s2 * s1 - c2 * s0],
        [-s1, c1 * s0, c1 * c0],
    ]
    return jnp.stack([jnp.stack(r, -1) for r in rows], -2)


def apply_pose(vertices, normals, angles, translation, convention: str):
    """Rigid pose in the model frame.

    AudioDVP moves then rotates, v' = R (v - t); Deep3DFaceRecon rotates then moves,
    v' = R v + t. Normals are rotated by R in both. vertices/normals [B, V, 3], angles and
    translation [B, 3] -> (vertices', normals').
    """
    rot = euler_rotation(angles)
    if convention == "audiodvp":
        moved = jnp.einsum("bij,bvj->bvi", rot, vertices - translation[:, None, :])
    elif convention == "deep3d":
        moved = jnp.einsum("bij,bvj->bvi", rot, vertices) + translation[:, None, :]
    else:
        raise ValueError(f"unknown pose convention {convention!r}")
    return moved, jnp.einsum("bij,bvj->bvi", rot, normals)


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class PinholeCamera:
    """A camera on the model's +z axis looking at the origin, in pixel units.

    u = focal_x * x / depth + cx, v = focal_y * (-y) / depth + cy, depth = distance - z.
    A negative focal_x mirrors the image left-right (AudioDVP's camera does).
    """

    focal_x: float
    focal_y: float
    cx: float
    cy: float
    distance: float
    height: int
    width: int

    @property
    def image_size(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def mirrored(self) -> bool:
        return self.focal_x < 0

    def project(self, points):
        """[..., 3] model-frame points -> [..., 3] (u, v, depth) in pixels / model units."""
        depth = self.distance - points[..., 2]
        safe = jnp.where(jnp.abs(depth) < 1e-9, 1e-9, depth)
        u = self.focal_x * points[..., 0] / safe + self.cx
        v = self.focal_y * -points[..., 1] / safe + self.cy
        return jnp.stack([u, v, depth], -1)

    def resized(self, height: int, width: int) -> "PinholeCamera":
        """The same field of view rendered at another resolution."""
        sy, sx = height / self.height, width / self.width
        return dataclasses.replace(self, focal_x=self.focal_x * sx, focal_y=self.focal_y * sy,
                                   cx=self.cx * sx, cy=self.cy * sy, height=height, width=width)


def audiodvp_camera(size: int = 256) -> PinholeCamera:
    """AudioDVP's camera: eye (0, 0, 8), looking at the origin, up (0, -1, 0), fov_y 25 deg.

    Its up vector of -y makes the camera's x axis world -x, so the face appears mirrored
    left-right (AudioDVP's hard-coded landmark list is the iBUG mirror order to match). Pixel
    mapping as tf_mesh_renderer: u = (ndc_x + 1) * W / 2, v = (ndc_y + 1) * H / 2.
    """
    f = (1.0 / math.tan(math.radians(25.0) / 2.0)) * size / 2.0
    return PinholeCamera(focal_x=-f, focal_y=f, cx=size / 2.0, cy=size / 2.0, distance=8.0,
                         height=size, width=size)


def deep3d_camera(size: int = 224) -> PinholeCamera:
    """Deep3DFaceRecon's camera: distance 10, focal 1015 px and centre 112 at 224 x 224.

    Deep3DFaceRecon's image y points up (it flips later); here v points down, same pixels.
    """
    s = size / 224.0
    return PinholeCamera(focal_x=1015.0 * s, focal_y=1015.0 * s, cx=112.0 * s, cy=112.0 * s,
                         distance=10.0, height=size, width=size)


# iBUG-68 left-right mirror: landmark i of a face seen in a mirror is landmark MIRROR[i].
IBUG68_MIRROR = (
    list(range(16, -1, -1))                      # jaw
    + list(range(26, 16, -1))                    # brows
    + [27, 28, 29, 30]                           # nose bridge
    + [35, 34, 33, 32, 31]                       # nostrils
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]   # eyes
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]   # outer lips
    + [64, 63, 62, 61, 60, 67, 66, 65]                   # inner lips
)
