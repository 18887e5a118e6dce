"""Compiled single-thread z-buffer: the practical floor the JAX rasterizer is measured against.

A plain scanline-free rasterizer as a C programmer would write it: for each triangle, set up its
barycentric plane equations once, then test every pixel centre in its bounding box and keep the
nearest. It returns triangle ids and depth only (no barycentrics, no gradients), so it is a lower
bound on the work `metatalk_jax.face3d.raster.rasterize` does, not a replacement for it.

Same contract as the JAX rasterizer: vertices in pixel units, x right, y down; pixel (i, j) has
its centre at (j + 0.5, i + 0.5); a pixel is inside a non-degenerate triangle of either winding
when all three barycentrics are >= 0; smaller z is nearer. Exact depth ties go to the triangle
with the larger id (the JAX rasterizer resolves ties the same way).

Benchmark/test-only dependency: numba (compiled once per process, cached on disk if possible).
"""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, fastmath=False)
def _zbuffer_kernel(vertices, faces, height, width):
    tid = np.empty((height, width), np.int32)
    zbuf = np.empty((height, width), np.float64)
    for i in range(height):
        for j in range(width):
            tid[i, j] = -1
            zbuf[i, j] = np.inf
    num_faces = faces.shape[0]
    for t in range(num_faces):
        a, b, c = faces[t, 0], faces[t, 1], faces[t, 2]
        x0, y0, z0 = (np.float64(vertices[a, 0]), np.float64(vertices[a, 1]),
                      np.float64(vertices[a, 2]))
        x1, y1, z1 = (np.float64(vertices[b, 0]), np.float64(vertices[b, 1]),
                      np.float64(vertices[b, 2]))
        x2, y2, z2 = (np.float64(vertices[c, 0]), np.float64(vertices[c, 1]),
                      np.float64(vertices[c, 2]))
        area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        if area == 0.0 or not math.isfinite(area) or not (
                math.isfinite(z0) and math.isfinite(z1) and math.isfinite(z2)):
            continue
        # Pixel columns / rows whose centres lie in the bounding box.
        xmin = min(x0, min(x1, x2))
        xmax = max(x0, max(x1, x2))
        ymin = min(y0, min(y1, y2))
        ymax = max(y0, max(y1, y2))
        c0 = max(int(math.ceil(xmin - 0.5)), 0)
        c1 = min(int(math.floor(xmax - 0.5)), width - 1)
        r0 = max(int(math.ceil(ymin - 0.5)), 0)
        r1 = min(int(math.floor(ymax - 0.5)), height - 1)
        if c1 < c0 or r1 < r0:
            continue
        # Plane equations relative to vertex 0: b0 = 1 + g0 . d, b1 = g1 . d, z = z0 + zg . d.
        inv = 1.0 / area
        g0x, g0y = (y1 - y2) * inv, (x2 - x1) * inv
        g1x, g1y = (y2 - y0) * inv, (x0 - x2) * inv
        dz1, dz2 = z1 - z0, z2 - z0
        zx = g1x * dz1 + (-g0x - g1x) * dz2
        zy = g1y * dz1 + (-g0y - g1y) * dz2
        for i in range(r0, r1 + 1):
            dy = i + 0.5 - y0
            b0_row = 1.0 + g0y * dy
            b1_row = g1y * dy
            z_row = z0 + zy * dy
            for j in range(c0, c1 + 1):
                dx = j + 0.5 - x0
                b0 = b0_row + g0x * dx
                b1 = b1_row + g1x * dx
                if b0 < 0.0 or b1 < 0.0 or 1.0 - b0 - b1 < 0.0:
                    continue
                z = z_row + zx * dx
                if z <= zbuf[i, j]:       # later (larger id) triangle wins exact ties
                    zbuf[i, j] = z
                    tid[i, j] = t
    depth = np.zeros((height, width), np.float32)
    for i in range(height):
        for j in range(width):
            if tid[i, j] >= 0:
                depth[i, j] = np.float32(zbuf[i, j])
    return tid, depth


def zbuffer_reference(vertices, faces, height: int, width: int):
    """Rasterizes one mesh with a single-thread compiled z-buffer.

    Args:
      vertices: [V, 3] float32 pixel-space vertices (x, y, depth).
      faces: [F, 3] int32 vertex ids.
      height, width: image size.
    Returns:
      (triangle_id [H, W] int32, -1 on background; depth [H, W] float32, 0 on background).
    """
    vertices = np.ascontiguousarray(vertices, dtype=np.float32)
    faces = np.ascontiguousarray(faces, dtype=np.int32)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"zbuffer_reference: vertices must be [V,3], got {vertices.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"zbuffer_reference: faces must be [F,3], got {faces.shape}")
    return _zbuffer_kernel(vertices, faces, int(height), int(width))


__all__ = ["zbuffer_reference"]
