"""Brute-force NumPy rasterizer: every pixel against every triangle, in float64.

An independent reference for tests of metatalk_jax.face3d.raster (same public contract:
pixel (i, j) has its centre at (j + 0.5, i + 0.5); smaller z is nearer; no culling).
"""

import numpy as np


def brute_force_rasterize(vertices, faces, height, width, perspective_correct=False):
    """vertices [V,3] float, faces [F,3] -> (triangle_id [H,W], depth [H,W], bary [H,W,3])."""
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    ys, xs = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    best = np.full((height, width), np.inf)
    tid = np.full((height, width), -1, np.int64)
    bary_out = np.zeros((height, width, 3))
    for t, (a, b, c) in enumerate(f):
        (x0, y0, z0), (x1, y1, z1), (x2, y2, z2) = v[a], v[b], v[c]
        area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        if area == 0:
            continue
        w0 = ((x1 - xs) * (y2 - ys) - (x2 - xs) * (y1 - ys)) / area
        w1 = ((x2 - xs) * (y0 - ys) - (x0 - xs) * (y2 - ys)) / area
        w2 = 1.0 - w0 - w1
        inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
        if perspective_correct:
            inv = w0 / z0 + w1 / z1 + w2 / z2
            depth = 1.0 / np.where(inv == 0, 1, inv)
            bw = np.stack([w0 / z0, w1 / z1, w2 / z2], -1) * depth[..., None]
        else:
            depth = w0 * z0 + w1 * z1 + w2 * z2
            bw = np.stack([w0, w1, w2], -1)
        win = inside & (depth < best)
        best = np.where(win, depth, best)
        tid = np.where(win, t, tid)
        bary_out = np.where(win[..., None], bw, bary_out)
    depth = np.where(tid >= 0, best, 0.0)
    return tid, depth, bary_out
