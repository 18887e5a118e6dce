"""Analytic silhouette antialiasing: the option that gives gradients at silhouettes.

The hard rasterizer's output is piecewise constant in the vertex positions at silhouettes, so a
silhouette edge moving over a pixel has no gradient. Here, for every pair of 4-neighbour pixels
with one covered and one background pixel, the covered pixel's triangle is extended along the
segment between the two pixel centres; the point t in [0, 1] where it leaves the triangle is
where the silhouette crosses. Coverage then moves linearly with t: if the edge crosses before
the pixel boundary (t < 0.5) the covered pixel loses (0.5 - t) of its colour to the background,
otherwise the background pixel gains (t - 0.5) of the covered colour. Each edge is handled by
the pair direction it is most perpendicular to (horizontal pairs for steep edges), so straight
edges get exact area coverage. This is the idea of nvdiffrast's antialiasing, restricted to
silhouettes against the background (occlusion boundaries inside the mesh are left hard).

Limits: the crossing is computed from the covered pixel's own triangle, which is exact when that
triangle owns the silhouette edge (triangles of a pixel or more at the boundary) and an
approximation for sub-pixel triangles.
"""

from __future__ import annotations

import jax.numpy as jnp

from metatalk_jax.face3d.raster import Fragments, triangle_planes


def _crossing(planes, fx, fy, gx, gy, horizontal: bool):
    """Where the segment from F (inside) to G leaves F's triangle, and whether this pair owns it.

    planes [..., 10] of F's triangle; F, G pixel centres. Returns (t in [0, 1], owned mask).
    """
    def bary(px, py):
        dx, dy = px - planes[..., 0], py - planes[..., 1]
        b0 = 1.0 + planes[..., 2] * dx + planes[..., 3] * dy
        b1 = planes[..., 4] * dx + planes[..., 5] * dy
        return jnp.stack([b0, b1, 1.0 - b0 - b1], -1)

    bf, bg = bary(fx, fy), bary(gx, gy)
    # Leaves across edge i when b_i drops below 0 on the way to G (b_i must decrease: an edge
    # parallel to the segment would give 0/0, and its where-masked gradient would be NaN).
    leaving = (bg < 0) & (bf > bg)
    denom = jnp.where(leaving, bf - bg, 1.0)
    t_edge = jnp.where(leaving, bf / denom, jnp.inf)
    edge = jnp.argmin(t_edge, axis=-1)
    t = jnp.clip(jnp.take_along_axis(t_edge, edge[..., None], -1)[..., 0], 0.0, 1.0)
    # Gradient of each barycentric; the edge opposite vertex i is b_i's zero line.
    gxs = jnp.stack([planes[..., 2], planes[..., 4], -planes[..., 2] - planes[..., 4]], -1)
    gys = jnp.stack([planes[..., 3], planes[..., 5], -planes[..., 3] - planes[..., 5]], -1)
    ex = jnp.abs(jnp.take_along_axis(gxs, edge[..., None], -1)[..., 0])
    ey = jnp.abs(jnp.take_along_axis(gys, edge[..., None], -1)[..., 0])
    steep = ex >= ey                      # |d b/dx| large: the edge runs mostly vertically
    owned = jnp.any(leaving, -1) & (steep if horizontal else ~steep)
    return t, owned


def antialias(colour, fragments: Fragments, pixel_vertices, faces):
    """Blends silhouette pixels with analytic coverage; differentiable in the vertices.

    Args:
      colour: [B, H, W, C] rendered values (append an alpha channel of the coverage mask to
        get an antialiased alpha).
      fragments: the `rasterize` output for these vertices.
      pixel_vertices: [B, V, 3] the vertices given to `rasterize` (pixel coordinates).
      faces: [F, 3].
    Returns:
      [B, H, W, C]: equal to `colour` away from silhouettes.
    """
    tid = fragments.triangle_id
    covered = tid >= 0
    batch, height, width = tid.shape
    planes = triangle_planes(pixel_vertices[:, jnp.asarray(faces)], perspective_correct=False)
    pixel_planes = jnp.take_along_axis(planes, jnp.where(covered, tid, 0).reshape(batch, -1, 1), 1)
    pixel_planes = pixel_planes.reshape(batch, height, width, -1)
    ys, xs = jnp.meshgrid(jnp.arange(height, dtype=colour.dtype) + 0.5,
                          jnp.arange(width, dtype=colour.dtype) + 0.5, indexing="ij")
    out = colour
    for horizontal in (True, False):
        axis = 2 if horizontal else 1
        n = width if horizontal else height

        def first(a, axis=axis, n=n):
            return jnp.take(a, jnp.arange(n - 1), axis=axis)

        def second(a, axis=axis, n=n):
            return jnp.take(a, jnp.arange(1, n), axis=axis)

        cov_p, cov_q = first(covered), second(covered)
        p_is_f = cov_p & ~cov_q
        pair = cov_p != cov_q
        pl = jnp.where(p_is_f[..., None], first(pixel_planes), second(pixel_planes))
        x_p, x_q = first(xs[None] + 0 * covered), second(xs[None] + 0 * covered)
        y_p, y_q = first(ys[None] + 0 * covered), second(ys[None] + 0 * covered)
        fx, fy = jnp.where(p_is_f, x_p, x_q), jnp.where(p_is_f, y_p, y_q)
        gx, gy = jnp.where(p_is_f, x_q, x_p), jnp.where(p_is_f, y_q, y_p)
        t, owned = _crossing(pl, fx, fy, gx, gy, horizontal)
        active = pair & owned
        lose = jnp.where(active, jnp.maximum(0.5 - t, 0.0), 0.0)[..., None]   # F -> G colour
        gain = jnp.where(active, jnp.maximum(t - 0.5, 0.0), 0.0)[..., None]   # G <- F colour
        col_p, col_q = first(colour), second(colour)
        col_f = jnp.where(p_is_f[..., None], col_p, col_q)
        col_g = jnp.where(p_is_f[..., None], col_q, col_p)
        delta_f = lose * (col_g - col_f)
        delta_g = gain * (col_f - col_g)
        delta_p = jnp.where(p_is_f[..., None], delta_f, delta_g)
        delta_q = jnp.where(p_is_f[..., None], delta_g, delta_f)
        pad_lo = [(0, 0)] * 4
        pad_hi = [(0, 0)] * 4
        pad_lo[axis] = (0, 1)
        pad_hi[axis] = (1, 0)
        out = out + jnp.pad(delta_p, pad_lo) + jnp.pad(delta_q, pad_hi)
    return out
