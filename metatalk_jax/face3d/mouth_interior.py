"""The mouth cavity: the image region between the opened lips, from the 68 projected landmarks.

A morphable-model mesh is closed at the mouth (BFM's lips are joined by triangles), so when an
expression opens the mouth its render shows stretched lip and skin colour where a real face shows
a dark cavity: at the renderer's input an open and a closed mouth look almost the same. Filling
the inner-lip contour (iBUG points 60-67, in image order) with a cavity colour makes the opening
as visible in the 3DMM render as it is in the video, so the neural renderer can take it from its
input instead of from whatever else identifies the training frame.

Coordinates are continuous pixels, as in the rasterizer: pixel (i, j) is centred at
(j + 0.5, i + 0.5). Coverage is antialiased by the signed distance of each pixel centre to the
contour, so a gap of a fraction of a pixel gives a faint, not an absent, cavity.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

INNER_LIP = (60, 61, 62, 63, 64, 65, 66, 67)     # contour order: corner, upper lip, corner, lower


def inner_lip_polygon(landmarks) -> jax.Array:
    """[B, 68, 2] landmarks (image order) -> [B, 8, 2] closed inner-lip contour."""
    return jnp.asarray(landmarks)[:, jnp.asarray(INNER_LIP)]


def polygon_coverage(polygon, height: int, width: int) -> jax.Array:
    """Antialiased coverage of closed polygons, [B, P, 2] vertices (pixels) -> [B, H, W] in [0, 1].

    Inside/outside by the even-odd rule; coverage = clip(0.5 + signed distance of the pixel
    centre to the boundary, 0, 1) (1 pixel of linear ramp across the edge). One pass per edge
    keeps the memory at a few [B, H, W] arrays at any resolution.
    """
    polygon = jnp.asarray(polygon, jnp.float32)
    ys = jnp.arange(height, dtype=jnp.float32)[None, :, None] + 0.5
    xs = jnp.arange(width, dtype=jnp.float32)[None, None, :] + 0.5
    inside = jnp.zeros((polygon.shape[0], height, width), bool)
    nearest = jnp.full((polygon.shape[0], height, width), jnp.inf, jnp.float32)
    count = polygon.shape[1]
    for k in range(count):
        a, b = polygon[:, k], polygon[:, (k + 1) % count]
        ax, ay = a[:, 0, None, None], a[:, 1, None, None]
        bx, by = b[:, 0, None, None], b[:, 1, None, None]
        dx, dy = bx - ax, by - ay
        # crossing test of a ray from the pixel towards +x
        straddles = (ay > ys) != (by > ys)
        x_cross = ax + (ys - ay) * dx / jnp.where(dy == 0, 1.0, dy)
        inside = inside ^ (straddles & (xs < x_cross))
        # distance to the segment
        length2 = jnp.maximum(dx * dx + dy * dy, 1e-12)
        t = jnp.clip(((xs - ax) * dx + (ys - ay) * dy) / length2, 0.0, 1.0)
        nearest = jnp.minimum(nearest, jnp.hypot(xs - ax - t * dx, ys - ay - t * dy))
    signed = jnp.where(inside, nearest, -nearest)
    return jnp.clip(0.5 + signed, 0.0, 1.0)


def paint_mouth_cavity(image, landmarks, colour) -> jax.Array:
    """[B, H, W, 3] render in [0, 1] with the inner-lip region of its [B, 68, 2] landmarks
    blended towards `colour` (3 floats in [0, 1]) by its coverage."""
    b, h, w, _ = image.shape
    cover = polygon_coverage(inner_lip_polygon(landmarks), h, w)[..., None]
    return image * (1.0 - cover) + jnp.asarray(colour, image.dtype) * cover
