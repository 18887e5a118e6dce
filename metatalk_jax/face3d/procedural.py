"""A small face-like morphable model built from formulas: no files, for tests and benchmarks.

The surface is a rows x cols grid over (u, v) in [-1, 1]^2 laid on a face-shaped height field in
BFM's frame and units (micrometres; x to the subject's left, y up, z towards the viewer): an
egg-shaped outline spanning x in [-90000, 90000], y in [-122000, 89000], an ellipsoidal cap with a
nose (tip z ~ 132000), eye sockets, brow ridge, lips and chin. It is then scaled by the convention
like BFM, so the project's cameras frame it as they frame BFM. Bases are smooth random fields with
BFM-like magnitudes. rows = cols = 189 gives 35,721 vertices / 70,688 triangles (BFM front model:
35,709 / 70,789), the benchmark size.
"""

from __future__ import annotations

import numpy as np

from metatalk_jax.face3d.bfm import K_EXP, K_ID, K_TEX, audiodvp_mouth_triangle_ids
from metatalk_jax.face3d.morphable import (CONVENTIONS, MorphableModel, apply_convention,
                                           build_point_buf)

# Outline of the face in BFM micrometres.
_Y_CHIN, _Y_TOP = -122000.0, 89000.0
_HALF_WIDTH, _WIDTH_CENTRE_Y, _WIDTH_RADIUS_Y = 90000.0, 5000.0, 140000.0
# Feature centres (x, y) and radii (rx, ry) in micrometres, subject's right eye at x < 0.
_EYE = (32000.0, 28000.0, 13000.0, 5000.0)        # |x| of centre, y, rx, ry
_MOUTH = (0.0, -62000.0, 25000.0, 10000.0)
_INNER_MOUTH = (0.0, -62000.0, 18000.0, 3000.0)
_BROW_Y, _BROW_X = 45000.0, (60000.0, 15000.0)    # outer and inner |x|
_NOSTRIL_Y = -36000.0
# Skin mask: vertices this close (micrometres, in x-y) to a brow, eye or lip landmark are not skin.
_NON_SKIN_RADIUS = 10000.0


def _y_of_v(v):
    return _Y_CHIN + (np.asarray(v) + 1.0) * 0.5 * (_Y_TOP - _Y_CHIN)


def _v_of_y(y):
    return 2.0 * (np.asarray(y) - _Y_CHIN) / (_Y_TOP - _Y_CHIN) - 1.0


def _half_width(y):
    """Half-width of the face at height y: widest at the cheekbones, narrowing to the chin."""
    t = (np.asarray(y) - _WIDTH_CENTRE_Y) / _WIDTH_RADIUS_Y
    return _HALF_WIDTH * np.sqrt(np.clip(1.0 - t * t, 0.1, 1.0))


def _bump(x, y, cx, cy, sx, sy):
    return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def _depth(x, y):
    """z (micrometres) of the face surface at (x, y): a cap plus features."""
    cap = np.sqrt(np.clip(1.0 - (x / 95000.0) ** 2, 0.0, 1.0)) \
        * np.sqrt(np.clip(1.0 - ((y + 5000.0) / 175000.0) ** 2, 0.0, 1.0))
    z = -60000.0 + 160000.0 * cap ** 1.3  # power > 1: the sides fall back towards the ears
    z += 11000.0 * _bump(x, y, 0.0, 8000.0, 8000.0, 22000.0)        # nose bridge
    z += 28000.0 * _bump(x, y, 0.0, -22000.0, 12000.0, 9000.0)      # nose tip
    ex, ey = _EYE[0], _EYE[1]
    z -= 9000.0 * (_bump(x, y, -ex, ey, 14000.0, 9000.0) + _bump(x, y, ex, ey, 14000.0, 9000.0))
    z += 4000.0 * _bump(x, y, 0.0, _BROW_Y, 45000.0, 6000.0)         # brow ridge
    z += 5000.0 * _bump(x, y, _MOUTH[0], _MOUTH[1], 22000.0, 9000.0)  # lips
    z += 6000.0 * _bump(x, y, 0.0, -100000.0, 25000.0, 12000.0)     # chin
    return z


def _grid(rows: int, cols: int):
    """Vertex (u, v) parameters [V] each (row-major, row 0 = chin) and CCW triangles [F,3]."""
    v, u = np.meshgrid(np.linspace(-1.0, 1.0, rows), np.linspace(-1.0, 1.0, cols), indexing="ij")
    r, c = np.meshgrid(np.arange(rows - 1), np.arange(cols - 1), indexing="ij")
    a = (r * cols + c).reshape(-1)
    b, d = a + 1, a + cols  # right and upper neighbours
    # Counter-clockwise seen from +z (x right, y up), as BFM's triangles are: normals face the
    # viewer with the (p1 - p0) x (p2 - p0) rule the shading uses.
    tri = np.stack([np.stack([a, b, d + 1], 1), np.stack([a, d + 1, d], 1)], 1).reshape(-1, 3)
    return u.reshape(-1), v.reshape(-1), tri.astype(np.int32)


def _landmark_targets():
    """iBUG-68 landmark positions as (x, y) micrometres [68, 2]; landmark 30 is placed later."""
    pts = []
    # 0-16 jaw: from the subject's right (x < 0) at eye height round the chin (8) to the left.
    phi = np.pi + np.arange(17) * np.pi / 16
    v0, v_low = _v_of_y(10000.0), -0.97
    jaw_v = v0 + (v0 - v_low) * np.sin(phi)
    jaw_y = _y_of_v(jaw_v)
    pts += list(zip(0.97 * np.cos(phi) * _half_width(jaw_y), jaw_y))
    # 17-21 right brow outer -> inner, 22-26 left brow inner -> outer, slightly arched.
    outer, inner = _BROW_X
    bx = np.linspace(-outer, -inner, 5)
    by = _BROW_Y + 4000.0 * np.sin(np.pi * (np.abs(bx) - inner) / (outer - inner))
    pts += list(zip(bx, by)) + list(zip(-bx[::-1], by[::-1]))
    # 27-29 nose bridge downwards (30, the tip, is the most forward vertex).
    pts += [(0.0, 28000.0), (0.0, 14000.0), (0.0, 0.0), (0.0, -22000.0)]
    # 31-35 nostrils, subject's right to left, the middle one lowest.
    pts += [(x, _NOSTRIL_Y + 3000.0 * (abs(x) / 15000.0)) for x in np.linspace(-15000, 15000, 5)]

    def ring(cx, cy, rx, ry, n):
        # iBUG order: start at the corner on the subject's right, go over the top, come back below.
        th = np.pi - np.arange(n) * 2.0 * np.pi / n
        return list(zip(cx + rx * np.cos(th), cy + ry * np.sin(th)))

    ex, ey, erx, ery = _EYE
    pts += ring(-ex, ey, erx, ery, 6) + ring(ex, ey, erx, ery, 6)   # 36-41, 42-47
    pts += ring(*_MOUTH, 12) + ring(*_INNER_MOUTH, 8)                # 48-59, 60-67
    return np.asarray(pts, np.float64)


def _smooth_fields(u, v, k, rng, amplitude):
    """k smooth random displacement fields [V, 3, k], each scaled to RMS amplitude[k] over V."""
    freqs = [(a, b) for a in range(4) for b in range(4)]
    phi = np.stack([np.cos(np.pi * a * (u + 1) / 2) * np.cos(np.pi * b * (v + 1) / 2)
                    for a, b in freqs], axis=1)                        # [V, 16]
    decay = np.array([1.0 / (1.0 + a + b) for a, b in freqs])          # favour low frequencies
    w = rng.standard_normal((len(freqs), 3, k)) * decay[:, None, None]
    fields = (phi @ w.reshape(len(freqs), 3 * k)).reshape(-1, 3, k)
    rms = np.sqrt(np.mean(np.sum(fields ** 2, axis=1), axis=0))
    return fields * (np.asarray(amplitude) / rms)


def procedural_model(rows: int = 40, cols: int = 40, convention: str = "audiodvp",
                     seed: int = 0) -> MorphableModel:
    """A face-like MorphableModel on a rows x cols grid.

    V = rows*cols vertices, F = 2*(rows-1)*(cols-1) triangles; bases [V,3,80] identity (a unit
    coefficient moves vertices by ~1-3 mm RMS), [V,3,64] expression (mostly the mouth and jaw;
    component 0 opens the jaw), [V,3,80] texture (~0.01-0.04 albedo RMS); mean albedo a skin tone
    with redder lips and darker brows. Geometry depends only on rows/cols/convention; the bases
    on `seed` too. Landmarks sit at plausible iBUG-68 places (0 on the subject's right, 8 the
    chin, 30 the nose tip = most forward vertex).
    """
    if rows < 8 or cols < 8:
        raise ValueError(f"procedural_model needs rows, cols >= 8 to place landmarks, got "
                         f"{rows} x {cols}")
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; one of {list(CONVENTIONS)}")
    rng = np.random.default_rng(seed)
    u, v, tri = _grid(rows, cols)
    y = _y_of_v(v)
    x = u * _half_width(y)
    mean_raw = np.stack([x, y, _depth(x, y)], axis=1)

    # Landmarks: the grid vertex nearest each target's (u, v); the tip is the most forward vertex.
    targets = _landmark_targets()
    t_v = _v_of_y(targets[:, 1])
    t_u = targets[:, 0] / _half_width(targets[:, 1])
    r = np.clip(np.rint((t_v + 1) * 0.5 * (rows - 1)), 0, rows - 1).astype(np.int64)
    c = np.clip(np.rint((t_u + 1) * 0.5 * (cols - 1)), 0, cols - 1).astype(np.int64)
    landmarks = r * cols + c
    landmarks[30] = np.argmax(mean_raw[:, 2])

    # Identity: smooth everywhere, 3 mm RMS for the first component down to ~1 mm.
    ks = np.arange(K_ID)
    id_raw = _smooth_fields(u, v, K_ID, rng, 3000.0 / (1.0 + ks) ** 0.25)
    # Expression: weighted towards the lower face, with a deterministic jaw opening first.
    lower = 1.0 / (1.0 + np.exp((y + 30000.0) / 8000.0))
    weight = (0.15 + 0.85 * lower) * np.exp(-0.5 * (x / 50000.0) ** 2)
    ke = np.arange(K_EXP)
    exp_raw = _smooth_fields(u, v, K_EXP, rng, 3000.0 / (1.0 + ke) ** 0.5) * weight[:, None, None]
    below_mouth = np.clip((_MOUTH[1] - y) / (_MOUTH[1] - _Y_CHIN), 0.0, 1.0)
    exp_raw[:, :, 0] = 0.0
    exp_raw[:, 1, 0] = -4000.0 * below_mouth * lower         # chin drops up to 4 mm
    exp_raw[:, 2, 0] = -1000.0 * below_mouth * lower         # and moves back a little
    mean, bases = apply_convention(mean_raw, {"id": id_raw, "exp": exp_raw}, convention)

    # Albedo: skin with gentle shading variation, redder lips, darker brows.
    skin = np.array([0.80, 0.60, 0.50])
    lips = _bump(x, y, _MOUTH[0], _MOUTH[1], _MOUTH[2] * 0.8, _MOUTH[3] * 0.8)
    brows = sum(_bump(x, y, s * 37000.0, _BROW_Y + 2000.0, 20000.0, 3500.0) for s in (-1, 1))
    albedo = skin * (1.0 + 0.05 * np.cos(np.pi * u)[:, None] * np.cos(np.pi * v)[:, None])
    albedo = albedo + lips[:, None] * (np.array([0.72, 0.40, 0.40]) - albedo)
    albedo = albedo + np.clip(brows, 0, 1)[:, None] * (np.array([0.30, 0.22, 0.18]) - albedo)
    kt = np.arange(K_TEX)
    tex_basis = _smooth_fields(u, v, K_TEX, rng, 0.04 / (1.0 + kt) ** 0.3)

    # Photometric region: all but a border ring (BFM's frontmask2 also drops the rim).
    border = max(1, int(round(0.04 * min(rows, cols))))
    ri, ci = np.divmod(np.arange(rows * cols), cols)
    inside = (ri >= border) & (ri < rows - border) & (ci >= border) & (ci < cols - border)
    # Skin: away from brows (17-26), eyes (36-47) and lips (48-67).
    feature = targets[np.r_[17:27, 36:68]]
    d2 = ((mean_raw[:, None, :2] - feature[None]) ** 2).sum(-1).min(1)
    skin_mask = d2 > _NON_SKIN_RADIUS ** 2

    model = MorphableModel(
        mean_shape=mean, id_basis=bases["id"], exp_basis=bases["exp"],
        mean_albedo=np.clip(albedo, 0.0, 1.0).astype(np.float32),
        tex_basis=tex_basis.astype(np.float32), triangles=tri,
        point_buf=build_point_buf(tri, rows * cols),
        landmark_ids=landmarks.astype(np.int32),
        mouth_triangle_ids=audiodvp_mouth_triangle_ids(mean_raw, tri),
        face_mask=inside.astype(np.float32), skin_mask=skin_mask.astype(np.float32),
        convention=convention, name=f"procedural_{rows}x{cols}")
    return model.validate()
