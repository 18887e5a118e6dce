"""Texture transfer through the 3DMM: a real image of the face, redrawn in another frame's geometry.

Every pixel the rasterizer assigns to the face lies on one triangle, at known barycentric
coordinates. The same surface point has a position in any other image of the same mesh (another
frame, with its own expression and pose), and the colour found there is the colour that point
had in that image. So a real photograph of the face, sampled at the surface points of a render,
shows that photograph's skin, lips and teeth arranged in the render's geometry: lips move where
the render's lips are, and where the render opens the mouth wider than the photograph, the
mesh's inner-lip triangles stretch the photograph's own mouth interior over the opening.

Coordinates are continuous pixels, as in the rasterizer: pixel (i, j) is centred at
(j + 0.5, i + 0.5). Sampling is bicubic (bilinear averages away a third of the fine detail at
fractional positions: measured on the carphone mouth) with the image's border repeated. No
visibility test in the source image: a surface point hidden there (the far cheek of a head turned
away) samples whatever covers it, which is harmless around the mouth of a talking head facing the
camera.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metatalk_jax.face3d.raster import Fragments


def surface_points(fragments: Fragments, faces, positions) -> jax.Array:
    """Where each pixel's surface point lies in another image.

    fragments: the render's rasterization ([B, H, W] triangle ids, [B, H, W, 3] barycentrics);
    faces: [F, 3] vertex indices; positions: [B, V, 2] the mesh's vertices in the other image
    (pixels). Returns [B, H, W, 2] pixel positions (meaningless where triangle_id is -1)."""
    tri = jnp.maximum(fragments.triangle_id, 0)                       # [B, H, W]
    corners = jnp.asarray(faces)[tri]                                 # [B, H, W, 3]
    at = jax.vmap(lambda p, c: p[c])(positions, corners)              # [B, H, W, 3, 2]
    return jnp.sum(fragments.barycentric[..., None] * at, axis=-2)


def _cubic_weights(t):
    """[..., 4] weights of the taps at offsets -1, 0, 1, 2 for a sample at fraction t [...] past
    tap 0: Keys' cubic convolution with a = -0.75 (OpenCV's INTER_CUBIC)."""
    a = -0.75

    def near(x):        # |x| <= 1
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0

    def far(x):         # 1 < |x| < 2
        return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a

    return jnp.stack([far(1.0 + t), near(t), near(1.0 - t), far(2.0 - t)], axis=-1)


def sample_bicubic(images, points) -> jax.Array:
    """Bicubic samples (OpenCV's INTER_CUBIC kernel) of images [B, S, S', C] at points
    [B, H, W, 2], the border repeated: keeps the fine detail bilinear sampling averages away
    at fractional positions (the texture's lip edges and teeth)."""
    images = jnp.asarray(images)
    images = images.astype(jnp.promote_types(images.dtype, jnp.float32))
    h, w = images.shape[1:3]
    x = jnp.clip(points[..., 0] - 0.5, 0.0, w - 1.0)
    y = jnp.clip(points[..., 1] - 0.5, 0.0, h - 1.0)
    x0, y0 = jnp.floor(x), jnp.floor(y)
    fx, fy = x - x0, y - y0
    taps, wx, wy = jnp.arange(-1, 3), _cubic_weights(fx), _cubic_weights(fy)
    cols = jnp.clip(x0.astype(jnp.int32)[..., None] + taps, 0, w - 1)      # [B, H, W, K]
    rows = jnp.clip(y0.astype(jnp.int32)[..., None] + taps, 0, h - 1)
    gather = jax.vmap(lambda image, r, c: image[r[..., :, None], c[..., None, :]])
    patch = gather(images, rows, cols)                                     # [B, H, W, K, K, C]
    return jnp.einsum("bhwijc,bhwi,bhwj->bhwc", patch, wy, wx)


def transfer_texture(fragments: Fragments, faces, source_positions, source_images) -> jax.Array:
    """source_images [B, S, S', C] (real crops of other frames) redrawn in the render's geometry
    [B, H, W, C]. source_positions: [B, V, 2] the mesh's vertices projected into each source
    image (its own expression, pose and crop). Where the render shows no face (past the jaw,
    the neck) there is no surface point to follow: those pixels take the source image at the
    same place of its frame (the images are crops of the same framing), so the result has no
    holes where a mask dilated past the mesh reaches."""
    points = surface_points(fragments, faces, source_positions)
    h, w = fragments.triangle_id.shape[1:]
    scale = jnp.asarray([source_images.shape[2] / w, source_images.shape[1] / h], jnp.float32)
    centres = jnp.stack(jnp.meshgrid(jnp.arange(w) + 0.5, jnp.arange(h) + 0.5), -1) * scale
    covered = (fragments.triangle_id >= 0)[..., None]
    return sample_bicubic(source_images, jnp.where(covered, points, centres[None]))
